//! Virtual-time harness: the edge's [`Sender`] and the relay's [`Receiver`] joined by
//! trace-driven [`LinkModel`]s, with no sockets and no clock. 120 simulated seconds
//! of the dev scenario take well under a second, so unit tests and parameter sweeps
//! run thousands of simulated seconds.

use super::linkmodel::LinkModel;
use super::scenario::{FailoverEvent, LatencySummary, LinkReport, Scenario, SimReport};
use crate::core::receiver::{Receiver, ReceiverConfig};
use crate::core::sender::{LinkId, Sender, SenderConfig, SenderEvent};
use crate::core::ts::{Classifier, TestStream};
use crate::core::wire::{TS_PACKET, TS_PER_DATAGRAM};
use bytes::Bytes;
use std::time::{Duration, Instant};

/// QUIC short header (1 + 8-byte CID + 2-byte PN) + AEAD tag (16) + DATAGRAM frame
/// header (3), plus IPv4 (20) and UDP (8): what each datagram costs on a link.
pub const PER_DATAGRAM_OVERHEAD: usize = 30 + 28;

/// Run a scenario in virtual time. `epoch` is only a base for `Instant` arithmetic.
pub fn run(sc: &Scenario, epoch: Instant) -> SimReport {
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
    let mut ups: Vec<LinkModel<Bytes>> = Vec::new();
    let mut downs: Vec<LinkModel<Bytes>> = Vec::new();
    for (i, l) in sc.links.iter().enumerate() {
        ups.push(LinkModel::new(l.up.clone(), epoch));
        downs.push(LinkModel::new(l.down.clone(), epoch));
        tx.add_link(epoch, i as LinkId);
        rx.handle_rtt(epoch, i as LinkId, l.up.delay + l.down.delay);
    }
    let payload_bytes = TS_PACKET * TS_PER_DATAGRAM;
    let interval = Duration::from_secs_f64(payload_bytes as f64 * 8.0 / sc.input_bps);
    let end = epoch + sc.duration;
    let drain_end = end + sc.latency + Duration::from_secs(1);
    let mut stream = TestStream::new();
    let mut classify = Classifier::new();
    let pps = (sc.input_bps / 8.0 / TS_PACKET as f64) as u64;
    let mut next_media = epoch;
    let mut now = epoch;
    let mut offered = 0u64;
    let mut on_time = 0u64;
    let mut latencies = Vec::new();
    let mut last_out: Option<Instant> = None;
    let mut max_gap = Duration::ZERO;
    let mut wire_bytes = 0u64;
    let mut first_share = vec![0u64; sc.links.len()];
    let mut events = Vec::new();
    let budget = sc.latency + Duration::from_millis(1);

    loop {
        // Next event time.
        let mut next = drain_end;
        if next_media < end {
            next = next.min(next_media);
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

        if std::env::var("BRAID_DEBUG_AT")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|t| {
                let e = now.duration_since(epoch).as_secs_f64();
                e >= t && e < t + 0.002
            })
        {
            eprintln!("t={:?}\n{}", now.duration_since(epoch), tx.debug_state(now));
        }
        while next_media <= now && next_media < end {
            let mut buf = Vec::with_capacity(payload_bytes);
            for _ in 0..TS_PER_DATAGRAM {
                buf.extend_from_slice(&stream.next_packet(pps));
            }
            let flags = classify.classify(&buf);
            tx.push_media(now, &buf, flags);
            offered += 1;
            next_media += interval;
        }
        tx.handle_timeout(now);
        for (i, m) in ups.iter_mut().enumerate() {
            while let Some(d) = m.poll_deliver(now) {
                let _ = rx.handle_datagram(now, i as LinkId, &d);
            }
        }
        rx.handle_timeout(now);
        while let Some(r) = rx.poll_output() {
            let lat = now.duration_since(epoch + Duration::from_micros(r.send_time_us));
            if lat <= budget {
                on_time += 1;
            }
            latencies.push(lat.as_secs_f64() * 1e3);
            if let Some(l) = last_out {
                max_gap = max_gap.max(now.duration_since(l));
            }
            last_out = Some(now);
        }
        while let Some((link, d)) = rx.poll_feedback() {
            wire_bytes += d.len() as u64;
            let len = d.len() + PER_DATAGRAM_OVERHEAD;
            downs[link as usize].enqueue(now, len, d);
        }
        for (i, m) in downs.iter_mut().enumerate() {
            while let Some(d) = m.poll_deliver(now) {
                tx.handle_datagram(now, i as LinkId, &d);
            }
        }
        while let Some(t) = tx.poll_transmit(now) {
            wire_bytes += t.data.len() as u64;
            let len = t.data.len() + PER_DATAGRAM_OVERHEAD;
            ups[t.link as usize].enqueue(now, len, t.data);
        }
        while let Some(e) = tx.poll_event() {
            events.push(match e {
                SenderEvent::LinkDown { link, at, reason } => FailoverEvent {
                    t_s: at.duration_since(epoch).as_secs_f64(),
                    link: sc.links[link as usize].name.clone(),
                    event: format!("down ({reason})"),
                },
                SenderEvent::LinkUp { link, at } => FailoverEvent {
                    t_s: at.duration_since(epoch).as_secs_f64(),
                    link: sc.links[link as usize].name.clone(),
                    event: "up".into(),
                },
            });
        }
    }

    let rs = rx.stats();
    for l in &rs.links {
        first_share[l.id as usize] = l.media_first;
    }
    let total_first: u64 = first_share.iter().sum::<u64>().max(1);
    let es = tx.stats();
    let media_ts_bytes = offered * payload_bytes as u64;
    let capacity = sc.capacity_bps();
    let bound = sc.bound_bps(sc.latency);
    SimReport {
        scenario: sc.name.clone(),
        mode: "virtual".into(),
        duration_s: sc.duration.as_secs_f64(),
        input_bps: sc.input_bps,
        budget_ms: sc.latency.as_secs_f64() * 1e3,
        offered,
        ts_packets_offered: offered * TS_PER_DATAGRAM as u64,
        delivered_on_time: on_time,
        delivered_late: rs.late + (rs.released - on_time),
        lost: offered.saturating_sub(rs.released),
        duplicated: rs.duplicates,
        on_time_fraction: on_time as f64 / offered.max(1) as f64,
        latency: LatencySummary::from_ms(latencies),
        goodput_bps: on_time as f64 * payload_bytes as f64 * 8.0 / sc.duration.as_secs_f64(),
        capacity_bps: capacity,
        bound_bps: bound,
        input_fraction_of_bound: bound.map(|b| sc.input_bps / b),
        wire_overhead: wire_bytes as f64 / media_ts_bytes.max(1) as f64,
        max_output_gap_ms: max_gap.as_secs_f64() * 1e3,
        links: es
            .links
            .iter()
            .map(|l| LinkReport {
                name: sc.links[l.id as usize].name.clone(),
                share: first_share[l.id as usize] as f64 / total_first as f64,
                datagrams_sent: l.datagrams_sent,
                bytes_sent: l.bytes_sent,
                retransmits_sent: l.retransmits_sent,
                duplicates_sent: l.duplicates_sent,
                probes_sent: l.probes_sent,
                downs: l.downs,
            })
            .collect(),
        failover_events: events,
        edge: serde_json::to_value(&es).unwrap_or_default(),
    }
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

#[cfg(test)]
mod sweep {
    use super::*;
    use crate::sim::trace::traces_dir;

    /// `BRAID_SWEEP=1 cargo test --release --lib sweep -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn sweep() {
        let f = |k: &str, d: f64| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(d)
        };
        for qs in [0.2, 0.35, 0.5] {
            for rw in [100u64, 200, 400] {
                for slack in [5u64, 15, 40] {
                    let mut sc = Scenario::dev(&traces_dir(), f("RATE", 5e6)).unwrap();
                    sc.sender.queue_share = qs;
                    sc.sender.rate_window = Duration::from_millis(rw);
                    sc.sender.nack_slack = Duration::from_millis(slack);
                    let r = run(&sc, Instant::now());
                    println!(
                        "qs={qs} rw={rw} slack={slack} on_time={:.5} late={} lost={} unrep={} retx={}",
                        r.on_time_fraction, r.delivered_late, r.lost,
                        r.edge["expired_unrepaired"], r.edge["retransmits"]
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod debug_case {
    use super::*;
    use crate::sim::trace::traces_dir;
    #[test]
    #[ignore]
    fn stall_case() {
        let mut sc = Scenario::dev(&traces_dir(), 5e6).unwrap();
        sc.sender.queue_share = 0.2;
        sc.sender.rate_window = Duration::from_millis(100);
        sc.sender.nack_slack = Duration::from_millis(15);
        let r = run(&sc, Instant::now());
        println!(
            "{}",
            serde_json::to_string_pretty(&r.failover_events).unwrap()
        );
        println!("{}", serde_json::to_string_pretty(&r.edge).unwrap());
    }
}
