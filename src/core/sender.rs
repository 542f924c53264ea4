//! Edge sender core (sans-IO): per-link estimators, the earliest-arrival scheduler,
//! ARQ and failover.
//!
//! # Call order
//! The driver owns one [`Sender`] and calls, in any order as things happen:
//! - [`Sender::add_link`] / [`Sender::remove_link`] when a link's QUIC connection is
//!   joined or gone (an interface going down is acted on at once);
//! - [`Sender::push_media`] for every group of whole TS packets from the source;
//! - [`Sender::handle_datagram`] for every datagram the relay sent on a link
//!   (reports and NACKs);
//! - [`Sender::handle_timeout`] when the instant from [`Sender::poll_timeout`] passes.
//!
//! After each call it drains [`Sender::poll_transmit`] until `None` and sends each
//! [`Transmit`] as a QUIC datagram on its link, and drains [`Sender::poll_event`].
//! No clock is read here: every method takes `now`.
//!
//! # Model
//! Each link keeps the datagrams it has in flight (by `link_seq`), acknowledged by the
//! relay's reports. From them: RTT (smoothed, min over 10 s), delivery rate (BBR-style
//! samples, max over a short window) and the bytes still queued in the network.
//! A packet goes to the usable link on which it is expected to *arrive* earliest:
//! `min_rtt/2 + (in-flight bytes + size) / rate - min_rtt/2·busy`, and only if that link
//! can deliver it within its latency budget; otherwise it waits at the edge, where any
//! link can still take it (queueing in a network buffer would commit it to one link).

use super::wire::{self, Datagram, Flags, MediaHeader, Nack, Report, REPORT_BITMAP_BITS};
use bytes::Bytes;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Why no link can take a packet now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Blocked {
    /// Some link could deliver it in time but has no window space: wait.
    Window,
    /// No up link can deliver it in time.
    Late,
}

/// Index of a link in this session (0..=255), stable while the link exists.
pub type LinkId = u8;

/// Tuning of the sender. Defaults are the values measured in docs/BENCHMARKS.md.
#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// Session tag carried in every datagram.
    pub session: u32,
    /// End-to-end budget: the relay releases a packet this long after its ingest.
    pub latency: Duration,
    /// Fraction of media bytes that may be spent on proactive duplicates.
    pub duplicate_budget: f64,
    /// A link may hold at most this share of the latency budget as queueing delay.
    pub queue_share: f64,
    /// Window of the delivery-rate max filter.
    pub rate_window: Duration,
    /// Failover: a link with unacknowledged data and no acknowledgement for
    /// `max(failover_rtts × srtt, failover_min)` is marked down.
    pub failover_rtts: u32,
    pub failover_min: Duration,
    /// Probe cadence on a down link, and on an idle link to keep RTT fresh.
    pub probe_interval: Duration,
    /// Acked probes in a row before a down link is taken back.
    pub probes_to_recover: u32,
    /// Extra wait past a copy's expected arrival before a NACK for it is honoured.
    pub nack_slack: Duration,
}

impl Default for SenderConfig {
    fn default() -> Self {
        Self {
            session: 0,
            latency: Duration::from_millis(500),
            duplicate_budget: 0.02,
            queue_share: 0.5,
            rate_window: Duration::from_millis(100),
            failover_rtts: 3,
            failover_min: Duration::from_millis(250),
            probe_interval: Duration::from_millis(100),
            probes_to_recover: 3,
            nack_slack: Duration::from_millis(40),
        }
    }
}

/// A datagram to send on a link.
#[derive(Debug, Clone)]
pub struct Transmit {
    pub link: LinkId,
    pub data: Bytes,
}

/// Structured events for logs, LEDs, the web page and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SenderEvent {
    LinkDown {
        link: LinkId,
        at: Instant,
        reason: &'static str,
    },
    LinkUp {
        link: LinkId,
        at: Instant,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// Carrying media.
    Up,
    /// Acknowledgements stopped: only probes until it proves healthy again.
    Down,
}

/// Per-link counters and estimates, part of the stats snapshot.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LinkStats {
    pub id: LinkId,
    pub state: Option<LinkState>,
    pub srtt_ms: f64,
    pub min_rtt_ms: f64,
    pub rate_bps: f64,
    pub inflight_bytes: usize,
    pub datagrams_sent: u64,
    pub bytes_sent: u64,
    pub media_first_sent: u64,
    pub retransmits_sent: u64,
    pub duplicates_sent: u64,
    pub probes_sent: u64,
    pub acked: u64,
    pub lost: u64,
    pub downs: u64,
    /// The link manager's quality hint (1.0: none against it).
    pub quality: f64,
}

/// Session counters, part of the stats snapshot.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SenderStats {
    pub media_packets_in: u64,
    pub media_bytes_in: u64,
    pub edge_queue: usize,
    /// Bytes the relay acknowledged, all links (media, resends, probes).
    pub delivered_bytes: u64,
    /// Bytes put on all links (media, resends, duplicates, probes).
    pub sent_bytes: u64,
    /// Packets dropped at the edge because no link could deliver them in time.
    pub expired_unsent: u64,
    /// Lost copies whose retransmission could no longer make the deadline.
    pub expired_unrepaired: u64,
    pub nacks_received: u64,
    pub nacks_ignored: u64,
    pub retransmits: u64,
    pub duplicates: u64,
    pub junk_feedback: u64,
    /// When the relay first acknowledged media, seconds since the sender's epoch.
    pub first_media_acked_s: Option<f64>,
    pub links: Vec<LinkStats>,
}

#[derive(Debug)]
struct Packet {
    ingest: Instant,
    flags: Flags,
    encoded: Bytes,
    acked: bool,
    /// A copy is queued for resend.
    queued_resend: bool,
    /// Latest expected arrival of any copy in flight (None: no copy in flight).
    expected: Option<Instant>,
    copies: u8,
    duplicated: bool,
}

#[derive(Debug, Clone, Copy)]
struct Sent {
    link_seq: u32,
    /// Media seq, None for probes.
    seq: Option<u64>,
    bytes: usize,
    at: Instant,
    /// Link's delivered bytes / time at send, for delivery-rate samples.
    delivered: u64,
    delivered_at: Instant,
    app_limited: bool,
}

#[derive(Debug)]
struct Link {
    id: LinkId,
    state: LinkState,
    next_link_seq: u32,
    inflight: VecDeque<Sent>,
    inflight_bytes: usize,
    srtt: Option<Duration>,
    rttvar: Duration,
    /// Smallest RTT per one-second bucket over the last [`MIN_RTT_WINDOW`]: a
    /// windowed minimum that never restarts from a single queue-inflated sample.
    min_rtt_buckets: VecDeque<(Instant, Duration)>,
    /// (sample time, bytes/s)
    rate_samples: VecDeque<(Instant, f64)>,
    rate: f64,
    delivered: u64,
    delivered_at: Instant,
    last_ack: Instant,
    last_send: Instant,
    probe_acks: u32,
    startup: Option<Startup>,
    /// Hint from the link manager (radio signal), 0.0..=1.0; see
    /// [`Sender::set_link_quality`].
    quality: f64,
    stats: LinkStats,
}

/// Initial rate assumption for a new link before any sample: 1 Mbit/s.
const INITIAL_RATE: f64 = 125_000.0;
/// Initial RTT assumption (RFC 9002 §6.2.2 uses 333 ms; cellular with a relay nearby
/// is closer to 100 ms, and the first report corrects it).
const INITIAL_RTT: Duration = Duration::from_millis(100);
/// A copy is declared lost once this many later link_seqs are acknowledged
/// (RFC 9002 §6.1.1 kPacketThreshold).
const PACKET_THRESHOLD: u32 = 3;
/// Links whose expected arrivals are this close count as tied (see `pick_link`).
const SPREAD_TOLERANCE: Duration = Duration::from_millis(15);
/// Failover timeout of a link that has no RTT sample yet.
const NO_SAMPLE_FAILOVER: Duration = Duration::from_secs(1);
/// Min-RTT filter window (as BBR's min_rtt window).
const MIN_RTT_WINDOW: Duration = Duration::from_secs(10);
/// Floor of the rate estimate, 250 kbit/s: below this a cellular link that still
/// answers is fading, and the estimate must stay high enough to find out when it
/// comes back (every sample is bounded by what we dared to send).
const MIN_RATE: f64 = 31_250.0;
/// Smallest in-flight allowance in bytes, so a link can always probe its capacity.
const MIN_WINDOW: usize = 4 * 1400;
/// Lowest quality hint: a link the radio says is nearly gone still gets a trickle
/// (one packet per RTT when idle), so its estimates stay fresh for when it recovers.
const MIN_QUALITY: f64 = 0.05;
/// Startup (as BBR's STARTUP): while a new link's delivery rate keeps growing, its
/// window allows this multiple of the measured rate, and the estimate never falls back.
/// Without it a link starts at [`INITIAL_RATE`], its first samples span a whole RTT of
/// propagation and pull the estimate *down*, and a stream that starts at full rate
/// expires at the edge for the first second on a long link (found by `random_link_sets`:
/// 34 packets on an 8.5 Mbit/s, 266 ms RTT link). The arrival model keeps the measured
/// rate: planning arrivals with the gain too overfilled links once they were full
/// (tried: 83 late packets on two lossless 140 ms links).
const STARTUP_GAIN: f64 = 2.0;
/// Startup ends after this many rounds (one smoothed RTT each) in which the rate did
/// not grow by [`STARTUP_GROWTH`] (BBR's full-pipe test: 3 rounds, 25 %).
const STARTUP_ROUNDS: u32 = 3;
const STARTUP_GROWTH: f64 = 1.25;

/// Startup state of a link (see [`STARTUP_GAIN`]).
#[derive(Debug, Clone, Copy)]
struct Startup {
    /// Rate at the last round that grew by [`STARTUP_GROWTH`].
    full_rate: f64,
    stalled_rounds: u32,
    round_end: Instant,
}

impl Link {
    fn new(id: LinkId, now: Instant) -> Self {
        Self {
            id,
            state: LinkState::Up,
            next_link_seq: 0,
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            srtt: None,
            rttvar: Duration::ZERO,
            min_rtt_buckets: VecDeque::new(),
            rate_samples: VecDeque::new(),
            rate: INITIAL_RATE,
            delivered: 0,
            delivered_at: now,
            last_ack: now,
            last_send: now,
            probe_acks: 0,
            startup: Some(Startup {
                full_rate: INITIAL_RATE,
                stalled_rounds: 0,
                round_end: now,
            }),
            quality: 1.0,
            stats: LinkStats {
                id,
                ..Default::default()
            },
        }
    }

    fn srtt(&self) -> Duration {
        self.srtt.unwrap_or(INITIAL_RTT)
    }

    fn min_rtt(&self) -> Duration {
        self.min_rtt_buckets
            .iter()
            .map(|b| b.1)
            .min()
            .unwrap_or(INITIAL_RTT)
    }

    /// The rate the scheduler plans with: the estimate, scaled by the quality hint.
    fn planned_rate(&self) -> f64 {
        self.rate * self.quality
    }

    /// The rate the window allows: the planned rate, times [`STARTUP_GAIN`] in startup.
    fn window_rate(&self) -> f64 {
        match self.startup {
            Some(_) => self.planned_rate() * STARTUP_GAIN,
            None => self.planned_rate(),
        }
    }

    /// Expected one-way delay for `extra` more bytes sent now.
    fn expected_delay(&self, extra: usize) -> Duration {
        let half = self.min_rtt() / 2;
        if self.inflight.is_empty() {
            // An idle link is taken at face value: this keeps one packet per RTT on
            // every up link, so a rate estimate that collapsed during a fade gets new
            // samples and recovers instead of locking the link out for good.
            return half;
        }
        let rate = self.planned_rate().max(1.0);
        let drain = (self.inflight_bytes + extra) as f64 / rate;
        // Bytes that are in the pipe (not queued) do not delay us: subtract one RTT of
        // delivery (bytes propagating forward, and acked bytes whose report is on its way).
        let queue = (drain - self.min_rtt().as_secs_f64()).max(0.0);
        half + Duration::from_secs_f64(queue + extra as f64 / rate)
    }

    fn failover_timeout(&self, cfg: &SenderConfig) -> Duration {
        match self.srtt {
            Some(s) => (s * cfg.failover_rtts).max(cfg.failover_min),
            // No RTT sample yet: a slow path (satellite, congested cell) must not be
            // declared dead before its first acknowledgement can arrive (RFC 9002
            // §6.2.2 starts from 333 ms, so its first probe timeout is about 1 s).
            None => NO_SAMPLE_FAILOVER.max(cfg.failover_min),
        }
    }

    fn on_rtt(&mut self, now: Instant, rtt: Duration) {
        match self.min_rtt_buckets.back_mut() {
            Some((start, m)) if now.duration_since(*start) < Duration::from_secs(1) => {
                *m = (*m).min(rtt)
            }
            _ => self.min_rtt_buckets.push_back((now, rtt)),
        }
        while let Some(&(start, _)) = self.min_rtt_buckets.front() {
            if now.duration_since(start) > MIN_RTT_WINDOW {
                self.min_rtt_buckets.pop_front();
            } else {
                break;
            }
        }
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(s) => {
                // RFC 9002 §5.3
                let diff = s.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + diff) / 4;
                self.srtt = Some((s * 7 + rtt) / 8);
            }
        }
    }

    fn on_rate_sample(&mut self, now: Instant, sample: f64, app_limited: bool, window: Duration) {
        if !(app_limited && sample < self.rate) {
            while let Some(&(t, _)) = self.rate_samples.front() {
                if now.duration_since(t) > window {
                    self.rate_samples.pop_front();
                } else {
                    break;
                }
            }
            self.rate_samples.push_back((now, sample));
            let windowed = self.rate_samples.iter().map(|s| s.1).fold(0.0, f64::max);
            self.rate = windowed.max(MIN_RATE);
        }
        self.startup_round(now);
    }

    /// Startup bookkeeping after a rate sample: the estimate never falls back (early
    /// samples span a whole RTT), and rounds without growth end startup. Every sample
    /// counts, app-limited ones too, or a link that the input never fills stays in
    /// startup (its window doubled) for good.
    fn startup_round(&mut self, now: Instant) {
        let srtt = self.srtt();
        let Some(st) = &mut self.startup else {
            return;
        };
        self.rate = self.rate.max(st.full_rate);
        if now < st.round_end {
            return;
        }
        if self.rate >= st.full_rate * STARTUP_GROWTH {
            st.full_rate = self.rate;
            st.stalled_rounds = 0;
        } else {
            st.stalled_rounds += 1;
        }
        st.round_end = now + srtt;
        if st.stalled_rounds >= STARTUP_ROUNDS {
            self.startup = None;
        }
    }

    /// Share of the window in use, 0.0..=1.0.
    fn utilisation(&self, cfg: &SenderConfig) -> f64 {
        self.inflight_bytes as f64 / self.window(cfg).max(1) as f64
    }

    fn window(&self, cfg: &SenderConfig) -> usize {
        let budget = cfg.latency.as_secs_f64() * cfg.queue_share + self.min_rtt().as_secs_f64();
        ((self.window_rate() * budget) as usize).max(MIN_WINDOW)
    }
}

/// The edge's sans-IO sender. See the module documentation for the call order.
#[derive(Debug)]
pub struct Sender {
    cfg: SenderConfig,
    epoch: Instant,
    links: Vec<Link>,
    /// Packets by seq, from `base_seq`.
    packets: VecDeque<Packet>,
    base_seq: u64,
    next_seq: u64,
    /// Seqs never sent yet, in order.
    fresh: VecDeque<u64>,
    /// Seqs to resend, in order of need.
    resend: VecDeque<u64>,
    /// Important seqs that may get a duplicate on spare capacity.
    dup_candidates: VecDeque<u64>,
    dup_bytes: u64,
    media_bytes: u64,
    events: VecDeque<SenderEvent>,
    stats: SenderStats,
}

impl Sender {
    pub fn new(cfg: SenderConfig, now: Instant) -> Self {
        Self {
            cfg,
            epoch: now,
            links: Vec::new(),
            packets: VecDeque::new(),
            base_seq: 0,
            next_seq: 0,
            fresh: VecDeque::new(),
            resend: VecDeque::new(),
            dup_candidates: VecDeque::new(),
            dup_bytes: 0,
            media_bytes: 0,
            events: VecDeque::new(),
            stats: SenderStats::default(),
        }
    }

    pub fn config(&self) -> &SenderConfig {
        &self.cfg
    }

    /// Time zero of `send_time_us` in media headers.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// Latency budget agreed with the relay (it may override the edge's config).
    pub fn set_latency(&mut self, latency: Duration) {
        self.cfg.latency = latency;
    }

    /// Share of media bytes that may be sent twice (`[scheduler] duplicate_budget`),
    /// changed while running.
    pub fn set_duplicate_budget(&mut self, budget: f64) {
        if budget.is_finite() {
            self.cfg.duplicate_budget = budget.clamp(0.0, 1.0);
        }
    }

    /// A link's connection has joined the session (emits `LinkUp`). Re-adding a known
    /// id resets it.
    pub fn add_link(&mut self, now: Instant, id: LinkId) {
        self.remove_link(now, id);
        self.links.push(Link::new(id, now));
        self.links.sort_by_key(|l| l.id);
        self.events
            .push_back(SenderEvent::LinkUp { link: id, at: now });
    }

    /// A link is gone (interface down, connection closed): its copies in flight are
    /// treated as lost at once.
    pub fn remove_link(&mut self, now: Instant, id: LinkId) {
        if let Some(pos) = self.links.iter().position(|l| l.id == id) {
            let mut link = self.links.remove(pos);
            let lost: Vec<Sent> = link.inflight.drain(..).collect();
            for s in lost {
                if let Some(seq) = s.seq {
                    self.on_copy_lost(now, seq);
                }
            }
            if link.state == LinkState::Up {
                self.events.push_back(SenderEvent::LinkDown {
                    link: id,
                    at: now,
                    reason: "removed",
                });
            }
        }
    }

    /// A hint from the link manager about a link's radio, 0.0..=1.0 (1.0: nothing
    /// known against it). The scheduler plans with the link's rate times this, so a
    /// link whose signal collapses is given less traffic *before* it starts losing
    /// packets, and the bitrate controller sees the capacity it is about to lose. The
    /// hint never raises a link above what it measurably delivers. Re-adding a link
    /// resets it to 1.0.
    pub fn set_link_quality(&mut self, id: LinkId, quality: f64) {
        if let Some(l) = self.links.iter_mut().find(|l| l.id == id) {
            l.quality = if quality.is_finite() {
                quality.clamp(MIN_QUALITY, 1.0)
            } else {
                1.0
            };
        }
    }

    pub fn link_ids(&self) -> Vec<LinkId> {
        self.links.iter().map(|l| l.id).collect()
    }

    pub fn link_state(&self, id: LinkId) -> Option<LinkState> {
        self.links.iter().find(|l| l.id == id).map(|l| l.state)
    }

    /// One group of whole TS packets from the source, ingested (and captured) `now`.
    pub fn push_media(&mut self, now: Instant, payload: &[u8], flags: Flags) -> u64 {
        self.push_media_captured(now, now, payload, flags)
    }

    /// One group of whole TS packets ingested `now`, captured by the camera at
    /// `captured` (the deadline still counts from ingest; the capture age travels in
    /// the header for the relay's glass-to-glass figure).
    pub fn push_media_captured(
        &mut self,
        now: Instant,
        captured: Instant,
        payload: &[u8],
        flags: Flags,
    ) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let send_time_us = now.duration_since(self.epoch).as_micros() as u64;
        let encoded = wire::encode_media(
            &MediaHeader {
                flags,
                session: self.cfg.session,
                link_seq: 0,
                seq,
                send_time_us,
                capture_age: wire::capture_age_units(now.saturating_duration_since(captured)),
            },
            payload,
        );
        self.stats.media_packets_in += 1;
        self.stats.media_bytes_in += payload.len() as u64;
        self.media_bytes += encoded.len() as u64;
        self.packets.push_back(Packet {
            ingest: now,
            flags,
            encoded,
            acked: false,
            queued_resend: false,
            expected: None,
            copies: 0,
            duplicated: false,
        });
        self.fresh.push_back(seq);
        seq
    }

    fn packet(&self, seq: u64) -> Option<&Packet> {
        let i = seq.checked_sub(self.base_seq)?;
        self.packets.get(i as usize)
    }

    fn packet_mut(&mut self, seq: u64) -> Option<&mut Packet> {
        let i = seq.checked_sub(self.base_seq)?;
        self.packets.get_mut(i as usize)
    }

    fn deadline(&self, p: &Packet) -> Instant {
        p.ingest + self.cfg.latency
    }

    /// A datagram from the relay on `link`.
    pub fn handle_datagram(&mut self, now: Instant, link: LinkId, data: &Bytes) {
        match wire::decode(data) {
            Ok(Datagram::Report(r)) if r.session == self.cfg.session => {
                self.handle_report(now, link, &r)
            }
            Ok(Datagram::Nack(n)) if n.session == self.cfg.session => self.handle_nack(now, &n),
            _ => self.stats.junk_feedback += 1,
        }
    }

    fn handle_report(&mut self, now: Instant, id: LinkId, r: &Report) {
        let Some(li) = self.links.iter().position(|l| l.id == id) else {
            return;
        };
        let window = self.cfg.rate_window;
        let mut acked_seqs = Vec::new();
        let mut lost_seqs = Vec::new();
        let link = &mut self.links[li];
        // `largest` must be something we sent: distance back from next_link_seq.
        let ahead = link.next_link_seq.wrapping_sub(r.largest);
        if ahead == 0 || ahead > 1 << 30 {
            self.stats.junk_feedback += 1;
            return;
        }
        let mut rtt_sample = None;
        let mut rate_samples = Vec::new();
        let mut probe_acked = false;
        let mut keep = VecDeque::with_capacity(link.inflight.len());
        for s in link.inflight.drain(..) {
            let back = r.largest.wrapping_sub(s.link_seq);
            if back > 1 << 30 {
                keep.push_back(s); // sent after `largest`
            } else if r.acks(s.link_seq) {
                link.delivered += s.bytes as u64;
                link.delivered_at = now;
                self.stats.delivered_bytes += s.bytes as u64;
                link.stats.acked += 1;
                if back == 0 {
                    let hold = Duration::from_micros(u64::from(r.hold_us));
                    let rtt = now.duration_since(s.at).saturating_sub(hold);
                    rtt_sample = Some(rtt.max(Duration::from_micros(100)));
                }
                let interval = now.duration_since(s.delivered_at).as_secs_f64();
                if interval > 0.0 {
                    let sample = (link.delivered - s.delivered) as f64 / interval;
                    rate_samples.push((sample, s.app_limited));
                }
                match s.seq {
                    Some(seq) => acked_seqs.push(seq),
                    None => probe_acked = true,
                }
            } else if back >= PACKET_THRESHOLD || back > REPORT_BITMAP_BITS {
                link.stats.lost += 1;
                if let Some(seq) = s.seq {
                    lost_seqs.push(seq);
                }
            } else {
                keep.push_back(s);
            }
        }
        link.inflight = keep;
        link.inflight_bytes = link.inflight.iter().map(|s| s.bytes).sum();
        link.last_ack = now;
        if let Some(rtt) = rtt_sample {
            link.on_rtt(now, rtt);
            // Startup overshot: a standing queue of half the link's queue allowance.
            let allowance = self.cfg.latency.mul_f64(self.cfg.queue_share);
            if link.startup.is_some() && rtt > link.min_rtt() + allowance / 2 {
                link.startup = None;
            }
        }
        for (sample, app_limited) in rate_samples {
            // The max filter spans several reports and RTTs, or it only ever sees the
            // last burst and can talk itself down to nothing.
            let w = window;
            link.on_rate_sample(now, sample, app_limited, w);
        }
        if link.state == LinkState::Down && probe_acked {
            link.probe_acks += 1;
            if link.probe_acks >= self.cfg.probes_to_recover {
                link.state = LinkState::Up;
                link.probe_acks = 0;
                // Come back carefully: capacity after an outage is unknown; half the
                // last estimate (at least the initial guess) is the starting point.
                link.rate_samples.clear();
                link.rate = (link.rate / 2.0).max(INITIAL_RATE);
                self.events
                    .push_back(SenderEvent::LinkUp { link: id, at: now });
            }
        }
        if !acked_seqs.is_empty() && self.stats.first_media_acked_s.is_none() {
            self.stats.first_media_acked_s = Some(now.duration_since(self.epoch).as_secs_f64());
        }
        for seq in acked_seqs {
            if let Some(p) = self.packet_mut(seq) {
                p.acked = true;
            }
        }
        for seq in lost_seqs {
            self.on_copy_lost(now, seq);
        }
        self.trim(now);
    }

    fn handle_nack(&mut self, now: Instant, n: &Nack) {
        for &(first, len) in &n.ranges {
            for seq in first..first.saturating_add(u64::from(len)) {
                self.stats.nacks_received += 1;
                let slack = self.cfg.nack_slack;
                let Some(p) = self.packet(seq) else {
                    self.stats.nacks_ignored += 1;
                    continue;
                };
                // The edge knows when it expected each copy: a NACK for a copy that may
                // still be on its way (a slower link) is not a loss yet.
                let waiting = p.expected.is_some_and(|e| now < e + slack);
                if p.acked || p.queued_resend || waiting || p.copies == 0 {
                    self.stats.nacks_ignored += 1;
                    continue;
                }
                self.queue_resend(now, seq);
            }
        }
    }

    fn on_copy_lost(&mut self, now: Instant, seq: u64) {
        let Some(p) = self.packet_mut(seq) else {
            return;
        };
        p.copies = p.copies.saturating_sub(1);
        if p.copies == 0 {
            p.expected = None;
        }
        if p.acked || p.queued_resend || p.copies > 0 {
            return;
        }
        self.queue_resend(now, seq);
    }

    fn queue_resend(&mut self, now: Instant, seq: u64) {
        let best = self.best_delay();
        let Some(deadline) = self.packet(seq).map(|p| self.deadline(p)) else {
            return;
        };
        if now + best > deadline {
            self.stats.expired_unrepaired += 1;
            return;
        }
        if let Some(p) = self.packet_mut(seq) {
            p.queued_resend = true;
        }
        self.resend.push_back(seq);
    }

    /// Smallest expected one-way delay over the usable links (for deadline checks).
    fn best_delay(&self) -> Duration {
        self.links
            .iter()
            .filter(|l| l.state == LinkState::Up)
            .map(|l| l.min_rtt() / 2)
            .min()
            .unwrap_or(INITIAL_RTT / 2)
    }

    /// Drop packets nobody can use any more from the front of the buffer. Queue
    /// entries that point at dropped seqs are skipped when reached.
    fn trim(&mut self, now: Instant) {
        while let Some(p) = self.packets.front() {
            if p.acked || now > p.ingest + self.cfg.latency {
                self.packets.pop_front();
                self.base_seq += 1;
            } else {
                break;
            }
        }
    }

    /// Process timers: failover detection and probes.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut downs = Vec::new();
        for link in &mut self.links {
            if link.state == LinkState::Up {
                if let Some(oldest) = link.inflight.front() {
                    let since = now.duration_since(link.last_ack.max(oldest.at));
                    if since >= link.failover_timeout(&self.cfg) {
                        downs.push(link.id);
                    }
                }
            }
        }
        for id in downs {
            self.mark_down(now, id, "acknowledgements stopped");
        }
        self.trim(now);
    }

    fn mark_down(&mut self, now: Instant, id: LinkId, reason: &'static str) {
        let Some(link) = self.links.iter_mut().find(|l| l.id == id) else {
            return;
        };
        link.state = LinkState::Down;
        link.probe_acks = 0;
        link.startup = None;
        link.stats.downs += 1;
        let lost: Vec<Sent> = link.inflight.drain(..).collect();
        link.inflight_bytes = 0;
        self.events.push_back(SenderEvent::LinkDown {
            link: id,
            at: now,
            reason,
        });
        for s in lost {
            if let Some(seq) = s.seq {
                self.on_copy_lost(now, seq);
            }
        }
    }

    /// Next instant at which [`Sender::handle_timeout`] or [`Sender::poll_transmit`]
    /// has something to do without any other input.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut consider = |x: Instant| t = Some(t.map_or(x, |t| t.min(x)));
        for link in &self.links {
            if link.state == LinkState::Up {
                if let Some(oldest) = link.inflight.front() {
                    consider(link.last_ack.max(oldest.at) + link.failover_timeout(&self.cfg));
                }
            }
            consider(link.last_send + self.cfg.probe_interval);
        }
        t
    }

    pub fn poll_event(&mut self) -> Option<SenderEvent> {
        self.events.pop_front()
    }

    /// The usable link on which a packet of `size` bytes is expected to arrive
    /// earliest, among those with window space; `Err(Late)` when no up link could
    /// deliver it by `deadline` even with space (drop it: waiting only makes it
    /// later, and it would hold back younger packets that can still make it).
    fn pick_link(&self, size: usize, deadline: Instant, now: Instant) -> Result<usize, Blocked> {
        let mut candidates: Vec<(Duration, usize)> = Vec::with_capacity(self.links.len());
        let mut in_time = false;
        for (i, l) in self.links.iter().enumerate() {
            if l.state != LinkState::Up {
                continue;
            }
            let d = l.expected_delay(size);
            if now + d > deadline {
                continue;
            }
            in_time = true;
            if l.inflight_bytes + size > l.window(&self.cfg) {
                continue;
            }
            candidates.push((d, i));
        }
        // Earliest arrival, with near-ties (within SPREAD_TOLERANCE) going to the link
        // whose window is least used. Without this a link whose rate estimate is low
        // (it just joined or came back) loses every tie by its serialisation term,
        // only ever carries one packet per RTT, and its estimate never grows: the
        // bond then has no headroom left when another link fails.
        let best = candidates.iter().map(|c| c.0).min();
        let pick = best.and_then(|b| {
            candidates
                .iter()
                .filter(|c| c.0 <= b + SPREAD_TOLERANCE)
                .min_by(|x, y| {
                    let ux = self.links[x.1].utilisation(&self.cfg);
                    let uy = self.links[y.1].utilisation(&self.cfg);
                    ux.total_cmp(&uy).then(x.0.cmp(&y.0))
                })
                .map(|c| c.1)
        });
        match pick {
            Some(i) => Ok(i),
            None if in_time || self.links.iter().all(|l| l.state != LinkState::Up) => {
                Err(Blocked::Window)
            }
            None => Err(Blocked::Late),
        }
    }

    fn send_on(&mut self, now: Instant, li: usize, seq: Option<u64>, data: Bytes) -> Transmit {
        let backlog = !self.fresh.is_empty() || !self.resend.is_empty();
        let link = &mut self.links[li];
        let link_seq = link.next_link_seq;
        link.next_link_seq = link.next_link_seq.wrapping_add(1);
        let bytes = data.len();
        // When a NACK for this copy becomes believable: the model's arrival time, but
        // never before half the link's smoothed RTT plus its variation (the model runs
        // early when a rate estimate is high). Using the whole uplink delay
        // (srtt − min_rtt/2) cut spurious resends on a queue-heavy link further but
        // repaired real losses on the dev traces too late (measured: 14 lost vs 2).
        let expected = now
            + link
                .expected_delay(bytes)
                .max(link.srtt() / 2 + link.rttvar);
        let app_limited = !backlog;
        if link.inflight.is_empty() {
            // Restart the delivery clock after idle so the gap is not a rate sample.
            link.delivered_at = now;
        }
        link.inflight.push_back(Sent {
            link_seq,
            seq,
            bytes,
            at: now,
            delivered: link.delivered,
            delivered_at: link.delivered_at,
            app_limited,
        });
        link.inflight_bytes += bytes;
        link.last_send = now;
        link.stats.datagrams_sent += 1;
        link.stats.bytes_sent += bytes as u64;
        self.stats.sent_bytes += bytes as u64;
        let id = link.id;
        let data = match seq {
            Some(_) => {
                let flags = Flags(data[1]);
                wire::restamp_media(&data, flags, link_seq)
            }
            None => data,
        };
        if let Some(seq) = seq {
            if let Some(p) = self.packet_mut(seq) {
                p.copies += 1;
                p.expected = Some(p.expected.map_or(expected, |e| e.max(expected)));
            }
        }
        Transmit { link: id, data }
    }

    /// Next datagram to send, if any link can take one now.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        // 1. Resends first: they are the oldest media.
        while let Some(&seq) = self.resend.front() {
            let Some(p) = self.packet(seq) else {
                self.resend.pop_front();
                continue;
            };
            if p.acked {
                self.resend.pop_front();
                if let Some(p) = self.packet_mut(seq) {
                    p.queued_resend = false;
                }
                continue;
            }
            let deadline = self.deadline(p);
            let size = p.encoded.len();
            if now + self.best_delay() > deadline {
                self.resend.pop_front();
                if let Some(p) = self.packet_mut(seq) {
                    p.queued_resend = false;
                }
                self.stats.expired_unrepaired += 1;
                continue;
            }
            let li = match self.pick_link(size, deadline, now) {
                Ok(li) => li,
                Err(Blocked::Window) => break,
                Err(Blocked::Late) => {
                    self.resend.pop_front();
                    if let Some(p) = self.packet_mut(seq) {
                        p.queued_resend = false;
                    }
                    self.stats.expired_unrepaired += 1;
                    continue;
                }
            };
            self.resend.pop_front();
            let p = self.packet_mut(seq).expect("checked above");
            p.queued_resend = false;
            let data = wire::restamp_media(&p.encoded, p.flags.with(Flags::RETRANSMIT), 0);
            self.stats.retransmits += 1;
            self.links[li].stats.retransmits_sent += 1;
            return Some(self.send_on(now, li, Some(seq), data));
        }
        // 2. Fresh media in order.
        while let Some(&seq) = self.fresh.front() {
            let Some(p) = self.packet(seq) else {
                // Trimmed before it was ever sent: its deadline passed at the edge.
                self.fresh.pop_front();
                self.stats.expired_unsent += 1;
                continue;
            };
            let deadline = self.deadline(p);
            let size = p.encoded.len();
            if now + self.best_delay() > deadline {
                self.fresh.pop_front();
                self.stats.expired_unsent += 1;
                continue;
            }
            let li = match self.pick_link(size, deadline, now) {
                Ok(li) => li,
                Err(Blocked::Window) => break,
                Err(Blocked::Late) => {
                    self.fresh.pop_front();
                    self.stats.expired_unsent += 1;
                    continue;
                }
            };
            self.fresh.pop_front();
            let p = self.packet(seq).expect("checked above");
            let data = p.encoded.clone();
            if p.flags.important() {
                self.dup_candidates.push_back(seq);
            }
            self.links[li].stats.media_first_sent += 1;
            return Some(self.send_on(now, li, Some(seq), data));
        }
        // 3. Spare capacity: duplicates of what matters most, within the budget.
        while let Some(&seq) = self.dup_candidates.front() {
            if self.dup_bytes as f64 > self.cfg.duplicate_budget * self.media_bytes as f64 {
                break;
            }
            self.dup_candidates.pop_front();
            let Some(p) = self.packet(seq) else { continue };
            if p.acked || p.duplicated || p.copies == 0 {
                continue;
            }
            let deadline = self.deadline(p);
            let size = p.encoded.len();
            let Ok(li) = self.pick_link(size, deadline, now) else {
                continue;
            };
            let data = wire::restamp_media(&p.encoded, p.flags.with(Flags::DUPLICATE), 0);
            if let Some(p) = self.packet_mut(seq) {
                p.duplicated = true;
            }
            self.dup_bytes += size as u64;
            self.stats.duplicates += 1;
            self.links[li].stats.duplicates_sent += 1;
            return Some(self.send_on(now, li, Some(seq), data));
        }
        // 4. Probes: on down links, and on links idle for a probe interval.
        let interval = self.cfg.probe_interval;
        if let Some(li) = self
            .links
            .iter()
            .position(|l| now.duration_since(l.last_send) >= interval)
        {
            let link = &self.links[li];
            let probe = wire::encode_probe(
                Flags::default(),
                self.cfg.session,
                link.next_link_seq,
                wire::PROBE_LEN,
            );
            self.links[li].stats.probes_sent += 1;
            return Some(self.send_on(now, li, None, probe));
        }
        None
    }

    #[doc(hidden)]
    pub fn debug_state(&self, now: Instant) -> String {
        let mut out = format!(
            "fresh={} resend={} base={} packets={}\n",
            self.fresh.len(),
            self.resend.len(),
            self.base_seq,
            self.packets.len()
        );
        if let Some(&f) = self.fresh.front() {
            if let Some(p) = self.packet(f) {
                out += &format!(" fresh head age={:?}\n", now.duration_since(p.ingest));
            }
        }
        for l in &self.links {
            out += &format!(" link {} {:?} inflight={} n={} window={} rate={:.0} exp={:?} last_ack_ago={:?} first={:?}\n", l.id, l.state, l.inflight_bytes, l.inflight.len(), l.window(&self.cfg), l.rate, l.expected_delay(1342), now.duration_since(l.last_ack), l.inflight.front().map(|s| (s.link_seq, s.seq, now.duration_since(s.at))));
        }
        out
    }

    /// What the bitrate controller needs to know, at `now` (see [`super::bitrate`]).
    pub fn observe(&self) -> super::bitrate::Observation {
        let queued = |seqs: &VecDeque<u64>| -> usize {
            seqs.iter()
                .filter_map(|&s| self.packet(s))
                .filter(|p| !p.acked)
                .map(|p| p.encoded.len())
                .sum()
        };
        super::bitrate::Observation {
            links: self
                .links
                .iter()
                .map(|l| super::bitrate::LinkObservation {
                    up: l.state == LinkState::Up,
                    // What the scheduler will put on it: a fading link's capacity is
                    // taken out of the controller's sum before it is lost.
                    rate_bps: l.planned_rate() * 8.0,
                    min_rtt: l.min_rtt(),
                    srtt: l.srtt(),
                    inflight_bytes: l.inflight_bytes,
                })
                .collect(),
            queued_bytes: queued(&self.fresh) + queued(&self.resend),
            // Only drops at the edge: `expired_unrepaired` also counts copies declared
            // lost that still arrive (reordering on a queue-heavy link).
            expired: self.stats.expired_unsent,
            delivered_bytes: self.stats.delivered_bytes,
            sent_bytes: self.stats.sent_bytes,
        }
    }

    /// Snapshot of counters and estimates.
    pub fn stats(&self) -> SenderStats {
        let mut s = self.stats.clone();
        s.edge_queue = self.fresh.len();
        s.links = self
            .links
            .iter()
            .map(|l| {
                let mut ls = l.stats.clone();
                ls.state = Some(l.state);
                ls.srtt_ms = l.srtt().as_secs_f64() * 1e3;
                ls.min_rtt_ms = l.min_rtt().as_secs_f64() * 1e3;
                ls.rate_bps = l.rate * 8.0;
                ls.inflight_bytes = l.inflight_bytes;
                ls.quality = l.quality;
                ls
            })
            .collect();
        s
    }
}
