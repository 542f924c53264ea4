//! Adaptive source for virtual time: an encoder model under the bitrate controller.
//!
//! The model stands in for x264enc at a fixed frame rate with a keyframe every
//! `gop` frames: a new target takes effect from the next frame (x264 reconfigures
//! between frames), a keyframe costs `keyframe_ratio` P-frames, and each frame's size
//! varies by ±`jitter` around its share (seeded RNG, so runs repeat). Each frame is
//! cut into groups of at most 7 TS packets, all pushed at the frame's capture time.
//! What the controller sees comes only from [`Sender::observe`], as in the edge.

use super::scenario::Scenario;
use super::virt::{run_with_source, VirtRun, VirtSource};
use crate::core::bitrate::{Controller, ControllerConfig};
use crate::core::sender::Sender;
use crate::core::ts::{Classifier, TestStream};
use crate::core::wire::{TS_PACKET, TS_PER_DATAGRAM};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct EncoderModel {
    pub fps: u32,
    /// Frames per keyframe interval.
    pub gop: u32,
    /// Keyframe size in P-frames.
    pub keyframe_ratio: f64,
    /// Frame size varies uniformly by ± this share.
    pub jitter: f64,
    pub seed: u64,
}

impl Default for EncoderModel {
    fn default() -> Self {
        // x264enc tune=zerolatency with a ~1-frame VBV keeps keyframes near 3 P-frames.
        EncoderModel {
            fps: 30,
            gop: 30,
            keyframe_ratio: 3.0,
            jitter: 0.25,
            seed: 7,
        }
    }
}

/// One second of an adaptive run.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct SecondSample {
    pub t_s: u32,
    /// Summed trace capacity of the up links in this second.
    pub capacity_bps: f64,
    /// Controller target at the end of the second.
    pub target_bps: u64,
    /// What the encoder model produced in this second.
    pub encoded_bps: f64,
    pub rung: usize,
    /// Media datagrams lost or late (real runs; 0 in virtual runs).
    pub missed: u32,
}

/// The source: encoder model + controller.
pub struct AdaptiveSource {
    ctl: Controller,
    enc: EncoderModel,
    rng: StdRng,
    stream: TestStream,
    classify: Classifier,
    next_frame: Instant,
    frame: u64,
    /// Target applied to the frame being encoded (the previous frame's target).
    applied_bps: u64,
    end: Instant,
    epoch: Instant,
    /// (time since start, TS bytes) of every encoded frame.
    pub frames: Vec<(Duration, usize)>,
    /// The controller's state after every tick.
    pub ticks: Vec<(Duration, crate::core::bitrate::ControllerStats)>,
}

impl AdaptiveSource {
    pub fn new(sc: &Scenario, cfg: ControllerConfig, enc: EncoderModel, epoch: Instant) -> Self {
        let ctl = Controller::new(cfg, epoch);
        AdaptiveSource {
            applied_bps: ctl.target().bps,
            ctl,
            rng: StdRng::seed_from_u64(enc.seed),
            enc,
            stream: TestStream::new(),
            classify: Classifier::new(),
            next_frame: epoch,
            frame: 0,
            end: epoch + sc.duration,
            epoch,
            frames: Vec::new(),
            ticks: Vec::new(),
        }
    }

    pub fn controller(&self) -> &Controller {
        &self.ctl
    }

    fn frame_interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / f64::from(self.enc.fps))
    }

    fn frame_bytes(&mut self) -> usize {
        let per_frame = self.applied_bps as f64 / 8.0 / f64::from(self.enc.fps);
        let gop = f64::from(self.enc.gop);
        let p = per_frame * gop / (gop - 1.0 + self.enc.keyframe_ratio);
        let key = self.frame % u64::from(self.enc.gop) == 0;
        let base = if key { p * self.enc.keyframe_ratio } else { p };
        let j = self.rng.gen_range(-self.enc.jitter..=self.enc.jitter);
        (base * (1.0 + j)).max(TS_PACKET as f64) as usize
    }
}

impl VirtSource for AdaptiveSource {
    fn poll_timeout(&self) -> Option<Instant> {
        if self.next_frame >= self.end {
            return None;
        }
        Some(self.next_frame.min(self.ctl.poll_timeout()))
    }

    fn handle_timeout(&mut self, now: Instant, tx: &mut Sender) -> u64 {
        if now >= self.ctl.poll_timeout() {
            self.ctl.handle_observation(now, &tx.observe());
            while self.ctl.poll_event().is_some() {}
            self.ticks
                .push((now.duration_since(self.epoch), self.ctl.stats()));
        }
        let mut pushed = 0;
        while self.next_frame <= now && self.next_frame < self.end {
            let bytes = self.frame_bytes();
            let packets = bytes.div_ceil(TS_PACKET);
            // Rough PPS for the test stream's PCR/PSI cadence; only the packet count matters.
            let pps = u64::from(self.enc.fps) * packets as u64;
            let mut left = packets;
            while left > 0 {
                let n = left.min(TS_PER_DATAGRAM);
                let buf = self.stream.next_group(n, pps);
                let flags = self.classify.classify(&buf);
                tx.push_media(now, &buf, flags);
                pushed += 1;
                left -= n;
            }
            self.frames
                .push((now.duration_since(self.epoch), packets * TS_PACKET));
            self.frame += 1;
            self.next_frame += self.frame_interval();
            // The encoder picks up the current target for its next frame.
            self.applied_bps = self.ctl.target().bps;
        }
        pushed
    }
}

/// Window over which the encoder's output rate is judged in [`follow_time`].
/// 200 ms: the encoder's TS leaves the muxer in bursts (50 ms bins of a steady 9
/// Mbit/s stream range from 0.4 to 18 Mbit/s as audio and video interleave), so a
/// shorter wall-clock window crosses any threshold by chance, before or without a cut.
/// Being a trailing window it also lags the output by up to its length: an encoder
/// that halves at once is seen under a new capacity 1.6x below the old rate only
/// ~150 ms later. [`follow_time_frames`] avoids both.
pub const FOLLOW_WINDOW: Duration = Duration::from_millis(200);

/// Frames over which [`follow_time_frames`] judges the output rate (100 ms at 30 fps).
pub const FOLLOW_FRAMES: usize = 3;

/// How long after `step` the encoder's output first runs at or below `capacity_bps`,
/// judged per video frame: `frames` are (when the frame's last TS packet left the
/// muxer, TS bytes from its video PES start to the next one, audio and PSI
/// included — see [`crate::core::ts::FrameSlicer`]), and the rate of the last
/// [`FOLLOW_FRAMES`] frames is their bytes at `fps`. The acceptance figure.
pub fn follow_time_frames(
    frames: &[(Duration, usize)],
    fps: f64,
    step: Duration,
    capacity_bps: f64,
) -> Option<Duration> {
    frames
        .windows(FOLLOW_FRAMES)
        .find(|w| {
            let last = w[FOLLOW_FRAMES - 1].0;
            let bytes: usize = w.iter().map(|f| f.1).sum();
            last >= step && bytes as f64 * 8.0 * fps / FOLLOW_FRAMES as f64 <= capacity_bps
        })
        .map(|w| w[FOLLOW_FRAMES - 1].0 - step)
}

/// How long after `step` the encoder's *output* (not its setting) first runs at or
/// below `capacity_bps`, judged over the trailing [`FOLLOW_WINDOW`]: the acceptance
/// figure for a capacity step. `samples` are (time, bytes) of what the encoder
/// produced, in time order.
pub fn follow_time(
    samples: &[(Duration, usize)],
    step: Duration,
    capacity_bps: f64,
) -> Option<Duration> {
    let mut t = step;
    let end = samples.last()?.0;
    while t <= end {
        let bytes: usize = samples
            .iter()
            .filter(|s| s.0 > t.saturating_sub(FOLLOW_WINDOW) && s.0 <= t)
            .map(|s| s.1)
            .sum();
        if bytes as f64 * 8.0 / FOLLOW_WINDOW.as_secs_f64() <= capacity_bps {
            return Some(t - step);
        }
        t += Duration::from_millis(10);
    }
    None
}

/// An adaptive run: the transport report plus the bitrate trace.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AdaptiveReport {
    pub scenario: String,
    pub ceiling_bps: u64,
    pub floor_bps: u64,
    /// Mean over seconds of min(summed trace capacity, ceiling).
    pub counted_capacity_bps: f64,
    pub goodput_bps: f64,
    /// goodput / counted capacity: the issue asks for >= 0.75.
    pub goodput_fraction: f64,
    pub on_time_fraction: f64,
    pub cuts: u64,
    /// Capacity-step scenario only.
    #[serde(flatten)]
    pub step: StepFigures,
    /// Relay's capture-to-output / ingest-to-output percentiles (real runs).
    pub relay_latency: Option<serde_json::Value>,
    /// (time s, TS bytes) of every encoded frame.
    #[serde(skip)]
    pub frames: Vec<(Duration, usize)>,
    #[serde(skip)]
    pub ticks: Vec<(Duration, crate::core::bitrate::ControllerStats)>,
    pub seconds: Vec<SecondSample>,
    pub transport: super::scenario::SimReport,
}

/// Per-second summed capacity of the scenario's up traces (outages not subtracted).
pub fn capacity_per_second(sc: &Scenario) -> Vec<f64> {
    (0..sc.duration.as_secs())
        .map(|s| {
            sc.links
                .iter()
                .filter_map(|l| l.up.trace.as_ref())
                .map(|t| t.capacity_bps(s * 1000, 1000))
                .sum()
        })
        .collect()
}

/// How the encoder followed the capacity step (all empty for other scenarios).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StepFigures {
    /// ms from the step until the video encoder's own output, over its last
    /// [`FOLLOW_FRAMES`] frames, is at or under its share of the new capacity (the
    /// rest being audio and mux overhead; [`follow_time_frames`]): the acceptance
    /// figure, measured at the encoder's source pad in real runs.
    pub follow_ms: Option<f64>,
    /// The same at the muxer's output (per video frame of the transport stream,
    /// audio and PSI included): what the sender gets, later than `follow_ms` by
    /// the mux's wait for audio to interleave.
    pub follow_ms_mux: Option<f64>,
    /// The same over a trailing [`FOLLOW_WINDOW`] of muxer output (the figure
    /// reported before per-frame slicing; lags by up to the window).
    pub follow_ms_200: Option<f64>,
    /// ms from the step until the controller's target is at or under the new capacity
    /// (to the 50 ms tick in virtual runs; real runs record each target change).
    pub cut_ms: Option<f64>,
    /// 50 ms bins from 200 ms before to 800 ms after the step: (ms from the step,
    /// controller target bit/s at the bin's end if sampled, encoder output bit/s in
    /// the bin).
    pub step_trace: Vec<(i64, Option<u64>, f64)>,
}

impl StepFigures {
    /// From what the encoder produced and the controller's targets over the run.
    pub fn of(sc: &Scenario, o: &Observed<'_>) -> StepFigures {
        let targets: Vec<(Duration, u64)> = if o.targets.is_empty() {
            o.ticks.iter().map(|t| (t.0, t.1.target_bps)).collect()
        } else {
            o.targets.to_vec()
        };
        if sc.name != "capacity-step" {
            return StepFigures::default();
        }
        let at = super::scenario::CAPACITY_STEP_AT;
        let after = capacity_per_second(sc)
            .get(at.as_secs() as usize + 1)
            .copied();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        StepFigures {
            follow_ms: after
                .and_then(|c| follow_time_frames(o.encoder_frames, o.fps, at, c * o.encoder_share))
                .map(ms),
            follow_ms_mux: after
                .and_then(|c| follow_time_frames(o.video_frames, o.fps, at, c))
                .map(ms),
            follow_ms_200: after.and_then(|c| follow_time(o.produced, at, c)).map(ms),
            cut_ms: step_cut_ms(sc, &targets),
            step_trace: step_trace(sc, o.produced, &targets),
        }
    }
}

fn step_cut_ms(sc: &Scenario, targets: &[(Duration, u64)]) -> Option<f64> {
    if sc.name != "capacity-step" {
        return None;
    }
    let at = super::scenario::CAPACITY_STEP_AT;
    let after = *capacity_per_second(sc).get(at.as_secs() as usize + 1)?;
    targets
        .iter()
        .find(|t| t.0 >= at && t.1 as f64 <= after)
        .map(|t| (t.0 - at).as_secs_f64() * 1e3)
}

fn step_trace(
    sc: &Scenario,
    frames: &[(Duration, usize)],
    targets: &[(Duration, u64)],
) -> Vec<(i64, Option<u64>, f64)> {
    if sc.name != "capacity-step" {
        return Vec::new();
    }
    let at = super::scenario::CAPACITY_STEP_AT;
    let bin = Duration::from_millis(50);
    (-4i64..16)
        .map(|k| {
            let start = if k < 0 {
                at - bin * (-k) as u32
            } else {
                at + bin * k as u32
            };
            let end = start + bin;
            let bytes: usize = frames
                .iter()
                .filter(|f| f.0 >= start && f.0 < end)
                .map(|f| f.1)
                .sum();
            let target = targets
                .iter()
                .rfind(|t| t.0 < end)
                .filter(|t| t.0 >= start.saturating_sub(Duration::from_millis(100)))
                .map(|t| t.1);
            (k * 50, target, bytes as f64 * 8.0 / bin.as_secs_f64())
        })
        .collect()
}

/// What one adaptive run observed, real or virtual, for [`AdaptiveReport::build`].
pub struct Observed<'a> {
    /// (time since start, TS bytes) of everything the encoder produced.
    pub produced: &'a [(Duration, usize)],
    /// The same cut per video frame (see [`follow_time_frames`]).
    pub video_frames: &'a [(Duration, usize)],
    /// (time since start, bytes) of each frame as the video encoder put it out,
    /// before the mux.
    pub encoder_frames: &'a [(Duration, usize)],
    /// The encoder's share of a stream at the capacity after the step: its output
    /// follows when it is at or under this share of the new capacity.
    pub encoder_share: f64,
    pub fps: f64,
    /// (time since start, target bit/s) at every change, when recorded (real runs);
    /// empty: taken from `ticks`.
    pub targets: &'a [(Duration, u64)],
    /// (time since start, controller state), in time order.
    pub ticks: &'a [(Duration, crate::core::bitrate::ControllerStats)],
    /// Media datagrams lost or late per second (empty: not counted).
    pub missed_per_s: &'a [u32],
    pub transport: &'a super::scenario::SimReport,
    pub relay_latency: Option<serde_json::Value>,
}

impl AdaptiveReport {
    /// Bins what a run observed into seconds and adds the goodput figures.
    pub fn build(
        sc: &Scenario,
        ceiling_bps: u64,
        floor_bps: u64,
        o: Observed<'_>,
    ) -> AdaptiveReport {
        let caps = capacity_per_second(sc);
        let counted: f64 =
            caps.iter().map(|c| c.min(ceiling_bps as f64)).sum::<f64>() / caps.len().max(1) as f64;
        let mut encoded = vec![0.0; caps.len()];
        for (t, b) in o.produced {
            if let Some(e) = encoded.get_mut(t.as_secs() as usize) {
                *e += *b as f64 * 8.0;
            }
        }
        // The target at the last look of each second.
        let mut targets = vec![(0u64, 0usize); caps.len()];
        for (t, st) in o.ticks {
            if let Some(x) = targets.get_mut(t.as_secs() as usize) {
                *x = (st.target_bps, st.rung);
            }
        }
        let seconds = caps
            .iter()
            .enumerate()
            .map(|(i, c)| SecondSample {
                t_s: i as u32,
                capacity_bps: *c,
                target_bps: targets[i].0,
                encoded_bps: encoded[i],
                rung: targets[i].1,
                missed: o.missed_per_s.get(i).copied().unwrap_or(0),
            })
            .collect();
        let goodput = o.transport.goodput_bps;
        AdaptiveReport {
            scenario: sc.name.clone(),
            ceiling_bps,
            floor_bps,
            counted_capacity_bps: counted,
            goodput_bps: goodput,
            goodput_fraction: goodput / counted.max(1.0),
            on_time_fraction: o.transport.on_time_fraction,
            cuts: o.ticks.last().map_or(0, |c| c.1.cuts),
            step: StepFigures::of(sc, &o),
            relay_latency: o.relay_latency,
            frames: o.produced.to_vec(),
            ticks: o.ticks.to_vec(),
            seconds,
            transport: o.transport.clone(),
        }
    }
}

/// The adaptive report of a real-time run with the encoder in the loop.
pub fn report_real(
    sc: &Scenario,
    run: &super::real::RealRun,
    ceiling_bps: u64,
    floor_bps: u64,
) -> AdaptiveReport {
    AdaptiveReport::build(
        sc,
        ceiling_bps,
        floor_bps,
        Observed {
            produced: &run.produced,
            video_frames: &run.video_frames,
            encoder_frames: &run.encoder_frames,
            encoder_share: run.encoder_share,
            fps: run.fps,
            targets: &run.targets,
            ticks: &run.controller,
            missed_per_s: &run.missed_per_s,
            transport: &run.report,
            relay_latency: run.relay_session.clone(),
        },
    )
}

/// `sc` with the sender tuned as the edge tunes it when the source adapts.
pub fn adaptive_scenario(sc: &Scenario) -> Scenario {
    let mut sc = sc.clone();
    sc.sender.queue_share = crate::core::bitrate::ADAPTIVE_QUEUE_SHARE;
    sc
}

/// Run `sc` with the encoder model under the controller, in virtual time (see
/// [`adaptive_scenario`] for the sender tuning the edge uses).
pub fn run(
    sc: &Scenario,
    cfg: ControllerConfig,
    enc: EncoderModel,
    epoch: Instant,
) -> (AdaptiveReport, VirtRun) {
    let mut cfg = cfg;
    cfg.latency = sc.latency;
    let (ceiling, floor) = (cfg.ceiling_bps, cfg.floor_bps);
    let mut src = AdaptiveSource::new(sc, cfg, enc, epoch);
    let run = run_with_source(sc, epoch, &mut src);
    let report = AdaptiveReport::build(
        sc,
        ceiling,
        floor,
        Observed {
            produced: &src.frames,
            // The model pushes each frame whole at its capture time.
            video_frames: &src.frames,
            // The model's frames are the whole stream, at the encoder.
            encoder_frames: &src.frames,
            encoder_share: 1.0,
            fps: f64::from(src.enc.fps),
            targets: &[],
            ticks: &src.ticks,
            missed_per_s: &[],
            transport: &run.report,
            relay_latency: None,
        },
    );
    (report, run)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::trace::traces_dir;

    /// Parameter sweep: `cargo test --release --lib sweep -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn sweep() {
        let base = Scenario::dev(&traces_dir(), 5e6).expect("traces");
        for (qh, climb) in [(0.2, 0.5), (0.15, 0.5), (0.2, 0.35), (0.15, 0.35)] {
            let sc = adaptive_scenario(&base);
            let mut worst: f64 = 1.0;
            let mut mean_g = 0.0;
            let mut n = 0.0;
            for seed in 1..=4u64 {
                for kf in [2.0, 3.0] {
                    let cfg = ControllerConfig {
                        queue_high: qh,
                        climb_per_s: climb,
                        ..Default::default()
                    };
                    let enc = EncoderModel {
                        seed,
                        keyframe_ratio: kf,
                        ..Default::default()
                    };
                    let (r, _) = run(&sc, cfg, enc, Instant::now());
                    worst = worst.min(r.on_time_fraction);
                    eprintln!(
                        "  seed {seed} kf {kf}: goodput {:.3} on_time {:.5} lost {} late {} expired_unsent {} unrepaired {}",
                        r.goodput_fraction,
                        r.on_time_fraction,
                        r.transport.lost,
                        r.transport.delivered_late,
                        r.transport.edge["expired_unsent"],
                        r.transport.edge["expired_unrepaired"]
                    );
                    mean_g += r.goodput_fraction;
                    n += 1.0;
                }
            }
            println!(
                "queue_high {qh} climb {climb}: mean goodput {:.3} worst on_time {:.5}",
                mean_g / n,
                worst
            );
        }
    }

    /// Provisional cuts on and off with the edge's controller config, over encoder
    /// seeds 1-7 and keyframe ratios 2 and 3; one JSON line per setting:
    /// `cargo test --release --lib provisional_cuts_sweep -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn provisional_cuts_sweep() {
        let audio = crate::config::AudioConfig::default();
        let mut video = crate::config::VideoConfig::default();
        while video.max_bps > video.min_bps
            && crate::media::stream_bps(video.max_bps, &audio) > 12_000_000
        {
            video.max_bps -= 10_000;
        }
        let edge = crate::media::controller_config(&video, &audio);
        let sc = adaptive_scenario(&Scenario::dev(&traces_dir(), 5e6).expect("traces"));
        for (window_ms, share) in [(0, 0.9), (1000, 0.9), (1000, 1.0)] {
            let (mut goodput, mut on_time) = (Vec::new(), Vec::new());
            for seed in 1..=7u64 {
                for kf in [2.0, 3.0] {
                    let cfg = ControllerConfig {
                        restore_window: Duration::from_millis(window_ms),
                        restore_share: share,
                        ..edge.clone()
                    };
                    let enc = EncoderModel {
                        seed,
                        keyframe_ratio: kf,
                        ..Default::default()
                    };
                    let (r, _) = run(&sc, cfg, enc, Instant::now());
                    goodput.push(r.goodput_fraction);
                    on_time.push(r.on_time_fraction);
                }
            }
            println!(
                "{}",
                serde_json::json!({
                    "restore_window_ms": window_ms,
                    "restore_share": share,
                    "runs": goodput.len(),
                    "mean_goodput_fraction": goodput.iter().sum::<f64>() / goodput.len() as f64,
                    "worst_on_time_fraction": on_time.iter().copied().fold(1.0, f64::min),
                })
            );
        }
    }

    #[test]
    /// The issue asks for 300 ms, measured on the encoder's output: per video frame
    /// (last 3 frames) this model follows in ~267 ms (the controller cuts after
    /// ~100-150 ms: `cut_ms`); over a trailing 200 ms window of output, ~370 ms.
    fn capacity_halving_is_followed_by_the_encoder_output_within_300ms() {
        use crate::sim::scenario::CAPACITY_STEP_AT;
        let sc = adaptive_scenario(&Scenario::capacity_step());
        let (r, _) = run(
            &sc,
            ControllerConfig::default(),
            EncoderModel::default(),
            Instant::now(),
        );
        let before: f64 = r.seconds[15..20].iter().map(|s| s.encoded_bps).sum::<f64>() / 5.0;
        for (t, st) in &r.ticks {
            if *t >= CAPACITY_STEP_AT - Duration::from_millis(100)
                && *t <= CAPACITY_STEP_AT + Duration::from_millis(500)
            {
                eprintln!(
                    "{:.2} target {:.2} cap {:.2} queue {:.0} ms",
                    t.as_secs_f64(),
                    st.target_bps as f64 / 1e6,
                    st.capacity_bps / 1e6,
                    st.queue_ms
                );
            }
        }
        let follow = follow_time_frames(&r.frames, 30.0, CAPACITY_STEP_AT, 6e6).expect("follows");
        let windowed = follow_time(&r.frames, CAPACITY_STEP_AT, 6e6).expect("follows");
        eprintln!(
            "before step {:.2} Mbit/s; output <= 6 Mbit/s {} ms after the step \
             ({} ms over a 200 ms window); on time {:.5}",
            before / 1e6,
            follow.as_millis(),
            windowed.as_millis(),
            r.on_time_fraction
        );
        assert!(
            before > 8e6,
            "the encoder used the links before the step: {before}"
        );
        assert!(follow <= Duration::from_millis(300), "{follow:?}");
        assert!(windowed <= Duration::from_millis(400), "{windowed:?}");
        assert!(r.on_time_fraction >= 0.999, "{}", r.on_time_fraction);
    }

    #[test]
    fn dev_scenario_adaptive_goodput_and_on_time() {
        let sc = adaptive_scenario(&Scenario::dev(&traces_dir(), 5e6).expect("traces"));
        let (r, _) = run(
            &sc,
            ControllerConfig::default(),
            EncoderModel::default(),
            Instant::now(),
        );
        let secs: Vec<String> = r
            .seconds
            .iter()
            .map(|s| {
                format!(
                    "{}:{:.1}/{:.1}/{:.1}",
                    s.t_s,
                    s.capacity_bps / 1e6,
                    s.target_bps as f64 / 1e6,
                    s.encoded_bps / 1e6
                )
            })
            .collect();
        eprintln!("{}", secs.join(" "));
        eprintln!(
            "goodput {:.2} Mbit/s = {:.3} of counted {:.2}; on time {:.5}; cuts {}; lost {} late {}",
            r.goodput_bps / 1e6,
            r.goodput_fraction,
            r.counted_capacity_bps / 1e6,
            r.on_time_fraction,
            r.cuts,
            r.transport.lost,
            r.transport.delivered_late
        );
        assert!(r.on_time_fraction >= 0.999, "{}", r.on_time_fraction);
        assert!(r.goodput_fraction >= 0.75, "{}", r.goodput_fraction);
    }
}
