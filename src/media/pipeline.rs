//! [`GstSource`]: camera (or test pattern) + sound, encoded live to MPEG-TS.
//!
//! Two pipelines, so losing the camera never stops the stream:
//!
//! ```text
//! capture:  <Capture source> ! videoconvert ! videoscale ! I420 WxH ! appsink
//!                                                                       |
//! encode:   appsrc (I420 WxH, live) ! videoscale ! capsfilter (rung) ! convert
//!             ! encoder ! caps ! parser ! mpegtsmux ! appsink -> `out`
//!           audio source(s) [! audiomixer] ! webrtcdsp ! audiodynamic ! aac/opus ! mux
//! ```
//!
//! One std thread ("braid-media") owns both pipelines: it applies [`MediaControl`]
//! while PLAYING (encoder bitrate from the quirks table, the rung capsfilter's caps,
//! force-key-unit events), watches both buses, feeds the "NO SIGNAL" slate whenever
//! no camera frame arrived for [`Options::stale_after`], and reopens the camera with
//! backoff. An error in the encode pipeline (an encoder gone) is logged, counted,
//! and the encode pipeline is rebuilt with backoff; when the error came from an audio
//! source, the rebuilt pipeline sends silence until the source is tried again.
//! Nothing here runs on the tokio runtime: the appsink callback hands TS groups over
//! with `try_send` (a full channel drops the group and counts it).
//!
//! Capture times: every pipeline runs on the monotonic GStreamer system clock, and
//! one anchor pair (`Instant::now()`, `clock.time()`) sampled at start maps clock
//! times to `Instant`s. A camera frame's clock time is its running time plus the
//! capture pipeline's base time; it enters the encode pipeline as the PTS (minus that
//! pipeline's base time), so the TS buffers leaving the mux carry it back out.

use super::capture::{add_chain, make, set_str, Capture};
use super::encoder::{self, EncoderQuirks, GstRegistry};
use super::{video_bitrate, MediaControl, MediaError, TsForwarder};
use crate::config::{AudioCodec, AudioConfig, AudioSourceKind, PictureSize, VideoConfig};
use crate::edge::MediaSource;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app::{AppSink, AppSinkCallbacks, AppSrc};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// First wait before reopening a lost camera; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A camera that delivered frames this long is "good": its next loss starts the
/// backoff from the beginning again.
const PROVEN_GOOD: Duration = Duration::from_secs(10);
/// How long one way of opening the camera may take to give its first frame.
const OPEN_TIMEOUT: Duration = Duration::from_secs(3);
/// A camera that is open but silent this long is treated as lost (USB hang).
const STALL_TIMEOUT: Duration = Duration::from_secs(2);
/// First wait before rebuilding a failed encode pipeline; doubles up to [`MAX_BACKOFF`].
const FIRST_ENCODE_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait between tries of a failed audio device (each try restarts the encode
/// pipeline: a short glitch, so not often).
const MAX_AUDIO_BACKOFF: Duration = Duration::from_secs(600);
/// Forced keyframes at most this often: a burst of requests (losses on several links
/// at once) gets one keyframe now and one after the gap, not an IDR per request.
const MIN_KEYFRAME_GAP: Duration = Duration::from_millis(250);
/// Audio source buffer: 10 ms at 48 kHz (webrtcdsp works in 10 ms frames).
const AUDIO_SAMPLES_PER_BUFFER: &str = "480";
/// Limiter: above -0.9 dBFS the level rises 1/20 as fast (20:1, hard knee).
const LIMITER_THRESHOLD: &str = "0.9";
const LIMITER_RATIO: &str = "0.05";

/// Knobs for tests and special uses; `Default` is what the daemon runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long without a camera frame before the slate is shown.
    pub stale_after: Duration,
    /// With `audio.source = test`: this many test tones mixed through `audiomixer`
    /// (exercises the two-device path without ALSA hardware). 0 or 1: one tone.
    pub test_tones: usize,
    /// After the audio sources failed: how long silence is sent before they are
    /// tried again (doubling after each failed try, up to 10 minutes).
    pub audio_retry: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            stale_after: Duration::from_millis(100),
            test_tones: 1,
            audio_retry: Duration::from_secs(30),
        }
    }
}

/// Counters of one [`GstSource`] (see [`MediaProbe::stats`]).
#[derive(Debug, Clone, Default, Serialize)]
pub struct MediaStats {
    /// Camera frames handed to the encoder.
    pub camera_frames: u64,
    /// "NO SIGNAL" frames handed to the encoder.
    pub slate_frames: u64,
    /// The camera is delivering frames now.
    pub camera_up: bool,
    /// Times the camera was opened successfully (first frame seen).
    pub camera_opens: u64,
    /// Times the camera was lost or failed to open.
    pub camera_failures: u64,
    /// Video encoder bitrate in force, bit/s.
    pub video_bps: u64,
    /// Ladder rung in force.
    pub rung: usize,
    /// Force-key-unit events sent to the encoder.
    pub keyframes_forced: u64,
    /// Times the encode pipeline was rebuilt after an error.
    pub encoder_restarts: u64,
    /// The audio sources failed; silence is sent until they are tried again.
    pub audio_silenced: bool,
    /// TS bytes handed to `out`.
    pub ts_bytes: u64,
    /// TS groups dropped because `out` was full.
    pub groups_dropped: u64,
    /// Pipeline errors (each is logged).
    pub errors: u64,
    /// The last pipeline error.
    pub last_error: Option<String>,
}

#[derive(Default)]
struct Counters {
    camera_frames: AtomicU64,
    slate_frames: AtomicU64,
    camera_up: AtomicBool,
    camera_opens: AtomicU64,
    camera_failures: AtomicU64,
    video_bps: AtomicU64,
    rung: AtomicU64,
    keyframes_forced: AtomicU64,
    encoder_restarts: AtomicU64,
    audio_silenced: AtomicBool,
    ts_bytes: AtomicU64,
    groups_dropped: AtomicU64,
    errors: AtomicU64,
}

/// State shared between the source, its media thread, callbacks and probes.
#[derive(Default)]
struct Shared {
    n: Counters,
    last_error: Mutex<Option<String>>,
    /// Test hook: the camera is unplugged (opening it fails).
    unplugged: AtomicBool,
    /// An element of the capture pipeline in use, to post an injected error from.
    capture_element: Mutex<Option<gst::Element>>,
    /// The video encoder in use (the same, for the encode pipeline).
    encode_element: Mutex<Option<gst::Element>>,
    /// The first audio source in use (the same, for the audio chain).
    audio_element: Mutex<Option<gst::Element>>,
    /// Factory names of the encode pipeline's elements.
    elements: Mutex<Vec<String>>,
    /// (when, bytes) of every buffer the video encoder put out, while recording
    /// ([`MediaProbe::record_encoder_output`]).
    encoder_out: Mutex<Option<Vec<(Instant, usize)>>>,
    /// Set with `encoder_out`: the probe checks this, not the lock, on every frame.
    recording_encoder: AtomicBool,
}

impl Shared {
    fn error(&self, what: String) {
        tracing::error!("media: {what}");
        self.n.errors.fetch_add(1, Relaxed);
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(what);
        }
    }
}

/// Observes a [`GstSource`] (and, for tests, breaks its camera, encoder or audio
/// source). Cheap to clone; stays valid after the source is spawned.
#[derive(Clone)]
pub struct MediaProbe(Arc<Shared>);

impl MediaProbe {
    pub fn stats(&self) -> MediaStats {
        let n = &self.0.n;
        MediaStats {
            camera_frames: n.camera_frames.load(Relaxed),
            slate_frames: n.slate_frames.load(Relaxed),
            camera_up: n.camera_up.load(Relaxed),
            camera_opens: n.camera_opens.load(Relaxed),
            camera_failures: n.camera_failures.load(Relaxed),
            video_bps: n.video_bps.load(Relaxed),
            rung: n.rung.load(Relaxed) as usize,
            keyframes_forced: n.keyframes_forced.load(Relaxed),
            encoder_restarts: n.encoder_restarts.load(Relaxed),
            audio_silenced: n.audio_silenced.load(Relaxed),
            ts_bytes: n.ts_bytes.load(Relaxed),
            groups_dropped: n.groups_dropped.load(Relaxed),
            errors: n.errors.load(Relaxed),
            last_error: self.0.last_error.lock().ok().and_then(|e| e.clone()),
        }
    }

    /// Factory names of the encode pipeline's elements (e.g. to check the audio chain).
    pub fn elements(&self) -> Vec<String> {
        self.0
            .elements
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default()
    }

    /// From now on, note when the video encoder puts out each buffer and its size
    /// (the encoder's own output rate, before the mux adds audio and waits for it).
    pub fn record_encoder_output(&self) {
        if let Ok(mut r) = self.0.encoder_out.lock() {
            r.get_or_insert_with(Vec::new);
        }
        self.0.recording_encoder.store(true, Relaxed);
    }

    /// What [`MediaProbe::record_encoder_output`] noted so far: (when, bytes).
    pub fn encoder_output(&self) -> Vec<(Instant, usize)> {
        self.0
            .encoder_out
            .lock()
            .ok()
            .and_then(|r| r.clone())
            .unwrap_or_default()
    }

    /// Simulates pulling the camera's cable: the capture pipeline gets the read error
    /// `v4l2src` posts, and reopening fails until [`MediaProbe::replug_camera`].
    pub fn unplug_camera(&self) {
        self.0.unplugged.store(true, Relaxed);
        let element = self.0.capture_element.lock().ok().and_then(|e| e.clone());
        if let Some(e) = element {
            gst::element_error!(
                e,
                gst::ResourceError::Read,
                ["camera unplugged (simulated)"]
            );
        }
    }

    /// Simulates an encoder failure: the encode pipeline gets an error (as a hardware
    /// encoder that lost its device would post) and is rebuilt.
    pub fn break_encoder(&self) {
        let element = self.0.encode_element.lock().ok().and_then(|e| e.clone());
        if let Some(e) = element {
            gst::element_error!(e, gst::StreamError::Encode, ["encoder failed (simulated)"]);
        }
    }

    /// Simulates a microphone unplugged: the first audio source posts the read error
    /// `alsasrc` would.
    pub fn break_audio(&self) {
        let element = self.0.audio_element.lock().ok().and_then(|e| e.clone());
        if let Some(e) = element {
            gst::element_error!(
                e,
                gst::ResourceError::Read,
                ["audio device gone (simulated)"]
            );
        }
    }

    /// The camera is back: the next retry opens it.
    pub fn replug_camera(&self) {
        self.0.unplugged.store(false, Relaxed);
    }
}

/// Maps GStreamer system-clock times to `Instant`s (both monotonic).
#[derive(Debug, Clone, Copy)]
struct ClockAnchor {
    instant: Instant,
    clock: gst::ClockTime,
}

impl ClockAnchor {
    fn now(clock: &gst::Clock) -> Self {
        ClockAnchor {
            instant: Instant::now(),
            clock: clock.time(),
        }
    }

    fn instant(&self, t: gst::ClockTime) -> Instant {
        if t >= self.clock {
            self.instant + Duration::from_nanos((t - self.clock).nseconds())
        } else {
            self.instant
                .checked_sub(Duration::from_nanos((self.clock - t).nseconds()))
                .unwrap_or(self.instant)
        }
    }
}

/// Clock time (base time + running time) of a sample's buffer.
fn sample_clock_time(sink: &AppSink, sample: &gst::Sample) -> Option<gst::ClockTime> {
    let pts = sample.buffer()?.pts()?;
    let running = sample
        .segment()
        .and_then(|s| s.downcast_ref::<gst::ClockTime>())
        .and_then(|s| s.to_running_time(pts))
        .unwrap_or(pts);
    Some(sink.base_time()? + running)
}

/// Hands raw frames (camera or slate) to the encode pipeline's appsrc with
/// increasing PTS.
struct Feeder {
    appsrc: AppSrc,
    frame: gst::ClockTime,
    last_pts: Option<gst::ClockTime>,
    last_push: Option<Instant>,
    last_camera: Option<Instant>,
}

impl Feeder {
    fn push(&mut self, mut buf: gst::Buffer, clock_time: gst::ClockTime, now: Instant) {
        let Some(base) = self.appsrc.base_time() else {
            return;
        };
        let mut pts = clock_time.saturating_sub(base);
        if let Some(last) = self.last_pts {
            // A camera frame right after a slate frame may be stamped earlier.
            pts = pts.max(last + gst::ClockTime::from_mseconds(1));
        }
        {
            let b = buf.make_mut();
            b.set_pts(pts);
            b.set_dts(gst::ClockTime::NONE);
            b.set_duration(self.frame);
        }
        self.last_pts = Some(pts);
        self.last_push = Some(now);
        // Fails only while flushing or shutting down.
        let _ = self.appsrc.push_buffer(buf);
    }

    fn camera_stale(&self, now: Instant, after: Duration) -> bool {
        self.last_camera
            .is_none_or(|t| now.saturating_duration_since(t) >= after)
    }
}

/// The encode pipeline and the elements the media thread turns.
struct Encode {
    pipeline: gst::Pipeline,
    appsrc: AppSrc,
    rung_caps: gst::Element,
    encoder: gst::Element,
    appsink: AppSink,
}

/// Live encoder of a camera or test pattern plus sound (see the module docs).
pub struct GstSource {
    video: VideoConfig,
    audio: AudioConfig,
    quirks: &'static EncoderQuirks,
    capture: Box<dyn Capture>,
    opts: Options,
    shared: Arc<Shared>,
    encode: Encode,
    slate: gst::Buffer,
    gop: u32,
}

fn raw_caps(size: PictureSize, fps: Option<u32>) -> String {
    let mut s = format!(
        "video/x-raw,format=I420,width={},height={},pixel-aspect-ratio=1/1",
        size.width, size.height
    );
    if let Some(fps) = fps {
        s.push_str(&format!(",framerate={fps}/1"));
    }
    s
}

fn rung_caps(size: PictureSize) -> Result<gst::Caps, MediaError> {
    format!(
        "video/x-raw,width={},height={},pixel-aspect-ratio=1/1",
        size.width, size.height
    )
    .parse()
    .map_err(|e: gst::glib::BoolError| MediaError::Gst(e.to_string()))
}

impl GstSource {
    /// Builds the encode pipeline (not yet playing) with the encoder `video.encoder`
    /// picks; errors if an element is missing.
    pub fn new(
        video: &VideoConfig,
        audio: &AudioConfig,
        capture: Box<dyn Capture>,
        opts: Options,
    ) -> Result<GstSource, MediaError> {
        super::init()?;
        // The config parser guarantees these; a hand-built config might not.
        if video.fps == 0 || video.ladder.is_empty() {
            return Err(MediaError::Gst(
                "video: fps must be at least 1 and the ladder not empty".into(),
            ));
        }
        if audio.enabled && audio.source == AudioSourceKind::Alsa && audio.devices.is_empty() {
            return Err(MediaError::Gst("audio: no ALSA device given".into()));
        }
        let quirks = encoder::select(&video.encoder, &GstRegistry)?;
        let gop = encoder::gop_frames(video.fps, video.keyframe_interval);
        let shared = Arc::new(Shared::default());
        let encode = build_encode(video, audio, quirks, gop, &opts, false)?;
        if let Ok(mut e) = shared.elements.lock() {
            *e = encode
                .pipeline
                .iterate_recurse()
                .into_iter()
                .filter_map(Result::ok)
                .filter_map(|e| e.factory().map(|f| f.name().to_string()))
                .collect();
        }
        let slate = render_slate(video).unwrap_or_else(|e| {
            // Text needs pango and a font; a black picture still keeps the stream going.
            tracing::warn!("{e}; the slate will be black");
            black_frame(video.size)
        });
        tracing::info!(
            encoder = quirks.factory,
            capture = %capture.describe(),
            "media pipeline built"
        );
        Ok(GstSource {
            video: video.clone(),
            audio: audio.clone(),
            quirks,
            capture,
            opts,
            shared,
            encode,
            slate,
            gop,
        })
    }

    /// The encoder factory in use (e.g. `x264enc`).
    pub fn encoder(&self) -> &'static str {
        self.quirks.factory
    }

    /// Counters and the failure hooks (camera, encoder, audio); valid after `spawn`.
    pub fn probe(&self) -> MediaProbe {
        MediaProbe(self.shared.clone())
    }
}

fn build_encode(
    video: &VideoConfig,
    audio: &AudioConfig,
    q: &EncoderQuirks,
    gop: u32,
    opts: &Options,
    silent_audio: bool,
) -> Result<Encode, MediaError> {
    let pipeline = gst::Pipeline::with_name("braid-encode");
    pipeline.use_clock(Some(&gst::SystemClock::obtain()));
    let frame = gst::ClockTime::from_nseconds(1_000_000_000 / u64::from(video.fps));
    let caps: gst::Caps = raw_caps(video.size, Some(video.fps))
        .parse()
        .map_err(|e: gst::glib::BoolError| MediaError::Gst(e.to_string()))?;
    let appsrc = AppSrc::builder()
        .caps(&caps)
        .format(gst::Format::Time)
        .is_live(true)
        .build();
    // A slow encoder drops the oldest frame instead of building up delay.
    set_str(appsrc.upcast_ref(), "max-buffers", "2");
    set_str(appsrc.upcast_ref(), "leaky-type", "downstream");
    appsrc.set_latency(Some(frame), None);

    let rung = make("capsfilter", &[])?;
    rung.set_property("caps", rung_caps(video.ladder[0])?);
    let enc = make(q.factory, &[])?;
    let start_bps = video.min_bps;
    for (k, v) in q.initial_settings(start_bps, gop) {
        set_str(&enc, k, &v);
    }
    let video_chain = [
        appsrc.clone().upcast(),
        make("videoscale", &[])?,
        rung.clone(),
        make(q.convert, &[])?,
        enc.clone(),
        make("capsfilter", &[("caps", q.output_caps)])?,
        // SPS/PPS before every keyframe, so a receiver can join at any IDR.
        make(q.parser, &[("config-interval", "-1")])?,
    ];
    add_chain(&pipeline, &video_chain)?;

    let mux = make("mpegtsmux", &[("alignment", "7")])?;
    let appsink = AppSink::builder().sync(false).build();
    add_chain(&pipeline, &[mux.clone(), appsink.clone().upcast()])?;
    video_chain[video_chain.len() - 1].link(&mux)?;

    if audio.enabled {
        let last = build_audio(&pipeline, audio, opts, silent_audio)?;
        last.link(&mux)?;
    }
    Ok(Encode {
        pipeline,
        appsrc,
        rung_caps: rung,
        encoder: enc,
        appsink,
    })
}

/// Name prefix of the audio source elements (their errors silence the audio).
const AUDIO_SOURCE_NAME: &str = "braid-audio-src";

/// Adds the audio chain; returns its last element (to link to the mux). `silent`:
/// one silent source instead of the configured ones (after they failed).
fn build_audio(
    pipeline: &gst::Pipeline,
    audio: &AudioConfig,
    opts: &Options,
    silent: bool,
) -> Result<gst::Element, MediaError> {
    let mut sources = Vec::new();
    match audio.source {
        _ if silent => sources.push(make(
            "audiotestsrc",
            &[
                ("is-live", "true"),
                ("samplesperbuffer", AUDIO_SAMPLES_PER_BUFFER),
                ("wave", "silence"),
            ],
        )?),
        AudioSourceKind::Test => {
            for i in 0..opts.test_tones.max(1) {
                let freq = (440 * (i + 1)).to_string();
                sources.push(make(
                    "audiotestsrc",
                    &[
                        ("is-live", "true"),
                        ("samplesperbuffer", AUDIO_SAMPLES_PER_BUFFER),
                        ("freq", &freq),
                        ("volume", "0.3"),
                    ],
                )?);
            }
        }
        AudioSourceKind::Alsa => {
            for dev in &audio.devices {
                sources.push(make(
                    "alsasrc",
                    &[
                        ("device", dev),
                        // 10 ms periods, 40 ms ring buffer: low latency, no clock of its own.
                        ("latency-time", "10000"),
                        ("buffer-time", "40000"),
                        ("provide-clock", "false"),
                    ],
                )?);
            }
        }
    }
    let fixed = "audio/x-raw,rate=48000,channels=2";
    let mut inputs = Vec::new();
    for (i, src) in sources.into_iter().enumerate() {
        src.set_property("name", format!("{AUDIO_SOURCE_NAME}-{i}"));
        let chain = [
            src,
            make("audioconvert", &[])?,
            make("audioresample", &[])?,
            make("capsfilter", &[("caps", fixed)])?,
        ];
        add_chain(pipeline, &chain)?;
        inputs.push(chain[3].clone());
    }
    let mut chain = Vec::new();
    if inputs.len() > 1 {
        // Two hosts' microphones: one mix (aggregator, waits 10 ms for the late one).
        let mixer = make("audiomixer", &[("latency", "10000000")])?;
        pipeline.add(&mixer)?;
        for i in &inputs {
            i.link(&mixer)?;
        }
        chain.push(mixer);
    } else {
        chain.push(inputs[0].clone());
    }
    chain.push(make("audioconvert", &[])?);
    if audio.noise_suppression || audio.gain_control {
        // webrtcdsp wants 48/32/16/8 kHz S16LE interleaved.
        chain.push(make(
            "capsfilter",
            &[(
                "caps",
                "audio/x-raw,format=S16LE,layout=interleaved,rate=48000,channels=2",
            )],
        )?);
        chain.push(make(
            "webrtcdsp",
            &[
                ("echo-cancel", "false"),
                (
                    "noise-suppression",
                    if audio.noise_suppression {
                        "true"
                    } else {
                        "false"
                    },
                ),
                (
                    "gain-control",
                    if audio.gain_control { "true" } else { "false" },
                ),
            ],
        )?);
    }
    if audio.limiter {
        chain.push(make(
            "audiodynamic",
            &[
                ("mode", "compressor"),
                ("characteristics", "hard-knee"),
                ("threshold", LIMITER_THRESHOLD),
                ("ratio", LIMITER_RATIO),
            ],
        )?);
    }
    chain.push(make("audioconvert", &[])?);
    let bps = audio.bitrate_bps.to_string();
    let encoder = match audio.codec {
        AudioCodec::Aac => ["avenc_aac", "voaacenc", "fdkaacenc"]
            .iter()
            .find_map(|f| make(f, &[("bitrate", &bps)]).ok())
            .ok_or_else(|| MediaError::MissingElement("avenc_aac".into()))?,
        AudioCodec::Opus => make("opusenc", &[("bitrate", &bps)])?,
    };
    chain.push(encoder);
    // The mux takes what is there; a stalled encoder must not hold video back.
    chain.push(make(
        "queue",
        &[
            ("max-size-time", "200000000"),
            ("max-size-buffers", "0"),
            ("max-size-bytes", "0"),
            ("leaky", "downstream"),
        ],
    )?);
    // chain[0] is already in the pipeline (mixer or the input's capsfilter).
    pipeline.add_many(&chain[1..])?;
    gst::Element::link_many(&chain)?;
    Ok(chain.last().expect("not empty").clone())
}

/// One "NO SIGNAL" picture at the configured size.
fn render_slate(video: &VideoConfig) -> Result<gst::Buffer, MediaError> {
    let pipeline = gst::Pipeline::with_name("braid-slate");
    let sink = AppSink::builder().sync(false).build();
    let chain = [
        make(
            "videotestsrc",
            &[("num-buffers", "1"), ("pattern", "black")],
        )?,
        make("capsfilter", &[("caps", &raw_caps(video.size, Some(30)))])?,
        make(
            "textoverlay",
            &[
                ("text", "NO SIGNAL"),
                ("font-desc", "Sans Bold 48"),
                ("valignment", "center"),
                ("halignment", "center"),
            ],
        )?,
        sink.clone().upcast(),
    ];
    add_chain(&pipeline, &chain)?;
    pipeline.set_state(gst::State::Playing)?;
    let sample = sink.try_pull_sample(gst::ClockTime::from_seconds(5));
    let _ = pipeline.set_state(gst::State::Null);
    sample
        .and_then(|s| s.buffer_owned())
        .ok_or_else(|| MediaError::Gst("could not render the NO SIGNAL slate".into()))
}

/// A black I420 picture (Y 16, U and V 128) without GStreamer's help, laid out as
/// GStreamer lays out I420: rows padded to 4 bytes, chroma at half size rounded up.
fn black_frame(size: PictureSize) -> gst::Buffer {
    let pad4 = |n: usize| (n + 3) & !3;
    let (w, h) = (size.width as usize, size.height as usize);
    let luma = pad4(w) * h;
    let chroma = pad4(w.div_ceil(2)) * h.div_ceil(2);
    let mut data = vec![16u8; luma];
    data.resize(luma + 2 * chroma, 128);
    gst::Buffer::from_mut_slice(data)
}

enum Event {
    Control(MediaControl),
    Stop,
    EncodeBus(u64, gst::Message),
    CaptureBus(u64, gst::Message),
}

enum Camera {
    /// Waiting for the first frame of variant `variant`, opened at `since`.
    Opening {
        variant: usize,
        since: Instant,
        frames_at_open: u64,
    },
    Up {
        since: Instant,
    },
    Down {
        retry_at: Instant,
    },
}

/// Owns the pipelines on the media thread.
struct Runner {
    src: GstSource,
    feeder: Arc<Mutex<Feeder>>,
    events: std_mpsc::Sender<Event>,
    out: mpsc::Sender<(Instant, Vec<u8>)>,
    clock: gst::Clock,
    anchor: ClockAnchor,
    camera: Camera,
    capture: Option<gst::Pipeline>,
    /// Capture pipelines built so far; bus messages of older ones are ignored.
    generation: u64,
    backoff: Duration,
    /// Encode pipelines built so far (the same for the encode bus).
    encode_generation: u64,
    /// When to rebuild a failed encode pipeline.
    encode_retry: Option<Instant>,
    encode_backoff: Duration,
    control: Option<MediaControl>,
    applied_bps: u64,
    /// When the encoder's rate buffer, shrunk after a large cut, goes back to normal.
    rate_buffer_restore: Option<Instant>,
    /// A keyframe was asked for and not forced yet.
    keyframe_wanted: bool,
    last_forced: Option<Instant>,
    /// When the encode pipeline last started (a long run resets its backoff).
    encode_started: Instant,
    /// The audio sources failed: the encode pipeline has a silent one instead
    /// until `audio_retry_at`.
    audio_silent: bool,
    audio_retry_at: Option<Instant>,
    audio_backoff: Duration,
}

impl MediaSource for GstSource {
    fn adapts(&self) -> bool {
        true
    }

    fn controller_config(&self) -> crate::core::bitrate::ControllerConfig {
        super::controller_config(&self.video, &self.audio)
    }

    fn spawn(
        self: Box<Self>,
        out: mpsc::Sender<(Instant, Vec<u8>)>,
        mut control: watch::Receiver<MediaControl>,
        mut shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let (tx, rx) = std_mpsc::channel();
        let _ = tx.send(Event::Control(control.borrow_and_update().clone()));
        let events = tx.clone();
        let shared = self.shared.clone();
        let thread = std::thread::Builder::new()
            .name("braid-media".into())
            .spawn(move || match Runner::start(*self, out, events) {
                Ok(mut r) => r.run(rx),
                Err(e) => shared.error(format!("cannot start: {e}")),
            });
        tokio::spawn(async move {
            let mut control_open = true;
            loop {
                tokio::select! {
                    biased;
                    _ = shutdown.changed() => break,
                    r = control.changed(), if control_open => {
                        if r.is_err() {
                            control_open = false;
                            continue;
                        }
                        let c = control.borrow_and_update().clone();
                        if tx.send(Event::Control(c)).is_err() {
                            // The media thread has ended (logged there); wait for shutdown.
                            control_open = false;
                        }
                    }
                }
            }
            let _ = tx.send(Event::Stop);
            if let Ok(t) = thread {
                let _ = tokio::task::spawn_blocking(move || t.join()).await;
            }
        })
    }
}

impl Runner {
    fn start(
        src: GstSource,
        out: mpsc::Sender<(Instant, Vec<u8>)>,
        events: std_mpsc::Sender<Event>,
    ) -> Result<Runner, MediaError> {
        let clock = gst::SystemClock::obtain();
        let anchor = ClockAnchor::now(&clock);
        let frame = gst::ClockTime::from_nseconds(1_000_000_000 / u64::from(src.video.fps));
        let feeder = Arc::new(Mutex::new(Feeder {
            appsrc: src.encode.appsrc.clone(),
            frame,
            last_pts: None,
            last_push: None,
            last_camera: None,
        }));
        let now = Instant::now();
        let src_audio_retry = src.opts.audio_retry;
        let mut r = Runner {
            src,
            feeder,
            events,
            out,
            clock,
            anchor,
            camera: Camera::Down { retry_at: now },
            capture: None,
            generation: 0,
            backoff: FIRST_BACKOFF,
            encode_generation: 0,
            encode_retry: None,
            encode_backoff: FIRST_ENCODE_BACKOFF,
            control: None,
            applied_bps: 0,
            rate_buffer_restore: None,
            keyframe_wanted: false,
            last_forced: None,
            encode_started: now,
            audio_silent: false,
            audio_retry_at: None,
            audio_backoff: src_audio_retry,
        };
        r.play_encode()?;
        Ok(r)
    }

    /// Wires the encode pipeline's bus and appsink, points the feeder at its appsrc
    /// and sets it PLAYING.
    fn play_encode(&mut self) -> Result<(), MediaError> {
        self.encode_generation += 1;
        let gen = self.encode_generation;
        let enc = &self.src.encode;
        let tx = self.events.clone();
        enc.pipeline
            .bus()
            .ok_or_else(|| MediaError::Gst("pipeline without a bus".into()))?
            .set_sync_handler(move |_, m| {
                let _ = tx.send(Event::EncodeBus(gen, m.clone()));
                gst::BusSyncReply::Drop
            });
        let shared = self.src.shared.clone();
        let anchor = self.anchor;
        let mut forward = TsForwarder::new(self.out.clone());
        enc.appsink.set_callbacks(
            AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
                    let when = sample_clock_time(sink, &sample)
                        .map_or_else(Instant::now, |t| anchor.instant(t));
                    let Some(buf) = sample.buffer() else {
                        return Ok(gst::FlowSuccess::Ok);
                    };
                    let map = buf.map_readable().map_err(|_| gst::FlowError::Error)?;
                    let (sent, dropped) = forward.forward(map.as_slice(), when);
                    shared.n.ts_bytes.fetch_add(sent, Relaxed);
                    shared.n.groups_dropped.fetch_add(dropped, Relaxed);
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        if let Ok(mut f) = self.feeder.lock() {
            f.appsrc = enc.appsrc.clone();
            f.last_pts = None;
        }
        if let Some(pad) = enc.encoder.static_pad("src") {
            let shared = self.src.shared.clone();
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                if !shared.recording_encoder.load(Relaxed) {
                    return gst::PadProbeReturn::Ok;
                }
                if let (Some(b), Ok(mut rec)) = (info.buffer(), shared.encoder_out.lock()) {
                    if let Some(rec) = rec.as_mut() {
                        rec.push((Instant::now(), b.size()));
                    }
                }
                gst::PadProbeReturn::Ok
            });
        }
        if let Ok(mut e) = self.src.shared.encode_element.lock() {
            *e = Some(enc.encoder.clone());
        }
        if let Ok(mut e) = self.src.shared.audio_element.lock() {
            *e = enc.pipeline.by_name(&format!("{AUDIO_SOURCE_NAME}-0"));
        }
        enc.pipeline.set_state(gst::State::Playing)?;
        self.encode_started = Instant::now();
        // The new pipeline starts at rung 0 with the floor bitrate: re-apply the wishes.
        self.src.shared.n.rung.store(0, Relaxed);
        self.applied_bps = 0;
        if let Some(c) = self.control.clone() {
            self.apply(c);
        } else {
            self.apply_bitrate();
        }
        Ok(())
    }

    /// The encode pipeline failed: it is stopped now and rebuilt after a backoff.
    fn encode_failed(&mut self, why: String, now: Instant) {
        self.src.shared.error(why);
        self.stop_encode(now);
    }

    /// Stops the encode pipeline and schedules its rebuild.
    fn stop_encode(&mut self, now: Instant) {
        if self.encode_retry.is_some() {
            return;
        }
        if now.saturating_duration_since(self.encode_started) > PROVEN_GOOD {
            self.encode_backoff = FIRST_ENCODE_BACKOFF;
        }
        let _ = self.src.encode.pipeline.set_state(gst::State::Null);
        tracing::warn!(
            retry_in_ms = self.encode_backoff.as_millis() as u64,
            "encode pipeline stopped; rebuilding"
        );
        self.encode_retry = Some(now + self.encode_backoff);
        self.encode_backoff = (self.encode_backoff * 2).min(MAX_BACKOFF);
    }

    fn rebuild_encode(&mut self, now: Instant) {
        self.encode_retry = None;
        let s = &self.src;
        let rebuilt = build_encode(
            &s.video,
            &s.audio,
            s.quirks,
            s.gop,
            &s.opts,
            self.audio_silent,
        );
        match rebuilt {
            Ok(encode) => {
                self.src.encode = encode;
                match self.play_encode() {
                    Ok(()) => {
                        self.src.shared.n.encoder_restarts.fetch_add(1, Relaxed);
                        tracing::info!("encode pipeline rebuilt");
                    }
                    Err(e) => self.encode_failed(format!("rebuild: {e}"), now),
                }
            }
            Err(e) => self.encode_failed(format!("rebuild: {e}"), now),
        }
    }

    fn frame_interval(&self) -> Duration {
        Duration::from_nanos(1_000_000_000 / u64::from(self.src.video.fps))
    }

    fn run(&mut self, rx: std_mpsc::Receiver<Event>) {
        let tick = self.frame_interval();
        let mut next = Instant::now();
        loop {
            let wait = next.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(Event::Stop) | Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
                Ok(Event::Control(c)) => self.apply(c),
                Ok(Event::EncodeBus(gen, m)) => self.on_encode_bus(gen, &m),
                Ok(Event::CaptureBus(gen, m)) => self.on_capture_bus(gen, &m),
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
            }
            let now = Instant::now();
            if now >= next {
                self.tick(now);
                next += tick;
                if next < now {
                    next = now + tick;
                }
            }
        }
        self.close_capture();
        let _ = self.src.encode.pipeline.set_state(gst::State::Null);
    }

    /// Every frame interval: slate if the camera is silent, camera state machine.
    fn tick(&mut self, now: Instant) {
        if self.encode_retry.is_some_and(|t| now >= t) {
            self.rebuild_encode(now);
        }
        self.maybe_force_keyframe(now);
        if self.rate_buffer_restore.is_some_and(|t| now >= t) {
            self.rate_buffer_restore = None;
            if let Some(rb) = self.src.quirks.rate_buffer {
                set_str(&self.src.encode.encoder, rb.prop, rb.normal);
            }
        }
        if self.audio_retry_at.is_some_and(|t| now >= t) {
            tracing::info!("trying the audio source again");
            self.audio_retry_at = None;
            self.audio_silent = false;
            self.src.shared.n.audio_silenced.store(false, Relaxed);
            self.stop_encode(now);
        }
        let frame = self.frame_interval();
        // At a low frame rate the gap between two camera frames is not a loss.
        let stale_after = self.src.opts.stale_after.max(frame * 5 / 2);
        if let Ok(mut f) = self.feeder.lock() {
            let due = f
                .last_push
                .is_none_or(|t| now.saturating_duration_since(t) + frame / 4 >= frame);
            if f.camera_stale(now, stale_after) && due {
                let t = self.clock.time();
                f.push(self.src.slate.copy(), t, now);
                self.src.shared.n.slate_frames.fetch_add(1, Relaxed);
            }
        }
        let frames = self.src.shared.n.camera_frames.load(Relaxed);
        match self.camera {
            Camera::Down { retry_at } if now >= retry_at => self.open_capture(0, now),
            Camera::Down { .. } => {}
            Camera::Opening {
                variant,
                since,
                frames_at_open,
            } => {
                if frames > frames_at_open {
                    tracing::info!(capture = %self.src.capture.describe(), "camera up");
                    self.camera = Camera::Up { since: now };
                    self.src.shared.n.camera_up.store(true, Relaxed);
                    self.src.shared.n.camera_opens.fetch_add(1, Relaxed);
                    self.apply_bitrate();
                } else if now.saturating_duration_since(since) > OPEN_TIMEOUT {
                    self.next_variant(variant, "no frame".into(), now);
                }
            }
            Camera::Up { .. } => {
                let silent = self
                    .feeder
                    .lock()
                    .is_ok_and(|f| f.camera_stale(now, STALL_TIMEOUT));
                if silent {
                    self.capture_lost("camera stalled (no frames)".into(), now);
                }
            }
        }
    }

    fn open_capture(&mut self, variant: usize, now: Instant) {
        self.close_capture();
        self.generation += 1;
        let frames_at_open = self.src.shared.n.camera_frames.load(Relaxed);
        match self.build_capture(variant) {
            Ok(p) => {
                self.capture = Some(p);
                self.camera = Camera::Opening {
                    variant,
                    since: now,
                    frames_at_open,
                };
            }
            Err(e) => self.next_variant(variant, e.to_string(), now),
        }
    }

    fn build_capture(&mut self, variant: usize) -> Result<gst::Pipeline, MediaError> {
        if self.src.shared.unplugged.load(Relaxed) {
            return Err(MediaError::Capture("camera unplugged (simulated)".into()));
        }
        let p = gst::Pipeline::with_name(&format!("braid-capture-{}", self.generation));
        p.use_clock(Some(&self.clock));
        // A capture implementation that panics is a failed camera, not a dead stream.
        let capture = &self.src.capture;
        let last = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            capture.add_source(&p, variant)
        }))
        .map_err(|_| MediaError::Capture(format!("{} panicked", capture.describe())))??;
        let sink = AppSink::builder()
            .sync(false)
            .max_buffers(1)
            .drop(true)
            .build();
        let chain = [
            make("videoconvert", &[])?,
            make("videoscale", &[])?,
            make(
                "capsfilter",
                &[("caps", &raw_caps(self.src.video.size, None))],
            )?,
            sink.clone().upcast(),
        ];
        add_chain(&p, &chain)?;
        last.link(&chain[0])?;
        let feeder = self.feeder.clone();
        let shared = self.src.shared.clone();
        sink.set_callbacks(
            AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
                    let Some(t) = sample_clock_time(sink, &sample) else {
                        return Ok(gst::FlowSuccess::Ok);
                    };
                    let Some(buf) = sample.buffer_owned() else {
                        return Ok(gst::FlowSuccess::Ok);
                    };
                    drop(sample);
                    let now = Instant::now();
                    if let Ok(mut f) = feeder.lock() {
                        f.last_camera = Some(now);
                        f.push(buf, t, now);
                    }
                    shared.n.camera_frames.fetch_add(1, Relaxed);
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        let gen = self.generation;
        let tx = self.events.clone();
        p.bus()
            .ok_or_else(|| MediaError::Gst("pipeline without a bus".into()))?
            .set_sync_handler(move |_, m| {
                let _ = tx.send(Event::CaptureBus(gen, m.clone()));
                gst::BusSyncReply::Drop
            });
        if let Ok(mut e) = self.src.shared.capture_element.lock() {
            *e = Some(last);
        }
        if let Err(e) = p.set_state(gst::State::Playing) {
            let _ = p.set_state(gst::State::Null);
            return Err(e.into());
        }
        Ok(p)
    }

    fn close_capture(&mut self) {
        if let Ok(mut e) = self.src.shared.capture_element.lock() {
            *e = None;
        }
        if let Some(p) = self.capture.take() {
            let _ = p.set_state(gst::State::Null);
        }
    }

    /// Opening with `variant` failed: try the next way of opening, or give up for now.
    fn next_variant(&mut self, variant: usize, why: String, now: Instant) {
        if variant + 1 < self.src.capture.variants() && !self.src.shared.unplugged.load(Relaxed) {
            tracing::debug!("capture variant {variant} failed ({why}), trying the next");
            self.open_capture(variant + 1, now);
        } else {
            self.capture_lost(why, now);
        }
    }

    fn capture_lost(&mut self, why: String, now: Instant) {
        if let Camera::Up { since } = self.camera {
            if now.saturating_duration_since(since) > PROVEN_GOOD {
                self.backoff = FIRST_BACKOFF;
            }
        }
        tracing::warn!(
            capture = %self.src.capture.describe(),
            retry_in_ms = self.backoff.as_millis() as u64,
            "camera lost: {why}"
        );
        self.close_capture();
        self.src.shared.n.camera_up.store(false, Relaxed);
        self.src.shared.n.camera_failures.fetch_add(1, Relaxed);
        self.camera = Camera::Down {
            retry_at: now + self.backoff,
        };
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        self.apply_bitrate();
    }

    fn on_capture_bus(&mut self, gen: u64, m: &gst::Message) {
        if gen != self.generation {
            return;
        }
        use gst::MessageView;
        let why = match m.view() {
            MessageView::Error(e) => format!("{} ({:?})", e.error(), e.debug()),
            MessageView::Eos(_) => "end of stream".to_string(),
            _ => return,
        };
        let now = Instant::now();
        match self.camera {
            Camera::Opening { variant, .. } => self.next_variant(variant, why, now),
            _ => self.capture_lost(why, now),
        }
    }

    fn on_encode_bus(&mut self, gen: u64, m: &gst::Message) {
        if gen != self.encode_generation {
            return;
        }
        use gst::MessageView;
        match m.view() {
            MessageView::Error(e) => {
                let from = m.src().map(|s| s.name().to_string()).unwrap_or_default();
                let why = format!("{from}: {} ({:?})", e.error(), e.debug());
                let now = Instant::now();
                if from.starts_with(AUDIO_SOURCE_NAME) && !self.audio_silent {
                    // A microphone gone must not take the picture with it: silence
                    // until the device is tried again.
                    tracing::warn!(
                        retry_in_s = self.audio_backoff.as_secs(),
                        "audio source failed; sending silence"
                    );
                    self.audio_silent = true;
                    self.src.shared.n.audio_silenced.store(true, Relaxed);
                    self.audio_retry_at = Some(now + self.audio_backoff);
                    self.audio_backoff = (self.audio_backoff * 2).min(MAX_AUDIO_BACKOFF);
                }
                self.encode_failed(why, now);
            }
            MessageView::Eos(_) => self.encode_failed("end of stream".into(), Instant::now()),
            MessageView::Warning(w) => {
                tracing::warn!("media: {} ({:?})", w.error(), w.debug());
            }
            // Latency changes (e.g. a new picture size): redistribute.
            MessageView::Latency(_) => {
                let _ = self.src.encode.pipeline.recalculate_latency();
            }
            _ => {}
        }
    }

    fn apply(&mut self, c: MediaControl) {
        let prev = self.control.replace(c.clone());
        let rung = c.rung.min(self.src.video.ladder.len() - 1);
        // The pipeline starts at rung 0; same caps again would still renegotiate.
        if rung != self.src.shared.n.rung.load(Relaxed) as usize {
            let size = self.src.video.ladder[rung];
            match rung_caps(size) {
                Ok(caps) => {
                    self.src.encode.rung_caps.set_property("caps", caps);
                    self.src.shared.n.rung.store(rung as u64, Relaxed);
                    tracing::info!(rung, %size, "picture size");
                }
                Err(e) => self.src.shared.error(e.to_string()),
            }
        }
        if let Some(p) = &prev {
            if p.keyframe_requests != c.keyframe_requests {
                self.keyframe_wanted = true;
                self.maybe_force_keyframe(Instant::now());
            }
        }
        self.apply_bitrate();
    }

    /// Forces the keyframe asked for, unless one was forced less than
    /// [`MIN_KEYFRAME_GAP`] ago: then the tick forces it when the gap has passed (one
    /// keyframe answers every request made meanwhile).
    fn maybe_force_keyframe(&mut self, now: Instant) {
        let recent = self
            .last_forced
            .is_some_and(|t| now.saturating_duration_since(t) < MIN_KEYFRAME_GAP);
        if self.keyframe_wanted && !recent {
            self.keyframe_wanted = false;
            self.last_forced = Some(now);
            self.force_keyframe();
        }
    }

    fn force_keyframe(&mut self) {
        let s = gst::Structure::builder("GstForceKeyUnit")
            .field("all-headers", true)
            .field("count", 0u32)
            .build();
        let sent = self
            .src
            .encode
            .encoder
            .static_pad("src")
            .is_some_and(|p| p.send_event(gst::event::CustomUpstream::new(s)));
        if sent {
            self.src.shared.n.keyframes_forced.fetch_add(1, Relaxed);
        } else {
            tracing::warn!("encoder refused a force-key-unit event");
        }
    }

    /// The encoder bitrate for the current target, or the floor while the slate shows.
    fn apply_bitrate(&mut self) {
        let camera_up = matches!(self.camera, Camera::Up { .. });
        let bps = match (&self.control, camera_up) {
            (Some(c), true) => video_bitrate(c.target_bps, &self.src.video, &self.src.audio),
            _ => self.src.video.min_bps,
        };
        if bps == self.applied_bps {
            return;
        }
        // A large cut: spend no more of what the rate buffer held at the old rate.
        if let Some(rb) = self.src.quirks.rate_buffer {
            if self.applied_bps > 0 && (bps as f64) < 0.75 * self.applied_bps as f64 {
                set_str(&self.src.encode.encoder, rb.prop, rb.after_cut);
                self.rate_buffer_restore = Some(Instant::now() + super::encoder::RATE_BUFFER_HOLD);
            }
        }
        for (k, v) in self.src.quirks.bitrate_settings(bps, self.src.gop) {
            set_str(&self.src.encode.encoder, k, &v);
        }
        self.applied_bps = bps;
        self.src.shared.n.video_bps.store(bps, Relaxed);
        tracing::debug!(video_bps = bps, "encoder bitrate");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slate_is_a_whole_i420_picture() {
        super::super::init().unwrap();
        let v = VideoConfig {
            size: PictureSize {
                width: 320,
                height: 180,
            },
            ..VideoConfig::default()
        };
        let slate = render_slate(&v).unwrap();
        assert_eq!(slate.size(), 320 * 180 * 3 / 2);
        // Black with white text: mostly Y 16, some bright pixels.
        let map = slate.map_readable().unwrap();
        let luma = &map[..320 * 180];
        let bright = luma.iter().filter(|&&y| y > 200).count();
        assert!(
            bright > 100,
            "no text on the slate ({bright} bright pixels)"
        );
        assert!(luma.iter().filter(|&&y| y == 16).count() > luma.len() / 2);
        let black = black_frame(v.size);
        assert_eq!(black.size(), slate.size());
        // Padded rows, as videotestsrc makes them.
        let odd = PictureSize {
            width: 1366,
            height: 768,
        };
        assert_eq!(black_frame(odd).size(), 1368 * 768 + 2 * 684 * 384);
    }

    #[test]
    fn clock_times_map_to_instants() {
        let anchor = ClockAnchor {
            instant: Instant::now(),
            clock: gst::ClockTime::from_seconds(10),
        };
        let later = anchor.instant(gst::ClockTime::from_mseconds(10_250));
        assert_eq!(later - anchor.instant, Duration::from_millis(250));
        let earlier = anchor.instant(gst::ClockTime::from_mseconds(9_900));
        assert_eq!(anchor.instant - earlier, Duration::from_millis(100));
    }
}
