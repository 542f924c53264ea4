//! The edge behind the web page (issue 6): start and stop from outside, settings
//! applied while streaming, and a stream restart with a changed configuration that
//! keeps what the engineer chose (stopped stays stopped). Relay and edge run in this
//! process over loopback.

mod common;
use braid::config::{self, EdgeConfig};
use braid::edge::supervisor::Supervisor;
use braid::system::TempDir;
use braid::transport::tls;
use braid::web::EdgeControl;
use common::*;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

fn edge_cfg(
    dir: &Path,
    relay: SocketAddr,
    fp: &tls::Fingerprint,
    rate_kbps: u32,
    cap: &str,
) -> EdgeConfig {
    let text = format!(
        "[device]\nid = \"cam\"\ncert = \"cam.crt\"\nkey = \"cam.key\"\n\
         [relay]\naddress = \"{relay}\"\nfingerprint = \"{}\"\n\
         [input]\nkind = \"test\"\nrate_kbps = {rate_kbps}\n\
         [stats]\nenabled = false\n\
         [[link]]\nname = \"a\"\nbind = \"127.0.0.11\"\n{cap}\n\
         [[link]]\nname = \"b\"\nbind = \"127.0.0.12\"\n",
        tls::format_fingerprint(fp)
    );
    config::parse_edge(&text, &dir.join("edge.toml")).expect("edge config")
}

/// Waits until `f` holds (polled every 50 ms) or panics after `limit`.
async fn until<F: FnMut() -> bool>(limit: Duration, what: &str, mut f: F) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t0.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_apply_restart_and_start_again() {
    let dir = TempDir::new("supervisor").expect("tempdir");
    let (relay, fp) = relay_for(dir.path()).await;
    let sup = Supervisor::start(
        edge_cfg(dir.path(), relay.local_addr(), &fp, 2000, ""),
        None,
    )
    .await
    .expect("edge");

    // Live by itself.
    let s = sup.clone();
    until(Duration::from_secs(5), "first media acked", move || {
        s.snapshot().sender.first_media_acked_s.is_some()
    })
    .await;
    assert!(sup.snapshot().live);
    // The relay's capture-to-output latency reaches the edge (the page shows it).
    let s = sup.clone();
    until(
        Duration::from_secs(4),
        "capture-to-output in the summary",
        move || {
            s.snapshot().relay.is_some_and(|r| {
                r.capture_to_output_p50_ms.is_some() && r.capture_to_output_p95_ms.is_some()
            })
        },
    )
    .await;

    // Stop: nothing more reaches the relay, the state says stopped.
    assert!(!sup.set_live(false));
    let s = sup.clone();
    until(Duration::from_secs(2), "stopped", move || {
        !s.snapshot().live
    })
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await; // repairs in flight end
    let before = relay_media_in(&relay).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(relay_media_in(&relay).await, before, "media after stop");
    assert_eq!(sup.state(), braid::device::leds::BoxState::Stopped);

    // A data cap applied while running shows in the usage view without a restart.
    let session = sup.snapshot().session;
    let capped = edge_cfg(
        dir.path(),
        relay.local_addr(),
        &fp,
        2000,
        "data_cap_mb = 700",
    );
    sup.apply_live(&capped);
    let s = sup.clone();
    until(Duration::from_secs(3), "cap applied", move || {
        s.snapshot().usage.is_some_and(|u| {
            u.links
                .iter()
                .any(|l| l.link == "a" && l.month_cap_bytes == Some(700_000_000))
        })
    })
    .await;
    assert_eq!(
        sup.snapshot().session,
        session,
        "applied live, same session"
    );

    // Restart with another source rate: a new session, still stopped.
    let slower = edge_cfg(
        dir.path(),
        relay.local_addr(),
        &fp,
        1000,
        "data_cap_mb = 700",
    );
    sup.restart_stream(slower).await.expect("restart");
    let after = sup.snapshot();
    assert_ne!(after.session, session, "a new session after the restart");
    let s = sup.clone();
    until(Duration::from_secs(5), "links back", move || {
        s.snapshot().links.iter().all(|l| l.connected)
    })
    .await;
    assert!(
        !sup.snapshot().live,
        "stopped stays stopped across the restart"
    );
    let before = relay_media_in(&relay).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(relay_media_in(&relay).await, before, "media while stopped");

    // Start again: media flows at the new rate.
    assert!(sup.set_live(true));
    let r = &relay;
    let t0 = Instant::now();
    loop {
        if relay_media_in(r).await > before + 50 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(3), "media after start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let bps = sup.snapshot().source_bps;
    assert!(
        (700_000.0..1_300_000.0).contains(&bps),
        "source at the new rate: {bps}"
    );
    sup.shutdown().await;
    relay.shutdown().await;
}
