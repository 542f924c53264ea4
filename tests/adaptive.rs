//! The bitrate controller with the real encoder in the loop: GStreamer test pattern
//! through x264enc -> edge (controller) -> userspace emulator -> relay, in real time.
//! The controller's logic is tested in virtual time (src/core/bitrate.rs,
//! src/sim/adaptive.rs); this checks the wiring: the target reaches the encoder, the
//! encoder's output follows the links, and the relay reports capture-to-output.

use braid::config::{AudioConfig, EncoderChoice, PictureSize, TestPattern, VideoConfig};
use braid::sim::real::{self, SimSource};
use braid::sim::scenario::Scenario;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoder_output_follows_the_links_and_relay_reports_glass_to_glass() {
    // Three constant 1.5 Mbit/s links: 4.5 Mbit/s in all, far under the 12 Mbit/s
    // ceiling, so only the links can hold the encoder back.
    // (input_bps is unused: the encoder sets the rate.)
    let mut sc = Scenario::constant_links("adaptive-wiring", 3, 1.5e6, 40, 1e6);
    sc.duration = Duration::from_secs(10);
    let size = PictureSize {
        width: 640,
        height: 360,
    };
    let video = VideoConfig {
        encoder: EncoderChoice::Named("x264enc".into()),
        size,
        ladder: vec![size],
        ..Default::default()
    };
    let audio = AudioConfig::default();
    let run = real::run_with(
        &sc,
        SimSource::Encoder {
            video,
            audio,
            pattern: TestPattern::Snow,
        },
    )
    .await
    .expect("run");
    let last = run.controller.last().expect("controller samples").1;
    eprintln!(
        "target {:.2} Mbit/s, cuts {}, on time {:.5}",
        last.target_bps as f64 / 1e6,
        last.cuts,
        run.report.on_time_fraction
    );
    // It climbed from its 2.3 Mbit/s start towards the links' 4.5 Mbit/s ...
    let t_end = run.produced.last().expect("produced").0;
    let tail: usize = run
        .produced
        .iter()
        .filter(|p| p.0 + Duration::from_secs(3) > t_end)
        .map(|p| p.1)
        .sum();
    let tail_bps = tail as f64 * 8.0 / 3.0;
    eprintln!(
        "encoder output over the last 3 s: {:.2} Mbit/s",
        tail_bps / 1e6
    );
    assert!(tail_bps > 2.7e6, "encoder did not climb: {tail_bps}");
    // ... and stays within what they carry (it probes up to 1.25x their rate, then
    // cuts when the queue stands).
    assert!(tail_bps < 5.6e6, "encoder ran past the links: {tail_bps}");
    assert!(last.cuts >= 1, "the controller never had to cut");
    assert!(
        run.report.on_time_fraction >= 0.99,
        "{}",
        run.report.on_time_fraction
    );
    // The relay saw the capture age: capture-to-output is ingest-to-output plus the
    // encoder's and muxer's delay (tens of ms), never less.
    let rl = run.relay_session.expect("relay session");
    let glass = rl["capture_to_output_ms"]["p50"].as_f64().expect("p50");
    let transport = rl["ingest_to_output_ms"]["p50"].as_f64().expect("p50");
    eprintln!("relay p50: capture->output {glass:.1} ms, ingest->output {transport:.1} ms");
    assert!(transport > 400.0 && transport <= 501.0, "{transport}");
    assert!(
        glass > transport + 5.0 && glass < transport + 300.0,
        "{glass}"
    );
}
