//! Helpers shared by the integration tests that run a relay in the test process.
#![allow(dead_code)] // each test binary uses a part

use braid::config;
use braid::relay::{self, RelayHandle, RelayOptions};
use braid::transport::tls;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A relay on 127.0.0.1:0 that knows one device, `cam` (identity written into `dir`
/// as cam.crt / cam.key), with a UDP output to the discard port. Returns the relay
/// and its certificate's fingerprint for the edge's config.
pub async fn relay_for(dir: &Path) -> (RelayHandle, tls::Fingerprint) {
    let relay_fp = tls::write_identity(dir, "relay").expect("relay identity");
    let dev_fp = tls::write_identity(dir, "cam").expect("device identity");
    let text = format!(
        "[relay]\nlisten = \"127.0.0.1:0\"\ncert = \"relay.crt\"\nkey = \"relay.key\"\n\
         [stats]\nlisten = \"127.0.0.1:0\"\n\
         [[device]]\nid = \"cam\"\nfingerprint = \"{}\"\n\
         [[device.output]]\nkind = \"udp\"\naddress = \"127.0.0.1:9\"\n",
        tls::format_fingerprint(&dev_fp)
    );
    let cfg = config::parse_relay(&text, &dir.join("relay.toml")).expect("relay config");
    let h = relay::start(cfg, RelayOptions::default())
        .await
        .expect("relay");
    (h, relay_fp)
}

/// A TCP port free on loopback right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Media datagrams the relay has received, all sessions.
pub async fn relay_media_in(relay: &RelayHandle) -> u64 {
    relay
        .stats()
        .await
        .sessions
        .iter()
        .map(|s| s.receiver.media_in)
        .sum()
}

// --- external programs (RAUC, dbus-daemon, openssl, image/build.sh) ---------------

/// Whether `tool` is on PATH.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Processes killed (SIGKILL) and reaped when the test ends, pass or fail.
pub struct Procs(pub Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in self.0.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < Duration::from_secs(20), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A private `dbus-daemon` of the system-bus type whose policy lets everyone own
/// and call everything, its socket in `dir`. Returns the daemon and its address
/// (for `DBUS_SYSTEM_BUS_ADDRESS`); the socket exists when this returns.
pub fn private_system_bus(dir: &Path) -> (Child, String) {
    let sock = dir.join("bus.sock");
    let bus = format!("unix:path={}", sock.display());
    let bus_conf = dir.join("bus.conf");
    std::fs::write(
        &bus_conf,
        format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>{bus}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#
        ),
    )
    .unwrap();
    let daemon = Command::new("dbus-daemon")
        .arg(format!("--config-file={}", bus_conf.display()))
        .arg("--nofork")
        .stdout(Stdio::null())
        // "Failed to set fd limit": harmless without CAP_SYS_RESOURCE.
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = Procs(vec![daemon]);
    wait_for("dbus socket", || sock.exists());
    (guard.0.pop().unwrap(), bus)
}
