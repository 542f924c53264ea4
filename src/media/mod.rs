//! Media: what the edge sends, and the knobs the bitrate controller turns.
//!
//! [`MediaControl`] is the one-way contract between the edge's core task (which runs the
//! sans-IO bitrate controller, [`crate::core::bitrate`]) and whatever produces the media
//! ([`crate::edge::MediaSource`]): the core publishes a new value on a `watch` channel,
//! the source applies what it can (an encoder changes bitrate and picture size while
//! PLAYING; a pass-through source ignores it).

/// What the edge asks of its media source, published on a `watch` channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaControl {
    /// Target for the whole transport stream in bits per second (video + audio + mux).
    /// The source subtracts its audio and mux overhead before setting the video encoder.
    pub target_bps: u64,
    /// Picture-size rung: index into the configured ladder, 0 = the largest picture.
    pub rung: usize,
    /// Bumped by one for each keyframe requested (unrecoverable loss at the relay).
    /// A source forces one keyframe when it sees the value change.
    pub keyframe_requests: u64,
}

impl MediaControl {
    pub fn new(target_bps: u64) -> Self {
        MediaControl {
            target_bps,
            rung: 0,
            keyframe_requests: 0,
        }
    }
}
