//! Sans-IO cores: every type here is driven by `(now, event)` calls and drained with
//! `poll_*` calls. Nothing in this module may read a clock, sleep or touch a socket.

pub mod bitrate;
pub mod receiver;
pub mod sender;
pub mod ts;
pub mod wire;
