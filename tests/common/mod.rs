//! Helpers shared by the integration tests that run a relay in the test process.
#![allow(dead_code)] // each test binary uses a part

use braid::config;
use braid::relay::{self, RelayHandle, RelayOptions};
use braid::transport::tls;
use std::path::Path;

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
