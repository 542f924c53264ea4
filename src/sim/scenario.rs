//! Scenarios for `braid sim`, shared by the virtual-time harness and the real-time
//! run over QUIC and the userspace emulator, and the JSON report both print.

use super::bound::PerfectPipe;
use super::linkmodel::{LinkParams, DEFAULT_QUEUE_BYTES};
use super::trace::{traces_dir, Trace, TraceError};
use crate::core::sender::SenderConfig;
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// One emulated link.
#[derive(Debug, Clone)]
pub struct ScenarioLink {
    pub name: String,
    pub up: LinkParams,
    pub down: LinkParams,
}

/// A run: links, input rate, duration, budget.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub links: Vec<ScenarioLink>,
    /// Constant input rate of TS payload, bit/s.
    pub input_bps: f64,
    pub duration: Duration,
    /// Relay latency = the budget packets are judged against.
    pub latency: Duration,
    pub sender: SenderConfig,
}

/// The dev scenario's uplink traces (see ../shared/traces/README.md).
pub const DEV_TRACES: [&str; 3] = [
    "Verizon-LTE-short.up",
    "TMobile-LTE-short.up",
    "ATT-LTE-driving.up",
];

fn link(name: &str, trace: Option<Arc<Trace>>, delay: Duration, seed: u64) -> ScenarioLink {
    ScenarioLink {
        name: name.to_owned(),
        up: LinkParams {
            trace,
            delay,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            seed,
            ..Default::default()
        },
        down: LinkParams {
            delay,
            seed: seed + 1000,
            ..Default::default()
        },
    }
}

impl Scenario {
    /// The dev scenario: three real LTE uplinks, 40 ms one-way each, 120 s.
    pub fn dev(dir: &Path, input_bps: f64) -> Result<Scenario, TraceError> {
        let mut links = Vec::new();
        for (i, t) in DEV_TRACES.iter().enumerate() {
            let tr = Arc::new(Trace::load(dir.join(t))?);
            let name = t.trim_end_matches(".up");
            links.push(link(
                name,
                Some(tr),
                Duration::from_millis(40),
                i as u64 + 1,
            ));
        }
        Ok(Scenario {
            name: "dev".into(),
            links,
            input_bps,
            duration: Duration::from_secs(120),
            latency: Duration::from_millis(500),
            sender: SenderConfig::default(),
        })
    }

    /// Clean failover: three constant 4 Mbit/s links, 6 Mbit/s input, link 0 (the
    /// one the scheduler loads most when all are equal) cut both ways 30–60 s.
    pub fn failover_clean() -> Scenario {
        let tr = Arc::new(Trace::constant(4e6));
        let mut links: Vec<ScenarioLink> = (0..3)
            .map(|i| {
                link(
                    &format!("const4m-{i}"),
                    Some(tr.clone()),
                    Duration::from_millis(40),
                    i + 1,
                )
            })
            .collect();
        let cut = (Duration::from_secs(30), Duration::from_secs(60));
        links[0].up.outages.push(cut);
        links[0].down.outages.push(cut);
        Scenario {
            name: "failover-clean".into(),
            links,
            input_bps: 6e6,
            duration: Duration::from_secs(90),
            latency: Duration::from_millis(500),
            sender: SenderConfig::default(),
        }
    }

    /// Real failover: the dev scenario at 5 Mbit/s with Verizon cut 40–70 s.
    pub fn failover_real(dir: &Path) -> Result<Scenario, TraceError> {
        let mut s = Scenario::dev(dir, 5e6)?;
        s.name = "failover-real".into();
        let cut = (Duration::from_secs(40), Duration::from_secs(70));
        s.links[0].up.outages.push(cut);
        s.links[0].down.outages.push(cut);
        Ok(s)
    }

    pub fn preset(name: &str, input_bps: Option<f64>) -> Result<Scenario, String> {
        let dir = traces_dir();
        let r = match name {
            "dev" => Scenario::dev(&dir, input_bps.unwrap_or(5e6)),
            "failover-clean" => Ok(Scenario::failover_clean()),
            "failover-real" => Scenario::failover_real(&dir),
            other => {
                return Err(format!(
                    "unknown scenario {other:?} (dev, failover-clean, failover-real)"
                ))
            }
        };
        let mut s = r.map_err(|e| e.to_string())?;
        if let Some(b) = input_bps {
            s.input_bps = b;
        }
        Ok(s)
    }

    /// Mean capacity of the uplink traces over the run, bit/s (unlimited links: None).
    pub fn capacity_bps(&self) -> Option<f64> {
        let traces = self.uplink_traces()?;
        Some(super::bound::mean_capacity_bps(
            &traces,
            Duration::ZERO,
            self.duration,
        ))
    }

    fn uplink_traces(&self) -> Option<Vec<Arc<Trace>>> {
        self.links.iter().map(|l| l.up.trace.clone()).collect()
    }

    /// The highest constant rate a perfect merged pipe of the uplinks would carry with
    /// 99.9 % of 1316-byte packets within `budget` (../shared/traces/README.md).
    pub fn bound_bps(&self, budget: Duration) -> Option<f64> {
        let traces = self.uplink_traces()?;
        let delay = self.links.iter().map(|l| l.up.delay).min()?;
        let pipe = PerfectPipe::from_traces(
            &traces,
            Duration::ZERO,
            self.duration,
            delay,
            1316,
            super::bound::Semantics::Bytes,
        );
        Some(pipe.bound_bps(budget, 0.999))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencySummary {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl LatencySummary {
    pub fn from_ms(mut v: Vec<f64>) -> Option<LatencySummary> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
        Some(LatencySummary {
            p50_ms: q(0.50),
            p95_ms: q(0.95),
            p99_ms: q(0.99),
            max_ms: *v.last().expect("non-empty"),
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LinkReport {
    pub name: String,
    /// Share of the media datagrams (first copies) the relay received on this link.
    pub share: f64,
    pub datagrams_sent: u64,
    pub bytes_sent: u64,
    pub retransmits_sent: u64,
    pub duplicates_sent: u64,
    pub probes_sent: u64,
    pub downs: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailoverEvent {
    pub t_s: f64,
    pub link: String,
    pub event: String,
}

/// What `braid sim` prints.
#[derive(Debug, Clone, Serialize)]
pub struct SimReport {
    pub scenario: String,
    /// "virtual" (sans-IO cores in virtual time) or "real" (QUIC over loopback through
    /// the userspace emulator, in real time).
    pub mode: String,
    pub duration_s: f64,
    pub input_bps: f64,
    pub budget_ms: f64,
    /// Media datagrams offered to the edge (each 7 TS packets).
    pub offered: u64,
    pub ts_packets_offered: u64,
    pub delivered_on_time: u64,
    pub delivered_late: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub on_time_fraction: f64,
    pub latency: Option<LatencySummary>,
    pub goodput_bps: f64,
    /// Mean capacity of the uplink traces over the run.
    pub capacity_bps: Option<f64>,
    /// Perfect merged-pipe bound at this budget (99.9 % on time).
    pub bound_bps: Option<f64>,
    /// input_bps / bound_bps
    pub input_fraction_of_bound: Option<f64>,
    /// Bytes sent on all links (both directions, UDP payload) / media TS bytes.
    pub wire_overhead: f64,
    /// Longest interval between two relay outputs after the first.
    pub max_output_gap_ms: f64,
    pub links: Vec<LinkReport>,
    pub failover_events: Vec<FailoverEvent>,
    /// Edge counters for diagnosis.
    pub edge: serde_json::Value,
}
