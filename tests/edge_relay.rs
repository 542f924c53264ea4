//! Edge, link emulator and relay end to end over real sockets on loopback, in this
//! process: the real edge (its test source), the userspace emulator and the relay,
//! with a UDP socket of ours as the relay's output. Plus the `braid` binary's
//! configuration exit codes and `braid sim --virtual`.
//!
//! The tests that move media share the two CPU cores of CI badly, so they run one
//! at a time (the `SERIAL` lock); each takes well under 15 s.

use braid::config::{self, LinkBind};
use braid::core::sender::SenderEvent;
use braid::core::ts::TEST_VIDEO_PID;
use braid::core::wire::{TS_PACKET, TS_PER_DATAGRAM};
use braid::edge::{self, EdgeHandle, EdgeOptions, MediaSource, TestSource};
use braid::media::MediaControl;
use braid::relay::{self, RelayHandle, RelayOptions};
use braid::sim::emulator::{EmuLink, Emulator, EmulatorConfig, EmulatorHandle};
use braid::sim::linkmodel::LinkParams;
use braid::sim::trace::Trace;
use braid::system::TempDir;
use braid::transport::{socket, tls};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

/// One media test at a time (2 shared cores).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const GROUP: usize = TS_PACKET * TS_PER_DATAGRAM;
const RATE_BPS: u64 = 4_000_000;
const LATENCY_MS: u64 = 300;

/// Test-source groups (datagrams of 7 TS packets) per second at `RATE_BPS`.
fn groups_per_s() -> f64 {
    RATE_BPS as f64 / (8.0 * GROUP as f64)
}

/// The edge's real [`TestSource`], cut off after `limit` groups so that "what the
/// edge ingested" is exact. It keeps the media channel open afterwards (the edge's
/// core task stops when its source ends), so retransmissions still happen.
struct Limited {
    inner: Box<dyn MediaSource>,
    limit: u64,
    forwarded: Arc<AtomicU64>,
}

impl MediaSource for Limited {
    fn spawn(
        self: Box<Self>,
        out: mpsc::Sender<(Instant, Vec<u8>)>,
        control: watch::Receiver<MediaControl>,
        mut shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let (tx, mut rx) = mpsc::channel(1024);
        let inner = self.inner.spawn(tx, control, shutdown.clone());
        let (limit, forwarded) = (self.limit, self.forwarded);
        tokio::spawn(async move {
            while forwarded.load(Ordering::Relaxed) < limit {
                tokio::select! {
                    biased;
                    _ = shutdown.changed() => return,
                    m = rx.recv() => {
                        let Some(m) = m else { return };
                        if out.send(m).await.is_err() {
                            return;
                        }
                        forwarded.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            drop(rx); // the inner source ends
            let _ = inner.await;
            let _ = shutdown.changed().await;
            drop(out);
        })
    }
}

/// A datagram of the relay's UDP output and when it arrived.
type Arrival = (Instant, Vec<u8>);

/// What arrived on the relay's UDP output.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Arrival>>>);

impl Received {
    fn snapshot(&self) -> Vec<Arrival> {
        self.0.lock().unwrap().clone()
    }
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    fn count_after(&self, t: Instant) -> usize {
        self.0.lock().unwrap().iter().filter(|r| r.0 > t).count()
    }
}

/// Binds the output socket and collects every datagram with its arrival time.
async fn output_sink() -> (SocketAddr, Received, tokio::task::JoinHandle<()>) {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let rec = Received::default();
    let r = rec.clone();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = sock.recv(&mut buf).await {
            r.0.lock()
                .unwrap()
                .push((Instant::now(), buf[..n].to_vec()));
        }
    });
    (addr, rec, task)
}

#[derive(Debug, Default)]
struct OutputCheck {
    datagrams: usize,
    ts_packets: u64,
    wrong_size: usize,
    bad_sync: usize,
    /// Continuity-counter discontinuities of the video PID in datagrams that
    /// arrived after `from`.
    cc_gaps: usize,
    video_packets: u64,
    /// Continuity-counter discontinuities over the whole output.
    cc_gaps_all: usize,
    /// Largest gap between consecutive arrivals after `from`.
    max_gap: Duration,
    /// First and last arrival, relative to `from`.
    first_s: f64,
    last_s: f64,
}

fn check_output(recs: &[Arrival], from: Instant) -> OutputCheck {
    let mut c = OutputCheck::default();
    let rel = |t: Instant| {
        if t >= from {
            t.duration_since(from).as_secs_f64()
        } else {
            -from.duration_since(t).as_secs_f64()
        }
    };
    if let (Some(f), Some(l)) = (recs.first(), recs.last()) {
        c.first_s = rel(f.0);
        c.last_s = rel(l.0);
    }
    let mut last_cc: Option<u8> = None;
    let mut last_at: Option<Instant> = None;
    for (at, d) in recs {
        c.datagrams += 1;
        if d.len() != GROUP {
            c.wrong_size += 1;
        }
        let counted = *at >= from;
        if counted {
            if let Some(p) = last_at {
                c.max_gap = c.max_gap.max(at.saturating_duration_since(p));
            }
            last_at = Some(*at);
        }
        for p in d.chunks(TS_PACKET) {
            c.ts_packets += 1;
            if p.len() != TS_PACKET || p[0] != 0x47 {
                c.bad_sync += 1;
                continue;
            }
            let pid = (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2]);
            if pid != TEST_VIDEO_PID {
                continue;
            }
            c.video_packets += 1;
            let cc = p[3] & 0x0f;
            if let Some(prev) = last_cc {
                if cc != (prev + 1) & 0x0f {
                    c.cc_gaps_all += 1;
                    if counted {
                        c.cc_gaps += 1;
                    }
                }
            }
            last_cc = Some(cc);
        }
    }
    c
}

/// `GET path` on a local HTTP server; the body parsed as JSON.
async fn get_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let mut s = tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr))
        .await
        .expect("stats connect timed out")
        .expect("stats connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut resp))
        .await
        .expect("stats read timed out")
        .unwrap();
    let text = String::from_utf8(resp).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{addr}{path}: {head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{addr}{path}: {head}"
    );
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{addr}{path}: not JSON ({e}): {body}"))
}

struct Ident {
    fp: tls::Fingerprint,
}

fn ident(dir: &Path, name: &str) -> Ident {
    Ident {
        fp: tls::write_identity(dir, name).unwrap(),
    }
}

/// Identities for the relay and one device (`device_name`) in `dir`, an output sink,
/// and a relay on 127.0.0.1:0 that knows only that device.
struct Setup {
    relay_id: Ident,
    dev: Ident,
    out: SocketAddr,
    rec: Received,
    sink: tokio::task::JoinHandle<()>,
    relay: RelayHandle,
}

async fn setup(dir: &Path, device_name: &str) -> Setup {
    let relay_id = ident(dir, "relay");
    let dev = ident(dir, device_name);
    let (out, rec, sink) = output_sink().await;
    let relay = start_relay(relay_config(
        dir,
        "127.0.0.1:0".parse().unwrap(),
        &dev.fp,
        out,
    ))
    .await;
    Setup {
        relay_id,
        dev,
        out,
        rec,
        sink,
        relay,
    }
}

/// Relay config text: one device `cam` with fingerprint `device_fp`, UDP output to `out`.
fn relay_config(
    dir: &Path,
    listen: SocketAddr,
    device_fp: &tls::Fingerprint,
    out: SocketAddr,
) -> config::RelayConfig {
    let text = format!(
        "[relay]\nlisten = \"{listen}\"\ncert = \"relay.crt\"\nkey = \"relay.key\"\nlatency_ms = {LATENCY_MS}\n\
         [stats]\nlisten = \"127.0.0.1:0\"\n\
         [[device]]\nid = \"cam\"\nfingerprint = \"{}\"\n[[device.output]]\nkind = \"udp\"\naddress = \"{out}\"\n",
        tls::format_fingerprint(device_fp)
    );
    config::parse_relay(&text, &dir.join("relay.toml")).unwrap()
}

/// Edge config text for device identity `device` with `links` (`(name, "bind = ..."`
/// or `"interface = ..."`)).
fn edge_config(
    dir: &Path,
    device: &str,
    relay: SocketAddr,
    relay_fp: &tls::Fingerprint,
    links: &[(String, String)],
) -> config::EdgeConfig {
    let mut text = format!(
        "[device]\nid = \"cam\"\ncert = \"{device}.crt\"\nkey = \"{device}.key\"\n\
         [relay]\naddress = \"{relay}\"\nfingerprint = \"{}\"\nlatency_ms = {LATENCY_MS}\n\
         [input]\nkind = \"test\"\nrate_kbps = {}\n[stats]\nlisten = \"127.0.0.1:0\"\n",
        tls::format_fingerprint(relay_fp),
        RATE_BPS / 1000
    );
    for (name, bind) in links {
        text += &format!("[[link]]\nname = \"{name}\"\n{bind}\n");
    }
    config::parse_edge(&text, &dir.join("edge.toml")).unwrap()
}

fn addr_links(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| (format!("l{i}"), format!("bind = \"127.0.0.{}\"", 11 + i)))
        .collect()
}

async fn start_relay(cfg: config::RelayConfig) -> RelayHandle {
    relay::start(cfg, RelayOptions::default()).await.unwrap()
}

/// Starts the edge with the test source limited to `limit` groups.
async fn start_edge(
    cfg: config::EdgeConfig,
    limit: u64,
    events: Option<mpsc::UnboundedSender<SenderEvent>>,
) -> (EdgeHandle, Arc<AtomicU64>) {
    let forwarded = Arc::new(AtomicU64::new(0));
    let source = Box::new(Limited {
        inner: Box::new(TestSource { rate_bps: RATE_BPS }),
        limit,
        forwarded: forwarded.clone(),
    });
    let h = edge::start_with_source(
        cfg,
        source,
        EdgeOptions {
            events,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    (h, forwarded)
}

/// Constant 8 Mbit/s both ways, 20 ms one-way, `outage` on both directions.
fn emu_link(i: usize, outage: Option<(Duration, Duration)>) -> EmuLink {
    let tr = Arc::new(Trace::constant(8e6));
    let p = LinkParams {
        trace: Some(tr),
        delay: Duration::from_millis(20),
        outages: outage.into_iter().collect(),
        seed: i as u64 + 1,
        ..LinkParams::default()
    };
    EmuLink {
        source_ip: format!("127.0.0.{}", 11 + i).parse().unwrap(),
        name: format!("l{i}"),
        up: p.clone(),
        down: p,
    }
}

struct Emulated {
    _dir: TempDir,
    relay: RelayHandle,
    emu: EmulatorHandle,
    edge: EdgeHandle,
    forwarded: Arc<AtomicU64>,
    rec: Received,
    sink: tokio::task::JoinHandle<()>,
    start: Instant,
}

/// Relay, emulator (3 links, the outage on link 0) and edge; the source runs
/// `run` and then stops.
async fn emulated(
    tag: &str,
    run: Duration,
    outage: Option<(Duration, Duration)>,
    events: Option<mpsc::UnboundedSender<SenderEvent>>,
) -> Emulated {
    let dir = TempDir::new(tag).unwrap();
    let Setup {
        relay_id,
        rec,
        sink,
        relay,
        ..
    } = setup(dir.path(), "device").await;
    let emu = Emulator::start(
        EmulatorConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            relay: relay.local_addr(),
            links: (0..3)
                .map(|i| emu_link(i, if i == 0 { outage } else { None }))
                .collect(),
            pass_unknown: false,
        },
        None,
    )
    .await
    .unwrap();
    let ecfg = edge_config(
        dir.path(),
        "device",
        emu.local_addr(),
        &relay_id.fp,
        &addr_links(3),
    );
    let limit = (run.as_secs_f64() * groups_per_s()).round() as u64;
    let start = emu.epoch();
    let (edge, forwarded) = start_edge(ecfg, limit, events).await;
    Emulated {
        _dir: dir,
        relay,
        emu,
        edge,
        forwarded,
        rec,
        sink,
        start,
    }
}

/// Waits until the source has stopped and the relay has released everything.
async fn drain(forwarded: &AtomicU64, limit: u64, rec: &Received) {
    let deadline = Instant::now() + Duration::from_secs_f64(limit as f64 / groups_per_s() + 3.0);
    while forwarded.load(Ordering::Relaxed) < limit && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Latency plus slack, then until the output has been quiet for 300 ms.
    tokio::time::sleep(Duration::from_millis(LATENCY_MS + 200)).await;
    let mut n = rec.len();
    while Instant::now() < deadline + Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let m = rec.len();
        if m == n {
            break;
        }
        n = m;
    }
}

fn delivered_fraction(c: &OutputCheck, ingested_groups: u64) -> f64 {
    c.ts_packets as f64 / (ingested_groups * TS_PER_DATAGRAM as u64) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_flows_end_to_end() {
    let _serial = SERIAL.lock().await;
    let run = Duration::from_secs(6);
    let t = emulated("flow", run, None, None).await;
    let limit = (run.as_secs_f64() * groups_per_s()).round() as u64;

    // The stats endpoints answer while media flows.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let es = get_json(
        t.edge.stats_addr().expect("edge stats enabled"),
        "/api/stats",
    )
    .await;
    assert_eq!(es["device"], "cam", "{es}");
    let links = es["links"].as_array().expect("edge links");
    assert_eq!(links.len(), 3, "{es}");
    assert!(
        links.iter().all(|l| l["connected"] == true),
        "all links connected: {es}"
    );
    assert!(
        es["sender"]["media_packets_in"].as_u64().unwrap() > 0,
        "{es}"
    );
    let rs = get_json(t.relay.stats_addr(), "/api/stats").await;
    let sessions = rs["sessions"].as_array().expect("relay sessions");
    assert_eq!(sessions.len(), 1, "{rs}");
    assert_eq!(sessions[0]["device"], "cam");
    assert_eq!(sessions[0]["session"], es["session"], "same session tag");
    assert_eq!(sessions[0]["links"].as_array().unwrap().len(), 3, "{rs}");

    drain(&t.forwarded, limit, &t.rec).await;
    let ingested = t.forwarded.load(Ordering::Relaxed);
    let est = t.edge.stats();
    let rst = t.relay.stats().await;
    t.edge.shutdown().await;
    let emu = t.emu.shutdown().await.unwrap();
    t.relay.shutdown().await;
    t.sink.abort();

    let recs = t.rec.snapshot();
    let c = check_output(&recs, t.start + Duration::from_secs(1));
    let frac = delivered_fraction(&c, ingested);
    println!(
        "ingested {ingested} groups, output {c:?}, delivered {:.4}, edge sent {:?}",
        frac,
        est.sender
            .links
            .iter()
            .map(|l| (l.id, l.datagrams_sent))
            .collect::<Vec<_>>()
    );
    assert_eq!(ingested, limit, "the source produced its groups");
    assert_eq!(
        est.sender.media_packets_in, ingested,
        "the edge took them all"
    );
    assert!(c.datagrams > 0, "output received nothing");
    assert_eq!(c.wrong_size, 0, "every output datagram is 7 x 188 bytes");
    assert_eq!(c.bad_sync, 0, "every TS packet starts with 0x47");
    assert!(
        frac >= 0.995,
        "delivered {frac:.4} of {ingested} groups ({c:?})"
    );
    assert!(
        c.ts_packets <= ingested * TS_PER_DATAGRAM as u64,
        "more out than in: {c:?}"
    );
    assert!(c.video_packets > 1000, "{c:?}");
    assert_eq!(
        c.cc_gaps, 0,
        "video continuity after the first second: {c:?}"
    );
    // The emulator really carried it, on more than one link.
    let carrying = emu
        .links
        .iter()
        .filter(|l| l.up.packets_delivered > 100)
        .count();
    assert!(carrying >= 1, "{emu:?}");
    let s = &rst.sessions[0];
    assert_eq!(s.output_errors, 0);
    assert_eq!(
        s.output_datagrams as usize,
        recs.len(),
        "relay counted what we got"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_outage_is_routed_around() {
    let _serial = SERIAL.lock().await;
    let run = Duration::from_secs(6);
    let cut = (Duration::from_secs(2), Duration::from_secs(4));
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let t = emulated("outage", run, Some(cut), Some(ev_tx)).await;
    let limit = (run.as_secs_f64() * groups_per_s()).round() as u64;
    drain(&t.forwarded, limit, &t.rec).await;
    let ingested = t.forwarded.load(Ordering::Relaxed);
    let est = t.edge.stats();
    t.edge.shutdown().await;
    let emu = t.emu.shutdown().await.unwrap();
    t.relay.shutdown().await;
    t.sink.abort();

    let recs = t.rec.snapshot();
    let c = check_output(&recs, t.start + Duration::from_secs(1));
    let frac = delivered_fraction(&c, ingested);
    let mut events = Vec::new();
    while let Ok(e) = ev_rx.try_recv() {
        events.push(e);
    }
    let fmt = |e: &SenderEvent| match e {
        SenderEvent::LinkDown { link, at, reason } => format!(
            "{:.3}s l{link} down ({reason})",
            at.saturating_duration_since(t.start).as_secs_f64()
        ),
        SenderEvent::LinkUp { link, at } => format!(
            "{:.3}s l{link} up",
            at.saturating_duration_since(t.start).as_secs_f64()
        ),
    };
    let shown: Vec<String> = events.iter().map(fmt).collect();
    println!("ingested {ingested}, output {c:?}, delivered {frac:.4}");
    println!("events {shown:?}\nedge events {:?}", est.events);
    println!(
        "emulator l0 up: dropped in outage {}",
        emu.links[0].up.dropped_outage_packets
    );

    assert!(
        emu.links[0].up.dropped_outage_packets + emu.links[0].down.dropped_outage_packets > 0,
        "the outage happened"
    );
    assert_eq!(c.wrong_size + c.bad_sync, 0, "{c:?}");
    assert!(frac >= 0.995, "delivered {frac:.4} of {ingested} ({c:?})");
    assert!(
        c.max_gap <= Duration::from_millis(150),
        "output stalled for {:?} ({c:?})",
        c.max_gap
    );
    assert_eq!(
        c.cc_gaps, 0,
        "video continuity after the first second: {c:?}"
    );
    // Link 0 went down during the outage and came back after it.
    let down = events.iter().position(|e| {
        matches!(e, SenderEvent::LinkDown { link: 0, at, .. }
            if *at >= t.start + cut.0 && *at <= t.start + cut.1)
    });
    let down = down.unwrap_or_else(|| panic!("no down event for l0 during the outage: {shown:?}"));
    let up = events[down..]
        .iter()
        .any(|e| matches!(e, SenderEvent::LinkUp { link: 0, at } if *at >= t.start + cut.1));
    assert!(up, "l0 did not come back up after the outage: {shown:?}");
    // ... and the stats API said so too.
    let down_line = est.events.iter().position(|l| l.contains("link l0 down"));
    let down_line = down_line.unwrap_or_else(|| panic!("edge stats events: {:?}", est.events));
    assert!(
        est.events[down_line..]
            .iter()
            .any(|l| l.contains("link l0 up")),
        "edge stats events: {:?}",
        est.events
    );
    // Only the cut link failed over.
    for e in &events {
        if let SenderEvent::LinkDown { link, .. } = e {
            assert_eq!(*link, 0, "a healthy link went down: {shown:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_restart_edge_reconnects() {
    let _serial = SERIAL.lock().await;
    let dir = TempDir::new("restart").unwrap();
    let Setup {
        relay_id,
        dev,
        out,
        rec,
        sink,
        relay,
    } = setup(dir.path(), "device").await;
    let addr = relay.local_addr();
    let ecfg = edge_config(dir.path(), "device", addr, &relay_id.fp, &addr_links(2));
    let (edge, _) = start_edge(ecfg, u64::MAX, None).await;

    // Flowing before the restart.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = rec.len();
    assert!(
        before as f64 > 0.5 * groups_per_s(),
        "only {before} datagrams before the restart"
    );
    let old_session = relay.stats().await.sessions[0].session;
    relay.shutdown().await;
    let stopped = Instant::now();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        rec.count_after(stopped + Duration::from_millis(200)) == 0,
        "output after the relay stopped"
    );
    let down: Vec<_> = edge.stats().links.iter().map(|l| l.connected).collect();
    assert_eq!(down, [false, false], "links noticed the relay going away");

    let relay = start_relay(relay_config(dir.path(), addr, &dev.fp, out)).await;
    let restarted = Instant::now();
    let deadline = restarted + Duration::from_secs(6);
    // Resumed = a second's worth of output after the restart.
    let want = groups_per_s() as usize;
    while rec.count_after(restarted) < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let resumed_after = rec
        .0
        .lock()
        .unwrap()
        .iter()
        .find(|r| r.0 > restarted)
        .map(|r| r.0 - restarted);
    let got = rec.count_after(restarted);
    let rst = relay.stats().await;
    let est = edge.stats();
    edge.shutdown().await;
    relay.shutdown().await;
    sink.abort();
    println!(
        "before {before}, first output {resumed_after:?} after restart, {got} since; links {:?}",
        est.links
    );
    assert!(got >= want, "output did not resume: {got} datagrams in 6 s");
    let resumed_after = resumed_after.unwrap();
    assert!(
        resumed_after <= Duration::from_millis(3500),
        "output resumed only {resumed_after:?} after the restart"
    );
    assert_eq!(rst.sessions.len(), 1, "{rst:?}");
    let s = &rst.sessions[0];
    assert_eq!(s.session, old_session, "same edge, same session tag");
    assert!(s.output_datagrams > 0);
    assert!(rst.connections_total >= 1);
    assert!(
        est.links.iter().any(|l| l.connects >= 2),
        "a link reconnected: {:?}",
        est.links
    );
    let c = check_output(&rec.snapshot(), restarted);
    assert_eq!(c.wrong_size + c.bad_sync, 0, "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interface_bound_link_on_lo() {
    let _serial = SERIAL.lock().await;
    let dir = TempDir::new("lo").unwrap();
    let Setup {
        relay_id,
        rec,
        sink,
        relay,
        ..
    } = setup(dir.path(), "device").await;
    // SO_BINDTODEVICE needs CAP_NET_RAW: probe it the way the edge does.
    if let Err(e) = socket::bind_link_socket(&LinkBind::Interface("lo".into()), relay.local_addr())
    {
        println!(
            "SKIPPED interface_bound_link_on_lo: cannot bind a socket to lo ({e:#}); run as root"
        );
        relay.shutdown().await;
        return;
    }
    let links = vec![("lo".to_string(), "interface = \"lo\"".to_string())];
    let ecfg = edge_config(
        dir.path(),
        "device",
        relay.local_addr(),
        &relay_id.fp,
        &links,
    );
    let run = Duration::from_secs(3);
    let limit = (run.as_secs_f64() * groups_per_s()).round() as u64;
    let (edge, forwarded) = start_edge(ecfg, limit, None).await;
    let start = Instant::now();
    drain(&forwarded, limit, &rec).await;
    let ingested = forwarded.load(Ordering::Relaxed);
    let est = edge.stats();
    let rst = relay.stats().await;
    edge.shutdown().await;
    relay.shutdown().await;
    sink.abort();
    let c = check_output(&rec.snapshot(), start + Duration::from_secs(1));
    let frac = delivered_fraction(&c, ingested);
    println!(
        "ingested {ingested}, output {c:?}, delivered {frac:.4}, link {:?}",
        est.links
    );
    assert_eq!(est.links[0].bind, "interface lo");
    assert!(est.links[0].connected, "{:?}", est.links);
    assert_eq!(rst.sessions.len(), 1);
    assert_eq!(rst.sessions[0].links[0].name, "lo");
    assert!(
        rst.sessions[0].links[0].remote.starts_with("127.0.0.1:"),
        "{:?}",
        rst.sessions[0].links
    );
    assert_eq!(c.wrong_size + c.bad_sync, 0, "{c:?}");
    assert!(frac >= 0.995, "delivered {frac:.4} ({c:?})");
    assert_eq!(c.cc_gaps, 0, "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_device_edge_is_refused() {
    let _serial = SERIAL.lock().await;
    let dir = TempDir::new("unknown").unwrap();
    let Setup {
        relay_id,
        rec,
        sink,
        relay,
        ..
    } = setup(dir.path(), "device").await;
    let _stranger = ident(dir.path(), "stranger");
    let ecfg = edge_config(
        dir.path(),
        "stranger",
        relay.local_addr(),
        &relay_id.fp,
        &addr_links(2),
    );
    let (edge, _) = start_edge(ecfg, u64::MAX, None).await;

    // Two links, each refused three times or more: the edge keeps retrying, with
    // backoff (200 ms doubling: about 5 attempts per link in the first 2.5 s).
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(8);
    let mut rst = relay.stats().await;
    while (rst.rejected_devices < 6 || t0.elapsed() < Duration::from_millis(2500))
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        rst = relay.stats().await;
    }
    let est = edge.stats();
    let es = get_json(edge.stats_addr().unwrap(), "/api/stats").await;
    println!("relay {rst:?}\nedge links {:?}", est.links);
    assert!(
        rst.rejected_devices >= 4,
        "refusals: {}",
        rst.rejected_devices
    );
    assert!(rst.sessions.is_empty(), "{rst:?}");
    assert_eq!(rst.connections_total, 0, "no authenticated connection");
    for l in &est.links {
        assert!(!l.connected, "{l:?}");
        assert_eq!(l.connects, 0, "{l:?}");
        assert!(l.last_error.is_some(), "link status shows the error: {l:?}");
    }
    assert!(es["links"][0]["last_error"].is_string(), "{es}");
    assert!(
        es["uptime_s"].as_f64().unwrap() > 2.0,
        "the edge is alive: {es}"
    );
    tokio::time::timeout(Duration::from_secs(5), edge.shutdown())
        .await
        .expect("edge shuts down");
    relay.shutdown().await;
    sink.abort();
    assert_eq!(rec.len(), 0, "no output for an unknown device");
}

/// The output checks themselves catch what they are meant to catch.
#[test]
fn output_checker_sees_gaps() {
    use braid::core::ts::TestStream;
    let t0 = Instant::now();
    let mut ts = TestStream::new();
    let recs: Vec<Arrival> = (0..200u64)
        .map(|i| {
            (
                t0 + Duration::from_millis(10 * i),
                ts.next_group(TS_PER_DATAGRAM, 400),
            )
        })
        .collect();
    let c = check_output(&recs, t0);
    assert_eq!(
        (c.cc_gaps_all, c.wrong_size, c.bad_sync),
        (0, 0, 0),
        "{c:?}"
    );
    assert_eq!(c.max_gap, Duration::from_millis(10));
    assert!(c.video_packets > 1000);

    let mut lossy = recs.clone();
    lossy.remove(150); // one datagram lost
    lossy.remove(100); // and one 20 ms stall
    lossy[10].1.truncate(GROUP - TS_PACKET);
    lossy[20].1[TS_PACKET] = 0x48;
    let c = check_output(&lossy, t0 + Duration::from_millis(500));
    assert_eq!(c.cc_gaps, 2, "{c:?}");
    assert_eq!(c.wrong_size, 1, "{c:?}");
    assert_eq!(c.bad_sync, 1, "{c:?}");
    assert_eq!(c.max_gap, Duration::from_millis(20));
}

#[test]
fn bad_config_exit_code() {
    let dir = TempDir::new("badcfg").unwrap();
    let path = dir.path().join("edge.toml");
    let text = "[device]\nid = \"cam\"\ncert = \"device.crt\"\nkey = \"device.key\"\n\
                colour = \"blue\"\n\
                [relay]\naddress = \"127.0.0.1:4433\"\nfingerprint = \"00\"\n\
                [[link]]\nname = \"l0\"\nbind = \"127.0.0.11\"\n";
    std::fs::write(&path, text).unwrap();
    let run = |p: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_braid"))
            .arg("edge")
            .arg("--config")
            .arg(p)
            .env("RUST_LOG", "error")
            .output()
            .unwrap()
    };
    let o = run(&path);
    let stderr = String::from_utf8_lossy(&o.stderr);
    println!("unknown key: {:?} {stderr}", o.status);
    assert_eq!(o.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:5", path.display())),
        "stderr names the file and line 5: {stderr}"
    );
    assert!(stderr.contains("colour"), "stderr names the key: {stderr}");

    let missing = dir.path().join("nope.toml");
    let o = run(&missing);
    let stderr = String::from_utf8_lossy(&o.stderr);
    println!("missing: {:?} {stderr}", o.status);
    assert_eq!(o.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
}

#[test]
fn sim_cli_prints_json() {
    let t = Instant::now();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_braid"))
        .args([
            "sim",
            "--scenario",
            "failover-clean",
            "--virtual",
            "--duration",
            "40",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{:?}: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    println!(
        "sim took {:?}: on_time_fraction {} events {}",
        t.elapsed(),
        v["on_time_fraction"],
        v["failover_events"]
    );
    assert_eq!(v["scenario"], "failover-clean");
    assert_eq!(v["mode"], "virtual");
    assert_eq!(v["duration_s"].as_f64(), Some(40.0));
    let f = v["on_time_fraction"].as_f64().expect("on_time_fraction");
    assert!(f >= 0.999, "on_time_fraction {f}");
    assert!(v["offered"].as_u64().unwrap() > 10_000, "{}", v["offered"]);
    // The cut at 30 s falls inside the 40 s run.
    let events = v["failover_events"].as_array().expect("failover_events");
    assert!(
        events
            .iter()
            .any(|e| e["event"].as_str().is_some_and(|s| s.starts_with("down"))),
        "{events:?}"
    );
}
