//! Relay daemon.
