//! Virtual-time harness: the edge's [`Sender`] and the relay's [`Receiver`] joined by
//! trace-driven [`LinkModel`]s, with no sockets and no clock. 120 simulated seconds
//! of the dev scenario take well under a second, so unit tests and parameter sweeps
//! run thousands of simulated seconds (see tests/virtual_time.rs).

use super::linkmodel::{Enqueue, LinkModel, LinkModelStats};
use super::scenario::{
    FailoverEvent, LatencySummary, LinkEventKind, LinkReport, Scenario, SimReport,
};
use crate::core::receiver::{Receiver, ReceiverConfig, ReceiverStats};
use crate::core::sender::{LinkId, Sender, SenderConfig, SenderEvent, SenderStats};
use crate::core::ts::{Classifier, TestStream};
use crate::core::wire::{self, Datagram, Flags, MediaHeader, TS_PACKET, TS_PER_DATAGRAM};
use bytes::Bytes;
use std::time::{Duration, Instant};

/// QUIC short header (1 + 8-byte CID + 2-byte PN) + AEAD tag (16) + DATAGRAM frame
/// header (3), plus IPv4 (20) and UDP (8): what each datagram costs on a link.
pub const PER_DATAGRAM_OVERHEAD: usize = 30 + 28;

/// Everything a virtual run observed: the report `braid sim` prints, and what tests
/// check beyond it.
#[derive(Debug, Clone)]
pub struct VirtRun {
    pub report: SimReport,
    /// Media datagrams that reached the relay after one with a higher seq (first
    /// copies and repairs alike): the reordering the reorder buffer had to undo.
    pub arrivals_out_of_order: u64,
    /// Retransmissions the edge sent although even the fastest present link could not
    /// deliver them by their deadline (`now + min one-way propagation delay >
    /// ingest + latency`). The sender must count such copies as `expired_unrepaired`
    /// instead of sending them.
    pub retransmits_past_deadline: u64,
    /// Media copies (first, retransmit, duplicate) dropped by the uplink models at
    /// entry: random loss, full queue or scripted outage.
    pub media_dropped_on_entry: u64,
    /// Datagrams the sender emitted on a link that was removed (must be zero).
    pub transmits_on_absent_link: u64,
    /// Media copies handed to each uplink in each second of the run: `[link][second]`.
    pub media_sent_per_s: Vec<Vec<u64>>,
    pub uplinks: Vec<LinkModelStats>,
    pub downlinks: Vec<LinkModelStats>,
    /// Sender events with their time since the start of the run.
    pub events: Vec<(Duration, SenderEvent)>,
    pub sender: SenderStats,
    pub receiver: ReceiverStats,
}

/// The media header of a media datagram, if it is one.
fn media_header(d: &Bytes) -> Option<MediaHeader> {
    match wire::decode(d) {
        Ok(Datagram::Media { header, .. }) => Some(header),
        _ => None,
    }
}

/// What feeds the sender in a virtual run: the constant-rate test stream
/// ([`ConstantSource`]) or an encoder model under the bitrate controller
/// ([`super::adaptive`]).
pub trait VirtSource {
    /// When the source next has something to do (None: finished).
    fn poll_timeout(&self) -> Option<Instant>;
    /// Push everything due at `now` into the sender (and read its state if the source
    /// adapts). Returns the media datagrams pushed.
    fn handle_timeout(&mut self, now: Instant, tx: &mut Sender) -> u64;
}

/// The scenario's constant `input_bps` as groups of 7 TS packets of the test stream.
pub struct ConstantSource {
    stream: TestStream,
    classify: Classifier,
    pps: u64,
    interval: Duration,
    next: Instant,
    end: Instant,
}

impl ConstantSource {
    pub fn new(sc: &Scenario, epoch: Instant) -> Self {
        let payload_bytes = TS_PACKET * TS_PER_DATAGRAM;
        ConstantSource {
            stream: TestStream::new(),
            classify: Classifier::new(),
            pps: (sc.input_bps / 8.0 / TS_PACKET as f64) as u64,
            interval: Duration::from_secs_f64(payload_bytes as f64 * 8.0 / sc.input_bps),
            next: epoch,
            end: epoch + sc.duration,
        }
    }
}

impl VirtSource for ConstantSource {
    fn poll_timeout(&self) -> Option<Instant> {
        (self.next < self.end).then_some(self.next)
    }

    fn handle_timeout(&mut self, now: Instant, tx: &mut Sender) -> u64 {
        let mut n = 0;
        while self.next <= now && self.next < self.end {
            let buf = self.stream.next_group(TS_PER_DATAGRAM, self.pps);
            let flags = self.classify.classify(&buf);
            tx.push_media(now, &buf, flags);
            n += 1;
            self.next += self.interval;
        }
        n
    }
}

/// Run a scenario in virtual time. `epoch` is only a base for `Instant` arithmetic.
pub fn run(sc: &Scenario, epoch: Instant) -> SimReport {
    run_detailed(sc, epoch).report
}

/// Share of the media copies handed to the uplinks in each second that went to
/// `link` (`None` for a second in which none were sent).
pub fn share_per_second(run: &VirtRun, link: usize) -> Vec<Option<f64>> {
    let seconds = run.media_sent_per_s.iter().map(Vec::len).max().unwrap_or(0);
    (0..seconds)
        .map(|s| {
            let all: u64 = run
                .media_sent_per_s
                .iter()
                .map(|l| l.get(s).copied().unwrap_or(0))
                .sum();
            let mine = run.media_sent_per_s.get(link)?.get(s).copied().unwrap_or(0);
            (all > 0).then(|| mine as f64 / all as f64)
        })
        .collect()
}

/// The `sinr-fade` figures: link 0's share of the media in the seconds around its
/// fade (34-40 s) and the copies its uplink dropped (random loss, outage), beside
/// the transport report.
pub fn fade_report(sc: &Scenario, run: &VirtRun) -> serde_json::Value {
    let shares = share_per_second(run, 0);
    let around: serde_json::Map<String, serde_json::Value> = (34..41)
        .filter_map(|s| {
            let v = shares.get(s).copied().flatten()?;
            Some((s.to_string(), serde_json::json!((v * 1e3).round() / 1e3)))
        })
        .collect();
    let up = &run.uplinks[0];
    serde_json::json!({
        "link": sc.links[0].name,
        "share_per_s": around,
        "dropped_by_loss": up.dropped_loss_packets,
        "dropped_by_outage": up.dropped_outage_packets,
    })
}

/// Run a scenario in virtual time and keep what tests need beyond the report.
pub fn run_detailed(sc: &Scenario, epoch: Instant) -> VirtRun {
    let mut source = ConstantSource::new(sc, epoch);
    run_with_source(sc, epoch, &mut source)
}

/// Run a scenario in virtual time with any source. The report's `offered`,
/// `goodput_bps` and `wire_overhead` count the bytes the source actually pushed.
pub fn run_with_source(sc: &Scenario, epoch: Instant, source: &mut dyn VirtSource) -> VirtRun {
    let session = 0x5157_u32;
    let scfg = SenderConfig {
        session,
        latency: sc.latency,
        ..sc.sender.clone()
    };
    let mut tx = Sender::new(scfg, epoch);
    let mut rx = Receiver::new(
        ReceiverConfig {
            session,
            latency: sc.latency,
            ..Default::default()
        },
        epoch,
    );
    let n = sc.links.len();
    let mut ups: Vec<LinkModel<Bytes>> = Vec::new();
    let mut downs: Vec<LinkModel<Bytes>> = Vec::new();
    let mut present = vec![true; n];
    // Uplink stats of models discarded by `Remove`, added back at the end.
    let mut retired_up = vec![LinkModelStats::default(); n];
    let mut retired_down = vec![LinkModelStats::default(); n];
    let rtt = |i: usize| sc.links[i].up.delay + sc.links[i].down.delay;
    for (i, l) in sc.links.iter().enumerate() {
        ups.push(LinkModel::new(l.up.clone(), epoch));
        downs.push(LinkModel::new(l.down.clone(), epoch));
        tx.add_link(epoch, i as LinkId);
        rx.handle_rtt(epoch, i as LinkId, rtt(i));
    }
    let mut link_events = sc.link_events.clone();
    link_events.sort_by_key(|e| e.at);
    let mut link_events = link_events.into_iter().peekable();

    let end = epoch + sc.duration;
    let drain_end = end + sc.latency + Duration::from_secs(1);
    let seconds = drain_end.duration_since(epoch).as_secs() as usize + 1;
    let mut now = epoch;
    let mut offered = 0u64;
    let mut on_time = 0u64;
    let mut on_time_bytes = 0u64;
    let mut latencies = Vec::new();
    let mut last_out: Option<(Instant, u64)> = None;
    let mut max_gap = Duration::ZERO;
    let mut out_of_order_outputs = 0u64;
    let mut wire_bytes = 0u64;
    let mut wire_datagrams = 0u64;
    let mut highest_arrival: Option<u64> = None;
    let mut arrivals_out_of_order = 0u64;
    let mut retransmits_past_deadline = 0u64;
    let mut media_dropped_on_entry = 0u64;
    let mut transmits_on_absent_link = 0u64;
    let mut media_sent_per_s = vec![vec![0u64; seconds]; n];
    let mut events = Vec::new();
    let cut_at = sc.first_cut().map(|c| epoch + c);
    let mut shares_before_cut: Vec<f64> = Vec::new();
    let mut raw_events = Vec::new();
    let budget = sc.latency + Duration::from_millis(1);

    loop {
        // Next event time.
        let mut next = drain_end;
        if let Some(t) = source.poll_timeout() {
            next = next.min(t);
        }
        if let Some(e) = link_events.peek() {
            next = next.min(epoch + e.at);
        }
        for t in [tx.poll_timeout(), rx.poll_timeout()].into_iter().flatten() {
            next = next.min(t);
        }
        for m in ups.iter().chain(downs.iter()) {
            if let Some(t) = m.poll_timeout() {
                next = next.min(t);
            }
        }
        if next >= drain_end {
            break;
        }
        now = now.max(next);
        if cut_at.is_some_and(|c| now >= c) && shares_before_cut.is_empty() {
            shares_before_cut = shares(&rx.stats(), sc.links.len());
        }

        while let Some(e) = link_events.next_if(|e| epoch + e.at <= now) {
            let i = e.link;
            let id = i as LinkId;
            match e.kind {
                LinkEventKind::Remove if present[i] => {
                    present[i] = false;
                    tx.remove_link(now, id);
                    rx.remove_link(id);
                    // The interface is gone with whatever was queued or in flight on it.
                    let up = std::mem::replace(
                        &mut ups[i],
                        LinkModel::new(sc.links[i].up.clone(), epoch),
                    );
                    let down = std::mem::replace(
                        &mut downs[i],
                        LinkModel::new(sc.links[i].down.clone(), epoch),
                    );
                    add_stats(&mut retired_up[i], up.stats());
                    add_stats(&mut retired_down[i], down.stats());
                }
                LinkEventKind::Add if !present[i] => {
                    present[i] = true;
                    tx.add_link(now, id);
                    rx.handle_rtt(now, id, rtt(i));
                }
                LinkEventKind::Quality(q) if present[i] => tx.set_link_quality(id, q),
                LinkEventKind::Loss(p) => ups[i].set_loss(p),
                _ => {}
            }
        }
        if source.poll_timeout().is_some_and(|t| t <= now) {
            offered += source.handle_timeout(now, &mut tx);
        }
        tx.handle_timeout(now);
        for (i, m) in ups.iter_mut().enumerate() {
            while let Some(d) = m.poll_deliver(now) {
                if let Some(h) = media_header(&d) {
                    match highest_arrival {
                        Some(hi) if h.seq < hi => arrivals_out_of_order += 1,
                        _ => highest_arrival = Some(h.seq),
                    }
                }
                let _ = rx.handle_datagram(now, i as LinkId, &d);
            }
        }
        rx.handle_timeout(now);
        while let Some(r) = rx.poll_output() {
            let lat = now.duration_since(epoch + Duration::from_micros(r.send_time_us));
            if lat <= budget {
                on_time += 1;
                on_time_bytes += r.payload.len() as u64;
            }
            latencies.push(lat.as_secs_f64() * 1e3);
            if let Some((t, seq)) = last_out {
                max_gap = max_gap.max(now.duration_since(t));
                if r.seq <= seq {
                    out_of_order_outputs += 1;
                }
            }
            last_out = Some((now, last_out.map_or(r.seq, |(_, s)| s.max(r.seq))));
        }
        while let Some((link, d)) = rx.poll_feedback() {
            let i = link as usize;
            if !present[i] {
                continue;
            }
            let len = d.len() + PER_DATAGRAM_OVERHEAD;
            wire_bytes += len as u64;
            wire_datagrams += 1;
            downs[i].enqueue(now, len, d);
        }
        for (i, m) in downs.iter_mut().enumerate() {
            while let Some(d) = m.poll_deliver(now) {
                tx.handle_datagram(now, i as LinkId, &d);
            }
        }
        while let Some(t) = tx.poll_transmit(now) {
            let i = t.link as usize;
            if !present[i] {
                transmits_on_absent_link += 1;
                continue;
            }
            let media = media_header(&t.data);
            if let Some(h) = &media {
                media_sent_per_s[i][now.duration_since(epoch).as_secs() as usize] += 1;
                if h.flags.has(Flags::RETRANSMIT) {
                    let deadline = epoch + Duration::from_micros(h.send_time_us) + sc.latency;
                    let best = (0..n)
                        .filter(|&j| present[j])
                        .map(|j| rtt(j) / 2)
                        .min()
                        .unwrap_or_default();
                    if now + best > deadline {
                        retransmits_past_deadline += 1;
                    }
                }
            }
            let len = t.data.len() + PER_DATAGRAM_OVERHEAD;
            wire_bytes += len as u64;
            wire_datagrams += 1;
            if ups[i].enqueue(now, len, t.data) != Enqueue::Accepted && media.is_some() {
                media_dropped_on_entry += 1;
            }
        }
        while let Some(e) = tx.poll_event() {
            events.push(FailoverEvent::from_sender(&e, epoch, sc));
            raw_events.push((now.duration_since(epoch), e));
        }
    }

    let rs = rx.stats();
    let mut first_share = vec![0u64; n];
    for l in &rs.links {
        first_share[l.id as usize] = l.media_first;
    }
    let total_first: u64 = first_share.iter().sum::<u64>().max(1);
    let es = tx.stats();
    let media_ts_bytes = es.media_bytes_in;
    let capacity = sc.capacity_bps();
    let bound = sc.bound_bps(sc.latency);
    let report = SimReport {
        scenario: sc.name.clone(),
        mode: "virtual".into(),
        duration_s: sc.duration.as_secs_f64(),
        input_bps: sc.input_bps,
        budget_ms: sc.latency.as_secs_f64() * 1e3,
        offered,
        ts_packets_offered: es.media_bytes_in / TS_PACKET as u64,
        delivered_on_time: on_time,
        delivered_late: rs.late + (rs.released - on_time),
        lost: offered.saturating_sub(rs.released),
        duplicated: rs.duplicates,
        on_time_fraction: on_time as f64 / offered.max(1) as f64,
        latency: LatencySummary::from_ms(latencies),
        goodput_bps: on_time_bytes as f64 * 8.0 / sc.duration.as_secs_f64(),
        capacity_bps: capacity,
        bound_bps: bound,
        input_fraction_of_bound: bound.map(|b| sc.input_bps / b),
        wire_overhead: wire_bytes as f64 / media_ts_bytes.max(1) as f64,
        wire_overhead_udp: (wire_bytes - 28 * wire_datagrams) as f64 / media_ts_bytes.max(1) as f64,
        shares_before_cut,
        max_output_gap_ms: max_gap.as_secs_f64() * 1e3,
        out_of_order_outputs,
        links: es
            .links
            .iter()
            .map(|l| {
                LinkReport::from_stats(
                    sc,
                    l,
                    first_share[l.id as usize] as f64 / total_first as f64,
                )
            })
            .collect(),
        failover_events: events,
        edge: serde_json::to_value(&es).unwrap_or_default(),
    };
    let uplinks = ups
        .iter()
        .zip(&retired_up)
        .map(|(m, r)| {
            let mut s = *r;
            add_stats(&mut s, m.stats());
            s
        })
        .collect();
    let downlinks = downs
        .iter()
        .zip(&retired_down)
        .map(|(m, r)| {
            let mut s = *r;
            add_stats(&mut s, m.stats());
            s
        })
        .collect();
    VirtRun {
        report,
        arrivals_out_of_order,
        retransmits_past_deadline,
        media_dropped_on_entry,
        transmits_on_absent_link,
        media_sent_per_s,
        uplinks,
        downlinks,
        events: raw_events,
        sender: es,
        receiver: rs,
    }
}

fn add_stats(acc: &mut LinkModelStats, s: LinkModelStats) {
    acc.packets_in += s.packets_in;
    acc.bytes_in += s.bytes_in;
    acc.packets_delivered += s.packets_delivered;
    acc.bytes_delivered += s.bytes_delivered;
    acc.dropped_queue_packets += s.dropped_queue_packets;
    acc.dropped_queue_bytes += s.dropped_queue_bytes;
    acc.dropped_loss_packets += s.dropped_loss_packets;
    acc.dropped_loss_bytes += s.dropped_loss_bytes;
    acc.dropped_outage_packets += s.dropped_outage_packets;
    acc.dropped_outage_bytes += s.dropped_outage_bytes;
}

/// Share of first copies the relay received on each link so far.
pub fn shares(rs: &crate::core::receiver::ReceiverStats, links: usize) -> Vec<f64> {
    let mut v = vec![0.0; links];
    let total: u64 = rs.links.iter().map(|l| l.media_first).sum::<u64>().max(1);
    for l in &rs.links {
        if let Some(x) = v.get_mut(l.id as usize) {
            *x = l.media_first as f64 / total as f64;
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::trace::traces_dir;

    #[test]
    fn dev_scenario_5mbps_meets_999_within_500ms() {
        let sc = Scenario::dev(&traces_dir(), 5e6).expect("traces");
        let r = run(&sc, Instant::now());
        eprintln!("{}", serde_json::to_string_pretty(&r).unwrap());
        assert!(r.on_time_fraction >= 0.999, "{}", r.on_time_fraction);
    }
}
