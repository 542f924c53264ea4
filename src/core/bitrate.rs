//! Bitrate controller (sans-IO): sets the encoder's target from what the bonded links
//! can carry inside the latency budget.
//!
//! # Call order
//! The driver owns one [`Controller`] and, every time the instant from
//! [`Controller::poll_timeout`] passes, builds an [`Observation`] from the sender
//! ([`crate::core::sender::Sender::observe`]) and calls
//! [`Controller::handle_observation`]. Health data arrives through
//! [`Controller::handle_temperature`] whenever it is read. The result is read with
//! [`Controller::target`]; changes worth logging come out of
//! [`Controller::poll_event`]. No clock is read here.
//!
//! # Model
//! The sender knows, per up link, its delivery rate (a max filter that only takes
//! samples when the link was not app-limited), its minimum RTT and the bytes in
//! flight, plus the media still waiting at the edge. From these:
//! - capacity `C` = Σ up-link rates: optimistic while links are app-limited, accurate
//!   once they are full (which is exactly when it matters);
//! - queueing delay `Q` = (bytes waiting at the edge + bytes in flight beyond one
//!   min-RTT of each link's delivery + bytes stuck on links marked down) / `C`: how
//!   long the newest packet would wait behind everything already committed.
//!
//! Rules, each checked once per tick ([`ControllerConfig::tick`]):
//! 1. **Cut** when `Q` exceeds [`ControllerConfig::queue_high`] of the budget, or when
//!    media expired unsent: the target becomes what the links deliver minus what
//!    drains the queue in [`ControllerConfig::drain_time`]. Cuts are at most one per
//!    smoothed RTT (the effect of a cut shows one RTT later), so a cut happens within
//!    one tick (50 ms) plus nothing of the queue growing.
//! 2. **Climb** only while `Q` is below [`ControllerConfig::queue_low`] of the
//!    budget, by [`ControllerConfig::climb_per_s`] of the current target per second,
//!    and never above [`ControllerConfig::headroom`] × `C` (what the up links can
//!    carry) nor above the ceiling. After a cut the climb waits
//!    [`ControllerConfig::climb_holdoff`].
//! 3. **Restore** a cut taken because the delivered rate fell (not a standing
//!    queue) when, within [`ControllerConfig::restore_window`], the links deliver the
//!    old target again while still holding a queue: it was a dip (cellular capacity
//!    often dips for a few hundred ms), so the target goes back at once (to
//!    [`ControllerConfig::restore_share`] of it) instead of climbing.
//! 4. **Hold** in between.
//! 5. **Picture ladder**: the rung steps down (smaller picture) when the target stays
//!    below the current rung's `min_bps` for [`ControllerConfig::step_down_after`],
//!    and up when it stays above the larger rung's `min_bps` × (1 + hysteresis) for
//!    [`ControllerConfig::step_up_after`]. A temperature over the limit caps both the
//!    rung (at least one step smaller) and the ceiling, with 5 °C of hysteresis.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// One rung of the picture ladder, largest picture first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rung {
    /// For logs and the stats page, e.g. `"1280x720"`.
    pub name: String,
    /// Below this target (bit/s) the picture is too starved at this size: step down.
    pub min_bps: u64,
}

#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Encoder floor and ceiling (bit/s, whole transport stream).
    pub floor_bps: u64,
    pub ceiling_bps: u64,
    /// Target before anything is measured.
    pub start_bps: u64,
    /// The relay's latency budget.
    pub latency: Duration,
    /// How often the controller looks at the sender.
    pub tick: Duration,
    /// Cut when the queueing delay exceeds this share of the budget.
    pub queue_high: f64,
    /// Climb only while the queueing delay is below this share of the budget.
    pub queue_low: f64,
    /// A cut sizes the target to drain the queue within this time.
    pub drain_time: Duration,
    /// Never ask for more than this share of the up links' summed rate.
    pub headroom: f64,
    /// While climbing, never above this multiple of the up links' summed rate: links
    /// that are not full only report what they were given, so the climb may probe
    /// above it, but not without bound.
    pub probe_gain: f64,
    /// Climb rate: this share of the current target per second.
    pub climb_per_s: f64,
    /// No climbing this long after a cut.
    pub climb_holdoff: Duration,
    /// The queueing delay acted on is its minimum over this window: a keyframe burst
    /// queues for a moment and drains; only a standing queue means overload (the
    /// CoDel idea, RFC 8289 §3).
    pub queue_window: Duration,
    /// A queue above `fell_queue` while the links deliver less than this share of the
    /// target means capacity fell: cut at once (without waiting for the queue to
    /// stand a whole window).
    pub fell_share: f64,
    /// ... with at least this share of the budget queued.
    pub fell_queue: f64,
    /// Window of the delivered-rate measurement for `fell_share`.
    pub delivered_window: Duration,
    /// Within `cut_holdoff` of a cut, another is taken only if it goes below this
    /// share of the current target.
    pub recut_share: f64,
    /// One episode of cuts (cuts within `cut_holdoff` of each other) takes at most
    /// this share off the target it started from.
    pub max_cut: f64,
    /// A cut made on `fell_share` (capacity seemed to fall) is undone within this
    /// time if the links deliver [`ControllerConfig::restore_share`] of the target
    /// before the cut while a queue (over `restore_queue` of the budget) remains:
    /// cellular capacity often dips for a few hundred ms and comes back. The target
    /// goes back to that share of the old one: with the edge's config, the model's
    /// dev runs (7 seeds x 2 keyframe sizes) were on time >= 99.936 % with 0.9,
    /// down to 99.885 % with 1.0, at about the same goodput (0.803 and 0.801 of
    /// counted capacity; `sim::adaptive` test `provisional_cuts_sweep`).
    pub restore_window: Duration,
    pub restore_share: f64,
    pub restore_queue: f64,
    /// After a cut, the next waits at least this long (and one smoothed RTT): the
    /// encoder and the queues need that long to show the first cut's effect.
    pub cut_holdoff: Duration,
    /// Picture ladder, largest first (may be empty: no picture changes).
    pub ladder: Vec<Rung>,
    pub step_down_after: Duration,
    pub step_up_after: Duration,
    /// Step up only above the larger rung's `min_bps` × (1 + this).
    pub step_up_hysteresis: f64,
    /// Temperature (°C) above which the ceiling and the ladder are capped.
    pub temp_limit_c: Option<f64>,
    /// Ceiling multiplier while hot.
    pub hot_ceiling_share: f64,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            floor_bps: 500_000,
            ceiling_bps: 12_000_000,
            start_bps: 2_000_000,
            latency: Duration::from_millis(500),
            tick: Duration::from_millis(50),
            // Chosen by the sweep in sim::adaptive::tests::sweep on the dev traces
            // (docs/BENCHMARKS.md).
            queue_high: 0.2,
            queue_low: 0.08,
            drain_time: Duration::from_millis(1000),
            headroom: 0.9,
            probe_gain: 1.25,
            climb_per_s: 0.5,
            climb_holdoff: Duration::from_millis(500),
            queue_window: Duration::from_millis(100),
            max_cut: 0.5,
            recut_share: 0.75,
            fell_share: 0.6,
            fell_queue: 0.2,
            delivered_window: Duration::from_millis(100),
            cut_holdoff: Duration::from_millis(200),
            restore_window: Duration::from_millis(1000),
            restore_share: 0.9,
            restore_queue: 0.04,
            ladder: Vec::new(),
            step_down_after: Duration::from_secs(2),
            step_up_after: Duration::from_secs(8),
            step_up_hysteresis: 0.3,
            temp_limit_c: None,
            hot_ceiling_share: 0.6,
        }
    }
}

/// One link as the controller sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkObservation {
    /// Carrying media (not failed over).
    pub up: bool,
    /// Delivery-rate estimate, bit/s.
    pub rate_bps: f64,
    pub min_rtt: Duration,
    pub srtt: Duration,
    pub inflight_bytes: usize,
}

/// What the sender reports each tick ([`crate::core::sender::Sender::observe`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observation {
    pub links: Vec<LinkObservation>,
    /// Media bytes waiting at the edge (never sent, or queued for resend).
    pub queued_bytes: usize,
    /// Cumulative media datagrams dropped at the edge because no link could deliver
    /// them in time.
    pub expired: u64,
    /// Cumulative bytes the relay acknowledged on all links.
    pub delivered_bytes: u64,
    /// Cumulative bytes put on all links.
    pub sent_bytes: u64,
}

/// Changes worth a log line, an LED or a chart annotation.
#[derive(Debug, Clone, PartialEq)]
pub enum BitrateEvent {
    Cut {
        at: Instant,
        from_bps: u64,
        to_bps: u64,
        queue_ms: f64,
    },
    Rung {
        at: Instant,
        rung: usize,
        name: String,
    },
}

/// What the encoder should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub bps: u64,
    pub rung: usize,
}

/// Share of the latency budget a link may hold queued when the source adapts
/// ([`crate::core::sender::SenderConfig::queue_share`]): with an encoder that follows
/// the links, a short network queue strands less media on a link that fades
/// (measured by the sweep in `sim::adaptive`: 0.2 beat 0.3 and 0.5).
pub const ADAPTIVE_QUEUE_SHARE: f64 = 0.2;

/// Figures for the stats snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct ControllerStats {
    pub target_bps: u64,
    pub rung: usize,
    pub capacity_bps: f64,
    pub queue_ms: f64,
    pub cuts: u64,
    pub rung_changes: u64,
    pub hot: bool,
    /// Floor and ceiling in force (whole stream, bit/s).
    pub floor_bps: u64,
    pub ceiling_bps: u64,
}

#[derive(Debug)]
pub struct Controller {
    cfg: ControllerConfig,
    target: f64,
    rung: usize,
    next_tick: Instant,
    last_tick: Option<Instant>,
    last_cut: Option<Instant>,
    last_expired: u64,
    /// (time, delivered bytes) over the last `delivered_window`.
    delivered_hist: VecDeque<(Instant, u64)>,
    /// First cut of the current episode: (when, target before it).
    episode: Option<(Instant, f64)>,
    /// The current episode began with a fall seen in the delivered rate: until this
    /// instant it is undone if the links turn out to deliver the old target after
    /// all ([`ControllerConfig::restore_window`]).
    provisional_until: Option<Instant>,
    /// (time, queueing delay s) over the last `queue_window`.
    queue_hist: VecDeque<(Instant, f64)>,
    /// Since when the target has been below the current rung's floor / above the
    /// larger rung's threshold.
    below_since: Option<Instant>,
    above_since: Option<Instant>,
    hot: bool,
    events: VecDeque<BitrateEvent>,
    stats: ControllerStats,
}

impl Controller {
    pub fn new(cfg: ControllerConfig, now: Instant) -> Self {
        let target = (cfg.start_bps.clamp(cfg.floor_bps, cfg.ceiling_bps)) as f64;
        let mut c = Self {
            target,
            rung: 0,
            next_tick: now,
            last_tick: None,
            last_cut: None,
            last_expired: 0,
            queue_hist: VecDeque::new(),
            episode: None,
            provisional_until: None,
            delivered_hist: VecDeque::new(),
            below_since: None,
            above_since: None,
            hot: false,
            events: VecDeque::new(),
            stats: ControllerStats::default(),
            cfg,
        };
        // Start on the largest rung the start rate supports.
        while c.rung + 1 < c.cfg.ladder.len() && (c.target as u64) < c.cfg.ladder[c.rung].min_bps {
            c.rung += 1;
        }
        c.stats.target_bps = c.target as u64;
        c.stats.rung = c.rung;
        c.stats.floor_bps = c.cfg.floor_bps;
        c.stats.ceiling_bps = c.cfg.ceiling_bps;
        c
    }

    /// New floor and ceiling (whole stream, bit/s) while running, e.g. from the web
    /// page: the target is moved into them at once; nothing else is reset.
    pub fn set_bounds(&mut self, floor_bps: u64, ceiling_bps: u64) {
        let ceiling_bps = ceiling_bps.max(floor_bps);
        self.cfg.floor_bps = floor_bps;
        self.cfg.ceiling_bps = ceiling_bps;
        self.target = self.target.clamp(floor_bps as f64, self.ceiling());
        self.stats.target_bps = self.target as u64;
        self.stats.floor_bps = floor_bps;
        self.stats.ceiling_bps = ceiling_bps;
    }

    pub fn config(&self) -> &ControllerConfig {
        &self.cfg
    }

    /// The latency budget agreed with the relay.
    pub fn set_latency(&mut self, latency: Duration) {
        self.cfg.latency = latency;
    }

    /// When the driver should next call [`Controller::handle_observation`].
    pub fn poll_timeout(&self) -> Instant {
        self.next_tick
    }

    pub fn target(&self) -> Target {
        Target {
            bps: self.target as u64,
            rung: self.rung,
        }
    }

    pub fn stats(&self) -> ControllerStats {
        self.stats
    }

    pub fn poll_event(&mut self) -> Option<BitrateEvent> {
        self.events.pop_front()
    }

    fn ceiling(&self) -> f64 {
        let c = self.cfg.ceiling_bps as f64;
        if self.hot {
            (c * self.cfg.hot_ceiling_share).max(self.cfg.floor_bps as f64)
        } else {
            c
        }
    }

    /// A temperature reading (°C) from the health monitor.
    pub fn handle_temperature(&mut self, now: Instant, celsius: f64) {
        let Some(limit) = self.cfg.temp_limit_c else {
            return;
        };
        let hot = if self.hot {
            celsius > limit - 5.0
        } else {
            celsius > limit
        };
        if hot != self.hot {
            self.hot = hot;
            self.stats.hot = hot;
            self.target = self.target.min(self.ceiling());
            if hot && self.rung + 1 < self.cfg.ladder.len() && self.rung == 0 {
                self.set_rung(now, 1);
            }
        }
    }

    fn set_rung(&mut self, now: Instant, rung: usize) {
        if rung == self.rung {
            return;
        }
        self.rung = rung;
        self.stats.rung = rung;
        self.stats.rung_changes += 1;
        self.below_since = None;
        self.above_since = None;
        self.events.push_back(BitrateEvent::Rung {
            at: now,
            rung,
            name: self.cfg.ladder[rung].name.clone(),
        });
    }

    /// The sender's state at `now`.
    pub fn handle_observation(&mut self, now: Instant, obs: &Observation) {
        if now < self.next_tick {
            return;
        }
        let dt = self
            .last_tick
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
            .min(Duration::from_secs(1));
        self.last_tick = Some(now);
        self.next_tick = now + self.cfg.tick;

        let up: Vec<&LinkObservation> = obs.links.iter().filter(|l| l.up).collect();
        let capacity: f64 = up.iter().map(|l| l.rate_bps).sum();
        // Bytes committed beyond what the links deliver in one min-RTT, plus what is
        // stuck on failed links (it will be sent again) and waiting at the edge.
        let committed: f64 = obs
            .links
            .iter()
            .map(|l| {
                if l.up {
                    let pipe = l.rate_bps / 8.0 * l.min_rtt.as_secs_f64();
                    (l.inflight_bytes as f64 - pipe).max(0.0)
                } else {
                    l.inflight_bytes as f64
                }
            })
            .sum::<f64>()
            + obs.queued_bytes as f64;
        let queue_s = if capacity > 0.0 {
            committed * 8.0 / capacity
        } else if committed > 0.0 {
            f64::INFINITY
        } else {
            0.0
        };
        self.queue_hist.push_back((now, queue_s));
        while let Some(&(t, _)) = self.queue_hist.front() {
            if now.saturating_duration_since(t) > self.cfg.queue_window {
                self.queue_hist.pop_front();
            } else {
                break;
            }
        }
        let standing = self
            .queue_hist
            .iter()
            .map(|q| q.1)
            .fold(f64::INFINITY, f64::min);
        // What the links acknowledged over the last window. With a queue building
        // and this well under the target, capacity fell: act at once, not after the
        // queue has stood a whole window.
        self.delivered_hist.push_back((now, obs.delivered_bytes));
        while self.delivered_hist.len() > 2
            && now.saturating_duration_since(self.delivered_hist[1].0) >= self.cfg.delivered_window
        {
            self.delivered_hist.pop_front();
        }
        let delivered_bps = match (self.delivered_hist.front(), self.delivered_hist.back()) {
            (Some(a), Some(b))
                if b.0.saturating_duration_since(a.0) >= self.cfg.delivered_window =>
            {
                Some(
                    b.1.saturating_sub(a.1) as f64 * 8.0
                        / b.0.saturating_duration_since(a.0).as_secs_f64(),
                )
            }
            _ => None,
        };
        // Right after a cut the target already sits lower: links that deliver less
        // than even that, with the queue still growing, need a second cut now.
        let just_cut = self
            .last_cut
            .is_some_and(|t| now < t + self.cfg.cut_holdoff);
        let share = if just_cut { 1.0 } else { self.cfg.fell_share };
        let capacity_fell = delivered_bps.filter(|&d| {
            queue_s > self.cfg.fell_queue * self.cfg.latency.as_secs_f64()
                && d < self.target * share
        });
        let srtt = up
            .iter()
            .map(|l| l.srtt)
            .min()
            .unwrap_or(Duration::from_millis(100));
        let budget = self.cfg.latency.as_secs_f64();
        let expired = obs.expired > self.last_expired;
        self.last_expired = obs.expired;
        let floor = self.cfg.floor_bps as f64;
        let ceiling = self.ceiling();
        let can_cut = self
            .last_cut
            .is_none_or(|t| now >= t + srtt.max(self.cfg.cut_holdoff));

        let congested =
            standing > self.cfg.queue_high * budget || expired || capacity_fell.is_some();
        let mut cut = None;
        if congested {
            // Send what the links deliver (what they acknowledged is fresher than the
            // rate filters, which remember the last peak for a window), less what
            // drains the queue beyond the tolerated one (queue_low of the budget) in
            // drain_time.
            let deliverable = delivered_bps.map_or(capacity, |d| d.min(capacity));
            let excess = (committed * 8.0 - self.cfg.queue_low * budget * deliverable).max(0.0);
            let drain = excess / self.cfg.drain_time.as_secs_f64();
            // Cuts within one holdoff are one episode: together they take at most
            // max_cut off the target the episode started from (the queue they all
            // see is the same one, still draining).
            let from = match self.episode {
                Some((_, from)) if just_cut => from,
                _ => self.target,
            };
            let mut to = (deliverable * self.cfg.headroom - drain).min(self.target);
            if expired {
                to = to.min(self.target * 0.7);
            }
            let to = to.max(from * (1.0 - self.cfg.max_cut)).max(floor);
            // Within the holdoff only a much deeper cut is taken: the last one was
            // sized on figures that have since fallen further.
            if to < self.target && (can_cut || to < self.target * self.cfg.recut_share) {
                cut = Some(to);
            }
        }
        if let Some(to) = cut {
            self.events.push_back(BitrateEvent::Cut {
                at: now,
                from_bps: self.target as u64,
                to_bps: to as u64,
                queue_ms: (standing * 1e3).min(1e9),
            });
            if !just_cut {
                self.episode = Some((now, self.target));
                // Only a fall seen in the delivered rate may be a dip (a standing
                // queue is overload whatever the links do next).
                self.provisional_until = capacity_fell.map(|_| now + self.cfg.restore_window);
            }
            self.target = to;
            self.stats.cuts += 1;
            self.last_cut = Some(now);
        } else if let Some(to) = self
            .restore_to(now, queue_s, delivered_bps)
            .filter(|_| !congested)
        {
            self.target = to;
            self.provisional_until = None;
        } else if !congested
            && standing < self.cfg.queue_low * budget
            && self
                .last_cut
                .is_none_or(|t| now >= t + self.cfg.climb_holdoff)
        {
            // Links that are not full report only what we sent them (their rate
            // samples are app-limited), so the capacity sum cannot tell how much more
            // they take: probe by climbing while the queues stay empty.
            let cap = (capacity * self.cfg.probe_gain).max(floor);
            if self.target < cap {
                let step = self.target * self.cfg.climb_per_s * dt.as_secs_f64();
                self.target = (self.target + step).min(cap);
            }
        }
        // Never more than the up links can be expected to carry (a link that fails
        // over takes its share out of the target at once).
        self.target = self.target.min((capacity * self.cfg.probe_gain).max(floor));
        self.target = self.target.clamp(floor, ceiling.max(floor));

        self.update_rung(now);
        self.stats.target_bps = self.target as u64;
        self.stats.capacity_bps = capacity;
        self.stats.queue_ms = (queue_s * 1e3).min(1e9);
    }

    /// The target to go back to when the episode's first cut was provisional and the
    /// links, still holding a queue (so not limited by what they were given), deliver
    /// at least [`ControllerConfig::restore_share`] of the target the episode started
    /// from: the fall was a dip, over now (back to that share of it). Climbing back
    /// at `climb_per_s` would waste what the links carry meanwhile.
    fn restore_to(&self, now: Instant, queue_s: f64, delivered_bps: Option<f64>) -> Option<f64> {
        let until = self.provisional_until?;
        let (_, from) = self.episode?;
        let d = delivered_bps?;
        let queued = queue_s > self.cfg.restore_queue * self.cfg.latency.as_secs_f64();
        // Not quite all the way: the dip may not be wholly over.
        let to = (from * self.cfg.restore_share).min(d * self.cfg.headroom);
        (now < until && queued && d >= self.cfg.restore_share * from && to > self.target)
            .then_some(to)
    }

    fn update_rung(&mut self, now: Instant) {
        let len = self.cfg.ladder.len();
        if len == 0 {
            return;
        }
        let t = self.target as u64;
        let min_rung = usize::from(self.hot && len > 1);
        if self.rung + 1 < len && t < self.cfg.ladder[self.rung].min_bps {
            let since = *self.below_since.get_or_insert(now);
            if now >= since + self.cfg.step_down_after {
                self.set_rung(now, self.rung + 1);
            }
        } else {
            self.below_since = None;
        }
        if self.rung > min_rung {
            let up =
                self.cfg.ladder[self.rung - 1].min_bps as f64 * (1.0 + self.cfg.step_up_hysteresis);
            if t as f64 >= up {
                let since = *self.above_since.get_or_insert(now);
                if now >= since + self.cfg.step_up_after {
                    self.set_rung(now, self.rung - 1);
                }
            } else {
                self.above_since = None;
            }
        } else if self.rung < min_rung {
            self.set_rung(now, min_rung);
        } else {
            self.above_since = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(rate_mbps: f64, inflight: usize) -> LinkObservation {
        LinkObservation {
            up: true,
            rate_bps: rate_mbps * 1e6,
            min_rtt: Duration::from_millis(80),
            srtt: Duration::from_millis(90),
            inflight_bytes: inflight,
        }
    }

    fn obs(links: Vec<LinkObservation>, queued: usize) -> Observation {
        Observation {
            links,
            queued_bytes: queued,
            expired: 0,
            delivered_bytes: 0,
            sent_bytes: 0,
        }
    }

    #[test]
    fn climbs_carefully_up_to_probe_gain_of_capacity() {
        let t0 = Instant::now();
        let mut c = Controller::new(ControllerConfig::default(), t0);
        let o = obs(vec![link(4.0, 0), link(2.0, 0)], 0);
        let mut now = t0;
        let mut after_1s = 0;
        for i in 0..400 {
            c.handle_observation(now, &o);
            if i == 20 {
                after_1s = c.target().bps;
            }
            now += Duration::from_millis(50);
        }
        // One second of climbing adds about half, not a jump to capacity.
        assert!(after_1s < 3_300_000, "{after_1s}");
        // Idle links report only what they were given: the climb probes up to
        // probe_gain x their summed rate, no further.
        assert_eq!(c.target().bps, 7_500_000);
    }

    #[test]
    fn cuts_within_one_tick_when_queues_grow() {
        let t0 = Instant::now();
        let cfg = ControllerConfig {
            start_bps: 8_000_000,
            ..Default::default()
        };
        let mut c = Controller::new(cfg, t0);
        c.handle_observation(t0, &obs(vec![link(5.0, 0), link(5.0, 0)], 0));
        assert_eq!(c.target().bps, 8_000_000);
        // Capacity halves: 200 kB queued at the edge = 320 ms at 5 Mbit/s. A burst
        // that drains within the queue window is not acted on; a standing queue is,
        // one window (100 ms) after it appeared.
        // The links deliver their 5 Mbit/s (625 bytes per ms).
        let halved = |ms: u64| Observation {
            delivered_bytes: 625 * ms,
            ..obs(vec![link(2.5, 0), link(2.5, 0)], 200_000)
        };
        c.handle_observation(t0 + Duration::from_millis(50), &halved(50));
        c.handle_observation(t0 + Duration::from_millis(100), &halved(100));
        // (The target already follows the lower link rates: 1.25 x 5 Mbit/s.)
        assert_eq!(c.stats().cuts, 0, "not yet a standing queue");
        c.handle_observation(t0 + Duration::from_millis(150), &halved(150));
        let t = c.target().bps;
        assert!(t <= 4_000_000, "{t}");
        assert!(matches!(c.poll_event(), Some(BitrateEvent::Cut { .. })));
        assert!(c.poll_event().is_none());
        assert_eq!(c.stats().cuts, 1);
    }

    #[test]
    fn floor_and_ceiling_hold_and_no_links_means_floor() {
        let t0 = Instant::now();
        let cfg = ControllerConfig {
            floor_bps: 1_000_000,
            ceiling_bps: 3_000_000,
            ..Default::default()
        };
        let mut c = Controller::new(cfg, t0);
        let mut now = t0;
        for _ in 0..400 {
            c.handle_observation(now, &obs(vec![link(50.0, 0)], 0));
            now += Duration::from_millis(50);
        }
        assert_eq!(c.target().bps, 3_000_000);
        c.handle_observation(now, &obs(vec![], 0));
        assert_eq!(c.target().bps, 1_000_000);
        now += Duration::from_millis(50);
        c.handle_observation(now, &obs(vec![link(0.1, 100_000)], 0));
        assert_eq!(c.target().bps, 1_000_000);
    }

    #[test]
    fn bounds_changed_while_running_move_the_target_and_hold() {
        let t0 = Instant::now();
        let cfg = ControllerConfig {
            start_bps: 6_000_000,
            ..Default::default()
        };
        let mut c = Controller::new(cfg, t0);
        assert_eq!(c.target().bps, 6_000_000);
        c.set_bounds(1_000_000, 4_000_000);
        assert_eq!(c.target().bps, 4_000_000);
        assert_eq!(
            (c.stats().floor_bps, c.stats().ceiling_bps),
            (1_000_000, 4_000_000)
        );
        // Plenty of capacity: the climb stops at the new ceiling.
        let o = obs(vec![link(20.0, 0), link(20.0, 0)], 0);
        let mut now = t0;
        for _ in 0..200 {
            c.handle_observation(now, &o);
            now += Duration::from_millis(50);
        }
        assert_eq!(c.target().bps, 4_000_000);
        // A floor above the target lifts it; a ceiling under the floor is the floor.
        c.set_bounds(5_000_000, 3_000_000);
        assert_eq!(c.target().bps, 5_000_000);
        assert_eq!(c.stats().ceiling_bps, 5_000_000);
    }

    fn ladder() -> Vec<Rung> {
        vec![
            Rung {
                name: "1920x1080".into(),
                min_bps: 6_000_000,
            },
            Rung {
                name: "1280x720".into(),
                min_bps: 2_500_000,
            },
            Rung {
                name: "960x540".into(),
                min_bps: 0,
            },
        ]
    }

    #[test]
    fn ladder_steps_down_and_back_up_with_hysteresis() {
        let t0 = Instant::now();
        let cfg = ControllerConfig {
            start_bps: 8_000_000,
            ladder: ladder(),
            ..Default::default()
        };
        let mut c = Controller::new(cfg, t0);
        assert_eq!(c.target().rung, 0);
        let mut now = t0;
        let mut run = |c: &mut Controller, secs: u64, rate: f64| {
            for _ in 0..secs * 20 {
                c.handle_observation(now, &obs(vec![link(rate, 0)], 0));
                now += Duration::from_millis(50);
            }
        };
        // 3 Mbit/s of links: target at most 3.75 < 6: 1080p -> 720p after 2 s.
        run(&mut c, 1, 3.0);
        assert_eq!(c.target().rung, 0, "not before step_down_after");
        run(&mut c, 2, 3.0);
        assert_eq!(c.target().rung, 1);
        // 5.5 Mbit/s: target up to 6.875 > 6 but < 6 x 1.3: stays at 720p.
        run(&mut c, 20, 5.5);
        assert!(c.target().bps > 6_000_000);
        assert_eq!(c.target().rung, 1, "hysteresis");
        // 10 Mbit/s: target 12 > 7.8 for 8 s: back to 1080p.
        run(&mut c, 20, 10.0);
        assert_eq!(c.target().rung, 0);
        let rungs: Vec<usize> = std::iter::from_fn(|| c.poll_event())
            .filter_map(|e| match e {
                BitrateEvent::Rung { rung, .. } => Some(rung),
                _ => None,
            })
            .collect();
        assert_eq!(rungs, [1, 0]);
    }

    #[test]
    fn temperature_caps_ceiling_and_ladder_with_hysteresis() {
        let t0 = Instant::now();
        let cfg = ControllerConfig {
            start_bps: 10_000_000,
            ladder: ladder(),
            temp_limit_c: Some(80.0),
            ..Default::default()
        };
        let mut c = Controller::new(cfg, t0);
        c.handle_temperature(t0, 85.0);
        assert_eq!(c.target().rung, 1);
        assert!(c.target().bps <= 7_200_000);
        let mut now = t0;
        for _ in 0..400 {
            c.handle_observation(now, &obs(vec![link(50.0, 0)], 0));
            now += Duration::from_millis(50);
        }
        assert_eq!(c.target().rung, 1, "hot: no 1080p");
        assert_eq!(c.target().bps, 7_200_000);
        c.handle_temperature(now, 77.0);
        assert!(c.stats().hot, "within hysteresis");
        c.handle_temperature(now, 74.0);
        assert!(!c.stats().hot);
        for _ in 0..400 {
            c.handle_observation(now, &obs(vec![link(50.0, 0)], 0));
            now += Duration::from_millis(50);
        }
        assert_eq!(c.target().rung, 0);
        assert_eq!(c.target().bps, 12_000_000);
    }

    #[test]
    fn links_delivering_far_under_the_target_cut_before_the_queue_stands() {
        let t0 = Instant::now();
        let cfg = ControllerConfig {
            start_bps: 10_000_000,
            ..Default::default()
        };
        let mut c = Controller::new(cfg, t0);
        // Rate filters still say 12 Mbit/s, but only 4 Mbit/s (500 bytes/ms) come
        // back acknowledged while 150 ms of queue builds.
        let o = |ms: u64, queued: usize| Observation {
            delivered_bytes: 500 * ms,
            ..obs(vec![link(6.0, 0), link(6.0, 0)], queued)
        };
        c.handle_observation(t0, &o(0, 0));
        c.handle_observation(t0 + Duration::from_millis(50), &o(50, 100_000));
        c.handle_observation(t0 + Duration::from_millis(100), &o(100, 230_000));
        let t = c.target().bps;
        assert!(t <= 5_200_000, "one cut takes at most half: {t}");
        // Inside the cut holdoff the episode is bounded (the queue is the same one,
        // still draining); after it, the next cut goes to what the links deliver.
        c.handle_observation(t0 + Duration::from_millis(150), &o(150, 300_000));
        assert!(c.target().bps >= 5_000_000, "{}", c.target().bps);
        for ms in [200, 250, 300] {
            c.handle_observation(t0 + Duration::from_millis(ms), &o(ms, 300_000));
        }
        let t = c.target().bps;
        assert!(t <= 3_600_000, "cut to what the links deliver: {t}");
    }

    /// A dip: the links deliver 4 Mbit/s for 100 ms with a queue building (cut at
    /// once), then 12 Mbit/s while the queue drains. With `recover` false they
    /// stay at 4 Mbit/s. Returns the targets after the cut and 300 ms later.
    fn dip(recover: bool) -> (u64, u64) {
        let t0 = Instant::now();
        let cfg = ControllerConfig {
            start_bps: 10_000_000,
            ..Default::default()
        };
        let mut c = Controller::new(cfg, t0);
        let mut delivered = 0u64;
        let mut at = |c: &mut Controller, ms: u64, bps: f64, queued: usize| {
            delivered += (bps / 8.0 * 0.05) as u64;
            let o = Observation {
                delivered_bytes: delivered,
                ..obs(vec![link(6.0, 0), link(6.0, 0)], queued)
            };
            c.handle_observation(t0 + Duration::from_millis(ms), &o);
        };
        at(&mut c, 0, 10e6, 0);
        at(&mut c, 50, 4e6, 100_000);
        at(&mut c, 100, 4e6, 230_000);
        let cut = c.target().bps;
        let later = if recover { 12e6 } else { 4e6 };
        for (ms, queued) in [(150, 200_000), (200, 150_000), (250, 100_000)] {
            at(&mut c, ms, later, queued);
        }
        at(&mut c, 300, later, 60_000);
        at(&mut c, 350, later, 40_000);
        at(&mut c, 400, later, 30_000);
        (cut, c.target().bps)
    }

    #[test]
    fn a_fall_that_was_a_dip_is_undone_while_the_queue_drains() {
        let (cut, after) = dip(true);
        assert!(cut <= 5_200_000, "cut at once: {cut}");
        // Delivering 12 Mbit/s with a queue left: the links were not limited by
        // what they were given, so (0.9 of) the old target, 10 Mbit/s, is safe again.
        assert!(
            after >= 9_000_000,
            "restored, not climbing at 50 %/s from {cut}: {after}"
        );
        let (cut, after) = dip(false);
        assert!(cut <= 5_200_000, "{cut}");
        assert!(after <= cut, "a real fall stays cut: {after}");
    }

    #[test]
    fn expired_media_cuts_hard() {
        let t0 = Instant::now();
        let cfg = ControllerConfig {
            start_bps: 5_000_000,
            ..Default::default()
        };
        let mut c = Controller::new(cfg, t0);
        let mut o = obs(vec![link(10.0, 0)], 0);
        c.handle_observation(t0, &o);
        o.expired = 3;
        c.handle_observation(t0 + Duration::from_millis(50), &o);
        assert!(c.target().bps <= 3_500_000, "{}", c.target().bps);
    }
}
