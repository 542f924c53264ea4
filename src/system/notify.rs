//! systemd service notification (`Type=notify`, `WatchdogSec=`) through the
//! `sd-notify` crate. Every call is a no-op when the process was not started by
//! systemd (no `NOTIFY_SOCKET`), so the daemons run the same from a shell.
//!
//! The watchdog is pinged only while the daemon's main loop proves alive: the edge's
//! core task must have refreshed its stats, the relay must answer a stats request.
//! A hung loop stops the pings and systemd restarts the unit.

use std::time::{Duration, Instant};

/// `READY=1`: the daemon has started (configuration read, sockets bound).
pub fn ready() {
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::debug!("sd_notify READY: {e}");
    }
}

/// `STOPPING=1`: shutdown has begun.
pub fn stopping() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
}

/// `STATUS=...`: one line shown by `systemctl status`.
pub fn status(line: &str) {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(line)]);
}

/// Tells systemd the daemon is ready, then until SIGINT/SIGTERM feeds the watchdog
/// (if one is configured) each time `alive` answers true within `look` (its
/// argument: how long it may take). Returns after sending `STOPPING=1`.
pub async fn serve_until_signal<F, Fut>(what: &str, mut alive: F)
where
    F: FnMut(Duration) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    ready();
    let mut watchdog = Watchdog::from_env();
    let look = watchdog
        .interval()
        .map_or(Duration::from_secs(3600), |i| i / 2);
    let mut tick = tokio::time::interval(look);
    let signal = super::shutdown_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            biased;
            _ = &mut signal => break,
            _ = tick.tick() => {
                if alive(look).await {
                    watchdog.ping(Instant::now());
                } else {
                    tracing::error!("{what} is not answering: withholding the systemd watchdog");
                }
            }
        }
    }
    stopping();
}

/// The watchdog's keep-alive schedule: half of systemd's `WatchdogSec`, as
/// sd_watchdog_enabled(3) advises.
#[derive(Debug, Clone)]
pub struct Watchdog {
    interval: Option<Duration>,
    last: Option<Instant>,
}

impl Watchdog {
    /// From `WATCHDOG_USEC` / `WATCHDOG_PID` (None: no watchdog asked for).
    pub fn from_env() -> Watchdog {
        Watchdog::new(sd_notify::watchdog_enabled())
    }

    /// `timeout`: systemd's `WatchdogSec` (None: disabled).
    pub fn new(timeout: Option<Duration>) -> Watchdog {
        Watchdog {
            interval: timeout.filter(|t| !t.is_zero()).map(|t| t / 2),
            last: None,
        }
    }

    /// How often the caller should look (None: never).
    pub fn interval(&self) -> Option<Duration> {
        self.interval
    }

    /// A keep-alive is due at `now` (the loop was seen alive).
    pub fn due(&self, now: Instant) -> bool {
        match (self.interval, self.last) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(i), Some(l)) => now >= l + i,
        }
    }

    /// Send `WATCHDOG=1` if due; returns whether it was sent.
    pub fn ping(&mut self, now: Instant) -> bool {
        if !self.due(now) {
            return false;
        }
        self.last = Some(now);
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_pings_at_half_the_timeout_and_never_when_disabled() {
        let t0 = Instant::now();
        let mut off = Watchdog::new(None);
        assert!(!off.ping(t0));
        assert_eq!(off.interval(), None);
        let mut w = Watchdog::new(Some(Duration::from_secs(10)));
        assert_eq!(w.interval(), Some(Duration::from_secs(5)));
        assert!(w.ping(t0));
        assert!(!w.ping(t0 + Duration::from_secs(4)));
        assert!(w.ping(t0 + Duration::from_secs(5)));
    }
}
