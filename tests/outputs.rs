//! Relay outputs against real clients on 127.0.0.1: SRT (srt-live-transmit as
//! player and as listener), RTMP (an ffmpeg RTMP listener), file recording, and
//! failure isolation between outputs of one session. Media is real H.264/AAC
//! made by ffmpeg; ffprobe decides whether what came out is decodable.
//!
//! Tests run one at a time (`SERIAL`: 2 shared cores, ffmpeg encodes in real time).

use braid::config::{self, FileOutputConfig, OutputConfig, RtmpOutputConfig};
use braid::core::wire::TS_PACKET;
use braid::edge::{self, EdgeHandle, EdgeOptions, MediaSource, TestSource, UdpSource};
use braid::relay::{self, OutputState, RelayHandle, RelayOptions, RelayStats};
use braid::sim::emulator::{EmuLink, Emulator, EmulatorConfig};
use braid::sim::linkmodel::LinkParams;
use braid::sim::trace::Trace;
use braid::system::TempDir;
use braid::transport::tls;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// One test at a time; sync tests take it with `blocking_lock`.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const FPS: u32 = 30;
const LATENCY_MS: u64 = 300;
/// Frames decoded / frames sent that a healthy output must reach.
const MIN_FRAME_RATIO: f64 = 0.9;

/// ffmpeg arguments of the test picture and tone, H.264 (a keyframe every
/// second) and AAC, at a bounded bitrate.
fn media_args(seconds: u32) -> Vec<String> {
    let s = format!(
        "-f lavfi -i testsrc2=size=640x360:rate={FPS} -f lavfi -i sine=frequency=440:sample_rate=48000 \
         -t {seconds} -c:v libx264 -preset ultrafast -tune zerolatency -g {FPS} -b:v 1500k -maxrate 1500k \
         -bufsize 500k -pix_fmt yuv420p -c:a aac -b:a 64k"
    );
    s.split_whitespace().map(str::to_string).collect()
}

/// A 5 s TS file made once per test run.
fn media_file() -> &'static (PathBuf, Vec<u8>) {
    static FILE: OnceLock<(PathBuf, Vec<u8>)> = OnceLock::new();
    FILE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("braid-outputs-media-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("src.ts");
        let st = Command::new("ffmpeg")
            .args(["-v", "error", "-y"])
            .args(media_args(5))
            .args(["-f", "mpegts"])
            .arg(&path)
            .status()
            .expect("ffmpeg runs");
        assert!(st.success(), "ffmpeg made the test media");
        let data = std::fs::read(&path).unwrap();
        assert_eq!(data.len() % TS_PACKET, 0);
        (path, data)
    })
}

/// `(video frames, audio frames)` ffprobe decodes from `path`.
fn probe_frames(path: &Path) -> (u64, u64) {
    let count = |sel: &str| -> u64 {
        let out = Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", sel, "-count_frames"])
            .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
            .arg(path)
            .output()
            .expect("ffprobe runs");
        // One line per section that matched; the first non-empty one is the stream's.
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().trim_end_matches(','))
            .find(|l| !l.is_empty())
            .and_then(|l| l.parse().ok())
            .unwrap_or(0)
    };
    (count("v:0"), count("a:0"))
}

/// A child process killed (by its own pid) when dropped.
struct Proc(Child);

impl Proc {
    fn spawn(cmd: &mut Command) -> Proc {
        Proc(cmd.spawn().expect("spawn"))
    }
    /// Waits up to `t` for the process to exit by itself, then kills it.
    fn finish(mut self, t: Duration) {
        let until = Instant::now() + t;
        while Instant::now() < until {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `srt-live-transmit SRC file://con > out`.
fn srt_receiver(src: &str, out: &Path) -> Proc {
    let f = std::fs::File::create(out).unwrap();
    Proc::spawn(
        Command::new("srt-live-transmit")
            .args(["-q", src, "file://con"])
            .stdin(Stdio::null())
            .stdout(f)
            .stderr(Stdio::null()),
    )
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

/// A port nobody listens on right now.
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes `ts` to `out` in 7-packet writes at the pace of `duration`, as the
/// session would release it.
fn feed(out: &mut dyn relay::Output, ts: &[u8], duration: Duration) {
    let chunk = 7 * TS_PACKET;
    let n = ts.len().div_ceil(chunk);
    let t0 = Instant::now();
    for (i, c) in ts.chunks(chunk).enumerate() {
        let at = t0 + duration.mul_f64(i as f64 / n as f64);
        if let Some(d) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        out.write(Instant::now(), c);
    }
}

/// `GET path` from the relay's stats server: the body.
async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    c.write_all(req.as_bytes()).await.unwrap();
    let mut resp = String::new();
    tokio::time::timeout(Duration::from_secs(3), c.read_to_string(&mut resp))
        .await
        .expect("stats answered")
        .unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

fn wait_state(out: &dyn relay::Output, want: OutputState, t: Duration) {
    let until = Instant::now() + t;
    while out.stats().state != want {
        assert!(
            Instant::now() < until,
            "output never {want:?}: {:?}",
            out.stats()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// Relay + edge fixtures
// ---------------------------------------------------------------------------

/// Relay with one device `cam` whose outputs are the given `[[device.output]]` bodies.
async fn start_relay(dir: &Path, dev_fp: &tls::Fingerprint, outputs: &[String]) -> RelayHandle {
    let mut text = format!(
        "[relay]\nlisten = \"127.0.0.1:0\"\ncert = \"relay.crt\"\nkey = \"relay.key\"\nlatency_ms = {LATENCY_MS}\n\
         [stats]\nlisten = \"127.0.0.1:0\"\n\
         [[device]]\nid = \"cam\"\nfingerprint = \"{}\"\n",
        tls::format_fingerprint(dev_fp)
    );
    for o in outputs {
        text += &format!("[[device.output]]\n{o}\n");
    }
    let cfg = config::parse_relay(&text, &dir.join("relay.toml")).unwrap_or_else(|e| panic!("{e}"));
    relay::start(cfg, RelayOptions::default()).await.unwrap()
}

/// Edge config of device `cam` with links bound to `binds`, sending to `relay`.
fn edge_config(
    dir: &Path,
    relay: SocketAddr,
    relay_fp: &tls::Fingerprint,
    binds: &[&str],
) -> config::EdgeConfig {
    let mut text = format!(
        "[device]\nid = \"cam\"\ncert = \"device.crt\"\nkey = \"device.key\"\n\
         [relay]\naddress = \"{relay}\"\nfingerprint = \"{}\"\nlatency_ms = {LATENCY_MS}\n\
         [stats]\nlisten = \"127.0.0.1:0\"\n",
        tls::format_fingerprint(relay_fp)
    );
    for (i, b) in binds.iter().enumerate() {
        text += &format!("[[link]]\nname = \"l{i}\"\nbind = \"{b}\"\n");
    }
    config::parse_edge(&text, &dir.join("edge.toml")).unwrap()
}

async fn start_edge(cfg: config::EdgeConfig, source: Box<dyn MediaSource>) -> EdgeHandle {
    edge::start_with_source(cfg, source, EdgeOptions::default())
        .await
        .unwrap()
}

/// Waits until the relay has a session whose outputs all satisfy `ok`.
async fn wait_outputs(
    relay: &RelayHandle,
    t: Duration,
    what: &str,
    ok: impl Fn(&RelayStats) -> bool,
) -> RelayStats {
    let until = Instant::now() + t;
    loop {
        let s = relay.stats().await;
        if ok(&s) {
            return s;
        }
        assert!(
            Instant::now() < until,
            "timed out waiting for {what}: {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn all_running(s: &RelayStats) -> bool {
    s.sessions.len() == 1
        && s.sessions[0]
            .outputs
            .iter()
            .all(|o| o.stats.state == OutputState::Running)
}

/// Constant 8 Mbit/s, 20 ms one way, from source address 127.0.0.1{1+i}.
fn emu_link(i: usize) -> EmuLink {
    let p = LinkParams {
        trace: Some(Arc::new(Trace::constant(8e6))),
        delay: Duration::from_millis(20),
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

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// ffmpeg (real time) -> edge UDP input -> emulator (2 links) -> relay with two
/// SRT listener outputs (one encrypted) and a UDP output -> srt-live-transmit
/// players. Decodable frames prove the whole chain; the wrong passphrase gets
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srt_listener_end_to_end_with_and_without_passphrase() {
    let _serial = SERIAL.lock().await;
    let seconds = 8;
    let dir = TempDir::new("out-srt-e2e").unwrap();
    let relay_fp = tls::write_identity(dir.path(), "relay").unwrap();
    let dev_fp = tls::write_identity(dir.path(), "device").unwrap();
    let (plain, secret) = (free_udp_port(), free_udp_port());
    let pass = "correct-horse-battery";
    let udp_sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let relay = start_relay(
        dir.path(),
        &dev_fp,
        &[
            format!("kind = \"srt\"\nmode = \"listener\"\naddress = \"127.0.0.1:{plain}\""),
            format!(
                "kind = \"srt\"\nmode = \"listener\"\naddress = \"127.0.0.1:{secret}\"\npassphrase = \"{pass}\"\npbkeylen = 32"
            ),
            format!("kind = \"udp\"\naddress = \"{}\"", udp_sink.local_addr().unwrap()),
        ],
    )
    .await;
    let emu = Emulator::start(
        EmulatorConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            relay: relay.local_addr(),
            links: (0..2).map(emu_link).collect(),
            pass_unknown: false,
        },
        None,
    )
    .await
    .unwrap();
    let input_port = free_udp_port();
    let source = UdpSource::bind(([127, 0, 0, 1], input_port).into()).unwrap();
    let ecfg = edge_config(
        dir.path(),
        emu.local_addr(),
        &relay_fp,
        &["127.0.0.11", "127.0.0.12"],
    );
    let edge = start_edge(ecfg, Box::new(source)).await;

    // The session (and its SRT listeners) exist once the edge has joined.
    let st = wait_outputs(
        &relay,
        Duration::from_secs(10),
        "outputs running",
        all_running,
    )
    .await;
    let targets: Vec<&str> = st.sessions[0]
        .outputs
        .iter()
        .map(|o| o.target.as_str())
        .collect();
    assert!(!format!("{st:?}").contains(pass), "passphrase in stats");
    println!("outputs {targets:?}");

    let out_plain = dir.path().join("plain.ts");
    let out_secret = dir.path().join("secret.ts");
    let out_wrong = dir.path().join("wrong.ts");
    let players = [
        srt_receiver(&format!("srt://127.0.0.1:{plain}"), &out_plain),
        srt_receiver(
            &format!("srt://127.0.0.1:{secret}?passphrase=correct-horse-battery&pbkeylen=32"),
            &out_secret,
        ),
        srt_receiver(
            &format!("srt://127.0.0.1:{secret}?passphrase=wrong-horse-battery&pbkeylen=32"),
            &out_wrong,
        ),
    ];
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let t_media = Instant::now();
    let ffmpeg = tokio::process::Command::new("ffmpeg")
        .args(["-v", "error", "-re"])
        .args(media_args(seconds))
        .args(["-f", "mpegts"])
        .arg(format!("udp://127.0.0.1:{input_port}?pkt_size=1316"))
        .stdin(Stdio::null())
        .status();
    let st = tokio::time::timeout(Duration::from_secs(seconds as u64 + 10), ffmpeg)
        .await
        .expect("ffmpeg finished")
        .unwrap();
    assert!(st.success());
    let first_bytes = file_len(&out_plain);
    tokio::time::sleep(Duration::from_millis(LATENCY_MS + 1200)).await;
    let rs = relay.stats().await;
    drop(players);
    edge.shutdown().await;
    emu.shutdown().await.unwrap();
    relay.shutdown().await;

    let expected = u64::from(seconds * FPS);
    let (v_plain, a_plain) = probe_frames(&out_plain);
    let (v_secret, a_secret) = probe_frames(&out_secret);
    let wrong = file_len(&out_wrong);
    let s = &rs.sessions[0];
    println!(
        "media {:.1} s; frames expected {expected}: plain {v_plain} ({:.3}), encrypted {v_secret} ({:.3}); audio {a_plain}/{a_secret}; wrong passphrase got {wrong} bytes; plain bytes at end of media {first_bytes}",
        t_media.elapsed().as_secs_f64(),
        v_plain as f64 / expected as f64,
        v_secret as f64 / expected as f64,
    );
    for o in &s.outputs {
        println!("{} {}: {:?}", o.kind, o.target, o.stats);
    }
    assert!(
        v_plain as f64 >= MIN_FRAME_RATIO * expected as f64,
        "plain SRT: {v_plain} of {expected} frames"
    );
    assert!(
        v_secret as f64 >= MIN_FRAME_RATIO * expected as f64,
        "encrypted SRT: {v_secret} of {expected} frames"
    );
    assert!(a_plain > 0 && a_secret > 0, "audio passes through");
    assert_eq!(wrong, 0, "a wrong passphrase must get no data");
    for o in &s.outputs {
        assert_eq!(o.stats.errors, 0, "{o:?}");
        assert_eq!(o.stats.dropped_bytes, 0, "{o:?}");
        assert_eq!(o.stats.bytes, s.receiver.released_bytes, "{o:?}");
    }
}

/// An SRT caller output aimed at a port nobody listens on, beside a UDP output:
/// the UDP output gets every released byte while the SRT output fails and backs
/// off for longer each time; once a listener appears the caller connects and data
/// flows to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srt_caller_retries_with_backoff_without_disturbing_udp() {
    let _serial = SERIAL.lock().await;
    let dir = TempDir::new("out-srt-caller").unwrap();
    let relay_fp = tls::write_identity(dir.path(), "relay").unwrap();
    let dev_fp = tls::write_identity(dir.path(), "device").unwrap();
    let port = free_udp_port();
    let udp_sink = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let relay = start_relay(
        dir.path(),
        &dev_fp,
        &[
            format!(
                "kind = \"srt\"\nmode = \"caller\"\naddress = \"127.0.0.1:{port}\"\nstreamid = \"cam\""
            ),
            format!("kind = \"udp\"\naddress = \"{}\"", udp_sink.local_addr().unwrap()),
        ],
    )
    .await;
    let got = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sink_task = {
        let got = got.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok(n) = udp_sink.recv(&mut buf).await {
                got.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            }
        })
    };
    let ecfg = edge_config(dir.path(), relay.local_addr(), &relay_fp, &["127.0.0.1"]);
    let edge = start_edge(
        ecfg,
        Box::new(TestSource {
            rate_bps: 2_000_000,
        }),
    )
    .await;

    // Two failures, the second backoff longer than the first; never `running`
    // while nobody listens.
    let t0 = Instant::now();
    let mut backoffs: Vec<(u64, u64)> = Vec::new(); // (errors, backoff_ms)
    let mut states = std::collections::BTreeSet::new();
    let until = t0 + Duration::from_secs(20);
    let st = loop {
        let st = relay.stats().await;
        if let Some(x) = st.sessions.first() {
            let o = &x.outputs[0].stats;
            states.insert(format!("{:?}", o.state));
            if o.errors > 0 && backoffs.last().is_none_or(|b| b.0 != o.errors) {
                backoffs.push((o.errors, o.backoff_ms));
            }
            if o.errors >= 2 && o.state == OutputState::Backoff {
                break st;
            }
        }
        assert!(Instant::now() < until, "no two SRT failures: {st:#?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let srt = &st.sessions[0].outputs[0];
    println!(
        "after {:.1} s: backoffs (failures, ms) {backoffs:?}, states seen {states:?}, {:?}",
        t0.elapsed().as_secs_f64(),
        srt.stats
    );
    assert_eq!(backoffs.len(), 2, "each failure seen: {backoffs:?}");
    assert!(
        (400..=600).contains(&backoffs[0].1) && (800..=1200).contains(&backoffs[1].1),
        "0.5 s then 1 s, +-20 %: {backoffs:?}"
    );
    assert!(!states.contains("Running"), "{states:?}");
    assert!(srt.stats.last_error.is_some());
    let udp = &st.sessions[0].outputs[1];
    assert_eq!(udp.stats.state, OutputState::Running);
    assert_eq!(udp.stats.errors, 0);

    // A listener appears; the caller connects on its next attempt.
    let out = dir.path().join("caller.ts");
    let t_listen = Instant::now();
    let listener = srt_receiver(&format!("srt://:{port}?mode=listener"), &out);
    let until = Instant::now() + Duration::from_secs(15);
    while file_len(&out) == 0 {
        assert!(Instant::now() < until, "no data reached the SRT listener");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reconnect = t_listen.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rs = relay.stats().await;
    // The same per-output figures over HTTP.
    let json: serde_json::Value =
        serde_json::from_str(&http_get(relay.stats_addr(), "/api/stats").await).unwrap();
    let o = &json["sessions"][0]["outputs"][0];
    assert_eq!(o["kind"], "srt", "{json}");
    assert_eq!(o["state"], "running", "{json}");
    assert_eq!(o["target"], format!("srt://127.0.0.1:{port}?mode=caller"));
    assert!(o["restarts"].as_u64().unwrap() >= 2, "{json}");
    assert!(
        o["dropped_bytes"].as_u64().unwrap() > 0,
        "dropped while backing off: {json}"
    );
    assert_eq!(json["sessions"][0]["outputs"][1]["kind"], "udp");
    let metrics = http_get(relay.stats_addr(), "/metrics").await;
    let labels = format!(
        "device=\"cam\",session=\"{}\",output=\"0\",kind=\"srt\",target=\"srt://127.0.0.1:{port}?mode=caller\"",
        rs.sessions[0].session
    );
    let restarts_line = metrics
        .lines()
        .find(|l| l.starts_with(&format!("braid_relay_output_restarts_total{{{labels}}} ")))
        .unwrap_or_else(|| panic!("no restarts metric for the SRT output:\n{metrics}"));
    assert!(
        metrics.contains(&format!("braid_relay_output_up{{{labels}}} 1\n")),
        "{metrics}"
    );
    println!("{restarts_line}");
    let srt_bytes = file_len(&out);
    drop(listener);
    edge.shutdown().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let s = &rs.sessions[0];
    println!(
        "reconnect {:.2} s after the listener started; SRT listener got {srt_bytes} bytes; srt {:?}; udp {:?}",
        reconnect.as_secs_f64(),
        s.outputs[0].stats,
        s.outputs[1].stats
    );
    let udp_got = got.load(std::sync::atomic::Ordering::Relaxed);
    relay.shutdown().await;
    sink_task.abort();

    assert_eq!(s.outputs[0].stats.state, OutputState::Running);
    assert!(s.outputs[0].stats.restarts >= 2);
    assert!(srt_bytes > 100_000, "data flows over SRT: {srt_bytes}");
    // The UDP output took every released byte, unaffected by the SRT failures.
    assert_eq!(s.outputs[1].stats.errors, 0);
    assert_eq!(s.outputs[1].stats.dropped_bytes, 0);
    assert!(s.receiver.released_bytes > 2_000_000, "{:?}", s.receiver);
    assert!(
        udp_got >= s.outputs[1].stats.bytes,
        "udp sink {udp_got} vs {:?}",
        s.outputs[1].stats
    );
    assert_eq!(s.outputs[1].stats.bytes, s.receiver.released_bytes);
}

/// RTMP push of real H.264/AAC into an ffmpeg RTMP listener. The output starts
/// before the server does: it fails (connection refused), backs off, and connects
/// once the server is up; no error text shows the stream key. The FLV the server
/// writes has (nearly) every video frame, and audio.
#[test]
fn rtmp_push_into_ffmpeg_listener_after_retry() {
    let _serial = SERIAL.blocking_lock();
    let (_, ts) = media_file();
    let dir = TempDir::new("out-rtmp").unwrap();
    let port = free_tcp_port();
    let url = format!("rtmp://127.0.0.1:{port}/live/secret-key");
    let cfg = OutputConfig::Rtmp(RtmpOutputConfig { url: url.clone() });
    let mut out = relay::open_output(&cfg, "cam", 1).unwrap();
    assert_eq!(out.describe(), format!("rtmp://127.0.0.1:{port}/live/***"));
    let until = Instant::now() + Duration::from_secs(10);
    while out.stats().errors == 0 {
        assert!(
            Instant::now() < until,
            "no failure without a server: {:?}",
            out.stats()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let failed = out.stats();
    println!("without a server: {failed:?}");
    let why = failed.last_error.clone().unwrap_or_default();
    assert!(!why.is_empty() && !why.contains("secret-key"), "{why}");

    let flv = dir.path().join("out.flv");
    let server = Proc::spawn(
        Command::new("ffmpeg")
            .args([
                "-v", "quiet", "-y", "-listen", "1", "-i", &url, "-c", "copy",
            ])
            .arg(&flv)
            .stdin(Stdio::null()),
    );
    let t_server = Instant::now();
    // Running, and still running a moment later (the connection is made).
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        wait_state(out.as_ref(), OutputState::Running, Duration::from_secs(10));
        let restarts = out.stats().restarts;
        std::thread::sleep(Duration::from_millis(700));
        let s = out.stats();
        if s.state == OutputState::Running && s.restarts == restarts {
            break;
        }
        assert!(Instant::now() < until, "never stayed up: {s:?}");
    }
    let reconnect = t_server.elapsed();
    feed(out.as_mut(), ts, Duration::from_secs(5));
    let stats = out.stats();
    out.flush(); // EOS: the output finishes the FLV stream and disconnects
    let t_end = Instant::now();
    server.finish(Duration::from_secs(5));
    let (v, a) = probe_frames(&flv);
    println!(
        "rtmp: up {:.2} s after the server started; {v} video / {a} audio frames of {} video; server done {:.2} s after EOS; {stats:?}",
        reconnect.as_secs_f64(),
        5 * FPS,
        t_end.elapsed().as_secs_f64()
    );
    assert!(stats.restarts >= 1, "{stats:?}");
    assert!(
        v as f64 >= MIN_FRAME_RATIO * f64::from(5 * FPS),
        "{v} video frames"
    );
    assert!(a > 0, "audio frames");
    assert_eq!(
        stats.errors, failed.errors,
        "no failure once connected: {stats:?}"
    );
}

/// File recording with 1 s segments and keep = 3: ~5 segments are written, the 3
/// newest stay, each starts with a PAT, PMT and keyframe and decodes cleanly.
#[test]
fn file_output_rotates_and_prunes() {
    let _serial = SERIAL.blocking_lock();
    let (_, ts) = media_file();
    let dir = TempDir::new("out-file").unwrap();
    let rec = dir.path().join("rec");
    let cfg = OutputConfig::File(FileOutputConfig {
        dir: rec.clone(),
        segment: Duration::from_secs(1),
        keep: 3,
    });
    let mut out = relay::open_output(&cfg, "cam", 1).unwrap();
    wait_state(out.as_ref(), OutputState::Running, Duration::from_secs(5));
    let mut seen = std::collections::BTreeSet::new();
    // Feed in 5 slices, noting which segments exist after each.
    for part in ts.chunks(ts.len().div_ceil(5 * TS_PACKET) * TS_PACKET) {
        feed(out.as_mut(), part, Duration::from_secs(1));
        std::thread::sleep(Duration::from_millis(50));
        for e in std::fs::read_dir(&rec).unwrap() {
            seen.insert(e.unwrap().file_name().into_string().unwrap());
        }
    }
    out.flush();
    wait_state(out.as_ref(), OutputState::Stopped, Duration::from_secs(5));
    let mut kept: Vec<String> = std::fs::read_dir(&rec)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    kept.sort();
    println!("segments seen {seen:?}, kept {kept:?}");
    assert!(seen.len() >= 4, "rotated about every second: {seen:?}");
    assert_eq!(kept.len(), 3, "pruned to keep = 3: {kept:?}");
    assert_eq!(
        kept[..],
        seen.iter().rev().take(3).rev().cloned().collect::<Vec<_>>()[..],
        "the newest stay"
    );
    let mut total_frames = 0;
    for (i, name) in kept.iter().enumerate() {
        assert!(name.starts_with("cam-") && name.ends_with("Z.ts"), "{name}");
        let p = rec.join(name);
        let data = std::fs::read(&p).unwrap();
        assert_eq!(data.len() % TS_PACKET, 0, "{name}: whole TS packets");
        assert_eq!(&data[..3], &[0x47, 0x40, 0x00], "{name}: starts with a PAT");
        let (v, _) = probe_frames(&p);
        println!("{name}: {} bytes, {v} frames", data.len());
        assert!(v > 0, "{name} decodes");
        if i + 1 < kept.len() {
            // Cut at keyframes (one per second): a whole GOP, every frame decodable.
            assert!(v >= u64::from(FPS) - 2, "{name}: {v} frames");
        }
        total_frames += v;
    }
    // 3 of ~5 one-second segments, the last one possibly short.
    assert!(total_frames >= u64::from(FPS) * 2, "{total_frames}");
    let s = out.stats();
    assert_eq!((s.errors, s.dropped_bytes), (0, 0), "{s:?}");
    assert_eq!(s.bytes, ts.len() as u64);
}

/// A replaced session (the edge restarted) closes its SRT listener while the
/// new session opens one on the same port: the new one gets the port (at worst
/// after a backoff round) and a player connected to it decodes the stream.
#[test]
fn srt_listener_port_passes_to_the_next_session() {
    let _serial = SERIAL.blocking_lock();
    let (_, ts) = media_file();
    let dir = TempDir::new("out-srt-takeover").unwrap();
    let port = free_udp_port();
    let text = format!(
        "[relay]\nlisten = \"127.0.0.1:0\"\ncert = \"c\"\nkey = \"k\"\n[[device]]\nid = \"cam\"\n\
         fingerprint = \"sha256:{}\"\n[[device.output]]\nkind = \"srt\"\nmode = \"listener\"\naddress = \"127.0.0.1:{port}\"\n",
        "ab".repeat(32)
    );
    let cfg = config::parse_relay(&text, &dir.path().join("relay.toml")).unwrap();
    let out_cfg = &cfg.devices[0].outputs[0];
    let mut old = relay::open_output(out_cfg, "cam", 1).unwrap();
    wait_state(old.as_ref(), OutputState::Running, Duration::from_secs(5));
    let player_old = srt_receiver(
        &format!("srt://127.0.0.1:{port}"),
        &dir.path().join("old.ts"),
    );
    feed(old.as_mut(), &ts[..ts.len() / 5], Duration::from_secs(1));
    // Session replaced: the old output is closed and the new one opened at once.
    let t = Instant::now();
    old.flush();
    drop(old);
    drop(player_old);
    let mut new = relay::open_output(out_cfg, "cam", 2).unwrap();
    wait_state(new.as_ref(), OutputState::Running, Duration::from_secs(10));
    let took = t.elapsed();
    let out = dir.path().join("new.ts");
    let player = srt_receiver(&format!("srt://127.0.0.1:{port}"), &out);
    std::thread::sleep(Duration::from_millis(800));
    feed(new.as_mut(), ts, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(500));
    drop(player);
    let s = new.stats();
    let (v, _) = probe_frames(&out);
    println!(
        "new listener running {:.2} s after the old one closed; {v} frames; {s:?}",
        took.as_secs_f64()
    );
    assert!(took < Duration::from_secs(3), "port taken over in {took:?}");
    assert!(
        v as f64 >= MIN_FRAME_RATIO * f64::from(5 * FPS),
        "{v} frames"
    );
}

/// Players come and go on an SRT listener: the output never fails, and a player
/// that joins later gets a decodable stream.
#[test]
fn srt_listener_survives_players_leaving() {
    let _serial = SERIAL.blocking_lock();
    let (_, ts) = media_file();
    let dir = TempDir::new("out-srt-players").unwrap();
    let port = free_udp_port();
    let cfg = OutputConfig::Srt(config::SrtOutputConfig {
        mode: config::SrtMode::Listener,
        address: format!("127.0.0.1:{port}").parse().unwrap(),
        passphrase: None,
        pbkeylen: None,
        latency: config::DEFAULT_SRT_LATENCY,
        streamid: None,
    });
    let mut out = relay::open_output(&cfg, "cam", 1).unwrap();
    wait_state(out.as_ref(), OutputState::Running, Duration::from_secs(5));
    let first = srt_receiver(&format!("srt://127.0.0.1:{port}"), &dir.path().join("1.ts"));
    std::thread::sleep(Duration::from_millis(500));
    feed(out.as_mut(), &ts[..ts.len() / 5], Duration::from_secs(1));
    drop(first); // the player goes away mid-stream
    feed(
        out.as_mut(),
        &ts[ts.len() / 5..2 * ts.len() / 5],
        Duration::from_secs(1),
    );
    let second_out = dir.path().join("2.ts");
    let second = srt_receiver(&format!("srt://127.0.0.1:{port}"), &second_out);
    std::thread::sleep(Duration::from_millis(500));
    feed(out.as_mut(), ts, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(500));
    drop(second);
    let s = out.stats();
    let first_len = file_len(&dir.path().join("1.ts"));
    let (v, _) = probe_frames(&second_out);
    println!("first player got {first_len} bytes; second decodes {v} frames; {s:?}");
    assert!(first_len > 0, "first player got data");
    assert_eq!((s.errors, s.restarts), (0, 0), "{s:?}");
    assert!(
        v as f64 >= MIN_FRAME_RATIO * f64::from(5 * FPS),
        "{v} frames"
    );
}
