//! Power-on-to-live (issue 5): `braid edge` started as a process goes live by itself
//! (`[stream] autostart`, the default) and reports the time from its start to the
//! relay's first acknowledgement of media; with `autostart = false` it connects but
//! sends nothing. The relay runs in this process so the test can watch the first
//! media arrive.

mod common;
use braid::system::TempDir;
use braid::transport::tls;
use common::*;
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `braid edge` with the test source at 2 Mbit/s over two loopback links.
fn spawn_edge(
    dir: &Path,
    relay: SocketAddr,
    relay_fp: &tls::Fingerprint,
    stats: u16,
    extra: &str,
) -> Child {
    spawn_edge_with(dir, relay, relay_fp, stats, 2000, "", extra)
}

/// `spawn_edge` with the rate, lines for both links and extra tables.
fn spawn_edge_with(
    dir: &Path,
    relay: SocketAddr,
    relay_fp: &tls::Fingerprint,
    stats: u16,
    rate_kbps: u32,
    per_link: &str,
    extra: &str,
) -> Child {
    let cfg = dir.join("edge.toml");
    std::fs::write(
        &cfg,
        format!(
            "[device]\nid = \"cam\"\ncert = \"cam.crt\"\nkey = \"cam.key\"\n\
             [relay]\naddress = \"{relay}\"\nfingerprint = \"{}\"\n\
             [input]\nkind = \"test\"\nrate_kbps = {rate_kbps}\n\
             [stats]\nlisten = \"127.0.0.1:{stats}\"\n\
             [[link]]\nname = \"a\"\nbind = \"127.0.0.11\"\n{per_link}\n\
             [[link]]\nname = \"b\"\nbind = \"127.0.0.12\"\n{per_link}\n{extra}",
            tls::format_fingerprint(relay_fp)
        ),
    )
    .expect("edge config");
    Command::new(env!("CARGO_BIN_EXE_braid"))
        .args(["edge", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn braid edge")
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// `GET /api/stats` of the edge, or None while it is not listening yet.
fn edge_stats(port: u16) -> Option<serde_json::Value> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /api/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    serde_json::from_str(text.split_once("\r\n\r\n")?.1).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_process_goes_live_by_itself_within_a_second() {
    let dir = TempDir::new("power-on").expect("tempdir");
    let (relay, relay_fp) = relay_for(dir.path()).await;
    let port = free_port();
    let t0 = Instant::now();
    let child = spawn_edge(dir.path(), relay.local_addr(), &relay_fp, port, "");
    // Outside view: from spawning the process to the first media at the relay.
    let mut first_at_relay = None;
    while t0.elapsed() < Duration::from_secs(10) {
        if relay_media_in(&relay).await > 0 {
            first_at_relay = Some(t0.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Inside view: the edge's own figure, process start to the first media ack.
    let mut live_after = None;
    let mut state = String::new();
    while t0.elapsed() < Duration::from_secs(10) {
        if let Some(s) = edge_stats(port) {
            state = s["state"].as_str().unwrap_or("").to_string();
            if let Some(v) = s["live_after_s"].as_f64() {
                live_after = Some(v);
                if state == "live" {
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop(child);
    relay.shutdown().await;
    let first_at_relay = first_at_relay.expect("no media reached the relay in 10 s");
    let live_after = live_after.expect("the edge never reported live_after_s");
    println!(
        "start to first media at the relay: {:.0} ms (spawn to relay), \
         live_after_s {:.3} (process start to first ack); panel state {state}",
        first_at_relay.as_secs_f64() * 1e3,
        live_after
    );
    assert!(
        first_at_relay <= Duration::from_secs(1),
        "{first_at_relay:?}"
    );
    assert!(live_after <= 1.0, "{live_after}");
    assert!(live_after <= first_at_relay.as_secs_f64() + 0.1);
    assert_eq!(state, "live");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_autostart_the_edge_connects_but_sends_nothing() {
    let dir = TempDir::new("power-on-held").expect("tempdir");
    let (relay, relay_fp) = relay_for(dir.path()).await;
    let port = free_port();
    let child = spawn_edge(
        dir.path(),
        relay.local_addr(),
        &relay_fp,
        port,
        "[stream]\nautostart = false\n",
    );
    let t0 = Instant::now();
    let mut last = None;
    while t0.elapsed() < Duration::from_secs(10) {
        if let Some(s) = edge_stats(port) {
            let connected = s["links"]
                .as_array()
                .is_some_and(|l| l.iter().all(|l| l["connected"] == true));
            if connected && t0.elapsed() > Duration::from_secs(2) {
                last = Some(s);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let media = relay_media_in(&relay).await;
    stop(child);
    relay.shutdown().await;
    let s = last.expect("the edge never connected its links");
    assert_eq!(media, 0, "media sent without autostart");
    assert_eq!(s["live"], false);
    assert_eq!(s["state"], "ready");
    assert!(s["live_after_s"].is_null());
}

/// Data usage per link is counted, a link at its monthly cap is given the lowest
/// hint, and the counts survive a restart (`[usage] file`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_usage_is_counted_capped_and_kept_across_restarts() {
    let dir = TempDir::new("usage").expect("tempdir");
    let (relay, relay_fp) = relay_for(dir.path()).await;
    let port = free_port();
    let usage = "[usage]\nfile = \"usage.json\"\n";
    let run = |secs: u64| {
        let child = spawn_edge_with(
            dir.path(),
            relay.local_addr(),
            &relay_fp,
            port,
            8000,
            "data_cap_mb = 1",
            usage,
        );
        async move {
            let t0 = Instant::now();
            let mut last = None;
            while t0.elapsed() < Duration::from_secs(secs) {
                if let Some(s) = edge_stats(port) {
                    last = Some(s);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            stop(child);
            last.expect("edge stats")
        }
    };
    let link = |s: &serde_json::Value, name: &str| -> serde_json::Value {
        s["usage"]["links"]
            .as_array()
            .and_then(|l| l.iter().find(|l| l["link"] == name).cloned())
            .unwrap_or_else(|| panic!("no usage for {name}: {s}"))
    };
    // 8 Mbit/s for 4 s over two links capped at 1 MB each: at least one reaches its cap
    // (which one depends on the scheduler's split).
    let first = run(4).await;
    let hint = |id: u64| {
        first["sender"]["links"]
            .as_array()
            .and_then(|l| l.iter().find(|l| l["id"] == id).cloned())
            .and_then(|l| l["quality"].as_f64())
    };
    let mut capped = 0;
    for (id, name) in [(0, "a"), (1, "b")] {
        let u = link(&first, name);
        println!("after 4 s: {u}, hint {:?}", hint(id));
        assert_eq!(u["month_cap_bytes"], 1_000_000);
        let over = u["month_bytes"].as_u64().unwrap() >= 1_000_000;
        assert_eq!(u["cap_reached"], over, "{u}");
        let listed = first["links"]
            .as_array()
            .and_then(|l| l.iter().find(|l| l["name"] == name).cloned())
            .expect("link in the links list");
        assert_eq!(listed["at_cap"], over, "{listed}");
        assert!(listed["modem"].is_null(), "no modem on loopback: {listed}");
        if over {
            capped += 1;
            assert!(hint(id).is_some_and(|q| q <= 0.05), "{:?}", hint(id));
            assert!(
                listed["quality"].as_f64().is_some_and(|q| q <= 0.05),
                "{listed}"
            );
        }
    }
    assert!(capped >= 1, "{first}");
    let a = link(&first, "a");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("usage.json")).unwrap())
            .expect("usage.json");
    let saved_a = saved["links"]["a"]["month_bytes"].as_u64().unwrap();
    assert!(saved_a >= a["month_bytes"].as_u64().unwrap(), "{saved}");
    // A restart carries on from the file.
    let second = run(2).await;
    let a2 = link(&second, "a")["month_bytes"].as_u64().unwrap();
    println!("after the restart: a {a2} bytes this month (saved {saved_a})");
    assert!(a2 > saved_a);
    relay.shutdown().await;
}
