//! The modem poller against emulated modems on real ptys: every dialect, and each
//! failure mode (silence, junk, slow echoing modem, URCs mid-answer, unplug and
//! re-plug, no SIM).

use std::path::Path;
use std::time::{Duration, Instant};

use braid::device::modem::poller::probe_at;
use braid::device::modem::sim::{Profile, SimModem};
use braid::device::modem::{
    spawn_poller, Dialect, ModemConfig, ModemState, ModemStatus, RegState, SimState,
};
use braid::system::TempDir;
use tokio::sync::watch;

const APN: &str = "internet.test";

fn cfg() -> ModemConfig {
    ModemConfig {
        apn: Some(APN.into()),
        poll_interval: Duration::from_millis(100),
        command_timeout: Duration::from_millis(300),
    }
}

async fn wait_for(
    rx: &mut watch::Receiver<ModemStatus>,
    what: &str,
    within: Duration,
    f: impl FnMut(&ModemStatus) -> bool,
) -> ModemStatus {
    let got = match tokio::time::timeout(within, rx.wait_for(f)).await {
        Ok(Ok(s)) => Some(s.clone()),
        _ => None,
    };
    got.unwrap_or_else(|| panic!("no {what} within {within:?}: {:#?}", *rx.borrow()))
}

fn polled(s: &ModemStatus) -> bool {
    s.state == ModemState::Present && s.rsrp_dbm.is_some() && s.operator.is_some()
}

fn close(a: Option<f32>, b: f32) -> bool {
    a.is_some_and(|a| (a - b).abs() < 0.01)
}

fn check_profile(s: &ModemStatus, p: &Profile, dialect: Dialect) {
    assert_eq!(s.dialect, Some(dialect), "{s:#?}");
    assert_eq!(s.maker.as_deref(), Some(p.maker), "{s:#?}");
    assert_eq!(s.model.as_deref(), Some(p.model), "{s:#?}");
    assert_eq!(s.imei.as_deref(), Some(p.imei), "{s:#?}");
    assert_eq!(s.operator.as_deref(), Some(p.operator), "{s:#?}");
    assert_eq!(s.tech, Some(p.tech), "{s:#?}");
    assert_eq!(s.sim, Some(SimState::Ready), "{s:#?}");
    assert_eq!(s.registration, Some(RegState::Home), "{s:#?}");
    assert!(close(s.rssi_dbm, p.rssi_dbm), "{s:#?}");
    assert!(close(s.rsrp_dbm, p.rsrp_dbm), "{s:#?}");
    assert!(close(s.rsrq_db, p.rsrq_db), "{s:#?}");
    match p.sinr_db {
        Some(v) => assert!(close(s.sinr_db, v), "{s:#?}"),
        None => assert_eq!(s.sinr_db, None, "{s:#?}"),
    }
    assert!(s.last_ok.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dialect_is_reported() {
    let mut runs = Vec::new();
    for d in Dialect::ALL {
        runs.push(tokio::spawn(async move {
            let sim = SimModem::start(d).expect("pty");
            let h = spawn_poller(sim.path().to_path_buf(), cfg());
            let mut rx = h.status();
            let s = wait_for(&mut rx, "first poll", Duration::from_secs(5), polled).await;
            check_profile(&s, &Profile::of(d), d);
            assert_eq!(s.apn.as_deref(), Some(APN));
            assert_eq!(s.errors, 0, "{s:#?}");
            assert!(sim
                .commands()
                .contains(&format!("AT+CGDCONT=1,\"IP\",\"{APN}\"")));
            assert!(sim.commands().contains(&d.signal_command().to_string()));
            h.shutdown().await;
        }));
    }
    for r in runs {
        r.await.expect("dialect run");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_is_unresponsive_then_recovers() {
    let sim = SimModem::start(Dialect::Quectel).expect("pty");
    let h = spawn_poller(sim.path().to_path_buf(), cfg());
    let mut rx = h.status();
    wait_for(&mut rx, "first poll", Duration::from_secs(5), polled).await;
    sim.set(|f| f.silent = true);
    let t = Instant::now();
    let s = wait_for(&mut rx, "unresponsive", Duration::from_secs(2), |s| {
        s.state == ModemState::Unresponsive
    })
    .await;
    // At most one poll interval idle, then one command timeout.
    assert!(
        t.elapsed() < Duration::from_millis(800),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(s.rsrp_dbm, None, "no stale figures while unresponsive");
    assert!(s.timeouts >= 1);
    assert!(s.last_error.as_deref().unwrap_or("").contains("no answer"));
    sim.set(|f| f.silent = false);
    let s = wait_for(&mut rx, "recovery", Duration::from_secs(5), polled).await;
    check_profile(&s, &Profile::of(Dialect::Quectel), Dialect::Quectel);
    assert!(s.opens >= 2, "{s:#?}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_later_than_the_timeout_are_unresponsive_then_recover() {
    let sim = SimModem::start(Dialect::Quectel).expect("pty");
    let h = spawn_poller(sim.path().to_path_buf(), cfg());
    let mut rx = h.status();
    wait_for(&mut rx, "first poll", Duration::from_secs(5), polled).await;
    // Every answer now comes after the command was given up; the late ones must not
    // be taken for later commands' answers (the port is flushed on reopening).
    sim.set(|f| f.delay = Duration::from_millis(350));
    wait_for(&mut rx, "unresponsive", Duration::from_secs(3), |s| {
        s.state == ModemState::Unresponsive
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    sim.set(|f| f.delay = Duration::ZERO);
    // Every figure is right again, none shifted from another command's answer.
    let s = wait_for(&mut rx, "recovery", Duration::from_secs(8), polled).await;
    check_profile(&s, &Profile::of(Dialect::Quectel), Dialect::Quectel);
    let s = wait_for(&mut rx, "a second good poll", Duration::from_secs(3), |n| {
        n.last_ok > s.last_ok && polled(n)
    })
    .await;
    check_profile(&s, &Profile::of(Dialect::Quectel), Dialect::Quectel);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_is_counted_and_answers_still_parsed() {
    let sim = SimModem::start(Dialect::Huawei).expect("pty");
    sim.set(|f| f.junk = true);
    let h = spawn_poller(sim.path().to_path_buf(), cfg());
    let mut rx = h.status();
    let s = wait_for(&mut rx, "poll through junk", Duration::from_secs(5), polled).await;
    check_profile(&s, &Profile::of(Dialect::Huawei), Dialect::Huawei);
    assert!(s.junk_lines >= 10, "{s:#?}");
    assert_eq!(s.errors, 0, "{s:#?}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_only_is_unresponsive_then_recovers() {
    let sim = SimModem::start(Dialect::Sierra).expect("pty");
    let h = spawn_poller(sim.path().to_path_buf(), cfg());
    let mut rx = h.status();
    wait_for(&mut rx, "first poll", Duration::from_secs(5), polled).await;
    sim.set(|f| f.garbage = true);
    let s = wait_for(&mut rx, "unresponsive", Duration::from_secs(2), |s| {
        s.state == ModemState::Unresponsive
    })
    .await;
    assert!(s.junk_lines >= 2, "{s:#?}");
    assert_eq!(s.operator, None);
    sim.set(|f| f.garbage = false);
    let s = wait_for(&mut rx, "recovery", Duration::from_secs(5), polled).await;
    check_profile(&s, &Profile::of(Dialect::Sierra), Dialect::Sierra);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_echoing_modem_is_parsed() {
    let sim = SimModem::start(Dialect::Sierra).expect("pty");
    sim.set(|f| {
        f.echo = true;
        f.delay = Duration::from_millis(60);
    });
    let h = spawn_poller(sim.path().to_path_buf(), cfg());
    let mut rx = h.status();
    let s = wait_for(&mut rx, "slow poll", Duration::from_secs(8), polled).await;
    check_profile(&s, &Profile::of(Dialect::Sierra), Dialect::Sierra);
    assert_eq!(s.timeouts, 0, "{s:#?}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urcs_mid_answer_are_not_taken_for_it() {
    let sim = SimModem::start(Dialect::Simcom).expect("pty");
    sim.set(|f| f.urcs = true);
    let h = spawn_poller(sim.path().to_path_buf(), cfg());
    let mut rx = h.status();
    let s = wait_for(&mut rx, "poll with URCs", Duration::from_secs(5), polled).await;
    // The URCs say roaming (+CEREG: 5) and CSQ 3; the answers say home and CSQ 22.
    check_profile(&s, &Profile::of(Dialect::Simcom), Dialect::Simcom);
    assert!(s.urcs >= 10, "{s:#?}");
    assert_eq!(s.errors, 0, "{s:#?}");
    h.shutdown().await;
}

fn repoint(link: &Path, to: &Path) {
    let tmp = link.with_extension("new");
    std::os::unix::fs::symlink(to, &tmp).expect("symlink");
    std::fs::rename(&tmp, link).expect("re-point");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unplug_mid_command_is_gone_and_replug_is_found() {
    let dir = TempDir::new("modem-replug").expect("tempdir");
    let link = dir.path().join("ttyMODEM");
    let mut sim = SimModem::start(Dialect::Quectel).expect("pty");
    std::os::unix::fs::symlink(sim.path(), &link).expect("symlink");
    let h = spawn_poller(link.clone(), cfg());
    let mut rx = h.status();
    wait_for(&mut rx, "first poll", Duration::from_secs(5), polled).await;
    // The device node goes with the device: point the link nowhere first, so a pty
    // number reused by another test is never followed.
    let dead = dir.path().join("unplugged");
    repoint(&link, &dead);
    sim.set(|f| f.unplug_on = Some("AT+CSQ".into()));
    let s = wait_for(&mut rx, "gone", Duration::from_secs(2), |s| {
        s.state == ModemState::Gone
    })
    .await;
    assert!(sim.unplugged());
    assert!(s.errors >= 1);
    assert_eq!(s.operator, None);
    let err = s.last_error.clone().unwrap_or_default();
    assert!(
        err.starts_with("read:") || err.starts_with("end of file"),
        "{err}"
    );
    sim.unplug();
    // Stays gone while nothing is there.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(rx.borrow().state, ModemState::Gone);
    // Re-plug: another modem appears and the link is re-pointed to it.
    let sim2 = SimModem::start(Dialect::Generic).expect("pty");
    repoint(&link, sim2.path());
    let s = wait_for(&mut rx, "re-plugged modem", Duration::from_secs(8), |s| {
        polled(s) && s.dialect == Some(Dialect::Generic)
    })
    .await;
    check_profile(&s, &Profile::of(Dialect::Generic), Dialect::Generic);
    assert!(s.opens >= 2);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_sim_is_reported() {
    let sim = SimModem::start(Dialect::Quectel).expect("pty");
    sim.set(|f| f.no_sim = true);
    let h = spawn_poller(sim.path().to_path_buf(), cfg());
    let mut rx = h.status();
    let s = wait_for(&mut rx, "poll", Duration::from_secs(5), polled).await;
    assert_eq!(s.sim, Some(SimState::NotInserted));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_vendor_signal_command_falls_back_to_cesq() {
    let sim = SimModem::start(Dialect::Quectel).expect("pty");
    sim.set(|f| f.refuse_vendor_signal = true);
    let h = spawn_poller(sim.path().to_path_buf(), cfg());
    let mut rx = h.status();
    // The first poll has CSQ only; later ones RSRP/RSRQ from AT+CESQ.
    let s = wait_for(&mut rx, "CESQ figures", Duration::from_secs(5), polled).await;
    assert_eq!(s.dialect, Some(Dialect::Quectel));
    assert!(close(s.rsrp_dbm, -96.0), "{s:#?}");
    assert!(close(s.rsrq_db, -10.0), "{s:#?}");
    assert!(close(s.rssi_dbm, -73.0), "{s:#?}");
    assert_eq!(s.state, ModemState::Present);
    assert!(sim.commands().iter().any(|c| c == "AT+CESQ"));
    h.shutdown().await;
}

#[test]
fn probe_finds_an_answering_port_only() {
    let sim = SimModem::start(Dialect::Generic).expect("pty");
    assert!(probe_at(sim.path(), Duration::from_millis(500)));
    sim.set(|f| f.silent = true);
    let t = Instant::now();
    assert!(!probe_at(sim.path(), Duration::from_millis(300)));
    assert!(t.elapsed() < Duration::from_secs(1));
    assert!(!probe_at(
        Path::new("/nonexistent/ttyUSB9"),
        Duration::from_millis(100)
    ));
}
