//! The daemons speak systemd's notify protocol: `braid relay` and `braid edge`
//! started with a `NOTIFY_SOCKET` (a datagram socket this test binds, as systemd
//! would) and a
//! `WATCHDOG_USEC` sends `READY=1` once it listens, then `WATCHDOG=1` at half the
//! watchdog timeout while its loop answers, and `STOPPING=1` on SIGTERM.

use braid::system::TempDir;
use braid::transport::tls;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn relay_sends_ready_watchdog_and_stopping() {
    let dir = TempDir::new("notify").expect("tempdir");
    let d = dir.path();
    tls::write_identity(d, "relay").expect("relay identity");
    let dev = tls::write_identity(d, "dev").expect("device identity");
    let cfg = d.join("relay.toml");
    std::fs::write(
        &cfg,
        format!(
            "[relay]\nlisten = \"127.0.0.1:0\"\ncert = \"relay.crt\"\nkey = \"relay.key\"\n\
             [stats]\nlisten = \"127.0.0.1:0\"\n\
             [[device]]\nid = \"dev\"\nfingerprint = \"{}\"\n[[device.output]]\nkind = \"udp\"\naddress = \"127.0.0.1:9\"\n",
            tls::format_fingerprint(&dev)
        ),
    )
    .expect("config");
    check_notify(d, &["relay", "--config"], &cfg);
}

/// The edge feeds the watchdog from its core task's liveness; no relay needs to
/// answer for that (its link keeps retrying in the background).
#[test]
fn edge_sends_ready_watchdog_and_stopping() {
    let dir = TempDir::new("notify-edge").expect("tempdir");
    let d = dir.path();
    tls::write_identity(d, "device").expect("device identity");
    let relay = tls::write_identity(d, "relay").expect("relay identity");
    let cfg = d.join("edge.toml");
    std::fs::write(
        &cfg,
        format!(
            "[device]\nid = \"dev\"\ncert = \"device.crt\"\nkey = \"device.key\"\n\
             [relay]\naddress = \"127.0.0.1:9\"\nfingerprint = \"{}\"\n\
             [input]\nkind = \"test\"\nrate_kbps = 500\n\
             [stats]\nlisten = \"127.0.0.1:0\"\n\
             [[link]]\nname = \"lo\"\nbind = \"127.0.0.1\"\n",
            tls::format_fingerprint(&relay)
        ),
    )
    .expect("config");
    check_notify(d, &["edge", "--config"], &cfg);
}

/// Runs `braid ARGS CONFIG` with a fake NOTIFY_SOCKET in `dir` and
/// WATCHDOG_USEC=400 ms: READY=1 first, 3..=8 keep-alives in a second, STOPPING=1
/// and a clean exit on SIGTERM.
fn check_notify(dir: &std::path::Path, args: &[&str], cfg: &std::path::Path) {
    let sock_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut child = Command::new(env!("CARGO_BIN_EXE_braid"))
        .args(args)
        .arg(cfg)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000")
        .env_remove("WATCHDOG_PID")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn braid");
    let mut buf = [0u8; 512];
    let mut recv = || -> String {
        let n = sock.recv(&mut buf).expect("a notification within 10 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let first = recv();
    assert!(first.contains("READY=1"), "{first:?}");
    // Half of 400 ms: about five keep-alives a second.
    let t0 = Instant::now();
    let mut pings = 0;
    while t0.elapsed() < Duration::from_secs(1) {
        if recv().contains("WATCHDOG=1") {
            pings += 1;
        }
    }
    assert!((3..=8).contains(&pings), "{pings} watchdog pings in 1 s");
    nix_kill_term(child.id());
    let mut stopping = false;
    for _ in 0..20 {
        if recv().contains("STOPPING=1") {
            stopping = true;
            break;
        }
    }
    assert!(stopping, "no STOPPING=1 after SIGTERM");
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status:?}");
}

fn nix_kill_term(pid: u32) {
    let r = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(r.success());
}
