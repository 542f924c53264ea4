//! After an update: confirm the freshly booted slot once it proves itself, or give it
//! up so that the next boot returns to the old one; and reboot into a freshly
//! installed slot only when that does not cut a live show.
//!
//! The decisions are sans-IO ([`HealthCheck`], [`RebootPlanner`]): plain structs fed
//! with `now` and what the daemon observes, tested in virtual time below. The IO is
//! around them: the boot-attempt counter and the pending-reboot marker in
//! `ota.state_dir` ([`record_start`], [`set_reboot_pending`]), and [`Monitor`], the
//! thin task in `braid edge` that reads the stats, calls the slot backend and runs
//! `ota.reboot_command`.

use super::slots::{Slot, SlotBackend, SlotStatus};
use crate::config::{OtaConfig, RebootPolicy};
use std::collections::VecDeque;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Sans-IO: the health check
// ---------------------------------------------------------------------------

/// What the daemon sees of itself at one moment (from its stats snapshot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Observation {
    /// Links with a QUIC connection to the relay.
    pub links_connected: usize,
    /// Media is reaching the relay (box state live or degraded).
    pub streaming: bool,
}

impl Observation {
    /// The edge's stats as the health check reads them.
    pub fn from_stats(s: &crate::edge::EdgeStats) -> Observation {
        use crate::device::leds::BoxState;
        Observation {
            links_connected: s.links.iter().filter(|l| l.connected).count(),
            streaming: matches!(s.state, BoxState::Live | BoxState::Degraded),
        }
    }

    /// The daemon is up with a valid configuration (it runs), and at least one link
    /// is up or the stream is live.
    pub fn healthy(&self) -> bool {
        self.links_connected > 0 || self.streaming
    }
}

/// Limits of the health check (`ota.health_timeout_s`, `ota.max_boot_attempts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthParams {
    pub timeout: Duration,
    pub max_boot_attempts: u32,
}

impl HealthParams {
    pub fn from_config(cfg: &OtaConfig) -> HealthParams {
        HealthParams {
            timeout: cfg.health_timeout,
            max_boot_attempts: cfg.max_boot_attempts,
        }
    }
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthAction {
    /// The booted slot passed: `mark_good` it and reset the boot-attempt counter.
    MarkGood,
    /// The booted slot failed: `mark_bad` it and reboot (into the old slot).
    MarkBadAndReboot { reason: String },
}

/// Where the health check stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The booted slot is confirmed already: nothing to check.
    NotNeeded,
    /// Waiting for a link or the stream, until `deadline`.
    Pending { deadline: Instant },
    /// Passed: the slot was confirmed.
    Confirmed,
    /// Failed: the slot was given up.
    Failed { reason: String },
}

/// The health check of one daemon start on an unconfirmed slot.
///
/// Call order: [`HealthCheck::new`] at daemon start (with the start counter already
/// incremented); then, whenever something may have changed,
/// [`HealthCheck::handle_observation`], and at [`HealthCheck::poll_timeout`]
/// [`HealthCheck::handle_timeout`]; after each call drain
/// [`HealthCheck::poll_action`]. Each action is emitted once; the verdict is final
/// once it is `Confirmed` or `Failed`.
#[derive(Debug)]
pub struct HealthCheck {
    verdict: Verdict,
    actions: VecDeque<HealthAction>,
}

impl HealthCheck {
    /// `unconfirmed`: the booted slot awaits confirmation. `starts`: daemon starts
    /// on this slot so far, this one included.
    pub fn new(now: Instant, params: HealthParams, unconfirmed: bool, starts: u32) -> Self {
        let mut hc = HealthCheck {
            verdict: Verdict::NotNeeded,
            actions: VecDeque::new(),
        };
        if !unconfirmed {
            return hc;
        }
        if starts > params.max_boot_attempts {
            hc.fail(format!(
                "the daemon started {starts} times on the new slot without passing its \
                 health check (ota.max_boot_attempts = {})",
                params.max_boot_attempts
            ));
        } else {
            hc.verdict = Verdict::Pending {
                deadline: now + params.timeout,
            };
        }
        hc
    }

    pub fn verdict(&self) -> &Verdict {
        &self.verdict
    }

    /// What the daemon sees now.
    pub fn handle_observation(&mut self, now: Instant, obs: Observation) {
        let Verdict::Pending { deadline } = self.verdict else {
            return;
        };
        if now >= deadline {
            self.handle_timeout(now);
        } else if obs.healthy() {
            self.verdict = Verdict::Confirmed;
            self.actions.push_back(HealthAction::MarkGood);
        }
    }

    /// Time has passed (call at or after [`HealthCheck::poll_timeout`]).
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Verdict::Pending { deadline } = self.verdict {
            if now >= deadline {
                self.fail(
                    "no link came up and the stream did not go live within \
                     ota.health_timeout_s"
                        .to_string(),
                );
            }
        }
    }

    /// When [`HealthCheck::handle_timeout`] is due, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.verdict {
            Verdict::Pending { deadline } => Some(deadline),
            _ => None,
        }
    }

    pub fn poll_action(&mut self) -> Option<HealthAction> {
        self.actions.pop_front()
    }

    fn fail(&mut self, reason: String) {
        self.verdict = Verdict::Failed {
            reason: reason.clone(),
        };
        self.actions
            .push_back(HealthAction::MarkBadAndReboot { reason });
    }
}

// ---------------------------------------------------------------------------
// Sans-IO: when to reboot into a freshly installed slot
// ---------------------------------------------------------------------------

/// Minutes in a day.
const DAY_MINUTES: u16 = 24 * 60;

/// Decides the moment of the reboot after an install (`ota.reboot`). A live stream
/// is never cut: every policy waits until the stream is not live.
///
/// Call [`RebootPlanner::handle_tick`] at least once a minute with the local time of
/// day; it answers whether to reboot now.
#[derive(Debug, Clone)]
pub struct RebootPlanner {
    policy: RebootPolicy,
    /// `HH:MM` was reached since the reboot became pending.
    window_open: bool,
    last_minute: Option<u16>,
}

impl RebootPlanner {
    pub fn new(policy: RebootPolicy) -> Self {
        RebootPlanner {
            policy,
            window_open: false,
            last_minute: None,
        }
    }

    /// `pending`: an installed slot waits for a reboot. `live`: the stream is live.
    /// `minute_of_day`: local time, 0..1440.
    pub fn handle_tick(&mut self, pending: bool, live: bool, minute_of_day: u16) -> bool {
        let minute = minute_of_day % DAY_MINUTES;
        let last = self.last_minute.replace(minute);
        if !pending {
            self.window_open = false;
            return false;
        }
        match self.policy {
            RebootPolicy::Never => false,
            RebootPolicy::Idle => !live,
            RebootPolicy::At { hour, minute: m } => {
                let target = u16::from(hour) * 60 + u16::from(m);
                if minute == target || last.is_some_and(|l| crossed(l, minute, target)) {
                    self.window_open = true;
                }
                self.window_open && !live
            }
        }
    }
}

/// `target` lies in `(from, to]` on the 24-hour circle.
fn crossed(from: u16, to: u16, target: u16) -> bool {
    let span = (to + DAY_MINUTES - from) % DAY_MINUTES;
    let dist = (target + DAY_MINUTES - from) % DAY_MINUTES;
    dist != 0 && dist <= span
}

// ---------------------------------------------------------------------------
// State files in ota.state_dir
// ---------------------------------------------------------------------------

/// File of the boot-attempt counter in `ota.state_dir`.
pub const BOOT_COUNTER_FILE: &str = "boot-attempts.json";
/// File marking an installed slot that waits for a reboot.
pub const REBOOT_PENDING_FILE: &str = "reboot-pending.json";

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct BootCounter {
    slot: Slot,
    starts: u32,
}

/// Counts a daemon start on `slot` (unconfirmed) and returns the starts so far, this
/// one included. A counter kept for the other slot starts again from one.
pub fn record_start(state_dir: &Path, slot: Slot) -> io::Result<u32> {
    std::fs::create_dir_all(state_dir)?;
    let path = state_dir.join(BOOT_COUNTER_FILE);
    let before = boot_starts(state_dir, slot);
    let c = BootCounter {
        slot,
        starts: before + 1,
    };
    crate::system::atomic::write_atomic(&path, &serde_json::to_vec(&c).map_err(io::Error::other)?)?;
    Ok(c.starts)
}

/// Daemon starts counted on `slot` (0 when none or the file is unreadable).
pub fn boot_starts(state_dir: &Path, slot: Slot) -> u32 {
    std::fs::read(state_dir.join(BOOT_COUNTER_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<BootCounter>(&b).ok())
        .filter(|c| c.slot == slot)
        .map_or(0, |c| c.starts)
}

/// Forgets the counter (the slot was confirmed, or a new install starts afresh).
pub fn reset_starts(state_dir: &Path) -> io::Result<()> {
    remove_if_exists(&state_dir.join(BOOT_COUNTER_FILE))
}

/// A slot installed and set to boot once, waiting for the reboot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RebootPending {
    pub slot: Slot,
    pub version: String,
}

pub fn set_reboot_pending(state_dir: &Path, p: &RebootPending) -> io::Result<()> {
    std::fs::create_dir_all(state_dir)?;
    crate::system::atomic::write_atomic(
        &state_dir.join(REBOOT_PENDING_FILE),
        &serde_json::to_vec(p).map_err(io::Error::other)?,
    )
}

pub fn reboot_pending(state_dir: &Path) -> Option<RebootPending> {
    std::fs::read(state_dir.join(REBOOT_PENDING_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

pub fn clear_reboot_pending(state_dir: &Path) -> io::Result<()> {
    remove_if_exists(&state_dir.join(REBOOT_PENDING_FILE))
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------
// The shell in `braid edge`
// ---------------------------------------------------------------------------

/// Runs `argv` (the reboot command) and waits for it.
pub fn run_reboot_command(argv: &[String]) -> io::Result<()> {
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty reboot command"))?;
    let st = std::process::Command::new(prog).args(args).status()?;
    if st.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("{argv:?} exited with {st}")))
    }
}

/// The local time zone's offset from UTC in seconds, as `date +%z` prints it
/// (`+0130`); the crate has no unsafe code for `localtime_r`. None when it fails.
pub fn local_utc_offset() -> Option<i64> {
    let out = std::process::Command::new("date")
        .arg("+%z")
        .output()
        .ok()?;
    parse_utc_offset(std::str::from_utf8(&out.stdout).ok()?.trim())
}

fn parse_utc_offset(s: &str) -> Option<i64> {
    let (sign, digits) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let h: i64 = digits[..2].parse().ok()?;
    let m: i64 = digits[2..].parse().ok()?;
    Some(sign * (h * 3600 + m * 60))
}

/// Local time of day in minutes, from Unix time and the UTC offset.
pub fn minute_of_day(unix_secs: i64, utc_offset_secs: i64) -> u16 {
    ((unix_secs + utc_offset_secs).rem_euclid(86_400) / 60) as u16
}

/// How often the local UTC offset is read again (daylight saving changes).
const OFFSET_REFRESH: Duration = Duration::from_secs(600);

/// The shell's clock: tokio's, so that tests with paused time drive the monitor in
/// virtual time (outside a paused runtime it is the monotonic clock).
fn shell_now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// How often the monitor looks at the stats.
const TICK: Duration = Duration::from_secs(1);
/// After the reboot command ran (or failed), wait this long before trying again.
const REBOOT_RETRY: Duration = Duration::from_secs(60);

/// The OTA side of `braid edge`: counts this start, confirms or gives up the booted
/// slot, and reboots into a freshly installed one when the policy allows.
pub struct Monitor {
    cfg: OtaConfig,
    backend: Arc<dyn SlotBackend>,
    check: HealthCheck,
    status: SlotStatus,
}

impl Monitor {
    /// Call first thing at daemon start, before anything that could crash, so that
    /// every start (watchdog restarts included) counts against an unconfirmed slot.
    /// If the slot has used up its starts it is marked bad and the box reboots here.
    pub fn start(cfg: OtaConfig, backend: Arc<dyn SlotBackend>) -> io::Result<Monitor> {
        let status = backend.status().map_err(io::Error::other)?;
        let now = shell_now();
        let starts = if status.booted_unconfirmed {
            record_start(&cfg.state_dir, status.booted)?
        } else {
            reset_starts(&cfg.state_dir)?;
            0
        };
        if status.try_next.is_none() && reboot_pending(&cfg.state_dir).is_some() {
            // The slot it waited for was booted (or given up): nothing is pending.
            clear_reboot_pending(&cfg.state_dir)?;
        }
        let check = HealthCheck::new(
            now,
            HealthParams::from_config(&cfg),
            status.booted_unconfirmed,
            starts,
        );
        if status.booted_unconfirmed {
            tracing::warn!(
                slot = ?status.booted,
                starts,
                max = cfg.max_boot_attempts,
                timeout_s = cfg.health_timeout.as_secs(),
                "running an unconfirmed slot: confirming it once a link is up or the stream is live"
            );
        }
        let mut m = Monitor {
            cfg,
            backend,
            check,
            status,
        };
        m.drain();
        Ok(m)
    }

    /// The `[ota]` table it runs with.
    pub fn config(&self) -> &OtaConfig {
        &self.cfg
    }

    /// The slot backend it uses (for the fleet poller).
    pub fn backend(&self) -> Arc<dyn SlotBackend> {
        self.backend.clone()
    }

    /// The slots as seen at start.
    pub fn status(&self) -> &SlotStatus {
        &self.status
    }

    pub fn verdict(&self) -> &Verdict {
        self.check.verdict()
    }

    fn drain(&mut self) {
        while let Some(a) = self.check.poll_action() {
            match a {
                HealthAction::MarkGood => match self.backend.mark_good() {
                    Ok(()) => {
                        let _ = reset_starts(&self.cfg.state_dir);
                        tracing::info!(slot = ?self.status.booted, "health check passed: slot confirmed");
                    }
                    Err(e) => {
                        tracing::error!("health check passed but confirming the slot failed: {e}")
                    }
                },
                HealthAction::MarkBadAndReboot { reason } => {
                    tracing::error!(slot = ?self.status.booted, "health check failed: {reason}; returning to the previous slot");
                    if let Err(e) = self.backend.mark_bad() {
                        tracing::error!("marking the slot bad failed: {e}");
                    }
                    if let Err(e) = run_reboot_command(&self.cfg.reboot_command) {
                        tracing::error!("reboot failed: {e}");
                    }
                }
            }
        }
    }

    /// Runs until `shutdown`, reading the daemon's state with `observe`.
    pub async fn run(
        mut self,
        observe: impl Fn() -> Observation + Send + 'static,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut planner = RebootPlanner::new(self.cfg.reboot);
        let mut next_reboot_try = shell_now();
        let mut offset = (shell_now(), local_utc_offset().unwrap_or(0));
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.changed() => return,
                _ = tick.tick() => {}
            }
            let now = shell_now();
            let obs = observe();
            self.check.handle_observation(now, obs);
            self.check.handle_timeout(now);
            // Backend calls and the reboot command block: off the async workers.
            self = match tokio::task::spawn_blocking(move || {
                self.drain();
                self
            })
            .await
            {
                Ok(m) => m,
                Err(_) => return,
            };
            let pending = reboot_pending(&self.cfg.state_dir);
            let unix = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            if matches!(self.cfg.reboot, RebootPolicy::At { .. })
                && now.duration_since(offset.0) >= OFFSET_REFRESH
            {
                offset = (now, local_utc_offset().unwrap_or(offset.1));
            }
            let minute = minute_of_day(unix, offset.1);
            let reboot = planner.handle_tick(pending.is_some(), obs.streaming, minute);
            if reboot && now >= next_reboot_try {
                next_reboot_try = now + REBOOT_RETRY;
                let p = pending.unwrap_or(RebootPending {
                    slot: self.status.booted.other(),
                    version: String::new(),
                });
                tracing::warn!(slot = ?p.slot, version = %p.version, policy = %self.cfg.reboot, "rebooting into the installed update (stream not live)");
                let argv = self.cfg.reboot_command.clone();
                match tokio::task::spawn_blocking(move || run_reboot_command(&argv)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!("reboot failed: {e}"),
                    Err(_) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: HealthParams = HealthParams {
        timeout: Duration::from_secs(120),
        max_boot_attempts: 3,
    };
    const DOWN: Observation = Observation {
        links_connected: 0,
        streaming: false,
    };
    const ONE_LINK: Observation = Observation {
        links_connected: 1,
        streaming: false,
    };

    fn actions(hc: &mut HealthCheck) -> Vec<HealthAction> {
        std::iter::from_fn(|| hc.poll_action()).collect()
    }

    /// Runs a health check once a second for `secs` virtual seconds, `obs(t)` giving
    /// what the daemon sees at second `t`; returns the actions with their second.
    fn drive(
        hc: &mut HealthCheck,
        t0: Instant,
        secs: u64,
        obs: impl Fn(u64) -> Observation,
    ) -> Vec<(u64, HealthAction)> {
        let mut out = Vec::new();
        for t in 0..=secs {
            let now = t0 + Duration::from_secs(t);
            hc.handle_observation(now, obs(t));
            if hc.poll_timeout().is_some_and(|d| d <= now) {
                hc.handle_timeout(now);
            }
            out.extend(actions(hc).into_iter().map(|a| (t, a)));
        }
        out
    }

    #[test]
    fn observation_from_the_edge_stats() {
        use crate::device::leds::BoxState;
        use crate::edge::{EdgeLinkStatus, EdgeStats};
        let mut s = EdgeStats {
            links: vec![EdgeLinkStatus::default(), EdgeLinkStatus::default()],
            ..Default::default()
        };
        assert!(!Observation::from_stats(&s).healthy(), "booting, no link");
        s.links[1].connected = true;
        assert_eq!(Observation::from_stats(&s).links_connected, 1);
        assert!(Observation::from_stats(&s).healthy());
        s.links[1].connected = false;
        for (state, streaming) in [
            (BoxState::Live, true),
            (BoxState::Degraded, true),
            (BoxState::Ready, false),
            (BoxState::Error, false),
            (BoxState::Stopped, false),
        ] {
            s.state = state;
            assert_eq!(
                Observation::from_stats(&s).streaming,
                streaming,
                "{state:?}"
            );
        }
    }

    #[test]
    fn confirmed_slot_needs_no_check() {
        let t0 = Instant::now();
        let mut hc = HealthCheck::new(t0, P, false, 0);
        assert_eq!(hc.verdict(), &Verdict::NotNeeded);
        assert_eq!(hc.poll_timeout(), None);
        assert!(drive(&mut hc, t0, 1000, |_| DOWN).is_empty());
    }

    #[test]
    fn link_up_in_time_confirms_once() {
        let t0 = Instant::now();
        let mut hc = HealthCheck::new(t0, P, true, 1);
        assert_eq!(hc.poll_timeout(), Some(t0 + P.timeout));
        // Modems take 40 s to register; the first link connects at 41 s.
        let got = drive(&mut hc, t0, 600, |t| if t >= 41 { ONE_LINK } else { DOWN });
        assert_eq!(got, [(41, HealthAction::MarkGood)]);
        assert_eq!(hc.verdict(), &Verdict::Confirmed);
        assert_eq!(hc.poll_timeout(), None);
    }

    #[test]
    fn live_stream_alone_is_healthy() {
        let t0 = Instant::now();
        let mut hc = HealthCheck::new(t0, P, true, 2);
        let live = Observation {
            links_connected: 0,
            streaming: true,
        };
        let got = drive(&mut hc, t0, 10, |t| if t == 5 { live } else { DOWN });
        assert_eq!(got, [(5, HealthAction::MarkGood)]);
    }

    #[test]
    fn no_link_within_timeout_gives_the_slot_up() {
        let t0 = Instant::now();
        let mut hc = HealthCheck::new(t0, P, true, 1);
        // A link that would come up at 121 s is too late.
        let got = drive(&mut hc, t0, 300, |t| if t >= 121 { ONE_LINK } else { DOWN });
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, 120, "fails at the deadline, not before or later");
        assert!(
            matches!(&got[0].1, HealthAction::MarkBadAndReboot { reason } if reason.contains("health_timeout_s")),
            "{got:?}"
        );
        assert!(matches!(hc.verdict(), Verdict::Failed { .. }));
    }

    #[test]
    fn observation_after_the_deadline_does_not_confirm() {
        let t0 = Instant::now();
        let mut hc = HealthCheck::new(t0, P, true, 1);
        // The daemon was stalled; the first look is past the deadline with a link up.
        hc.handle_observation(t0 + Duration::from_secs(500), ONE_LINK);
        assert!(matches!(
            actions(&mut hc)[..],
            [HealthAction::MarkBadAndReboot { .. }]
        ));
    }

    #[test]
    fn too_many_starts_give_the_slot_up_at_once() {
        let t0 = Instant::now();
        for starts in 1..=3 {
            let mut hc = HealthCheck::new(t0, P, true, starts);
            assert!(actions(&mut hc).is_empty(), "start {starts} gets its check");
        }
        // The watchdog restarted a crashing daemon: the 4th start gives up.
        let mut hc = HealthCheck::new(t0, P, true, 4);
        let a = actions(&mut hc);
        assert!(
            matches!(&a[..], [HealthAction::MarkBadAndReboot { reason }] if reason.contains("started 4 times")),
            "{a:?}"
        );
        // Nothing later brings it back.
        assert!(drive(&mut hc, t0, 10, |_| ONE_LINK).is_empty());
    }

    #[test]
    fn reboot_idle_waits_for_the_stream_to_stop() {
        let mut r = RebootPlanner::new(RebootPolicy::Idle);
        assert!(!r.handle_tick(false, false, 600), "nothing pending");
        assert!(!r.handle_tick(true, true, 601), "live: never cut");
        assert!(!r.handle_tick(true, true, 700));
        assert!(r.handle_tick(true, false, 701), "stream stopped");
    }

    #[test]
    fn reboot_never_never_reboots() {
        let mut r = RebootPlanner::new(RebootPolicy::Never);
        for m in 0..DAY_MINUTES * 2 {
            assert!(!r.handle_tick(true, false, m % DAY_MINUTES));
        }
    }

    #[test]
    fn reboot_at_a_time_waits_for_it_and_for_idle() {
        let at = RebootPolicy::At {
            hour: 3,
            minute: 30,
        };
        let mut r = RebootPlanner::new(at);
        // Installed at 14:00, idle all afternoon: no reboot before 03:30.
        for m in 14 * 60..DAY_MINUTES {
            assert!(!r.handle_tick(true, false, m), "{m}");
        }
        for m in 0..3 * 60 + 30 {
            assert!(!r.handle_tick(true, false, m), "{m}");
        }
        // A night show runs over 03:30 until 04:10: reboot when it stops.
        for m in 3 * 60 + 30..4 * 60 + 10 {
            assert!(!r.handle_tick(true, true, m), "{m}");
        }
        assert!(r.handle_tick(true, false, 4 * 60 + 10));

        // Ticks may skip the exact minute (a stalled loop): crossing it counts.
        let mut r = RebootPlanner::new(at);
        assert!(!r.handle_tick(true, false, 3 * 60 + 28));
        assert!(r.handle_tick(true, false, 3 * 60 + 33));
        // Across midnight.
        let mut r = RebootPlanner::new(RebootPolicy::At { hour: 0, minute: 0 });
        assert!(!r.handle_tick(true, false, DAY_MINUTES - 1));
        assert!(r.handle_tick(true, false, 2));
        // Nothing pending closes the window again.
        assert!(!r.handle_tick(false, false, 3));
        assert!(!r.handle_tick(true, false, 4));
    }

    #[test]
    fn boot_counter_and_reboot_marker_files() {
        let d = crate::system::TempDir::new("ota-state").unwrap();
        let dir = d.path().join("ota");
        assert_eq!(boot_starts(&dir, Slot::B), 0);
        assert_eq!(record_start(&dir, Slot::B).unwrap(), 1);
        assert_eq!(record_start(&dir, Slot::B).unwrap(), 2);
        assert_eq!(boot_starts(&dir, Slot::A), 0, "counted for B only");
        assert_eq!(
            record_start(&dir, Slot::A).unwrap(),
            1,
            "another slot starts afresh"
        );
        reset_starts(&dir).unwrap();
        reset_starts(&dir).unwrap();
        assert_eq!(boot_starts(&dir, Slot::A), 0);
        std::fs::write(dir.join(BOOT_COUNTER_FILE), "junk").unwrap();
        assert_eq!(
            record_start(&dir, Slot::A).unwrap(),
            1,
            "junk counts as none"
        );

        assert_eq!(reboot_pending(&dir), None);
        let p = RebootPending {
            slot: Slot::B,
            version: "1.2.0".into(),
        };
        set_reboot_pending(&dir, &p).unwrap();
        assert_eq!(reboot_pending(&dir), Some(p));
        clear_reboot_pending(&dir).unwrap();
        assert_eq!(reboot_pending(&dir), None);
    }

    fn ota_config(state_dir: &Path, reboot_marker: &Path) -> OtaConfig {
        OtaConfig {
            backend: crate::config::OtaBackend::Rauc,
            public_keys: vec!["k.pub".into()],
            compatible: "braid-test".into(),
            allow_downgrade: false,
            max_payload: 1 << 20,
            health_timeout: Duration::from_secs(10),
            max_boot_attempts: 2,
            reboot: RebootPolicy::Idle,
            reboot_command: vec!["touch".into(), reboot_marker.display().to_string()],
            state_dir: state_dir.into(),
            hawkbit: None,
        }
    }

    /// The daemon-start side with the in-memory slots: every start on an unconfirmed
    /// slot counts; the one over the limit gives the slot up and reboots.
    #[test]
    fn monitor_counts_starts_and_gives_up_a_crashing_slot() {
        use crate::ota::install::fake::MemSlots;
        let d = crate::system::TempDir::new("ota-monitor").unwrap();
        let state = d.path().join("state");
        let rebooted = d.path().join("rebooted");
        let cfg = ota_config(&state, &rebooted);
        let slots = Arc::new(MemSlots::new("1.0.0"));
        // Install B (as `braid ota install` would) and boot it once.
        slots.with(|s| {
            s.b = Some((b"new".to_vec(), "1.1.0".into()));
            s.try_next = Some(Slot::B);
        });
        set_reboot_pending(
            &state,
            &RebootPending {
                slot: Slot::B,
                version: "1.1.0".into(),
            },
        )
        .unwrap();
        assert_eq!(slots.boot(), Slot::B);
        for start in 1..=2 {
            let m = Monitor::start(cfg.clone(), slots.clone()).unwrap();
            assert!(
                matches!(m.verdict(), Verdict::Pending { .. }),
                "start {start}"
            );
            assert_eq!(boot_starts(&state, Slot::B), start);
            assert_eq!(reboot_pending(&state), None, "the pending reboot happened");
            assert!(!rebooted.exists());
        }
        // The third start (the watchdog restarted a crashing daemon twice) is over.
        let m = Monitor::start(cfg.clone(), slots.clone()).unwrap();
        assert!(
            matches!(m.verdict(), Verdict::Failed { reason } if reason.contains("started 3 times"))
        );
        slots.with(|s| assert_eq!(s.calls, ["mark_bad"]));
        assert!(rebooted.exists(), "reboot command ran");
        assert_eq!(slots.boot(), Slot::A, "back to the old slot");
        // On the old, confirmed slot the counter is forgotten and nothing is checked.
        let m = Monitor::start(cfg, slots.clone()).unwrap();
        assert_eq!(m.verdict(), &Verdict::NotNeeded);
        assert_eq!(boot_starts(&state, Slot::B), 0);
    }

    /// The daemon task in (paused) tokio time: a link comes up, the slot is confirmed.
    #[tokio::test(start_paused = true)]
    async fn monitor_confirms_when_a_link_comes_up() {
        use crate::ota::install::fake::MemSlots;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let d = crate::system::TempDir::new("ota-monitor-run").unwrap();
        let state = d.path().join("state");
        let cfg = ota_config(&state, &d.path().join("rebooted"));
        let slots = Arc::new(MemSlots::new("1.0.0"));
        slots.with(|s| {
            s.b = Some((b"new".to_vec(), "1.1.0".into()));
            s.try_next = Some(Slot::B);
        });
        slots.boot();
        let m = Monitor::start(cfg, slots.clone()).unwrap();
        let links = Arc::new(AtomicUsize::new(0));
        let l = links.clone();
        let observe = move || Observation {
            links_connected: l.load(Ordering::Relaxed),
            streaming: false,
        };
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(m.run(observe, stop_rx));
        tokio::time::sleep(Duration::from_secs(3)).await;
        slots.with(|s| assert!(s.calls.is_empty()));
        links.store(1, Ordering::Relaxed);
        // spawn_blocking runs on real threads: give them real time as well.
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if slots.with(|s| !s.calls.is_empty()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        slots.with(|s| assert_eq!(s.calls, ["mark_good"]));
        assert_eq!(slots.boot(), Slot::B, "confirmed: B for good");
        assert_eq!(boot_starts(&state, Slot::B), 0, "counter reset");
        let _ = stop.send(true);
        task.await.unwrap();
    }

    #[test]
    fn local_time_of_day() {
        assert_eq!(parse_utc_offset("+0000"), Some(0));
        assert_eq!(parse_utc_offset("+0130"), Some(5400));
        assert_eq!(parse_utc_offset("-0800"), Some(-8 * 3600));
        assert_eq!(parse_utc_offset("CET"), None);
        assert_eq!(parse_utc_offset("+01"), None);
        assert!(local_utc_offset().is_some(), "date +%z works here");
        // 2023-11-14 22:13:20 UTC.
        assert_eq!(minute_of_day(1_700_000_000, 0), 22 * 60 + 13);
        assert_eq!(minute_of_day(1_700_000_000, 3600), 23 * 60 + 13);
        assert_eq!(minute_of_day(1_700_000_000, 2 * 3600), 13, "past midnight");
        assert_eq!(
            minute_of_day(0, -3600),
            23 * 60,
            "before the epoch's midnight"
        );
    }
}
