//! Scenarios for `braid sim`, shared by the virtual-time harness and the real-time
//! run over QUIC and the userspace emulator, and the JSON report both print.

use super::bound::PerfectPipe;
use super::linkmodel::{LinkParams, DEFAULT_QUEUE_BYTES};
use super::trace::{traces_dir, Trace, TraceError};
use crate::core::sender::{LinkStats, SenderConfig, SenderEvent};
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One emulated link.
#[derive(Debug, Clone)]
pub struct ScenarioLink {
    pub name: String,
    pub up: LinkParams,
    pub down: LinkParams,
}

/// What happens to a link's interface in a [`LinkEvent`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LinkEventKind {
    /// The interface goes down (modem unplugged, connection closed): the edge calls
    /// [`Sender::remove_link`](crate::core::sender::Sender::remove_link), the relay
    /// forgets the link, and whatever is queued or in flight on it is gone.
    Remove,
    /// The interface comes back with a new connection: the edge calls
    /// [`Sender::add_link`](crate::core::sender::Sender::add_link) and the relay learns
    /// its RTT again.
    Add,
    /// The link manager's quality hint from the modem's signal (SINR/RSRP), passed to
    /// [`Sender::set_link_quality`](crate::core::sender::Sender::set_link_quality).
    Quality(f64),
    /// The uplink's random loss becomes this probability (the radio fading): the
    /// link model's state, not something the edge is told.
    Loss(f64),
}

/// A scripted change of a link, `at` an offset from the start of the run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkEvent {
    pub at: Duration,
    /// Index into [`Scenario::links`].
    pub link: usize,
    pub kind: LinkEventKind,
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
    /// Interfaces going down and coming back, in any order (the virtual-time harness
    /// sorts them; the real-time run ignores them).
    pub link_events: Vec<LinkEvent>,
}

/// When [`Scenario::capacity_step`] halves its links.
pub const CAPACITY_STEP_AT: Duration = Duration::from_secs(20);

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
            link_events: Vec::new(),
        })
    }

    /// Clean failover: three constant 4 Mbit/s links, 6 Mbit/s input, link 0 (the
    /// one the scheduler loads most when all are equal) cut both ways 30–60 s.
    pub fn failover_clean() -> Scenario {
        let tr = Arc::new(Trace::constant(4e6));
        // Link 0 is 10 ms nearer than the others, so the earliest-arrival scheduler
        // loads it most: the cut hits the busiest link (`shares_before_cut` in the
        // report shows it).
        let mut links: Vec<ScenarioLink> = (0..3)
            .map(|i| {
                link(
                    &format!("const4m-{i}"),
                    Some(tr.clone()),
                    Duration::from_millis(if i == 0 { 30 } else { 40 }),
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
            link_events: Vec::new(),
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

    /// "dev-long": the dev scenario over `duration` (the traces loop), with the traces
    /// read from staggered offsets (Verizon from 0 s, T-Mobile from 70 s, AT&T from
    /// 400 s) so the three links' bad patches do not line up as they do at t = 0, and
    /// each loop of the 140-s LTE traces meets a different part of the 1012-s AT&T
    /// drive. Models a long event (a match, a concert) on three LTE modems.
    pub fn dev_long(
        dir: &Path,
        input_bps: f64,
        duration: Duration,
    ) -> Result<Scenario, TraceError> {
        let mut s = Scenario::dev(dir, input_bps)?;
        s.name = "dev-long".into();
        s.duration = duration;
        for (l, off) in s.links.iter_mut().zip([0u64, 70, 400]) {
            l.up.trace_offset = Duration::from_secs(off);
        }
        Ok(s)
    }

    /// "weak-4g": a box in poor coverage while driving: only the T-Mobile UMTS uplink
    /// and the AT&T LTE uplink recorded on a drive (each about 0.9 Mbit/s mean, with
    /// outages of several seconds on both and long near-dead stretches on AT&T),
    /// 60 ms one-way, for `duration` from 1 s into both traces (both recordings begin
    /// with 0.6-0.8 s of nothing, which no budget survives).
    pub fn weak_4g(dir: &Path, input_bps: f64, duration: Duration) -> Result<Scenario, TraceError> {
        let mut links = Vec::new();
        for (i, t) in ["TMobile-UMTS-driving.up", "ATT-LTE-driving.up"]
            .iter()
            .enumerate()
        {
            let tr = Arc::new(Trace::load(dir.join(t))?);
            let mut l = link(
                t.trim_end_matches(".up"),
                Some(tr),
                Duration::from_millis(60),
                i as u64 + 1,
            );
            l.up.trace_offset = Duration::from_secs(1);
            links.push(l);
        }
        Ok(Scenario {
            name: "weak-4g".into(),
            links,
            input_bps,
            duration,
            latency: Duration::from_millis(500),
            sender: SenderConfig::default(),
            link_events: Vec::new(),
        })
    }

    /// "modem-unplugged": three constant 4 Mbit/s links at 40 ms, 6 Mbit/s input; the
    /// USB modem of link 0 (the one the scheduler loads most when all are equal) is
    /// pulled at 30 s (the interface disappears: [`LinkEventKind::Remove`]) and plugged
    /// back at 60 s ([`LinkEventKind::Add`], a new connection), 90 s in all. Unlike
    /// `failover-clean` the edge is told at once instead of detecting silence.
    pub fn modem_unplugged() -> Scenario {
        let mut s = Scenario::constant_links("modem-unplugged", 3, 4e6, 40, 6e6);
        s.duration = Duration::from_secs(90);
        s.link_events = vec![
            LinkEvent {
                at: Duration::from_secs(30),
                link: 0,
                kind: LinkEventKind::Remove,
            },
            LinkEvent {
                at: Duration::from_secs(60),
                link: 0,
                kind: LinkEventKind::Add,
            },
        ];
        s
    }

    /// "lossy-links": three constant 10 Mbit/s links at 40 ms with `loss` independent
    /// random loss on every uplink (radio losses the link layer did not recover),
    /// 4 Mbit/s input, 60 s: capacity is plentiful, so only ARQ decides the outcome.
    pub fn lossy_links(loss: f64) -> Scenario {
        let mut s = Scenario::constant_links("lossy-links", 3, 10e6, 40, 4e6);
        for l in &mut s.links {
            l.up.loss = loss;
        }
        s
    }

    /// "mixed-delay": a close LTE cell (3 Mbit/s, 20 ms one-way) bonded with a far,
    /// wide link (10 Mbit/s, 200 ms one-way, as a satellite terminal or a 3G cell with
    /// a deep buffer), 5 Mbit/s input, 60 s. The input does not fit the fast link, so
    /// the relay constantly receives later seqs on the fast link before earlier ones on
    /// the slow one: the reorder buffer must put them back in order.
    pub fn mixed_delay() -> Scenario {
        let mut s = Scenario::constant_links("mixed-delay", 2, 3e6, 20, 5e6);
        s.links[0].name = "near-3m-20ms".into();
        let slow = Arc::new(Trace::constant(10e6));
        s.links[1] = link("far-10m-200ms", Some(slow), Duration::from_millis(200), 2);
        s
    }

    /// "ideal-links": three lossless links of unlimited capacity at 40 ms one-way,
    /// 5 Mbit/s input, 60 s: what the protocol itself costs on the wire.
    /// Capacity step: three links of 4 Mbit/s, 40 ms, each halved to 2 Mbit/s at
    /// [`CAPACITY_STEP_AT`]; 40 s. For the bitrate controller's step response.
    pub fn capacity_step() -> Scenario {
        let at = CAPACITY_STEP_AT.as_millis() as u32;
        let tr = Arc::new(Trace::step(4e6, 2e6, at, 120_000));
        let links = (0..3)
            .map(|i| {
                link(
                    &format!("step4m2m-{i}"),
                    Some(tr.clone()),
                    Duration::from_millis(40),
                    i as u64 + 1,
                )
            })
            .collect();
        Scenario {
            name: "capacity-step".into(),
            links,
            input_bps: 5e6,
            duration: Duration::from_secs(40),
            latency: Duration::from_millis(500),
            sender: SenderConfig::default(),
            link_events: Vec::new(),
        }
    }

    pub fn ideal_links() -> Scenario {
        let mut s = Scenario::constant_links("ideal-links", 3, 0.0, 40, 5e6);
        s.input_bps = 5e6;
        s
    }

    /// `n` links of constant `bps` uplink capacity (0: unlimited) and `delay_ms`
    /// one-way both ways, lossless, `input_bps` input, 60 s, 500 ms budget.
    pub fn constant_links(
        name: &str,
        n: usize,
        bps: f64,
        delay_ms: u64,
        input_bps: f64,
    ) -> Scenario {
        let tr = (bps > 0.0).then(|| Arc::new(Trace::constant(bps)));
        let links = (0..n)
            .map(|i| {
                let kind = if bps > 0.0 {
                    format!("const{}m", bps / 1e6).replace('.', "p")
                } else {
                    "unlimited".into()
                };
                link(
                    &format!("{kind}-{i}"),
                    tr.clone(),
                    Duration::from_millis(delay_ms),
                    i as u64 + 1,
                )
            })
            .collect();
        Scenario {
            name: name.into(),
            links,
            input_bps,
            duration: Duration::from_secs(60),
            latency: Duration::from_millis(500),
            sender: SenderConfig::default(),
            link_events: Vec::new(),
        }
    }

    /// A radio fading before an outage, with and without the signal hint: the dev
    /// scenario at 5 Mbit/s where Verizon's SINR collapses at 38 s (the modem poller's
    /// hint drops to 0.1 when `hint`), its uplink loses 30 % of packets from 38.5 s
    /// and it goes out 40-70 s (as `failover-real`); the hint returns to 1.0 at 70 s.
    pub fn sinr_fade(dir: &Path, hint: bool) -> Result<Scenario, TraceError> {
        let mut s = Scenario::failover_real(dir)?;
        s.name = if hint { "sinr-fade" } else { "sinr-fade-blind" }.into();
        let at = |ms: u64| Duration::from_millis(ms);
        s.link_events.push(LinkEvent {
            at: at(38_500),
            link: 0,
            kind: LinkEventKind::Loss(0.3),
        });
        s.link_events.push(LinkEvent {
            at: at(70_000),
            link: 0,
            kind: LinkEventKind::Loss(0.0),
        });
        if hint {
            for (ms, q) in [(38_000, 0.1), (70_000, 1.0)] {
                s.link_events.push(LinkEvent {
                    at: at(ms),
                    link: 0,
                    kind: LinkEventKind::Quality(q),
                });
            }
        }
        Ok(s)
    }

    /// Names accepted by [`Scenario::preset`].
    pub const PRESETS: [&'static str; 12] = [
        "dev",
        "dev-long",
        "failover-clean",
        "failover-real",
        "weak-4g",
        "modem-unplugged",
        "lossy-links",
        "mixed-delay",
        "ideal-links",
        "capacity-step",
        "sinr-fade",
        "sinr-fade-blind",
    ];

    pub fn preset(name: &str, input_bps: Option<f64>) -> Result<Scenario, String> {
        let dir = traces_dir();
        let r = match name {
            "dev" => Scenario::dev(&dir, input_bps.unwrap_or(5e6)),
            "dev-long" => Scenario::dev_long(&dir, 4e6, Duration::from_secs(1200)),
            "failover-clean" => Ok(Scenario::failover_clean()),
            "capacity-step" => Ok(Scenario::capacity_step()),
            "failover-real" => Scenario::failover_real(&dir),
            "sinr-fade" => Scenario::sinr_fade(&dir, true),
            "sinr-fade-blind" => Scenario::sinr_fade(&dir, false),
            "weak-4g" => Scenario::weak_4g(&dir, 0.5e6, Duration::from_secs(300)),
            "modem-unplugged" => Ok(Scenario::modem_unplugged()),
            "lossy-links" => Ok(Scenario::lossy_links(0.02)),
            "mixed-delay" => Ok(Scenario::mixed_delay()),
            "ideal-links" => Ok(Scenario::ideal_links()),
            other => {
                return Err(format!(
                    "unknown scenario {other:?} ({})",
                    Scenario::PRESETS.join(", ")
                ))
            }
        };
        let mut s = r.map_err(|e| e.to_string())?;
        if let Some(b) = input_bps {
            s.input_bps = b;
        }
        Ok(s)
    }

    /// Each uplink trace with the offset it is read from (unlimited links: None).
    fn uplink_traces(&self) -> Option<Vec<(Arc<Trace>, Duration)>> {
        self.links
            .iter()
            .map(|l| l.up.trace.clone().map(|t| (t, l.up.trace_offset)))
            .collect()
    }

    /// Merged opportunity times (ms from the start of the run) of all uplinks, each
    /// read from its own trace offset.
    fn merged_opportunities_ms(&self) -> Option<Vec<u64>> {
        let traces = self.uplink_traces()?;
        let mut v = Vec::new();
        for (t, off) in traces {
            v.extend(super::bound::merged_opportunities_ms(
                &[t],
                off,
                self.duration,
            ));
        }
        v.sort_unstable();
        Some(v)
    }

    /// Mean capacity of the uplink traces over the run, bit/s (unlimited links: None).
    pub fn capacity_bps(&self) -> Option<f64> {
        let traces = self.uplink_traces()?;
        let d = self.duration.as_millis() as u64;
        Some(
            traces
                .iter()
                .map(|(t, off)| t.capacity_bps(off.as_millis() as u64, d))
                .sum(),
        )
    }

    /// The highest constant rate a perfect merged pipe of the uplinks would carry with
    /// 99.9 % of 1316-byte packets within `budget` (../shared/traces/README.md).
    /// Scripted outages and link events are not taken into account.
    /// Start of the earliest scripted outage on any link.
    pub fn first_cut(&self) -> Option<Duration> {
        self.links
            .iter()
            .flat_map(|l| l.up.outages.iter().map(|o| o.0))
            .min()
    }

    pub fn bound_bps(&self, budget: Duration) -> Option<f64> {
        let opps = self.merged_opportunities_ms()?;
        let delay = self.links.iter().map(|l| l.up.delay).min()?;
        let pipe = PerfectPipe::new(
            opps,
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

impl FailoverEvent {
    /// A sender event as reported, with time from `t0` and the scenario's link name.
    pub fn from_sender(e: &SenderEvent, t0: Instant, sc: &Scenario) -> FailoverEvent {
        let (link, at, event) = match e {
            SenderEvent::LinkDown { link, at, reason } => (*link, *at, format!("down ({reason})")),
            SenderEvent::LinkUp { link, at } => (*link, *at, "up".to_string()),
        };
        FailoverEvent {
            t_s: at.saturating_duration_since(t0).as_secs_f64(),
            link: sc.links[link as usize].name.clone(),
            event,
        }
    }
}

impl LinkReport {
    /// The report line of one link from the sender's counters and its share.
    pub fn from_stats(sc: &Scenario, l: &LinkStats, share: f64) -> LinkReport {
        LinkReport {
            name: sc.links[l.id as usize].name.clone(),
            share,
            datagrams_sent: l.datagrams_sent,
            bytes_sent: l.bytes_sent,
            retransmits_sent: l.retransmits_sent,
            duplicates_sent: l.duplicates_sent,
            probes_sent: l.probes_sent,
            downs: l.downs,
        }
    }
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
    /// Bytes put on all links in both directions, counted as IP packets (every media,
    /// probe, report and NACK datagram including retransmissions and duplicates, plus
    /// per datagram its QUIC short header, AEAD tag and DATAGRAM frame header and the
    /// UDP/IPv4 headers), divided by the media TS bytes offered. Virtual mode adds
    /// [`PER_DATAGRAM_OVERHEAD`](super::virt::PER_DATAGRAM_OVERHEAD) per datagram;
    /// real mode counts the QUIC packets the emulator saw (so also handshakes, QUIC
    /// ACKs and control streams) plus 28 bytes of UDP/IPv4 each.
    pub wire_overhead: f64,
    /// The same counted as UDP payload (what Braid and QUIC put in datagrams,
    /// without the 28 bytes of UDP/IPv4 headers per packet).
    pub wire_overhead_udp: f64,
    /// Share of first copies per link up to the first scripted outage (empty when
    /// the scenario has none): which link the cut hit.
    pub shares_before_cut: Vec<f64>,
    /// Longest interval between two relay outputs after the first.
    pub max_output_gap_ms: f64,
    /// Relay outputs whose seq was not above every seq output before (reordered or
    /// duplicated output; the relay must output strictly in sequence order).
    pub out_of_order_outputs: u64,
    pub links: Vec<LinkReport>,
    pub failover_events: Vec<FailoverEvent>,
    /// Edge counters for diagnosis.
    pub edge: serde_json::Value,
}
