//! Media: what the edge sends, and the knobs the bitrate controller turns.
//!
//! [`MediaControl`] is the one-way contract between the edge's core task (which runs the
//! sans-IO bitrate controller, [`crate::core::bitrate`]) and whatever produces the media
//! ([`crate::edge::MediaSource`]): the core publishes a new value on a `watch` channel,
//! the source applies what it can (an encoder changes bitrate and picture size while
//! PLAYING; a pass-through source ignores it).
//!
//! The GStreamer sources:
//! - [`pipeline::GstSource`] (inputs `v4l2` and `pattern`): a capture pipeline
//!   (camera or test pattern -> raw video -> appsink) feeding an encode pipeline
//!   (appsrc -> scale to the ladder rung -> encoder -> parser -> mpegtsmux <- audio chain
//!   -> appsink). The encode pipeline never stops: when the camera goes away it is fed
//!   a "NO SIGNAL" slate while the camera is retried with backoff;
//! - [`srt::SrtSource`] (input `srt`): an SRT listener whose TS is passed through;
//! - [`encoder`]: encoder choice against the element registry and the quirks table;
//! - [`capture`]: what a camera is (a trait, so a test can unplug one).

pub mod capture;
pub mod encoder;
pub mod pipeline;
pub mod srt;

use crate::config::{AudioConfig, InputConfig, VideoConfig};
use crate::core::bitrate::{ControllerConfig, Rung};
use crate::edge::MediaSource;

pub use capture::{Capture, PatternCapture, V4l2Capture};
pub use pipeline::{GstSource, MediaProbe, MediaStats};
pub use srt::SrtSource;

/// TS overhead that grows with the rate: 4-byte packet headers (2.1 %), PES headers,
/// adaptation fields. Fitted with [`MUX_FIXED_BPS`] to the TS rates tests/media.rs
/// measured (x264enc + AAC 128 kbit/s at 1 and 4 Mbit/s targets).
pub const MUX_OVERHEAD: f64 = 0.04;
/// TS overhead that does not: PAT/PMT every 100 ms, PCR, the half-empty last packet
/// of every video frame and audio PES (about 60 kbit/s at 30 fps with AAC).
pub const MUX_FIXED_BPS: u64 = 60_000;

/// Errors building or running a media pipeline.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error(transparent)]
    Encoder(#[from] encoder::EncoderError),
    #[error("GStreamer element {0:?} is missing (is its plugin package installed?)")]
    MissingElement(String),
    #[error("GStreamer: {0}")]
    Gst(String),
    #[error("capture: {0}")]
    Capture(String),
}

impl From<gstreamer::glib::BoolError> for MediaError {
    fn from(e: gstreamer::glib::BoolError) -> Self {
        MediaError::Gst(e.to_string())
    }
}

impl From<gstreamer::StateChangeError> for MediaError {
    fn from(e: gstreamer::StateChangeError) -> Self {
        MediaError::Gst(e.to_string())
    }
}

/// Hands what an appsink gives to the edge core as groups of whole TS packets,
/// from a GStreamer streaming thread, never blocking it: a full channel drops the
/// group (the core is stuck; holding the pipeline would not help it).
pub(crate) struct TsForwarder {
    packetizer: crate::core::ts::Packetizer,
    groups: Vec<Vec<u8>>,
    out: tokio::sync::mpsc::Sender<(std::time::Instant, Vec<u8>)>,
}

impl TsForwarder {
    pub(crate) fn new(out: tokio::sync::mpsc::Sender<(std::time::Instant, Vec<u8>)>) -> Self {
        TsForwarder {
            packetizer: crate::core::ts::Packetizer::default(),
            groups: Vec::new(),
            out,
        }
    }

    /// Sends `data` (whole packets now; a partial one waits for the next call) stamped
    /// `when`. Returns (bytes sent, groups dropped).
    pub(crate) fn forward(&mut self, data: &[u8], when: std::time::Instant) -> (u64, u64) {
        use tokio::sync::mpsc::error::TrySendError;
        self.packetizer.push(data, &mut self.groups);
        self.groups.extend(self.packetizer.flush());
        let (mut sent, mut dropped) = (0, 0);
        for g in self.groups.drain(..) {
            let n = g.len() as u64;
            match self.out.try_send((when, g)) {
                Ok(()) => sent += n,
                Err(TrySendError::Full(_)) => dropped += 1,
                // Shutting down.
                Err(TrySendError::Closed(_)) => {}
            }
        }
        (sent, dropped)
    }
}

/// Initialises GStreamer once per process (later calls are cheap).
pub fn init() -> Result<(), MediaError> {
    static INIT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    INIT.get_or_init(|| gstreamer::init().map_err(|e| e.to_string()))
        .clone()
        .map_err(MediaError::Gst)
}

/// Video encoder bitrate for a whole-stream target: the target less mux overhead and
/// audio, clamped to the configured floor and ceiling.
pub fn video_bitrate(target_bps: u64, video: &VideoConfig, audio: &AudioConfig) -> u64 {
    let audio_bps = if audio.enabled { audio.bitrate_bps } else { 0 };
    let for_es = (target_bps as f64 * (1.0 - MUX_OVERHEAD)) as u64;
    for_es
        .saturating_sub(audio_bps + MUX_FIXED_BPS)
        .clamp(video.min_bps, video.max_bps)
}

/// The whole-stream rate (video + audio + mux) that carries `video_bps` of video:
/// the inverse of [`video_bitrate`].
pub fn stream_bps(video_bps: u64, audio: &AudioConfig) -> u64 {
    let a = if audio.enabled { audio.bitrate_bps } else { 0 };
    ((video_bps + a + MUX_FIXED_BPS) as f64 / (1.0 - MUX_OVERHEAD)).ceil() as u64
}

/// Below this many video bits per pixel a picture size is starved and the next
/// smaller one looks better (H.264 rule of thumb: 0.1 bpp is good, under 0.05 the
/// blocks show; 720p30 at 0.06 bpp is 1.7 Mbit/s).
pub const MIN_BITS_PER_PIXEL: f64 = 0.06;

/// Floor, ceiling and picture ladder of the bitrate controller for an encoding
/// source, in whole-stream bit/s.
pub fn controller_config(video: &VideoConfig, audio: &AudioConfig) -> ControllerConfig {
    let n = video.ladder.len();
    let ladder = video
        .ladder
        .iter()
        .enumerate()
        .map(|(i, size)| Rung {
            name: size.to_string(),
            min_bps: if i + 1 == n {
                0
            } else {
                let px = f64::from(size.width) * f64::from(size.height) * f64::from(video.fps);
                stream_bps((px * MIN_BITS_PER_PIXEL) as u64, audio)
            },
        })
        .collect();
    ControllerConfig {
        floor_bps: stream_bps(video.min_bps, audio),
        ceiling_bps: stream_bps(video.max_bps, audio),
        start_bps: initial_target_bps(video, audio),
        ladder,
        ..Default::default()
    }
}

/// The whole-stream target an encoding source starts at before the controller has
/// measured anything: 2 Mbit/s of video (within the floor and ceiling) plus audio
/// and mux overhead.
pub fn initial_target_bps(video: &VideoConfig, audio: &AudioConfig) -> u64 {
    let v = 2_000_000u64.clamp(video.min_bps, video.max_bps);
    let a = if audio.enabled { audio.bitrate_bps } else { 0 };
    ((v + a + MUX_FIXED_BPS) as f64 / (1.0 - MUX_OVERHEAD)).ceil() as u64
}

/// The built-in test signal (moving-ball test pattern with a running clock, test
/// tone) encoded with `video` / `audio`: what `braid sim` uses for a real encoder in
/// the loop. The TS comes out on the `out` channel given to `spawn`.
pub fn pattern_source(
    video: &VideoConfig,
    audio: &AudioConfig,
) -> Result<Box<dyn MediaSource>, MediaError> {
    Ok(pattern_source_probed(video, audio, crate::config::TestPattern::Ball)?.0)
}

/// [`pattern_source`] with a chosen picture (`Snow` makes the encoder use every bit it
/// is given) and a [`MediaProbe`] to read the encoder's state (bitrate in force,
/// rung, forced keyframes, TS bytes) while it runs.
pub fn pattern_source_probed(
    video: &VideoConfig,
    audio: &AudioConfig,
    pattern: crate::config::TestPattern,
) -> Result<(Box<dyn MediaSource>, MediaProbe), MediaError> {
    let capture = PatternCapture::new(pattern, video);
    let src = GstSource::new(
        video,
        audio,
        Box::new(capture),
        pipeline::Options::default(),
    )?;
    let probe = src.probe();
    Ok((Box::new(src), probe))
}

/// The GStreamer source for an input kind that needs one (`v4l2`, `pattern`, `srt`);
/// `None` for the others.
pub fn source_for_input(
    input: &InputConfig,
    video: &VideoConfig,
    audio: &AudioConfig,
) -> Option<Result<Box<dyn MediaSource>, MediaError>> {
    let encode = |capture: Box<dyn Capture>| -> Result<Box<dyn MediaSource>, MediaError> {
        Ok(Box::new(GstSource::new(
            video,
            audio,
            capture,
            pipeline::Options::default(),
        )?))
    };
    match input {
        InputConfig::V4l2 { device } => Some(encode(Box::new(V4l2Capture::new(device, video)))),
        InputConfig::Pattern { pattern } => {
            Some(encode(Box::new(PatternCapture::new(*pattern, video))))
        }
        InputConfig::Srt { listen, passphrase } => Some(
            SrtSource::new(*listen, passphrase.clone())
                .map(|s| Box::new(s) as Box<dyn MediaSource>),
        ),
        InputConfig::Udp { .. } | InputConfig::Test { .. } => None,
    }
}

/// What the edge asks of its media source, published on a `watch` channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaControl {
    /// Target for the whole transport stream in bits per second (video + audio + mux).
    /// The source subtracts its audio and mux overhead before setting the video encoder.
    pub target_bps: u64,
    /// Picture-size rung: index into the configured ladder, 0 = the largest picture.
    pub rung: usize,
    /// Bumped by one for each keyframe requested (unrecoverable loss at the relay).
    /// A source forces one keyframe when it sees the value change ([`GstSource`] at
    /// most one per 250 ms: requests in between are answered by one keyframe when the
    /// 250 ms are up).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarder_sends_whole_packets_and_drops_when_full() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(2);
        let mut f = TsForwarder::new(tx);
        let now = std::time::Instant::now();
        let mut ts = vec![0u8; 188 * 9];
        for p in ts.chunks_mut(188) {
            p[0] = 0x47;
        }
        // 8.5 packets: 7 + 1 go out, the half waits.
        assert_eq!(f.forward(&ts[..188 * 8 + 94], now), (188 * 8, 0));
        assert_eq!(rx.try_recv().unwrap().1.len(), 188 * 7);
        assert_eq!(rx.try_recv().unwrap().1.len(), 188);
        assert_eq!(f.forward(&ts[188 * 8 + 94..], now), (188, 0));
        // Channel of 2 with one group in it: of the next two, the first fits.
        assert_eq!(f.forward(&ts[..188 * 8], now), (188 * 7, 1));
        drop(rx);
        assert_eq!(f.forward(&ts[..188], now), (0, 0));
    }

    #[test]
    fn video_bitrate_leaves_room_for_audio_and_mux() {
        let v = VideoConfig::default();
        let a = AudioConfig::default();
        // 4 Mbit/s: 3.84 for elementary streams, less 128 k audio and 60 k fixed.
        assert_eq!(video_bitrate(4_000_000, &v, &a), 3_652_000);
        assert_eq!(video_bitrate(100_000, &v, &a), v.min_bps);
        assert_eq!(video_bitrate(100_000_000, &v, &a), v.max_bps);
        let silent = AudioConfig {
            enabled: false,
            ..AudioConfig::default()
        };
        assert_eq!(video_bitrate(4_000_000, &v, &silent), 3_780_000);
        let start = initial_target_bps(&v, &a);
        assert_eq!(video_bitrate(start, &v, &a), 2_000_000);
    }
}
