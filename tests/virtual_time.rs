//! Virtual-time tests: the edge's sans-IO `Sender` and the relay's sans-IO `Receiver`
//! joined by trace-driven link models (`braid::sim::virt`), no sockets, no clock.
//! Every assertion is about virtual time; thousands of simulated seconds run in a few
//! seconds. Scenarios are named after what they model (see `braid::sim::scenario`).
//!
//! The mahimahi traces are read from `$BRAID_TRACES` (default `../shared/traces/mahimahi`).

use braid::core::sender::{SenderEvent, SenderStats};
use braid::sim::linkmodel::LinkParams;
use braid::sim::scenario::{LinkEventKind, Scenario, ScenarioLink, SimReport};
use braid::sim::trace::{traces_dir, Trace};
use braid::sim::virt::{self, VirtRun};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn run(sc: &Scenario) -> VirtRun {
    let wall = Instant::now();
    let r = virt::run_detailed(sc, Instant::now());
    summary(&r.report, &r.sender, wall.elapsed());
    r
}

/// One line per run, visible with `--nocapture`: the figures the assertions judge.
fn summary(r: &SimReport, s: &SenderStats, wall: Duration) {
    eprintln!(
        "[{}] {:.0} s at {:.2} Mbit/s: on time {:.5} ({} of {}), late {}, lost {}, \
         max gap {:.1} ms, out-of-order outputs {}, wire overhead {:.4}, bound {:?} Mbit/s, \
         retransmits {}, expired unrepaired {}, expired unsent {}, duplicates {} \
         (wall {:.2} s)",
        r.scenario,
        r.duration_s,
        r.input_bps / 1e6,
        r.on_time_fraction,
        r.delivered_on_time,
        r.offered,
        r.delivered_late,
        r.lost,
        r.max_output_gap_ms,
        r.out_of_order_outputs,
        r.wire_overhead,
        r.bound_bps.map(|b| (b / 1e4).round() / 100.0),
        s.retransmits,
        s.expired_unrepaired,
        s.expired_unsent,
        s.duplicates,
        wall.as_secs_f64(),
    );
}

/// Invariants every run must keep whatever the links do.
fn check_invariants(r: &VirtRun) {
    assert_eq!(
        r.report.out_of_order_outputs, 0,
        "relay output out of sequence"
    );
    assert_eq!(r.transmits_on_absent_link, 0, "sent on a removed link");
    assert_eq!(
        r.retransmits_past_deadline, 0,
        "retransmission sent after it could still make its deadline"
    );
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// "dev-long": three real LTE uplinks (Verizon, T-Mobile, AT&T drive) at 4 Mbit/s for
/// 1000 simulated seconds, traces looping from staggered offsets.
#[test]
fn dev_long_4mbps_1000s_meets_999_within_500ms() {
    let sc = Scenario::dev_long(&traces_dir(), 4e6, secs(1000)).expect("traces");
    let r = run(&sc);
    check_invariants(&r);
    let rep = &r.report;
    assert!(rep.offered > 370_000, "{}", rep.offered);
    assert!(
        rep.on_time_fraction >= 0.999,
        "on time {}",
        rep.on_time_fraction
    );
    // Staggering the traces must not hide a link: all three carry media.
    for l in &rep.links {
        assert!(l.share > 0.01, "{} share {}", l.name, l.share);
    }
}

/// "weak-4g": UMTS + AT&T LTE uplinks recorded while driving (about 1.8 Mbit/s mean
/// together, outages of seconds on both, long near-dead stretches), 300 s.
///
/// Their joint 99.9 % bound is only ~7 kbit/s: even a perfect merged pipe loses more
/// than 0.1 % of any video rate in the dead stretches. So the input is 300 kbit/s,
/// below the 99 % bound (~333 kbit/s), and Braid is judged against the perfect pipe
/// at the same rate.
#[test]
fn weak_4g_below_joint_bound_keeps_a_floor() {
    use braid::sim::bound::{merged_opportunities_ms, PerfectPipe, Semantics};
    let sc = Scenario::weak_4g(&traces_dir(), 300e3, secs(300)).expect("traces");
    let mut opps = Vec::new();
    for l in &sc.links {
        let t = l.up.trace.clone().expect("traced");
        opps.extend(merged_opportunities_ms(
            &[t],
            l.up.trace_offset,
            sc.duration,
        ));
    }
    opps.sort_unstable();
    let delay = sc.links.iter().map(|l| l.up.delay).min().expect("links");
    let pipe = PerfectPipe::new(opps, sc.duration, delay, 1316, Semantics::Bytes);
    let bound99 = pipe.bound_bps(sc.latency, 0.99);
    let perfect = pipe.on_time_fraction(sc.input_bps, sc.latency);
    assert!(sc.input_bps < bound99, "99 % bound {bound99}");
    let r = run(&sc);
    check_invariants(&r);
    let rep = &r.report;
    eprintln!(
        "weak-4g: 99 % bound {:.0} kbit/s, 99.9 % bound {:.0} kbit/s; at {:.0} kbit/s \
         perfect pipe {:.5}, braid {:.5}",
        bound99 / 1e3,
        rep.bound_bps.unwrap_or(0.0) / 1e3,
        sc.input_bps / 1e3,
        perfect,
        rep.on_time_fraction
    );
    assert!(rep.on_time_fraction >= 0.975, "{}", rep.on_time_fraction);
    assert!(
        rep.on_time_fraction >= perfect - 0.015,
        "{} vs perfect {perfect}",
        rep.on_time_fraction
    );
}

/// The modem-unplugged scenario with the link the scheduler loads most in 0-30 s
/// (found by a run without events; runs are deterministic) as the one pulled.
fn modem_unplugged_busiest() -> (Scenario, usize) {
    let mut sc = Scenario::modem_unplugged();
    let mut probe = sc.clone();
    probe.link_events.clear();
    probe.duration = secs(30);
    let r = virt::run_detailed(&probe, Instant::now());
    let busiest = (0..sc.links.len())
        .max_by_key(|&l| r.media_sent_per_s[l][..30].iter().sum::<u64>())
        .expect("links");
    for e in &mut sc.link_events {
        e.link = busiest;
    }
    (sc, busiest)
}

fn sent(r: &VirtRun, link: usize, from_s: usize, to_s: usize) -> u64 {
    r.media_sent_per_s[link][from_s..to_s].iter().sum()
}

/// "modem-unplugged": the busiest of three 4 Mbit/s modems is pulled at 30 s and
/// plugged back at 60 s; the edge is told (remove_link/add_link).
#[test]
fn modem_unplugged_loses_nothing_and_link_returns() {
    let (sc, cut) = modem_unplugged_busiest();
    let ev = &sc.link_events;
    assert_eq!((ev[0].kind, ev[0].at), (LinkEventKind::Remove, secs(30)));
    assert_eq!((ev[1].kind, ev[1].at), (LinkEventKind::Add, secs(60)));
    let r = run(&sc);
    check_invariants(&r);
    let rep = &r.report;
    eprintln!(
        "modem-unplugged: link {cut} pulled; media copies per link 0-30 s {:?}, \
         30-60 s {:?}, 60-90 s {:?}",
        (0..3).map(|l| sent(&r, l, 0, 30)).collect::<Vec<_>>(),
        (0..3).map(|l| sent(&r, l, 30, 60)).collect::<Vec<_>>(),
        (0..3).map(|l| sent(&r, l, 60, 90)).collect::<Vec<_>>(),
    );
    for l in 0..3 {
        assert!(
            sent(&r, cut, 0, 30) >= sent(&r, l, 0, 30),
            "link {l} busier"
        );
    }
    assert_eq!(rep.lost, 0);
    assert_eq!(rep.delivered_late, 0);
    assert!(rep.max_output_gap_ms <= 100.0, "{}", rep.max_output_gap_ms);
    assert_eq!(sent(&r, cut, 30, 60), 0, "media on the removed link");
    // Back in service: it carries media in every second of 61-90 s.
    for t in 61..90 {
        assert!(
            r.media_sent_per_s[cut][t] > 0,
            "no media on link {cut} in second {t}"
        );
    }
    assert!(r.events.iter().any(|(t, e)| *t == secs(30)
        && matches!(e, SenderEvent::LinkDown { link, reason: "removed", .. } if *link as usize == cut)));
}

/// Regression (fixed: near-ties go to the least-used link, `pick_link`): a link added
/// back while the others have spare capacity was never given a real share again. `add_link`
/// starts it at INITIAL_RATE (1 Mbit/s), so its expected delay (40 ms + 10.7 ms per
/// datagram) always loses to the unqueued 4 Mbit/s links (40 + 2.7 ms); it only gets
/// the one packet per RTT an idle link is granted, whose rate samples are
/// app-limited and below the estimate, so ignored: the estimate never grows.
/// Measured: ~12 media copies/s in 60-90 s against ~195/s before the cut (the same
/// happens after LinkUp in failover-clean). Delivery is fine (two links suffice), but
/// the edge runs with no headroom knowledge on a third of its capacity.
#[test]
fn modem_unplugged_link_gets_its_share_back() {
    let (sc, cut) = modem_unplugged_busiest();
    let r = run(&sc);
    let per_s = sent(&r, cut, 70, 90) / 20;
    assert!(
        per_s >= 60,
        "link {cut} carries {per_s} media copies/s after re-add"
    );
}

/// "failover-clean": link 0 of three 4 Mbit/s links goes silent both ways 30-60 s and
/// the edge has to notice from missing acknowledgements.
#[test]
fn failover_clean_detects_cut_and_loses_nothing() {
    let sc = Scenario::failover_clean();
    let r = run(&sc);
    check_invariants(&r);
    let rep = &r.report;
    assert_eq!(rep.lost, 0);
    assert_eq!(rep.delivered_late, 0);
    assert!(rep.max_output_gap_ms <= 100.0, "{}", rep.max_output_gap_ms);
    let down = r
        .events
        .iter()
        .find_map(|(t, e)| match e {
            SenderEvent::LinkDown { link: 0, .. } if *t >= secs(30) => Some(*t),
            _ => None,
        })
        .expect("LinkDown after the cut");
    // max(3 x RTT, 250 ms) + a report interval, with RTT 80 ms: < 400 ms.
    let detect = down - secs(30);
    eprintln!("failover-clean: LinkDown {detect:?} after the cut");
    assert!(detect < Duration::from_millis(400), "{detect:?}");
    let up = r.events.iter().find_map(|(t, e)| match e {
        SenderEvent::LinkUp { link: 0, .. } if *t >= down => Some(*t),
        _ => None,
    });
    assert!(up.is_some_and(|t| t >= secs(60)), "LinkUp {up:?}");
    assert!(r.media_sent_per_s[0][70..90].iter().sum::<u64>() > 0);
}

/// "failover-real": the dev scenario at 5 Mbit/s with Verizon cut both ways 40-70 s.
#[test]
fn failover_real_meets_999() {
    let sc = Scenario::failover_real(&traces_dir()).expect("traces");
    let r = run(&sc);
    check_invariants(&r);
    assert!(
        r.report.on_time_fraction >= 0.999,
        "{}",
        r.report.on_time_fraction
    );
    // Detection is max(3 x srtt, 250 ms) after the last ack; Verizon's srtt includes
    // its own queueing (~330 ms at 40 s), so about 1 s.
    let down = r.events.iter().find_map(|(t, e)| match e {
        SenderEvent::LinkDown { link: 0, .. } if *t >= secs(40) => Some(*t),
        _ => None,
    });
    eprintln!("failover-real: LinkDown at {down:?}");
    assert!(
        down.is_some_and(|t| t < Duration::from_millis(41_500)),
        "{down:?}"
    );
}

/// "ideal-links": lossless unlimited links, 40 ms, 5 Mbit/s: what the protocol costs.
/// Wire bytes are IP packets both ways (see `SimReport::wire_overhead`): 1342-byte
/// media datagrams + 58 bytes QUIC/UDP/IP = 1400 per 1316 TS bytes (6.4 %), reports
/// and probes, and proactive duplicates of keyframe/PSI/audio packets up to
/// `duplicate_budget` (3 % by default).
#[test]
fn ideal_links_wire_overhead() {
    let mut sc = Scenario::ideal_links();
    let with_dups = run(&sc);
    check_invariants(&with_dups);
    assert_eq!(with_dups.report.delivered_on_time, with_dups.report.offered);
    sc.sender.duplicate_budget = 0.0;
    let without = run(&sc);
    check_invariants(&without);
    assert_eq!(without.report.delivered_on_time, without.report.offered);
    let (a, b) = (with_dups.report.wire_overhead, without.report.wire_overhead);
    eprintln!("ideal-links: wire overhead {a:.4} (default), {b:.4} (no duplicates)");
    assert!(b <= 1.10, "protocol overhead {b}");
    assert!(a <= 1.10 + sc_dup_budget(), "overhead with duplicates {a}");
    assert!(b > 1400.0 / 1316.0, "{b}: cannot be below the framing");
}

fn sc_dup_budget() -> f64 {
    braid::core::sender::SenderConfig::default().duplicate_budget
}

/// "lossy-links": 2 % random loss on every uplink, plenty of capacity: ARQ repairs
/// every loss in time and never sends a repair that cannot arrive in time.
#[test]
fn lossy_links_arq_repairs_every_loss() {
    let sc = Scenario::lossy_links(0.02);
    let r = run(&sc);
    check_invariants(&r);
    let rep = &r.report;
    let dropped: u64 = r.uplinks.iter().map(|u| u.dropped_loss_packets).sum();
    eprintln!(
        "lossy-links: {} media copies dropped, {} retransmits",
        r.media_dropped_on_entry, r.sender.retransmits
    );
    assert!(
        r.media_dropped_on_entry > 300,
        "{}",
        r.media_dropped_on_entry
    );
    assert!(dropped >= r.media_dropped_on_entry);
    assert_eq!(rep.lost, 0);
    assert_eq!(rep.delivered_late, 0);
    assert!(rep.on_time_fraction >= 0.9999, "{}", rep.on_time_fraction);
    // A lost copy is repaired by a retransmission unless a duplicate already made it.
    assert!(
        r.sender.retransmits + r.sender.duplicates >= r.media_dropped_on_entry,
        "{} retransmits for {} losses",
        r.sender.retransmits,
        r.media_dropped_on_entry
    );
}

/// The same with 15 % loss and a 250 ms budget on 50 ms links: some losses can no
/// longer be repaired in time. Those must be counted as `expired_unrepaired`, not
/// retransmitted late, and account for every packet that did not make it.
#[test]
fn arq_gives_up_at_the_deadline() {
    let mut sc = Scenario::lossy_links(0.15);
    sc.name = "lossy-links-tight".into();
    sc.latency = Duration::from_millis(250);
    for l in &mut sc.links {
        l.up.delay = Duration::from_millis(50);
        l.down.delay = Duration::from_millis(50);
    }
    sc.duration = secs(30);
    let r = run(&sc);
    check_invariants(&r);
    let s = &r.sender;
    assert!(s.retransmits > 1000, "{} retransmits", s.retransmits);
    assert!(s.expired_unrepaired > 0, "no repair ever came too late?");
    assert!(
        r.report.lost <= s.expired_unrepaired + s.expired_unsent,
        "{} lost but only {} + {} given up",
        r.report.lost,
        s.expired_unrepaired,
        s.expired_unsent
    );
}

/// "mixed-delay": a 20 ms LTE cell next to a 200 ms link; the relay must undo the
/// reordering and release strictly in sequence.
#[test]
fn mixed_delay_reorder_buffer_releases_in_order() {
    let sc = Scenario::mixed_delay();
    let r = run(&sc);
    check_invariants(&r);
    let rep = &r.report;
    eprintln!(
        "mixed-delay: {} arrivals out of order, shares {:?}",
        r.arrivals_out_of_order,
        rep.links.iter().map(|l| l.share).collect::<Vec<_>>()
    );
    // The scenario really reorders, and both links carry media.
    assert!(
        r.arrivals_out_of_order > 1000,
        "{}",
        r.arrivals_out_of_order
    );
    assert!(rep.links.iter().all(|l| l.share > 0.2));
    assert_eq!(rep.out_of_order_outputs, 0);
    assert!(rep.on_time_fraction >= 0.99, "{}", rep.on_time_fraction);
}

/// CORE ISSUE (ignored until fixed in src/core/sender.rs): on the lossless
/// mixed-delay scenario the sender retransmits ~38 % of the media (10,961
/// retransmits for 28,496 packets, 11,816 duplicates at the relay, wire overhead
/// 1.55), although nothing is lost on any link. Almost none happen before t = 10 s
/// (24 in the first 10 s, 4,246 by 30 s), then they grow steadily on the 200 ms link;
/// 10 s is MIN_RTT_WINDOW, so the min-RTT filter restarting from one (queue-inflated)
/// sample is the likely trigger, making `expected` arrivals too early so relay NACKs
/// for copies still on their way are honoured after `nack_slack`.
#[test]
#[ignore = "core issue: spurious retransmissions on lossless links (see doc comment)"]
fn mixed_delay_no_spurious_retransmissions() {
    let r = run(&Scenario::mixed_delay());
    let lost_on_links: u64 = r
        .uplinks
        .iter()
        .map(|u| u.packets_in - u.packets_delivered)
        .sum();
    assert!(lost_on_links <= 5, "{lost_on_links}");
    assert!(
        r.sender.retransmits * 100 <= r.report.offered,
        "{} retransmits of {} packets",
        r.sender.retransmits,
        r.report.offered
    );
}

/// Regression (fixed: no-sample failover timeout is 1 s): a link whose RTT exceeds
/// 3 x INITIAL_RTT (300 ms) is declared down before its first report can arrive:
/// `failover_timeout` uses `srtt()` = INITIAL_RTT (100 ms) until the first sample.
/// In mixed-delay the 400 ms-RTT link goes down at 0.300 s, its copies are counted
/// lost, and it needs three acked probes to come back (0.98 s); 82 packets expire
/// unsent at the edge meanwhile (the only losses of the run).
#[test]
fn mixed_delay_no_false_failover_at_start() {
    let r = run(&Scenario::mixed_delay());
    let downs: Vec<_> = r
        .events
        .iter()
        .filter(|(_, e)| matches!(e, SenderEvent::LinkDown { .. }))
        .collect();
    assert!(downs.is_empty(), "{downs:?}");
    assert_eq!(r.report.lost, 0);
}

fn const_link(i: usize, mbps: f64, delay_ms: u64, loss: f64) -> ScenarioLink {
    let delay = Duration::from_millis(delay_ms);
    ScenarioLink {
        name: format!("l{i}-{mbps:.1}m-{delay_ms}ms-{:.1}%", loss * 100.0),
        up: LinkParams {
            trace: Some(Arc::new(Trace::constant(mbps * 1e6))),
            delay,
            loss,
            seed: i as u64 + 1,
            ..Default::default()
        },
        down: LinkParams {
            delay,
            seed: i as u64 + 1001,
            ..Default::default()
        },
    }
}

proptest! {
    // A fixed seed: CI must not go red on a case no commit introduced (it did, once:
    // see `lossy_long_link_beside_a_slow_short_one`). `sweep_random_link_sets` explores
    // 300 cases; `PROPTEST_RNG_SEED` does not override a seed set here, change it to explore.
    #![proptest_config(ProptestConfig {
        cases: 6,
        rng_seed: RngSeed::Fixed(0x0062_7261_6964),
        ..ProptestConfig::default()
    })]

    /// Random sets of 2-4 constant links (1-10 Mbit/s, 10-150 ms, 0-3 % loss), input
    /// at most half the total capacity: >= 99.5 % on time, output in order, no late
    /// retransmission.
    #[test]
    fn random_link_sets(
        links in prop::collection::vec((1.0f64..10.0, 10u64..150, 0.0f64..0.03), 2..=4),
        load in 0.2f64..0.5,
    ) {
        let r = run(&random_scenario(&links, load));
        check_invariants(&r);
        prop_assert!(
            r.report.on_time_fraction >= 0.995,
            "{:?}: on time {}",
            links,
            r.report.on_time_fraction
        );
    }
}

fn random_scenario(links: &[(f64, u64, f64)], load: f64) -> Scenario {
    let total: f64 = links.iter().map(|l| l.0 * 1e6).sum();
    Scenario {
        name: "random-links".into(),
        links: links
            .iter()
            .enumerate()
            .map(|(i, &(m, d, p))| const_link(i, m, d, p))
            .collect(),
        input_bps: load * total,
        duration: secs(20),
        latency: Duration::from_millis(500),
        sender: Default::default(),
        link_events: Vec::new(),
    }
}

/// Regression (fixed in src/core/receiver.rs: per-link clock estimates): the relay placed the
/// edge's clock at `min(arrival - send_time) - min_rtt/2`. The minimum arrival delay
/// includes the serialization (and any standing queue) of a 1342-byte datagram, the
/// RTT the driver reports (quinn's, on small packets) does not; when the lowest-RTT
/// link is also slow, every packet is released that much late. Here a 1 Mbit/s,
/// 10 ms link beside a 10 Mbit/s, 30 ms one (a 1342-byte datagram takes 10.7 ms to
/// serialize at 1 Mbit/s): releases come at p50 504.6 ms against the 500 ms budget,
/// and nearly nothing is on time. Found by `random_link_sets` (shrunk case in virtual_time.proptest-regressions:
/// 9.7 Mbit/s/27 ms, 1 Mbit/s/10 ms, 7.8 Mbit/s/98 ms, 4.7 Mbit/s/63 ms -> 0 of 23,160
/// on time, all released).
#[test]
fn release_is_late_when_the_lowest_rtt_link_is_slow() {
    let r = run(&random_scenario(&[(10.0, 30, 0.0), (1.0, 10, 0.0)], 0.35));
    let lat = r.report.latency.clone().expect("released");
    eprintln!("release latency p50 {} ms, budget 500 ms", lat.p50_ms);
    assert!(
        r.report.on_time_fraction >= 0.995,
        "{}",
        r.report.on_time_fraction
    );
}

/// Regression found by `random_link_sets` in CI: a fast, lossy, long link (8.5 Mbit/s,
/// 133 ms, 2.9 % loss) beside a slow short one (1 Mbit/s, 10 ms) at 4.5 Mbit/s.
#[test]
fn lossy_long_link_beside_a_slow_short_one() {
    let r = run(&random_scenario(
        &[
            (1.0, 10, 0.0),
            (8.547922882117843, 133, 0.02890907981286529),
        ],
        0.47065901643022007,
    ));
    check_invariants(&r);
    eprintln!("{:?}", r.sender);
    assert!(
        r.report.on_time_fraction >= 0.995,
        "{}",
        r.report.on_time_fraction
    );
}

/// Sweep of `random_link_sets`' space with a fixed seed: how many of 300 cases miss
/// 99.5 % on time, and why (edge expiries at startup vs losses after it). Run with
/// `cargo test --release --test virtual_time sweep_random_link_sets -- --ignored --nocapture`.
#[test]
#[ignore = "sweep for development (300 cases, ~40 s)"]
fn sweep_random_link_sets() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    let (mut below, mut worst) = (0, 1.0f64);
    for _ in 0..300 {
        let n = rng.gen_range(2..=4);
        let links: Vec<(f64, u64, f64)> = (0..n)
            .map(|_| {
                (
                    rng.gen_range(1.0..10.0),
                    rng.gen_range(10..150),
                    rng.gen_range(0.0..0.03),
                )
            })
            .collect();
        let load = rng.gen_range(0.2..0.5);
        let r = run(&random_scenario(&links, load));
        let f = r.report.on_time_fraction;
        worst = worst.min(f);
        if f < 0.995 {
            below += 1;
            eprintln!(
                "MISS {f:.5} unsent {} unrepaired {} lost {} late {} {links:?} load {load:.3}",
                r.sender.expired_unsent,
                r.sender.expired_unrepaired,
                r.report.lost,
                r.report.delivered_late
            );
        }
    }
    eprintln!("SWEEP below 99.5 %: {below} of 300, worst {worst:.5}");
}

/// Regression found by `random_link_sets` (seed sweep): two long lossless links
/// (3.2 Mbit/s / 146 ms, 9.3 Mbit/s / 136 ms) at 3.75 Mbit/s from the first
/// millisecond. Before links had a startup phase, their rate estimates fell below the
/// 1 Mbit/s initial guess during the first RTT and 41 packets expired at the edge.
#[test]
fn long_links_start_without_expiring_at_the_edge() {
    let r = run(&random_scenario(
        &[
            (3.2091072223196164, 146, 0.0),
            (9.315375179672957, 136, 0.0),
        ],
        0.29927782456253765,
    ));
    check_invariants(&r);
    assert_eq!(r.sender.expired_unsent, 0);
    assert!(
        r.report.on_time_fraction >= 0.999,
        "{}",
        r.report.on_time_fraction
    );
}

/// Issue 5: a link whose SINR collapses before its outage is given less traffic once
/// the link manager's hint arrives, before it starts losing packets. Same scenario
/// with and without the hint (`braid sim --scenario sinr-fade[-blind] --virtual`).
#[test]
fn sinr_hint_moves_traffic_off_a_fading_link_before_it_fails() {
    let hinted = Scenario::sinr_fade(&traces_dir(), true).expect("traces");
    let blind = Scenario::sinr_fade(&traces_dir(), false).expect("traces");
    let (h, b) = (run(&hinted), run(&blind));
    let share = |r: &VirtRun, s: usize| virt::share_per_second(r, 0)[s].unwrap_or(0.0);
    eprintln!(
        "link 0 share in seconds 37/38/39: hinted {:.3}/{:.3}/{:.3}, blind {:.3}/{:.3}/{:.3}; \
         copies lost to the fade: hinted {}, blind {}",
        share(&h, 37),
        share(&h, 38),
        share(&h, 39),
        share(&b, 37),
        share(&b, 38),
        share(&b, 39),
        h.uplinks[0].dropped_loss_packets,
        b.uplinks[0].dropped_loss_packets
    );
    check_invariants(&h);
    // Before the hint both runs are the same run.
    assert!((share(&h, 37) - share(&b, 37)).abs() < 0.01);
    assert!(
        share(&h, 37) > 0.3,
        "link 0 carried traffic before the fade"
    );
    // The second of the hint: most traffic already elsewhere, well before the loss.
    assert!(share(&h, 38) < 0.1, "{}", share(&h, 38));
    assert!(share(&h, 38) * 3.0 < share(&b, 38));
    assert!(h.uplinks[0].dropped_loss_packets * 3 < b.uplinks[0].dropped_loss_packets);
    assert!(h.report.on_time_fraction >= 0.999);
}
