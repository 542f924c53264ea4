//! Relay receiver core (sans-IO): one per session. Acknowledges each link with
//! receiver reports, NACKs gaps, and releases media in sequence order at a fixed
//! latency after the edge's ingest time.
//!
//! # Call order
//! - [`Receiver::handle_datagram`] for every datagram of the session, with its link;
//! - [`Receiver::handle_rtt`] whenever the driver learns a link's RTT (quinn's
//!   estimate; used to place the edge's clock, see below);
//! - [`Receiver::handle_timeout`] when [`Receiver::poll_timeout`] passes;
//! - then drain [`Receiver::poll_output`] (media in order, to the outputs),
//!   [`Receiver::poll_feedback`] (datagrams to send to the edge on a link) and
//!   [`Receiver::poll_summary`] (for the control streams).
//!
//! # Clocks
//! The edge's and relay's clocks are not assumed synchronised. The relay keeps
//! `offset = min(arrival − send_time)` over the session, which is the clock offset
//! plus the smallest one-way delay seen, and estimates that delay as half the
//! smallest link RTT. A packet is released at
//! `send_time + offset − min_rtt/2 + latency`: the configured latency is then the
//! edge-ingest-to-relay-output delay, whatever the links' delays.

use super::sender::LinkId;
use super::wire::{self, Datagram, Nack, Report, SessionSummary, MAX_NACK_RANGES};
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    pub session: u32,
    /// Release latency after the edge's ingest time.
    pub latency: Duration,
    /// A link with new arrivals gets a report at most this often.
    pub report_interval: Duration,
    /// Session summary cadence (control stream).
    pub summary_interval: Duration,
    /// A gap is NACKed once it has been missing this long (reordering allowance; the
    /// edge further ignores NACKs for copies it knows are still on their way).
    pub nack_delay: Duration,
    /// A gap still missing is NACKed again this often.
    pub renack_interval: Duration,
    /// Gaps larger than this many seqs are not tracked individually.
    pub max_gap: u64,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        Self {
            session: 0,
            latency: Duration::from_millis(500),
            report_interval: Duration::from_millis(20),
            summary_interval: Duration::from_millis(100),
            nack_delay: Duration::from_millis(20),
            renack_interval: Duration::from_millis(40),
            max_gap: 8192,
        }
    }
}

/// Counters of one session, part of the relay's stats snapshot.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReceiverStats {
    pub datagrams_in: u64,
    pub bytes_in: u64,
    pub media_in: u64,
    pub probes_in: u64,
    /// Refused: not a datagram of ours (bad version, kind, length, TS sync).
    pub junk: u64,
    /// Refused: session tag of another session.
    pub wrong_session: u64,
    pub duplicates: u64,
    pub late: u64,
    pub lost: u64,
    pub released: u64,
    pub released_bytes: u64,
    pub nacked_seqs: u64,
    pub nack_datagrams: u64,
    pub reports: u64,
    pub buffered: usize,
    pub links: Vec<RxLinkStats>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RxLinkStats {
    pub id: LinkId,
    pub datagrams: u64,
    pub bytes: u64,
    pub media_first: u64,
    pub rtt_ms: Option<f64>,
}

/// Media released in order.
#[derive(Debug, Clone)]
pub struct Released {
    pub seq: u64,
    /// Edge ingest time (edge clock, µs since the edge's session epoch).
    pub send_time_us: u64,
    /// Ingest to release, by the receiver's estimate of the edge clock.
    pub delay: Duration,
    /// Capture to ingest at the edge (from the header).
    pub capture_age: Duration,
    /// Whole TS packets.
    pub payload: Bytes,
}

impl Released {
    /// Glass-to-glass so far: camera capture to relay output.
    pub fn capture_to_output(&self) -> Duration {
        self.delay + self.capture_age
    }
}

/// Why a datagram was refused (it is counted either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Junk(wire::WireError),
    WrongSession,
    Duplicate,
    Late,
    NotMedia,
}

#[derive(Debug)]
struct RxLink {
    id: LinkId,
    largest: Option<u32>,
    largest_at: Instant,
    /// bit i = link_seq `largest - 1 - i` received.
    bits: [u64; 4],
    received_bytes: u64,
    unreported: bool,
    last_report: Option<Instant>,
    rtt: Option<Duration>,
    /// Smallest (arrival − send_time) of media on this link, µs.
    min_transit_us: Option<i64>,
    stats: RxLinkStats,
}

impl RxLink {
    fn new(id: LinkId, now: Instant) -> Self {
        Self {
            id,
            largest: None,
            largest_at: now,
            bits: [0; 4],
            received_bytes: 0,
            unreported: false,
            last_report: None,
            rtt: None,
            min_transit_us: None,
            stats: RxLinkStats {
                id,
                ..Default::default()
            },
        }
    }

    fn record(&mut self, now: Instant, link_seq: u32) {
        let Some(largest) = self.largest else {
            self.largest = Some(link_seq);
            self.largest_at = now;
            return;
        };
        let ahead = link_seq.wrapping_sub(largest);
        if ahead == 0 {
            return;
        }
        if ahead < 1 << 31 {
            shift_up(&mut self.bits, ahead);
            set_bit(&mut self.bits, ahead - 1);
            self.largest = Some(link_seq);
            self.largest_at = now;
        } else {
            let back = largest.wrapping_sub(link_seq);
            if back <= wire::REPORT_BITMAP_BITS {
                set_bit(&mut self.bits, back - 1);
            }
        }
    }

    fn report(&self, now: Instant, session: u32) -> Option<Report> {
        let largest = self.largest?;
        let mut bitmap = [0u8; 32];
        for (j, b) in bitmap.iter_mut().enumerate() {
            *b = (self.bits[j / 8] >> ((j % 8) * 8)) as u8;
        }
        let hold = now.duration_since(self.largest_at).as_micros();
        Some(Report {
            session,
            largest,
            hold_us: hold.min(u128::from(u32::MAX)) as u32,
            bitmap,
            received_bytes: self.received_bytes,
        })
    }
}

fn shift_up(w: &mut [u64; 4], d: u32) {
    if d >= 256 {
        *w = [0; 4];
        return;
    }
    let ws = (d / 64) as usize;
    let bs = d % 64;
    for i in (0..4).rev() {
        let mut v = if i >= ws { w[i - ws] << bs } else { 0 };
        if bs > 0 && i > ws {
            v |= w[i - ws - 1] >> (64 - bs);
        }
        w[i] = v;
    }
}

fn set_bit(w: &mut [u64; 4], i: u32) {
    if i < 256 {
        w[(i / 64) as usize] |= 1 << (i % 64);
    }
}

#[derive(Debug)]
struct Held {
    send_time_us: u64,
    capture_age: u16,
    payload: Bytes,
}

#[derive(Debug)]
struct Missing {
    since: Instant,
    last_nack: Option<Instant>,
}

/// The relay's sans-IO receiver for one session.
#[derive(Debug)]
pub struct Receiver {
    cfg: ReceiverConfig,
    epoch: Instant,
    links: Vec<RxLink>,
    buffer: BTreeMap<u64, Held>,
    next_release: Option<u64>,
    highest: Option<u64>,
    missing: BTreeMap<u64, Missing>,
    /// Status of recently released seqs (true = delivered), from `window_base`.
    window: VecDeque<bool>,
    window_base: u64,
    offset_us: Option<i64>,
    /// Edge clock -> relay clock offset estimate, µs (see `update_clock`).
    clock_us: Option<i64>,
    out: VecDeque<Released>,
    feedback: VecDeque<(LinkId, Bytes)>,
    last_summary: Instant,
    stats: ReceiverStats,
}

const STATUS_WINDOW: usize = 16_384;
/// Timers in the driver may wake up to a couple of milliseconds late; releases are
/// scheduled this much early so the output is never later than the latency.
pub const RELEASE_EARLY: Duration = Duration::from_millis(5);

impl Receiver {
    pub fn new(cfg: ReceiverConfig, now: Instant) -> Self {
        Self {
            cfg,
            epoch: now,
            links: Vec::new(),
            buffer: BTreeMap::new(),
            next_release: None,
            highest: None,
            missing: BTreeMap::new(),
            window: VecDeque::new(),
            window_base: 0,
            offset_us: None,
            clock_us: None,
            out: VecDeque::new(),
            feedback: VecDeque::new(),
            last_summary: now,
            stats: ReceiverStats::default(),
        }
    }

    pub fn session(&self) -> u32 {
        self.cfg.session
    }

    pub fn latency(&self) -> Duration {
        self.cfg.latency
    }

    fn link_mut(&mut self, now: Instant, id: LinkId) -> &mut RxLink {
        match self.links.iter().position(|l| l.id == id) {
            Some(i) => &mut self.links[i],
            None => {
                self.links.push(RxLink::new(id, now));
                self.links.last_mut().expect("just pushed")
            }
        }
    }

    /// A link left the session (connection closed).
    pub fn remove_link(&mut self, id: LinkId) {
        self.links.retain(|l| l.id != id);
    }

    /// The driver's RTT estimate for a link.
    /// Creates the link if it is new. See [`Receiver::update_clock`].
    pub fn handle_rtt(&mut self, now: Instant, id: LinkId, rtt: Duration) {
        let l = self.link_mut(now, id);
        l.rtt = Some(rtt);
        l.stats.rtt_ms = Some(rtt.as_secs_f64() * 1e3);
        self.update_clock(id);
    }

    /// The edge clock's offset, estimated per link as its smallest transit minus half
    /// its RTT (RTT is measured with small packets, so a slow link's serialisation
    /// delay inflates its transit but not its RTT), and kept as the smallest estimate
    /// any link ever gave: the fastest path errs least, release times never jump
    /// later when links come and go, and an error makes releases early, not late.
    fn update_clock(&mut self, id: LinkId) {
        let Some(l) = self.links.iter().find(|l| l.id == id) else {
            return;
        };
        if let (Some(t), Some(r)) = (l.min_transit_us, l.rtt) {
            let c = t - (r.as_micros() / 2) as i64;
            if self.clock_us.is_none_or(|m| c < m) {
                self.clock_us = Some(c);
            }
        }
    }

    fn us(&self, t: Instant) -> i64 {
        t.duration_since(self.epoch).as_micros() as i64
    }

    fn release_at(&self, send_time_us: u64) -> Instant {
        // Before any RTT is known: the smallest transit seen (releases a little late
        // rather than not at all).
        let clock = self.clock_us.or(self.offset_us).unwrap_or(0);
        let t = send_time_us as i64 + clock + self.cfg.latency.as_micros() as i64
            - RELEASE_EARLY.as_micros() as i64;
        self.epoch + Duration::from_micros(t.max(0) as u64)
    }

    fn status(&self, seq: u64) -> Option<bool> {
        let i = seq.checked_sub(self.window_base)?;
        self.window.get(i as usize).copied()
    }

    /// One datagram received on `link`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        link: LinkId,
        data: &Bytes,
    ) -> Result<(), Refused> {
        self.stats.datagrams_in += 1;
        self.stats.bytes_in += data.len() as u64;
        let d = match wire::decode(data) {
            Ok(d) => d,
            Err(e) => {
                self.stats.junk += 1;
                return Err(Refused::Junk(e));
            }
        };
        let (session, link_seq) = match &d {
            Datagram::Media { header, .. } => (header.session, header.link_seq),
            Datagram::Probe {
                session, link_seq, ..
            } => (*session, *link_seq),
            _ => {
                self.stats.junk += 1;
                return Err(Refused::NotMedia);
            }
        };
        if session != self.cfg.session {
            self.stats.wrong_session += 1;
            return Err(Refused::WrongSession);
        }
        {
            let l = self.link_mut(now, link);
            l.record(now, link_seq);
            l.received_bytes += data.len() as u64;
            l.unreported = true;
            l.stats.datagrams += 1;
            l.stats.bytes += data.len() as u64;
        }
        let Datagram::Media { header, payload } = d else {
            self.stats.probes_in += 1;
            return Ok(());
        };
        self.stats.media_in += 1;
        let seq = header.seq;
        let d_us = self.us(now) - header.send_time_us as i64;
        if self.offset_us.is_none_or(|o| d_us < o) {
            self.offset_us = Some(d_us);
        }
        let l = self.link_mut(now, link);
        if l.min_transit_us.is_none_or(|o| d_us < o) {
            l.min_transit_us = Some(d_us);
            self.update_clock(link);
        }
        if let Some(next) = self.next_release {
            if seq < next {
                return Err(if self.status(seq) == Some(true) {
                    self.stats.duplicates += 1;
                    Refused::Duplicate
                } else {
                    self.stats.late += 1;
                    Refused::Late
                });
            }
        }
        if self.buffer.contains_key(&seq) {
            self.stats.duplicates += 1;
            return Err(Refused::Duplicate);
        }
        self.link_mut(now, link).stats.media_first += 1;
        self.missing.remove(&seq);
        match self.highest {
            Some(h) if seq > h => {
                let from = (h + 1).max(seq.saturating_sub(self.cfg.max_gap));
                for s in from..seq {
                    self.missing.insert(
                        s,
                        Missing {
                            since: now,
                            last_nack: None,
                        },
                    );
                }
                self.highest = Some(seq);
            }
            None => self.highest = Some(seq),
            _ => {}
        }
        self.buffer.insert(
            seq,
            Held {
                send_time_us: header.send_time_us,
                capture_age: header.capture_age,
                payload,
            },
        );
        Ok(())
    }

    fn mark(&mut self, seq: u64, delivered: bool) {
        if self.window.is_empty() {
            self.window_base = seq;
        }
        let end = self.window_base + self.window.len() as u64;
        for _ in end..seq {
            self.window.push_back(false);
        }
        if seq >= self.window_base {
            self.window.push_back(delivered);
        }
        while self.window.len() > STATUS_WINDOW {
            self.window.pop_front();
            self.window_base += 1;
        }
    }

    /// Release due media, emit due reports and NACKs.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Release in order.
        while let Some((&seq, held)) = self.buffer.first_key_value() {
            if now < self.release_at(held.send_time_us) {
                break;
            }
            let next = self.next_release.unwrap_or(seq);
            if seq > next {
                self.stats.lost += seq - next;
                if seq - next > STATUS_WINDOW as u64 {
                    // A jump wider than the window: forget the window, O(1).
                    self.window.clear();
                } else {
                    for s in next..seq {
                        self.mark(s, false);
                    }
                }
            }
            let held = self.buffer.remove(&seq).expect("first key");
            self.mark(seq, true);
            self.next_release = Some(seq.saturating_add(1));
            self.stats.released += 1;
            self.stats.released_bytes += held.payload.len() as u64;
            // Where the edge's ingest instant falls on our clock.
            let clock = self.clock_us.or(self.offset_us).unwrap_or(0);
            let ingest_us = held.send_time_us as i64 + clock;
            let delay_us = (self.us(now) - ingest_us).max(0) as u64;
            self.out.push_back(Released {
                seq,
                send_time_us: held.send_time_us,
                delay: Duration::from_micros(delay_us),
                capture_age: Duration::from_micros(u64::from(held.capture_age) * 100),
                payload: held.payload,
            });
        }
        if let Some(next) = self.next_release {
            while let Some((&s, _)) = self.missing.first_key_value() {
                if s < next {
                    self.missing.remove(&s);
                } else {
                    break;
                }
            }
        }
        // Reports.
        let session = self.cfg.session;
        let interval = self.cfg.report_interval;
        for l in &mut self.links {
            if l.unreported && l.last_report.is_none_or(|t| now >= t + interval) {
                if let Some(r) = l.report(now, session) {
                    self.feedback.push_back((l.id, wire::encode_report(&r)));
                    self.stats.reports += 1;
                }
                l.unreported = false;
                l.last_report = Some(now);
            }
        }
        // NACKs.
        let mut ranges: Vec<(u64, u16)> = Vec::new();
        for (&seq, m) in self.missing.iter_mut() {
            let due = match m.last_nack {
                None => now >= m.since + self.cfg.nack_delay,
                Some(t) => now >= t + self.cfg.renack_interval,
            };
            if !due {
                continue;
            }
            m.last_nack = Some(now);
            self.stats.nacked_seqs += 1;
            match ranges.last_mut() {
                Some((first, len)) if *first + u64::from(*len) == seq && *len < u16::MAX => {
                    *len += 1
                }
                _ => ranges.push((seq, 1)),
            }
        }
        if !ranges.is_empty() {
            // NACKs go on the two links with the smallest RTT, to survive one of them
            // being the link that is failing.
            let mut by_rtt: Vec<(Duration, LinkId)> = self
                .links
                .iter()
                .map(|l| (l.rtt.unwrap_or(Duration::from_secs(1)), l.id))
                .collect();
            by_rtt.sort();
            for chunk in ranges.chunks(MAX_NACK_RANGES) {
                let d = wire::encode_nack(&Nack {
                    session,
                    ranges: chunk.to_vec(),
                });
                for &(_, id) in by_rtt.iter().take(2) {
                    self.feedback.push_back((id, d.clone()));
                    self.stats.nack_datagrams += 1;
                }
            }
        }
    }

    /// Next instant at which [`Receiver::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut consider = |x: Instant| t = Some(t.map_or(x, |t| t.min(x)));
        if let Some((_, held)) = self.buffer.first_key_value() {
            consider(self.release_at(held.send_time_us));
        }
        for l in &self.links {
            if l.unreported {
                consider(
                    l.last_report
                        .map_or(self.epoch, |r| r + self.cfg.report_interval),
                );
            }
        }
        for m in self.missing.values() {
            consider(match m.last_nack {
                None => m.since + self.cfg.nack_delay,
                Some(n) => n + self.cfg.renack_interval,
            });
        }
        t
    }

    pub fn poll_output(&mut self) -> Option<Released> {
        self.out.pop_front()
    }

    pub fn poll_feedback(&mut self) -> Option<(LinkId, Bytes)> {
        self.feedback.pop_front()
    }

    /// A summary for the control streams, at most every `summary_interval`.
    pub fn poll_summary(&mut self, now: Instant) -> Option<SessionSummary> {
        if now < self.last_summary + self.cfg.summary_interval {
            return None;
        }
        self.last_summary = now;
        Some(self.summary())
    }

    pub fn summary(&self) -> SessionSummary {
        SessionSummary {
            released: self.stats.released,
            lost: self.stats.lost,
            late: self.stats.late,
            duplicates: self.stats.duplicates,
            latency_ms: self.cfg.latency.as_millis() as u32,
            capture_to_output_p50_ms: None,
            capture_to_output_p95_ms: None,
        }
    }

    pub fn stats(&self) -> ReceiverStats {
        let mut s = self.stats.clone();
        s.buffered = self.buffer.len();
        s.links = self.links.iter().map(|l| l.stats.clone()).collect();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::wire::{Flags, MediaHeader};

    fn media(session: u32, seq: u64, link_seq: u32, t_us: u64) -> Bytes {
        let mut p = vec![0u8; 188];
        p[0] = 0x47;
        wire::encode_media(
            &MediaHeader {
                flags: Flags(0),
                session,
                link_seq,
                seq,
                send_time_us: t_us,
                capture_age: 0,
            },
            &p,
        )
    }

    #[test]
    fn bitmap_shift_tracks_link_seqs() {
        let now = Instant::now();
        let mut l = RxLink::new(0, now);
        for s in [0u32, 1, 2, 4, 7, 3] {
            l.record(now, s);
        }
        let r = l.report(now, 1).unwrap();
        assert_eq!(r.largest, 7);
        for s in [0, 1, 2, 3, 4] {
            assert!(r.acks(s), "{s}");
        }
        assert!(!r.acks(5));
        assert!(!r.acks(6));
        // A jump of more than 64 moves bits across words.
        l.record(now, 100);
        let r = l.report(now, 1).unwrap();
        assert!(r.acks(7) && r.acks(0) && !r.acks(50));
        l.record(now, 400);
        let r = l.report(now, 1).unwrap();
        assert!(!r.acks(100), "beyond the window");
    }

    #[test]
    fn releases_in_order_at_fixed_latency_and_counts_loss_dup_late() {
        let t0 = Instant::now();
        let cfg = ReceiverConfig {
            session: 9,
            latency: Duration::from_millis(200),
            ..Default::default()
        };
        let mut rx = Receiver::new(cfg, t0);
        let ms = Duration::from_millis;
        // seq 0 at t=0 (transit 30 ms), seq 2 before seq 1, seq 3 never arrives.
        rx.handle_datagram(t0 + ms(30), 0, &media(9, 0, 0, 0))
            .unwrap();
        rx.handle_datagram(t0 + ms(50), 0, &media(9, 2, 1, 20_000))
            .unwrap();
        rx.handle_datagram(t0 + ms(60), 1, &media(9, 1, 0, 10_000))
            .unwrap();
        assert_eq!(
            rx.handle_datagram(t0 + ms(61), 1, &media(9, 1, 1, 10_000)),
            Err(Refused::Duplicate)
        );
        rx.handle_datagram(t0 + ms(75), 0, &media(9, 4, 2, 40_000))
            .unwrap();
        assert_eq!(
            rx.handle_datagram(t0 + ms(75), 0, &media(8, 5, 3, 40_000)),
            Err(Refused::WrongSession)
        );
        // offset = 30 ms (no RTT known): release at send + 30 + 200 - RELEASE_EARLY.
        rx.handle_timeout(t0 + ms(224));
        assert!(rx.poll_output().is_none());
        rx.handle_timeout(t0 + ms(225));
        assert_eq!(rx.poll_output().unwrap().seq, 0);
        rx.handle_timeout(t0 + ms(270));
        let seqs: Vec<u64> = std::iter::from_fn(|| rx.poll_output())
            .map(|r| r.seq)
            .collect();
        assert_eq!(seqs, vec![1, 2, 4]);
        let s = rx.stats();
        assert_eq!((s.lost, s.duplicates, s.wrong_session), (1, 1, 1));
        assert_eq!(
            rx.handle_datagram(t0 + ms(280), 0, &media(9, 3, 4, 30_000)),
            Err(Refused::Late)
        );
        assert_eq!(rx.stats().late, 1);
        // The gap at seq 3 was NACKed before its release passed.
        assert!(s.nacked_seqs == 0 || s.nack_datagrams > 0);
    }

    #[test]
    fn huge_sequence_jump_is_cheap() {
        let t0 = Instant::now();
        let mut rx = Receiver::new(
            ReceiverConfig {
                session: 1,
                ..Default::default()
            },
            t0,
        );
        rx.handle_datagram(t0, 0, &media(1, 0, 0, 0)).unwrap();
        rx.handle_datagram(t0, 0, &media(1, 1 << 34, 1, 0)).unwrap();
        rx.handle_datagram(t0, 0, &media(1, u64::MAX, 2, 0))
            .unwrap();
        let start = std::time::Instant::now();
        rx.handle_timeout(t0 + Duration::from_secs(1));
        assert!(start.elapsed() < Duration::from_millis(500));
        assert_eq!(rx.stats().released, 3);
    }

    #[test]
    fn gap_is_nacked_after_delay_and_renacked() {
        let t0 = Instant::now();
        let mut rx = Receiver::new(
            ReceiverConfig {
                session: 1,
                ..Default::default()
            },
            t0,
        );
        let ms = Duration::from_millis;
        rx.handle_datagram(t0, 0, &media(1, 0, 0, 0)).unwrap();
        rx.handle_datagram(t0 + ms(1), 0, &media(1, 3, 1, 1000))
            .unwrap();
        rx.handle_timeout(t0 + ms(10));
        let fb: Vec<_> = std::iter::from_fn(|| rx.poll_feedback()).collect();
        assert!(fb
            .iter()
            .all(|(_, d)| matches!(wire::decode(d), Ok(Datagram::Report(_)))));
        rx.handle_timeout(t0 + ms(25));
        let nacks: Vec<Nack> = std::iter::from_fn(|| rx.poll_feedback())
            .filter_map(|(_, d)| match wire::decode(&d) {
                Ok(Datagram::Nack(n)) => Some(n),
                _ => None,
            })
            .collect();
        assert_eq!(nacks.len(), 1);
        assert_eq!(nacks[0].ranges, vec![(1, 2)]);
        rx.handle_timeout(t0 + ms(30));
        assert!(std::iter::from_fn(|| rx.poll_feedback())
            .all(|(_, d)| !matches!(wire::decode(&d), Ok(Datagram::Nack(_)))));
        rx.handle_datagram(t0 + ms(40), 0, &media(1, 1, 2, 100))
            .unwrap();
        rx.handle_timeout(t0 + ms(66));
        let nacks: Vec<Nack> = std::iter::from_fn(|| rx.poll_feedback())
            .filter_map(|(_, d)| match wire::decode(&d) {
                Ok(Datagram::Nack(n)) => Some(n),
                _ => None,
            })
            .collect();
        assert_eq!(nacks[0].ranges, vec![(2, 1)]);
    }
}
