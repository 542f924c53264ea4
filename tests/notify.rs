//! The daemons speak systemd's notify protocol: `braid relay` started with a
//! `NOTIFY_SOCKET` (a datagram socket this test binds, as systemd would) and a
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
    let sock_path = d.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut child = Command::new(env!("CARGO_BIN_EXE_braid"))
        .args(["relay", "--config"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000")
        .env_remove("WATCHDOG_PID")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn braid relay");
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
