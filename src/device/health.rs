//! Box health: CPU, load, memory, temperatures, disk and uptime, via `sysinfo`.
//!
//! [`HealthMonitor::refresh`] takes one [`HealthSnapshot`] (blocking: it reads
//! `/proc` and `/sys`); [`HealthMonitor::spawn`] does that on a schedule on the
//! blocking pool and publishes each snapshot on a `watch` channel, for the stats
//! endpoint and for the bitrate controller's temperature cap
//! ([`HealthSnapshot::max_temp_c`]).
//!
//! Temperatures come from `sysinfo`'s components (hwmon). When it finds none with a
//! reading, the thermal zones under `/sys/class/thermal/thermal_zone*/temp`
//! (millidegrees Celsius) are read instead: that is where a Raspberry Pi exposes
//! its SoC temperature. The root is a parameter so tests can use a fake tree.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use sysinfo::{Components, Disks, System};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Where Linux lists its thermal zones.
pub const THERMAL_ROOT: &str = "/sys/class/thermal";

/// One temperature sensor reading.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Temperature {
    /// Sensor name (hwmon label, or the zone's `type`, e.g. `cpu-thermal`).
    pub label: String,
    /// Degrees Celsius.
    pub celsius: f32,
}

/// Space on the filesystem holding the data directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskUsage {
    /// Mount point of that filesystem.
    pub mount_point: PathBuf,
    /// Size in bytes.
    pub total_bytes: u64,
    /// Bytes available to the box.
    pub available_bytes: u64,
    /// `total - available`.
    pub used_bytes: u64,
}

/// One health reading.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthSnapshot {
    /// CPU usage averaged over all cores since the previous refresh, 0..=100. The
    /// first refresh of a monitor has no previous one and may read 0.
    pub cpu_percent: f32,
    /// Logical CPUs.
    pub cores: usize,
    /// Load average over 1, 5 and 15 minutes.
    pub load: [f64; 3],
    /// Memory in use, bytes.
    pub mem_used_bytes: u64,
    /// Memory installed, bytes.
    pub mem_total_bytes: u64,
    /// Every sensor with a reading.
    pub temperatures: Vec<Temperature>,
    /// The data directory's filesystem, if it could be found.
    pub disk: Option<DiskUsage>,
    /// Seconds since boot.
    pub uptime_s: u64,
}

impl HealthSnapshot {
    /// The hottest sensor, for the bitrate controller's temperature cap. `None`
    /// when the box has no readable sensor.
    pub fn max_temp_c(&self) -> Option<f32> {
        self.temperatures.iter().map(|t| t.celsius).reduce(f32::max)
    }
}

/// Reads `ROOT/thermal_zone*/temp` (millidegrees Celsius), labelled by the zone's
/// `type` file (or the zone's directory name). Zones that cannot be read or parsed
/// are skipped; the result is sorted by zone directory name.
pub fn read_thermal_zones(root: &Path) -> Vec<Temperature> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut zones: Vec<(String, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("thermal_zone").then(|| (name, e.path()))
        })
        .collect();
    zones.sort();
    zones
        .into_iter()
        .filter_map(|(name, dir)| {
            let raw = std::fs::read_to_string(dir.join("temp")).ok()?;
            let milli: i64 = raw.trim().parse().ok()?;
            let label = std::fs::read_to_string(dir.join("type"))
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .unwrap_or(name);
            Some(Temperature {
                label,
                celsius: milli as f32 / 1000.0,
            })
        })
        .collect()
}

/// Keeps the `sysinfo` handles between refreshes (CPU usage is a difference
/// between two of them).
pub struct HealthMonitor {
    sys: System,
    components: Components,
    disks: Disks,
    data_dir: PathBuf,
    thermal_root: PathBuf,
}

impl std::fmt::Debug for HealthMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthMonitor")
            .field("data_dir", &self.data_dir)
            .field("thermal_root", &self.thermal_root)
            .finish_non_exhaustive()
    }
}

impl HealthMonitor {
    /// A monitor for the filesystem holding `data_dir`, with thermal zones read
    /// from [`THERMAL_ROOT`]. Blocking (lists sensors and mounts): call it from
    /// startup code or the blocking pool.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let mut sys = System::new();
        // First CPU sample, so the next refresh has something to compare with.
        sys.refresh_cpu_usage();
        HealthMonitor {
            sys,
            components: Components::new_with_refreshed_list(),
            disks: Disks::new_with_refreshed_list(),
            data_dir: data_dir.into(),
            thermal_root: PathBuf::from(THERMAL_ROOT),
        }
    }

    /// Reads thermal zones under `root` instead of [`THERMAL_ROOT`] (tests).
    pub fn with_thermal_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.thermal_root = root.into();
        self
    }

    /// Takes a snapshot. Blocking (reads `/proc` and `/sys`); a few milliseconds.
    pub fn refresh(&mut self) -> HealthSnapshot {
        self.sys.refresh_cpu_usage();
        self.sys.refresh_memory();
        self.components.refresh(true);
        self.disks.refresh(true);

        let mut temperatures: Vec<Temperature> = self
            .components
            .list()
            .iter()
            .filter_map(|c| {
                let celsius = c.temperature()?;
                celsius.is_finite().then(|| Temperature {
                    label: c.label().to_string(),
                    celsius,
                })
            })
            .collect();
        if temperatures.is_empty() {
            temperatures = read_thermal_zones(&self.thermal_root);
        }

        let load = System::load_average();
        HealthSnapshot {
            cpu_percent: self.sys.global_cpu_usage().clamp(0.0, 100.0),
            cores: self.sys.cpus().len(),
            load: [load.one, load.five, load.fifteen],
            mem_used_bytes: self.sys.used_memory(),
            mem_total_bytes: self.sys.total_memory(),
            temperatures,
            disk: self.disk_usage(),
            uptime_s: System::uptime(),
        }
    }

    /// The mounted filesystem with the longest mount point that holds the data dir.
    fn disk_usage(&self) -> Option<DiskUsage> {
        let dir = std::fs::canonicalize(&self.data_dir).unwrap_or_else(|_| self.data_dir.clone());
        let disk = self
            .disks
            .list()
            .iter()
            .filter(|d| dir.starts_with(d.mount_point()))
            .max_by_key(|d| d.mount_point().as_os_str().len())?;
        let total = disk.total_space();
        let available = disk.available_space();
        Some(DiskUsage {
            mount_point: disk.mount_point().to_path_buf(),
            total_bytes: total,
            available_bytes: available,
            used_bytes: total.saturating_sub(available),
        })
    }

    /// Refreshes every `every` on the blocking pool (the first snapshot after
    /// `sysinfo`'s minimum CPU interval, so its CPU figure is real) and publishes
    /// each snapshot until `shutdown` turns true or is dropped. `None` until the
    /// first snapshot.
    pub fn spawn(
        self,
        every: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) -> (watch::Receiver<Option<HealthSnapshot>>, JoinHandle<()>) {
        let (tx, rx) = watch::channel(None);
        let task = tokio::spawn(async move {
            let mut monitor = self;
            let mut next = tokio::time::Instant::now() + sysinfo::MINIMUM_CPU_UPDATE_INTERVAL;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(next) => {}
                    r = shutdown.changed() => {
                        if r.is_err() || *shutdown.borrow() {
                            return;
                        }
                        continue;
                    }
                }
                let job = tokio::task::spawn_blocking(move || {
                    let snap = monitor.refresh();
                    (monitor, snap)
                });
                match job.await {
                    Ok((m, snap)) => {
                        monitor = m;
                        tx.send_replace(Some(snap));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "health refresh failed; health monitor stopped");
                        return;
                    }
                }
                next += every;
                let now = tokio::time::Instant::now();
                if next < now {
                    next = now + every;
                }
            }
        });
        (rx, task)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::TempDir;

    #[test]
    fn snapshot_on_this_machine_is_sane() {
        let dir = TempDir::new("health").unwrap();
        let mut m = HealthMonitor::new(dir.path());
        std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
        let s = m.refresh();
        assert!(s.cores > 0);
        assert!(s.mem_total_bytes > 0);
        assert!(s.mem_used_bytes <= s.mem_total_bytes);
        assert!(
            (0.0..=100.0 * s.cores as f32).contains(&s.cpu_percent),
            "{}",
            s.cpu_percent
        );
        assert!(s.load.iter().all(|l| l.is_finite() && *l >= 0.0));
        assert!(s.uptime_s > 0);
        if let Some(d) = &s.disk {
            assert!(d.total_bytes > 0);
            assert!(d.used_bytes <= d.total_bytes);
            assert!(dir
                .path()
                .canonicalize()
                .unwrap()
                .starts_with(&d.mount_point));
        }
        for t in &s.temperatures {
            assert!((-50.0..=150.0).contains(&t.celsius), "{t:?}");
        }
        let json = serde_json::to_value(&s).unwrap();
        assert!(json["mem_total_bytes"].as_u64().unwrap() > 0);
        assert!(json["load"].as_array().unwrap().len() == 3);
    }

    fn zone(root: &Path, name: &str, kind: Option<&str>, temp: &str) {
        let d = root.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("temp"), temp).unwrap();
        if let Some(k) = kind {
            std::fs::write(d.join("type"), format!("{k}\n")).unwrap();
        }
    }

    #[test]
    fn thermal_zones_parse_millidegrees() {
        let dir = TempDir::new("thermal").unwrap();
        let root = dir.path();
        zone(root, "thermal_zone0", Some("cpu-thermal"), "52612\n");
        zone(root, "thermal_zone1", None, "-3500");
        zone(root, "thermal_zone2", Some("broken"), "n/a\n");
        // Not a zone: cooling devices live in the same directory.
        zone(root, "cooling_device0", Some("fan"), "1");
        let t = read_thermal_zones(root);
        assert_eq!(
            t,
            vec![
                Temperature {
                    label: "cpu-thermal".into(),
                    celsius: 52.612
                },
                Temperature {
                    label: "thermal_zone1".into(),
                    celsius: -3.5
                },
            ]
        );
        assert!(read_thermal_zones(&root.join("missing")).is_empty());
    }

    #[test]
    fn max_temp_is_the_hottest_sensor() {
        let mut s = HealthSnapshot {
            cpu_percent: 0.0,
            cores: 1,
            load: [0.0; 3],
            mem_used_bytes: 0,
            mem_total_bytes: 1,
            temperatures: vec![],
            disk: None,
            uptime_s: 1,
        };
        assert_eq!(s.max_temp_c(), None);
        s.temperatures = vec![
            Temperature {
                label: "a".into(),
                celsius: 41.0,
            },
            Temperature {
                label: "b".into(),
                celsius: 67.5,
            },
            Temperature {
                label: "c".into(),
                celsius: 50.0,
            },
        ];
        assert_eq!(s.max_temp_c(), Some(67.5));
    }

    #[test]
    fn fallback_is_used_when_sysinfo_has_no_sensor() {
        let dir = TempDir::new("thermal-fallback").unwrap();
        zone(dir.path(), "thermal_zone0", Some("cpu-thermal"), "61000");
        let mut m = HealthMonitor::new(".").with_thermal_root(dir.path());
        let s = m.refresh();
        let from_sysinfo = m
            .components
            .list()
            .iter()
            .any(|c| c.temperature().is_some());
        if !from_sysinfo {
            assert_eq!(s.max_temp_c(), Some(61.0));
        }
    }

    #[tokio::test]
    async fn spawned_monitor_publishes_and_stops() {
        let (sd_tx, sd_rx) = watch::channel(false);
        let m = tokio::task::spawn_blocking(|| HealthMonitor::new("."))
            .await
            .unwrap();
        let (mut rx, task) = m.spawn(Duration::from_millis(50), sd_rx);
        assert!(rx.borrow().is_none());
        rx.changed().await.unwrap();
        let first = rx.borrow_and_update().clone().unwrap();
        assert!(first.mem_total_bytes > 0);
        rx.changed().await.unwrap();
        sd_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }
}
