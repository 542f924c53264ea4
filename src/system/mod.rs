//! System glue.
