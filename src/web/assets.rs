//! The page's static files, compiled into the binary.
