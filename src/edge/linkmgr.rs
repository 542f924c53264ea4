//! Link manager: the modems found on the box, polled, and tied to the links they
//! carry. A modem whose network interface is a link's `interface` gives that link
//! a quality hint from its radio signal ([`quality_from_signal`]), so the scheduler
//! moves traffic off a link whose signal collapses before it starts losing packets.

use crate::core::sender::LinkId;
use crate::device::modem::{self, ModemConfig, ModemHandle, ModemPort, ModemState, ModemStatus};
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// SINR at or above this is a healthy LTE/NR link (hint 1.0)...
const SINR_GOOD_DB: f64 = 5.0;
/// ...and at or below this one about to drop ([`QUALITY_FLOOR`]); linear between.
const SINR_BAD_DB: f64 = -5.0;
/// The same from RSRP when the modem gives no SINR.
const RSRP_GOOD_DBM: f64 = -100.0;
const RSRP_BAD_DBM: f64 = -120.0;
/// Hint for a link whose radio is at the bad end.
pub const QUALITY_FLOOR: f64 = 0.1;
/// How often the tty list is looked at for modems plugged in or out.
const RESCAN: Duration = Duration::from_secs(5);
/// How often statuses are collected and hints recomputed.
const COLLECT: Duration = Duration::from_secs(1);

/// The scheduler hint for a link from its modem's signal: 1.0 when the signal is
/// good or unknown, down to [`QUALITY_FLOOR`] when it is about to fail. SINR says
/// best whether the cell can still carry data; RSRP stands in when there is none.
pub fn quality_from_signal(sinr_db: Option<f64>, rsrp_dbm: Option<f64>) -> f64 {
    let scale = |v: f64, bad: f64, good: f64| {
        let x = ((v - bad) / (good - bad)).clamp(0.0, 1.0);
        QUALITY_FLOOR + x * (1.0 - QUALITY_FLOOR)
    };
    match (sinr_db, rsrp_dbm) {
        (Some(s), _) if s.is_finite() => scale(s, SINR_BAD_DB, SINR_GOOD_DB),
        (_, Some(r)) if r.is_finite() => scale(r, RSRP_BAD_DBM, RSRP_GOOD_DBM),
        _ => 1.0,
    }
}

/// The hint of a modem's status: only a modem that answers says anything.
pub fn quality_of(status: &ModemStatus) -> f64 {
    if status.state != ModemState::Present {
        return 1.0;
    }
    quality_from_signal(
        status.sinr_db.map(f64::from),
        status.rsrp_dbm.map(f64::from),
    )
}

/// One modem as shown in the stats: where it is, which link it carries, its status.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModemView {
    pub port: ModemPort,
    /// The link whose `interface` is this modem's network interface.
    pub link: Option<String>,
    /// The hint given to that link.
    pub quality: f64,
    pub status: ModemStatus,
}

/// Where modems are looked for: `/sys` and `/dev` on the box, a fake tree in tests.
#[derive(Debug, Clone)]
pub struct Discovery {
    pub sys_root: PathBuf,
    pub dev_root: PathBuf,
}

impl Discovery {
    pub fn system() -> Discovery {
        Discovery {
            sys_root: "/sys".into(),
            dev_root: "/dev".into(),
        }
    }

    fn find(&self) -> Vec<ModemPort> {
        modem::discover(&self.sys_root, &self.dev_root, |p| {
            modem::poller::probe_at(p, Duration::from_millis(500))
        })
    }
}

/// `ttyUSB*` / `ttyACM*` names present now.
fn tty_names(sys_root: &std::path::Path) -> BTreeSet<String> {
    std::fs::read_dir(sys_root.join("class/tty"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("ttyUSB") || n.starts_with("ttyACM"))
                .collect()
        })
        .unwrap_or_default()
}

/// Finds modems (again whenever the tty list changes), polls each on its own
/// thread, publishes their views and sends a quality hint for a link whenever it
/// changes. `links` are (id, name, interface) of links bound to an interface.
/// Ends when `shutdown` turns true.
pub async fn run(
    cfg: ModemConfig,
    discovery: Discovery,
    links: Vec<(LinkId, String, String)>,
    views: watch::Sender<Vec<ModemView>>,
    hints: mpsc::Sender<(LinkId, f64)>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut pollers: HashMap<PathBuf, (ModemPort, ModemHandle)> = HashMap::new();
    let mut seen: Option<BTreeSet<String>> = None;
    let mut last_hint: HashMap<LinkId, f64> = HashMap::new();
    let mut last_scan = tokio::time::Instant::now() - RESCAN;
    let mut tick = tokio::time::interval(COLLECT);
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tick.tick() => {}
        }
        if *shutdown.borrow() {
            break;
        }
        if last_scan.elapsed() >= RESCAN {
            last_scan = tokio::time::Instant::now();
            let root = discovery.sys_root.clone();
            let names = tokio::task::spawn_blocking(move || tty_names(&root))
                .await
                .unwrap_or_default();
            if seen.as_ref() != Some(&names) {
                seen = Some(names);
                // Probing unknown ports may take 500 ms each: off the runtime.
                let d = discovery.clone();
                let found = tokio::task::spawn_blocking(move || d.find())
                    .await
                    .unwrap_or_default();
                pollers.retain(|tty, _| found.iter().any(|p| &p.tty == tty));
                for port in found {
                    if !pollers.contains_key(&port.tty) {
                        tracing::info!(
                            tty = %port.tty.display(),
                            netdev = ?port.netdev,
                            "modem found"
                        );
                        let h = modem::spawn_poller(port.tty.clone(), cfg.clone());
                        pollers.insert(port.tty.clone(), (port, h));
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(pollers.len());
        let mut changed = Vec::new();
        for (port, h) in pollers.values() {
            let status = h.snapshot();
            let link = links
                .iter()
                .find(|l| port.netdev.as_deref() == Some(l.2.as_str()));
            let quality = quality_of(&status);
            if let Some((id, name, _)) = link {
                if last_hint.get(id) != Some(&quality) {
                    last_hint.insert(*id, quality);
                    tracing::info!(link = %name, quality, sinr_db = ?status.sinr_db, "link quality hint");
                    changed.push((*id, quality));
                }
            }
            out.push(ModemView {
                port: port.clone(),
                link: link.map(|l| l.1.clone()),
                quality,
                status,
            });
        }
        out.sort_by(|a, b| a.port.tty.cmp(&b.port.tty));
        // The views first: whoever acts on a hint finds the status behind it.
        views.send_replace(out);
        for h in changed {
            let _ = hints.try_send(h);
        }
    }
    for (_, (_, h)) in pollers.drain() {
        h.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_maps_to_a_hint() {
        assert_eq!(quality_from_signal(None, None), 1.0);
        assert_eq!(quality_from_signal(Some(12.0), Some(-130.0)), 1.0);
        assert_eq!(quality_from_signal(Some(-8.0), None), QUALITY_FLOOR);
        let mid = quality_from_signal(Some(0.0), None);
        assert!((mid - 0.55).abs() < 1e-9, "{mid}");
        // RSRP only when there is no SINR.
        assert_eq!(quality_from_signal(None, Some(-90.0)), 1.0);
        assert_eq!(quality_from_signal(None, Some(-125.0)), QUALITY_FLOOR);
        assert_eq!(
            quality_from_signal(Some(f64::NAN), Some(-125.0)),
            QUALITY_FLOOR
        );
    }

    #[test]
    fn only_an_answering_modem_gives_a_hint() {
        let mut s = ModemStatus::new("/dev/ttyUSB2".into());
        s.sinr_db = Some(-10.0);
        assert_eq!(quality_of(&s), 1.0, "still starting");
        s.state = ModemState::Present;
        assert_eq!(quality_of(&s), QUALITY_FLOOR);
        s.state = ModemState::Unresponsive;
        assert_eq!(quality_of(&s), 1.0);
    }
}
