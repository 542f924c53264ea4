//! SRT and RTMP outputs: GStreamer pipelines fed from an `appsrc`, run by a
//! [`super::worker`] thread (which tears them down and rebuilds them on failure).
//!
//! - SRT: `appsrc (video/mpegts) ! srtsink` in listener or caller mode, with the
//!   passphrase, key length, latency and stream id set as properties (never in
//!   the URI, which GStreamer may log). `auto-reconnect` is off so a failed or
//!   lost caller connection reaches the bus and our backoff handles it.
//! - RTMP: `appsrc ! tsdemux`, whose pads appear when it has read the PMT:
//!   H.264 goes `queue ! h264parse ! flvmux.video`, AAC `queue ! aacparse !
//!   flvmux.audio`; `flvmux streamable=true ! rtmp2sink`. Other streams are left
//!   unlinked (tsdemux carries on while one pad is linked).
//!
//! Both sinks run with `sync=false`: the relay already releases at the stream's
//! pace, so the sinks send as soon as data arrives.

use super::worker::{Chunk, Connection, Connector};
use crate::config::{RtmpOutputConfig, SrtMode, SrtOutputConfig};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use std::time::{Duration, Instant};

/// Bytes and time of media `appsrc` may hold while its sink is stalled; older
/// data is dropped beyond either.
const APPSRC_MAX_BYTES: u64 = 4 * 1024 * 1024;
const APPSRC_MAX_TIME: Duration = Duration::from_millis(500);
/// How long a finishing pipeline may take to push out its EOS.
const EOS_TIMEOUT: Duration = Duration::from_secs(1);

fn init() -> Result<(), String> {
    gst::init().map_err(|e| format!("GStreamer init: {e}"))
}

/// Elements an output kind needs (`srt`, `rtmp`); none for the others.
fn elements_for(kind: &str) -> &'static [&'static str] {
    match kind {
        "srt" => &["appsrc", "srtsink"],
        "rtmp" => &[
            "appsrc",
            "tsdemux",
            "queue",
            "h264parse",
            "aacparse",
            "flvmux",
            "rtmp2sink",
        ],
        _ => &[],
    }
}

/// Initialises GStreamer (scanning its plugin registry, which can take a while
/// on first use) and checks that every element the configured outputs need is
/// installed. Called once when the relay starts, so that sessions opening
/// outputs later find GStreamer ready and do not stall the runtime.
pub fn preflight(kinds: Vec<&str>) -> Result<(), String> {
    let mut needed: Vec<&str> = kinds.into_iter().flat_map(elements_for).copied().collect();
    if needed.is_empty() {
        return Ok(());
    }
    needed.sort_unstable();
    needed.dedup();
    init()?;
    let missing: Vec<&str> = needed
        .into_iter()
        .filter(|f| gst::ElementFactory::find(f).is_none())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "GStreamer elements missing for the configured outputs: {} (srtsink, tsdemux, h264parse, rtmp2sink: gstreamer1.0-plugins-bad; aacparse, flvmux, queue: -good / core)",
            missing.join(", ")
        ))
    }
}

fn make(factory: &str) -> Result<gst::Element, String> {
    gst::ElementFactory::make(factory)
        .build()
        .map_err(|_| format!("GStreamer element {factory} missing (install its plugin)"))
}

/// An `appsrc` for MPEG-TS from the relay.
fn ts_appsrc() -> Result<gst_app::AppSrc, String> {
    let caps = gst::Caps::builder("video/mpegts")
        .field("systemstream", true)
        .field("packetsize", 188i32)
        .build();
    let src = gst_app::AppSrc::builder()
        .caps(&caps)
        .is_live(true)
        .format(gst::Format::Time)
        .do_timestamp(true)
        .max_bytes(APPSRC_MAX_BYTES)
        .block(false)
        .build();
    // While the sink is stalled (an SRT caller handshaking, a slow RTMP server)
    // keep only the newest data, so it resumes close to live.
    src.set_property_from_str("leaky-type", "downstream");
    // (max-time is a GStreamer 1.20 property; the crate exposes it behind a feature.)
    src.set_property(
        "max-time",
        gst::ClockTime::from_mseconds(APPSRC_MAX_TIME.as_millis() as u64),
    );
    Ok(src)
}

/// A running pipeline fed through its `appsrc`. Dropping it stops it.
pub(super) struct GstConn {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    bus: gst::Bus,
    /// Strings scrubbed from error messages (passphrase, RTMP URL and key).
    secrets: Vec<String>,
    /// A sink whose `stats` structure has a byte counter that stays 0 until
    /// its connection is made (SRT caller, RTMP); `None`: up once PLAYING.
    up_probe: Option<(gst::Element, &'static str)>,
}

impl GstConn {
    /// Sets `pipeline` to PLAYING; a failure carries the bus's error message.
    fn start(
        pipeline: gst::Pipeline,
        src: gst_app::AppSrc,
        secrets: Vec<String>,
    ) -> Result<Self, String> {
        let bus = pipeline.bus().ok_or("pipeline without a bus")?;
        let conn = GstConn {
            pipeline,
            src,
            bus,
            secrets,
            up_probe: None,
        };
        if conn.pipeline.set_state(gst::State::Playing).is_err() {
            return Err(conn
                .bus_error(Some(Duration::from_millis(200)))
                .unwrap_or_else(|| "pipeline refused to start".into()));
        }
        // Not waited for: a live pipeline completes PLAYING only when its first
        // buffer reaches the sink. Failures after this point arrive on the bus,
        // which `poll` and `write` read.
        if let Some(e) = conn.bus_error(None) {
            return Err(e);
        }
        Ok(conn)
    }

    /// The first error (or EOS) on the bus, waiting up to `wait`.
    fn bus_error(&self, wait: Option<Duration>) -> Option<String> {
        let types = [gst::MessageType::Error, gst::MessageType::Eos];
        let msg = match wait {
            None => self.bus.pop_filtered(&types),
            Some(w) => self
                .bus
                .timed_pop_filtered(gst::ClockTime::from_mseconds(w.as_millis() as u64), &types),
        }?;
        let text = match msg.view() {
            gst::MessageView::Error(e) => {
                let from = msg.src().map(|s| s.name().to_string()).unwrap_or_default();
                match e.debug() {
                    Some(d) => format!("{from}: {} ({d})", e.error()),
                    None => format!("{from}: {}", e.error()),
                }
            }
            _ => "pipeline reached end of stream".to_string(),
        };
        Some(self.scrub(text))
    }

    fn scrub(&self, mut text: String) -> String {
        for s in &self.secrets {
            if !s.is_empty() {
                text = text.replace(s.as_str(), "***");
            }
        }
        text
    }
}

impl Connection for GstConn {
    fn write(&mut self, chunk: Chunk) -> Result<(), String> {
        let buf = gst::Buffer::from_mut_slice(chunk.data);
        match self.src.push_buffer(buf) {
            Ok(_) => Ok(()),
            Err(flow) => Err(self
                .bus_error(Some(Duration::from_millis(100)))
                .unwrap_or_else(|| format!("appsrc refused data: {flow:?}"))),
        }
    }

    fn poll(&mut self, _now: Instant) -> Result<(), String> {
        match self.bus_error(None) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn is_up(&self) -> bool {
        let Some((sink, field)) = &self.up_probe else {
            return true;
        };
        // A counter we cannot read counts as up (better than reporting a working
        // output as stuck).
        let Some(stats) = sink.property::<Option<gst::Structure>>("stats") else {
            return true;
        };
        let n = stats
            .get::<u64>(*field)
            .ok()
            .or_else(|| stats.get::<i64>(*field).ok().map(|v| v.max(0) as u64))
            .or_else(|| stats.get::<u32>(*field).ok().map(u64::from));
        n.is_none_or(|n| n > 0)
    }

    fn finish(self) {
        let _ = self.src.end_of_stream();
        let _ = self.bus.timed_pop_filtered(
            gst::ClockTime::from_mseconds(EOS_TIMEOUT.as_millis() as u64),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        );
        // Drop sets the pipeline to NULL.
    }
}

impl Drop for GstConn {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Builds `appsrc ! srtsink` pipelines.
pub(super) struct SrtConnector {
    cfg: SrtOutputConfig,
}

impl SrtConnector {
    /// Fails when GStreamer or its SRT plugin is missing (a configuration the
    /// relay cannot serve; retrying would not help).
    pub fn new(cfg: SrtOutputConfig) -> Result<Self, String> {
        init()?;
        make("srtsink")?;
        Ok(Self { cfg })
    }

    /// `srt://HOST:PORT?mode=...` (no secrets in it).
    pub fn uri(&self) -> String {
        format!("srt://{}?mode={}", self.cfg.address, self.cfg.mode.as_str())
    }
}

impl Connector for SrtConnector {
    type Conn = GstConn;

    fn connect(&mut self) -> Result<GstConn, String> {
        let c = &self.cfg;
        let pipeline = gst::Pipeline::new();
        let src = ts_appsrc()?;
        let sink = make("srtsink")?;
        sink.set_property("uri", self.uri());
        sink.set_property_from_str("mode", c.mode.as_str());
        sink.set_property("latency", c.latency.as_millis() as i32);
        sink.set_property("auto-reconnect", false);
        sink.set_property("sync", false);
        // A listener without a caller drops data instead of stalling the pipeline.
        sink.set_property("wait-for-connection", false);
        if let Some(p) = &c.passphrase {
            sink.set_property("passphrase", p);
            if let Some(k) = c.pbkeylen {
                sink.set_property_from_str("pbkeylen", &k.to_string());
            }
        }
        if let Some(s) = &c.streamid {
            sink.set_property("streamid", s);
        }
        if c.mode == SrtMode::Caller {
            // Do not hold the caller's connection up in PAUSED waiting for preroll.
            sink.set_property("async", false);
        }
        pipeline
            .add_many([src.upcast_ref(), &sink])
            .map_err(|e| e.to_string())?;
        src.link(&sink).map_err(|e| e.to_string())?;
        let secrets = c.passphrase.iter().cloned().collect();
        let mut conn = GstConn::start(pipeline, src, secrets)?;
        if c.mode == SrtMode::Caller {
            // 0 until the handshake completed and data went out.
            conn.up_probe = Some((sink, "bytes-sent-total"));
        }
        Ok(conn)
    }
}

/// Builds `appsrc ! tsdemux ... flvmux ! rtmp2sink` pipelines.
pub(super) struct RtmpConnector {
    cfg: RtmpOutputConfig,
}

impl RtmpConnector {
    pub fn new(cfg: RtmpOutputConfig) -> Result<Self, String> {
        init()?;
        for f in ["tsdemux", "h264parse", "aacparse", "flvmux", "rtmp2sink"] {
            make(f)?;
        }
        Ok(Self { cfg })
    }

    /// The URL and its stream key (last path segment), for scrubbing messages.
    fn secrets(&self) -> Vec<String> {
        let url = self.cfg.url.clone();
        let key = url
            .split('?')
            .next()
            .and_then(|p| p.rsplit('/').next())
            .unwrap_or("")
            .to_string();
        let mut v = vec![url];
        if key.len() >= 3 {
            v.push(key);
        }
        v
    }
}

/// Links a new `tsdemux` pad into `mux` through `queue ! parser`, if it is
/// H.264 or AAC and that kind is not linked yet.
fn link_demux_pad(pipeline: &gst::Pipeline, mux: &gst::Element, pad: &gst::Pad) {
    let Some(caps) = pad.current_caps().or_else(|| Some(pad.query_caps(None))) else {
        return;
    };
    let Some(st) = caps.structure(0) else { return };
    let (parser, mux_pad) = match st.name().as_str() {
        "video/x-h264" => ("h264parse", "video"),
        "audio/mpeg" if st.get::<i32>("mpegversion").is_ok_and(|v| v == 2 || v == 4) => {
            ("aacparse", "audio")
        }
        other => {
            tracing::debug!(caps = other, "RTMP output: ignoring TS stream");
            return;
        }
    };
    if mux.static_pad(mux_pad).is_some() || mux.pads().iter().any(|p| p.name() == mux_pad) {
        return; // one stream of each kind
    }
    let link = || -> Result<(), String> {
        let queue = make("queue")?;
        let parse = make(parser)?;
        pipeline
            .add_many([&queue, &parse])
            .map_err(|e| e.to_string())?;
        queue.link(&parse).map_err(|e| e.to_string())?;
        let sinkpad = mux
            .request_pad_simple(mux_pad)
            .ok_or_else(|| format!("flvmux has no {mux_pad} pad"))?;
        parse
            .static_pad("src")
            .ok_or("parser without src pad")?
            .link(&sinkpad)
            .map_err(|e| format!("{e:?}"))?;
        queue.sync_state_with_parent().map_err(|e| e.to_string())?;
        parse.sync_state_with_parent().map_err(|e| e.to_string())?;
        pad.link(&queue.static_pad("sink").ok_or("queue without sink pad")?)
            .map_err(|e| format!("{e:?}"))?;
        Ok(())
    };
    if let Err(e) = link() {
        tracing::warn!(error = %e, "RTMP output: cannot link {mux_pad} stream");
    }
}

impl Connector for RtmpConnector {
    type Conn = GstConn;

    fn connect(&mut self) -> Result<GstConn, String> {
        let pipeline = gst::Pipeline::new();
        let src = ts_appsrc()?;
        let demux = make("tsdemux")?;
        let mux = make("flvmux")?;
        mux.set_property("streamable", true);
        let sink = make("rtmp2sink")?;
        sink.set_property("location", &self.cfg.url);
        sink.set_property("sync", false);
        pipeline
            .add_many([src.upcast_ref(), &demux, &mux, &sink])
            .map_err(|e| e.to_string())?;
        src.link(&demux).map_err(|e| e.to_string())?;
        mux.link(&sink).map_err(|e| e.to_string())?;
        let weak = pipeline.downgrade();
        let mux_weak = mux.downgrade();
        demux.connect_pad_added(move |_, pad| {
            if let (Some(p), Some(m)) = (weak.upgrade(), mux_weak.upgrade()) {
                link_demux_pad(&p, &m, pad);
            }
        });
        let mut conn = GstConn::start(pipeline, src, self.secrets())?;
        // 0 until the server has answered the connection.
        conn.up_probe = Some((sink, "in-bytes-total"));
        Ok(conn)
    }
}
