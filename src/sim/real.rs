//! `braid sim` in real time: the real relay, the real edge (test source) and the
//! userspace emulator in this process, over QUIC on loopback. Links are told apart
//! by source address 127.0.0.11, .12, ... . Takes as long as the scenario.

use super::emulator::{EmuLink, Emulator, EmulatorConfig};
use super::scenario::{FailoverEvent, LatencySummary, LinkReport, Scenario, SimReport};
use crate::config;
use crate::core::wire::TS_PACKET;
use crate::edge::{self, EdgeOptions, MediaSource, TestSource};
use crate::relay::{self, RelayOptions};
use crate::transport::tls;
use anyhow::{Context, Result};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// What feeds the edge in a real-time run.
#[derive(Debug, Clone, Default)]
pub enum SimSource {
    /// The scenario's constant `input_bps` of the built-in test stream.
    #[default]
    Test,
    /// The test pattern through the real GStreamer encoder, under the bitrate
    /// controller.
    Encoder {
        video: config::VideoConfig,
        audio: config::AudioConfig,
        pattern: config::TestPattern,
    },
}

/// What a real-time run observed beyond the transport report.
#[derive(Debug, Clone)]
pub struct RealRun {
    pub report: SimReport,
    /// When the emulator's traces started (trace time zero).
    pub t0: Instant,
    /// (time since t0, TS bytes) of everything the source produced.
    pub produced: Vec<(Duration, usize)>,
    /// The same cut per video frame ([`crate::core::ts::FrameSlicer`]).
    pub video_frames: Vec<(Duration, usize)>,
    /// (time since t0, bytes) of each buffer the video encoder put out, before the
    /// mux (encoder source only).
    pub encoder_frames: Vec<(Duration, usize)>,
    /// The video encoder's share of a stream at the capacity after the scenario's
    /// capacity step (the rest is audio and mux overhead); 1 when not known.
    pub encoder_share: f64,
    /// Frame rate of the encoder source (0 for the test source).
    pub fps: f64,
    /// (time since t0, target bit/s) at every change the source was told of.
    pub targets: Vec<(Duration, u64)>,
    /// (time since t0, controller stats) sampled every 100 ms.
    pub controller: Vec<(Duration, crate::core::bitrate::ControllerStats)>,
    /// The relay's capture-to-output and ingest-to-output percentiles at the end.
    pub relay_session: Option<serde_json::Value>,
    /// Media datagrams lost or late, by second of ingest since t0.
    pub missed_per_s: Vec<u32>,
}

/// Run `sc` for real. Returns the same report as the virtual harness.
pub async fn run(sc: &Scenario) -> Result<SimReport> {
    Ok(run_with(sc, SimSource::Test).await?.report)
}

/// Run `sc` for real with any [`SimSource`].
pub async fn run_with(sc: &Scenario, source_kind: SimSource) -> Result<RealRun> {
    let tmp = crate::system::TempDir::new("sim")?;
    let dir = tmp.path().to_path_buf();
    let relay_fp = tls::write_identity(&dir, "relay")?;
    let dev_fp = tls::write_identity(&dir, "device")?;
    let latency_ms = sc.latency.as_millis();
    let relay_toml = format!(
        "[relay]\nlisten = \"127.0.0.1:0\"\ncert = \"relay.crt\"\nkey = \"relay.key\"\nlatency_ms = {latency_ms}\n\
         [stats]\nlisten = \"127.0.0.1:0\"\n\
         [[device]]\nid = \"sim\"\nfingerprint = \"{}\"\n[[device.output]]\nkind = \"udp\"\naddress = \"127.0.0.1:9\"\n",
        tls::format_fingerprint(&dev_fp)
    );
    let rcfg = config::parse_relay(&relay_toml, &dir.join("relay.toml"))?;
    let (tap_tx, mut tap_rx) = mpsc::unbounded_channel();
    let relay = relay::start(
        rcfg,
        RelayOptions {
            release_tap: Some(tap_tx),
        },
    )
    .await
    .context("starting relay")?;

    let emu_links: Vec<EmuLink> = sc
        .links
        .iter()
        .enumerate()
        .map(|(i, l)| EmuLink {
            source_ip: format!("127.0.0.{}", 11 + i).parse().expect("ip"),
            name: l.name.clone(),
            up: l.up.clone(),
            down: l.down.clone(),
        })
        .collect();
    let emu = Emulator::start(
        EmulatorConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            relay: relay.local_addr(),
            links: emu_links,
            pass_unknown: false,
        },
        None,
    )
    .await
    .context("starting emulator")?;
    let t0 = emu.epoch();

    let mut edge_toml = format!(
        "[device]\nid = \"sim\"\ncert = \"device.crt\"\nkey = \"device.key\"\n\
         [relay]\naddress = \"{}\"\nfingerprint = \"{}\"\nlatency_ms = {latency_ms}\n\
         [input]\nkind = \"test\"\nrate_kbps = {}\n[stats]\nenabled = false\n",
        emu.local_addr(),
        tls::format_fingerprint(&relay_fp),
        (sc.input_bps / 1000.0).round() as u64
    );
    for (i, l) in sc.links.iter().enumerate() {
        edge_toml += &format!(
            "[[link]]\nname = \"{}\"\nbind = \"127.0.0.{}\"\n",
            l.name,
            11 + i
        );
    }
    let ecfg = config::parse_edge(&edge_toml, &dir.join("edge.toml"))?;
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    // Media starts once every link has joined: the report measures the bonded
    // transport, not the handshakes (start-up time is reported separately).
    let (go_tx, go_rx) = tokio::sync::watch::channel(false);
    let mut probe = None;
    let mut encoder_share = 1.0;
    let inner: Box<dyn MediaSource> = match &source_kind {
        SimSource::Test => Box::new(TestSource {
            rate_bps: sc.input_bps as u64,
        }),
        SimSource::Encoder {
            video,
            audio,
            pattern,
        } => {
            let after = super::adaptive::capacity_per_second(sc)
                .get(super::scenario::CAPACITY_STEP_AT.as_secs() as usize + 1)
                .copied()
                .unwrap_or(0.0);
            if after > 0.0 {
                encoder_share =
                    crate::media::video_bitrate(after as u64, video, audio) as f64 / after;
            }
            let (src, p) = crate::media::pattern_source_probed(video, audio, *pattern)
                .context("building the encoder pipeline")?;
            probe = Some(p);
            src
        }
    };
    let fps = match &source_kind {
        SimSource::Test => 0.0,
        SimSource::Encoder { video, .. } => f64::from(video.fps),
    };
    let record = Recorded::default();
    let source: Box<dyn MediaSource> = Box::new(GatedSource {
        go: go_rx,
        inner,
        t0,
        record: record.clone(),
    });
    let edge = edge::start_with_source(
        ecfg,
        source,
        EdgeOptions {
            events: Some(ev_tx),
            ..Default::default()
        },
    )
    .await
    .context("starting edge")?;
    let edge_epoch = edge.epoch();
    let wait_start = Instant::now();
    while !edge.stats().links.iter().all(|l| l.connected)
        && wait_start.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = go_tx.send(true);
    if let Some(p) = &probe {
        p.record_encoder_output();
    }
    let media_start = Instant::now();
    // Media starts with the edge; wait for the scenario to elapse (sampling the
    // controller), then for the last packets to be released.
    let mut shares_before_cut = Vec::new();
    let cut_at = sc.first_cut().filter(|c| *c < sc.duration).map(|c| t0 + c);
    let end = media_start + sc.duration;
    let mut controller = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        let now = Instant::now();
        if now >= end {
            break;
        }
        if let Some(b) = edge.stats().bitrate {
            controller.push((now.saturating_duration_since(t0), b));
        }
        if cut_at.is_some_and(|c| now >= c) && shares_before_cut.is_empty() {
            if let Some(s) = relay.stats().await.sessions.first() {
                shares_before_cut = super::virt::shares(&s.receiver, sc.links.len());
            }
        }
    }
    let offered_stats = edge.stats();
    let offered = offered_stats.sender.media_packets_in;
    tokio::time::sleep(sc.latency + Duration::from_millis(500)).await;
    let rstats = relay.stats().await;
    let estats = edge.stats();
    edge.shutdown().await;
    let emu_stats = emu.shutdown().await?;
    relay.shutdown().await;

    let budget = sc.latency + Duration::from_millis(1);
    let mut on_time = 0u64;
    let mut lat = Vec::new();
    let mut last: Option<Instant> = None;
    let mut max_gap = Duration::ZERO;
    let mut released = 0u64;
    let mut after_budget = 0u64;
    let mut out_of_order = 0u64;
    let mut on_time_bytes = 0u64;
    let mut missed_per_s: Vec<u32> = Vec::new();
    let mut highest_out: Option<u64> = None;
    while let Ok(r) = tap_rx.try_recv() {
        let ingest = edge_epoch + Duration::from_micros(r.send_time_us);
        if r.seq >= offered {
            continue; // ingested after the measured window
        }
        released += 1;
        if highest_out.is_some_and(|h| r.seq <= h) {
            out_of_order += 1;
        }
        let sec = ingest.saturating_duration_since(t0).as_secs() as usize;
        if missed_per_s.len() <= sec {
            missed_per_s.resize(sec + 1, 0);
        }
        // Sequence numbers skipped since the last release were lost; count them in
        // this packet's second.
        if let Some(h) = highest_out {
            missed_per_s[sec] += r.seq.saturating_sub(h + 1) as u32;
        }
        highest_out = highest_out.max(Some(r.seq));
        let l = r.at.saturating_duration_since(ingest);
        if l <= budget {
            on_time += 1;
            on_time_bytes += r.bytes as u64;
        } else {
            after_budget += 1;
            missed_per_s[sec] += 1;
        }
        lat.push(l.as_secs_f64() * 1e3);
        if let Some(p) = last {
            max_gap = max_gap.max(r.at.saturating_duration_since(p));
        }
        last = Some(r.at);
    }
    let mut events = Vec::new();
    while let Ok(e) = ev_rx.try_recv() {
        events.push(FailoverEvent::from_sender(&e, t0, sc));
    }
    let session = rstats.sessions.first();
    let mut first = vec![0u64; sc.links.len()];
    let (late, dups) = session.map_or((0, 0), |s| (s.receiver.late, s.receiver.duplicates));
    if let Some(s) = session {
        for l in &s.receiver.links {
            if let Some(f) = first.get_mut(l.id as usize) {
                *f = l.media_first;
            }
        }
    }
    let total_first = first.iter().sum::<u64>().max(1);
    tracing::info!(
        relay_late = late,
        released_after_budget = after_budget,
        "late packets: arrived after release vs released after the budget"
    );
    // UDP payloads as seen by the emulator over the whole run, against every media
    // byte the edge ingested in the run (the drain period included).
    let wire_udp: u64 = emu_stats
        .links
        .iter()
        .map(|l| l.up.bytes_in + l.down.bytes_in)
        .sum();
    let wire_packets: u64 = emu_stats
        .links
        .iter()
        .map(|l| l.up.packets_in + l.down.packets_in)
        .sum();
    let ingested_bytes = estats.sender.media_bytes_in.max(1);
    for l in &emu_stats.links {
        tracing::info!(
            link = %l.name,
            up_packets = l.up.packets_in,
            up_bytes = l.up.bytes_in,
            down_packets = l.down.packets_in,
            down_bytes = l.down.bytes_in,
            "emulator link totals"
        );
    }
    let bound = sc.bound_bps(sc.latency);
    let relay_session = session.map(|s| {
        serde_json::json!({
            "capture_to_output_ms": s.capture_to_output_ms,
            "ingest_to_output_ms": s.ingest_to_output_ms,
        })
    });
    let (produced, video_frames, targets) = {
        let mut r = record.0.lock().expect("recorded");
        (
            std::mem::take(&mut r.produced),
            std::mem::take(&mut r.video_frames),
            std::mem::take(&mut r.targets),
        )
    };
    let encoder_frames = probe
        .map(|p| p.encoder_output())
        .unwrap_or_default()
        .into_iter()
        .map(|(t, n)| (t.saturating_duration_since(t0), n))
        .collect();
    let report = SimReport {
        scenario: sc.name.clone(),
        mode: "real".into(),
        duration_s: sc.duration.as_secs_f64(),
        input_bps: sc.input_bps,
        budget_ms: sc.latency.as_secs_f64() * 1e3,
        offered,
        ts_packets_offered: estats.sender.media_bytes_in / TS_PACKET as u64,
        delivered_on_time: on_time,
        delivered_late: late + (released - on_time),
        lost: offered.saturating_sub(released),
        duplicated: dups,
        on_time_fraction: on_time as f64 / offered.max(1) as f64,
        latency: LatencySummary::from_ms(lat),
        goodput_bps: on_time_bytes as f64 * 8.0 / sc.duration.as_secs_f64(),
        capacity_bps: sc.capacity_bps(),
        bound_bps: bound,
        input_fraction_of_bound: bound.map(|b| sc.input_bps / b),
        wire_overhead: (wire_udp + 28 * wire_packets) as f64 / ingested_bytes as f64,
        wire_overhead_udp: wire_udp as f64 / ingested_bytes as f64,
        shares_before_cut,
        max_output_gap_ms: max_gap.as_secs_f64() * 1e3,
        out_of_order_outputs: out_of_order,
        links: estats
            .sender
            .links
            .iter()
            .map(|l| {
                LinkReport::from_stats(sc, l, first[l.id as usize] as f64 / total_first as f64)
            })
            .collect(),
        failover_events: events,
        edge: serde_json::to_value(&estats).unwrap_or_default(),
    };
    Ok(RealRun {
        report,
        t0,
        produced,
        video_frames,
        encoder_frames,
        encoder_share,
        fps,
        targets,
        controller,
        relay_session,
        missed_per_s,
    })
}

/// What [`GatedSource`] saw, each with its time since `t0`.
#[derive(Default)]
struct RecordedInner {
    produced: Vec<(Duration, usize)>,
    video_frames: Vec<(Duration, usize)>,
    targets: Vec<(Duration, u64)>,
}

#[derive(Default, Clone)]
struct Recorded(std::sync::Arc<std::sync::Mutex<RecordedInner>>);

/// Holds a source back until `go` turns true, and records what it produces (bytes
/// and video frames) on its way to the edge, and every target it is told.
struct GatedSource {
    go: tokio::sync::watch::Receiver<bool>,
    inner: Box<dyn MediaSource>,
    t0: Instant,
    record: Recorded,
}

impl MediaSource for GatedSource {
    fn adapts(&self) -> bool {
        self.inner.adapts()
    }

    fn controller_config(&self) -> crate::core::bitrate::ControllerConfig {
        self.inner.controller_config()
    }

    fn spawn(
        self: Box<Self>,
        out: mpsc::Sender<(Instant, Vec<u8>)>,
        control: tokio::sync::watch::Receiver<crate::media::MediaControl>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let GatedSource {
            mut go,
            inner,
            t0,
            record,
        } = *self;
        // Every target change, timed when the source could first see it.
        let mut watch = control.clone();
        let rec = record.clone();
        tokio::spawn(async move {
            loop {
                let bps = watch.borrow_and_update().target_bps;
                if let Ok(mut r) = rec.0.lock() {
                    if r.targets.last().is_none_or(|t| t.1 != bps) {
                        r.targets
                            .push((Instant::now().saturating_duration_since(t0), bps));
                    }
                }
                if watch.changed().await.is_err() {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            if go.wait_for(|g| *g).await.is_err() {
                return;
            }
            let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(1024);
            let task = inner.spawn(tx, control, shutdown);
            let mut slicer = crate::core::ts::FrameSlicer::new();
            while let Some((at, g)) = rx.recv().await {
                let now = Instant::now().saturating_duration_since(t0);
                let frames = slicer.push(now, &g);
                if let Ok(mut r) = record.0.lock() {
                    r.produced.push((now, g.len()));
                    r.video_frames.extend(frames);
                }
                if out.send((at, g)).await.is_err() {
                    break;
                }
            }
            let _ = task.await;
        })
    }
}
