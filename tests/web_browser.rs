//! The local web page in headless Chromium (issue 6), against the real daemon:
//! `braid edge` as a process with `[web]`, its two links through the userspace link
//! emulator to a relay in this process. `tests/browser/page.mjs` (Playwright-core
//! driving Debian's /usr/bin/chromium) sets the first password, logs out and in, sees
//! the numbers move, changes a link's data cap in the settings form and sees it
//! applied, saves screenshots at 390x844 and 1366x768 (target/browser-shots), and
//! times how long the page takes to show a link down after this harness cuts it in
//! the emulator (must be under 2 s).
//!
//! Needs `make web-deps` (playwright-core, uPlot) and `make deps` (chromium): `make
//! test` runs both first. Without them the test fails and says what is missing.

mod common;
use braid::sim::emulator::{parse_link_spec, Emulator, EmulatorConfig, EmulatorHandle};
use braid::system::TempDir;
use braid::transport::tls;
use common::*;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

async fn emulator_for(relay: SocketAddr) -> EmulatorHandle {
    let links = ["127.0.0.11", "127.0.0.12"]
        .iter()
        .zip(["modem0", "modem1"])
        .map(|(ip, name)| {
            let mut l = parse_link_spec(&format!("{ip},rate=8M,delay=20ms")).expect("link spec");
            l.name = name.to_string();
            l
        })
        .collect();
    Emulator::start(
        EmulatorConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            relay,
            links,
            pass_unknown: false,
        },
        None,
    )
    .await
    .expect("emulator")
}

fn spawn_edge(dir: &Path, relay: SocketAddr, fp: &tls::Fingerprint, web: u16) -> Child {
    let cfg = dir.join("edge.toml");
    std::fs::write(
        &cfg,
        format!(
            "# Written by tests/web_browser.rs\n\
             [device]\nid = \"cam\"\ncert = \"cam.crt\"\nkey = \"cam.key\"\n\n\
             [relay]\naddress = \"{relay}\"\nfingerprint = \"{}\"\nlatency_ms = 500\n\n\
             [input]\nkind = \"test\"\nrate_kbps = 3000\n\n\
             [stats]\nenabled = false\n\n\
             [web]\nlisten = \"127.0.0.1:{web}\"\n\n\
             [ota]\nbackend = \"dir\"\nslots_dir = \"slots\"\npublic_keys = [\"admin.pub\"]\n\
             compatible = \"braid-test\"\nreboot_command = [\"true\"]\nstate_dir = \"ota\"\n\n\
             [[link]]\nname = \"modem0\"\nbind = \"127.0.0.11\"\n\n\
             [[link]]\nname = \"modem1\"\nbind = \"127.0.0.12\"\n",
            tls::format_fingerprint(fp)
        ),
    )
    .expect("edge config");
    Command::new(env!("CARGO_BIN_EXE_braid"))
        .args(["edge", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn braid edge")
}

fn health(port: u16) -> bool {
    use std::io::Read;
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.starts_with("HTTP/1.1 200")
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

fn prerequisites() -> Result<(), String> {
    let pw = Path::new(ROOT).join("web/node_modules/playwright-core");
    if !pw.exists() {
        return Err(format!("{} missing: run `make web-deps`", pw.display()));
    }
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        return Err(format!(
            "{chromium} missing: run `make deps` (Debian package chromium)"
        ));
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Err("node missing: run `make web-deps`".into());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_in_chromium_against_the_real_edge() {
    if let Err(e) = prerequisites() {
        panic!("browser test cannot run: {e}");
    }
    let dir = TempDir::new("web-browser").expect("tempdir");
    let (relay, fp) = relay_for(dir.path()).await;
    let emu = emulator_for(relay.local_addr()).await;
    let port = free_port();
    let edge = spawn_edge(dir.path(), emu.local_addr(), &fp, port);
    let t0 = Instant::now();
    while !health(port) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "edge web page not up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A signed update for the page to upload (directory slots, a 300 kB payload).
    let (_, key) = braid::ota::keys::keygen(dir.path(), "admin").expect("keygen");
    let payload = dir.path().join("payload.bin");
    std::fs::write(&payload, vec![0x5a; 300_000]).expect("payload");
    let bundle = dir.path().join("update-0.2.0.braidb");
    braid::ota::bundle::create(
        &braid::ota::keys::SecretKey::load(&key).expect("key"),
        "0.2.0",
        "braid-test",
        braid::ota::bundle::PayloadKind::Binary,
        &payload,
        &bundle,
    )
    .expect("bundle");
    let shots: PathBuf = Path::new(ROOT).join("target/browser-shots");
    std::fs::create_dir_all(&shots).expect("shot dir");

    let mut node = Command::new("node")
        .arg(Path::new(ROOT).join("tests/browser/page.mjs"))
        .env("BASE_URL", format!("http://127.0.0.1:{port}"))
        .env("SHOT_DIR", &shots)
        .env("UPDATE_FILE", &bundle)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn node");
    let mut stdin = node.stdin.take().expect("stdin");
    let stdout = node.stdout.take().expect("stdout");
    // The script's lines, read on a thread (it blocks).
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut last = String::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let line = tokio::time::timeout_at(deadline.into(), rx.recv())
            .await
            .expect("browser script timed out");
        let Some(line) = line else { break };
        eprintln!("page.mjs: {line}");
        if line == "READY_FOR_CUT" {
            assert!(emu.set_loss("modem0", 1.0), "emulator link");
            writeln!(stdin, "modem0").expect("signal the cut");
            stdin.flush().expect("flush");
        }
        last = line;
    }
    let status = node.wait().expect("node exit");
    stop(edge);
    let _ = emu.shutdown().await;
    relay.shutdown().await;
    let result: serde_json::Value = serde_json::from_str(&last).unwrap_or(serde_json::Value::Null);
    assert!(
        status.success() && result["ok"] == serde_json::Value::Bool(true),
        "browser flow failed: {last}"
    );
    let ms = result["cut_detect_ms"].as_f64().expect("cut timing");
    assert!(ms <= 2000.0, "link shown down after {ms} ms");
    for s in result["screenshots"].as_array().expect("screenshots") {
        let p = s.as_str().expect("path");
        assert!(
            std::fs::metadata(p)
                .map(|m| m.len() > 1000)
                .unwrap_or(false),
            "screenshot {p}"
        );
    }
}
