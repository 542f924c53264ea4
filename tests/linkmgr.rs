//! The link manager end to end without hardware (issue 5): a fake sysfs tree with a
//! Sierra modem whose AT port is a simulated modem on a pseudo-terminal and whose
//! network interface is a link's; its SINR collapsing turns into that link's
//! quality hint, and the other link gets none.

use braid::device::modem::discover::fake;
use braid::device::modem::sim::SimModem;
use braid::device::modem::{Dialect, ModemConfig, ModemState};
use braid::edge::linkmgr::{self, Discovery, QUALITY_FLOOR};
use braid::system::TempDir;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modem_signal_becomes_the_hint_of_its_link() {
    let dir = TempDir::new("linkmgr").expect("tempdir");
    let sys = dir.path().join("sys");
    let dev = dir.path().join("dev");
    std::fs::create_dir_all(&dev).expect("dev");
    fake::usb_device(
        &sys,
        "1-3",
        0x1199,
        0x9071,
        "Sierra Wireless, Incorporated",
        "EM7455",
    )
    .expect("usb");
    fake::tty(&sys, "1-3", 3, "ttyUSB2").expect("tty");
    fake::netdev(&sys, "1-3", 8, "wwan0").expect("netdev");
    let sim = SimModem::start(Dialect::Sierra).expect("pty modem");
    std::os::unix::fs::symlink(sim.path(), dev.join("ttyUSB2")).expect("symlink");

    let (views_tx, views_rx) = watch::channel(Vec::new());
    let (hint_tx, mut hints) = mpsc::channel(16);
    let (stop_tx, stop_rx) = watch::channel(false);
    let cfg = ModemConfig {
        apn: None,
        poll_interval: Duration::from_millis(200),
        command_timeout: Duration::from_secs(1),
    };
    let task = tokio::spawn(linkmgr::run(
        cfg,
        Discovery {
            sys_root: sys,
            dev_root: dev,
        },
        vec![
            (0, "cell".into(), "wwan0".into()),
            (1, "wifi".into(), "wlan0".into()),
        ],
        views_tx,
        hint_tx,
        stop_rx,
    ));
    // First the modem's own figure: 8.4 dB is a good signal.
    let mut first = next(&mut hints).await;
    if first.1 != 1.0 {
        // The very first collection may run before the first poll (no signal yet).
        first = next(&mut hints).await;
    }
    assert_eq!(first, (0, 1.0));
    // The cell fades.
    sim.set(|f| f.sinr_db = Some(-8.0));
    let faded = Instant::now();
    let hint = next(&mut hints).await;
    let took = faded.elapsed();
    assert_eq!(hint, (0, QUALITY_FLOOR));
    let views = views_rx.borrow().clone();
    let _ = stop_tx.send(true);
    task.await.expect("link manager");
    println!("SINR 8.4 -> -8.0 dB seen as link hint {QUALITY_FLOOR} after {took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(views.len(), 1, "{views:#?}");
    let v = &views[0];
    assert_eq!(v.link.as_deref(), Some("cell"));
    assert_eq!(v.port.netdev.as_deref(), Some("wwan0"));
    assert_eq!(v.status.state, ModemState::Present);
    assert_eq!(v.status.sinr_db, Some(-8.0));
    assert_eq!(v.quality, QUALITY_FLOOR);
}

async fn next(hints: &mut mpsc::Receiver<(u8, f64)>) -> (u8, f64) {
    tokio::time::timeout(Duration::from_secs(10), hints.recv())
        .await
        .expect("a hint within 10 s")
        .expect("hint channel open")
}
