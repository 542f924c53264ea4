//! The front panel button, sans-IO: raw levels in, debounced events out.
//!
//! - A level counts once it has held for the debounce time (default 30 ms);
//!   anything shorter is a glitch and is ignored, however often it happens.
//! - A press shorter than the long-press time (default 2 s) gives
//!   [`ButtonEvent::Toggle`] on release: start the stream, or stop it.
//! - A press held for the long-press time gives [`ButtonEvent::StopAndHold`] as soon
//!   as the time is reached (the LED changes while the button is still down, so the
//!   user knows to let go); the release after it gives nothing.
//! - Press length is measured from the first edge of the press to the first edge
//!   of the release (the edges that then held for the debounce time).
//! - A button already down when the machine starts (stuck, or held at boot) gives
//!   nothing until it has been released and pressed again.
//!
//! Feed it [`ButtonMachine::on_level`] for every sample or edge (repeats are
//! fine), and call [`ButtonMachine::poll`] at [`ButtonMachine::poll_timeout`].

use std::time::{Duration, Instant};

/// What a press asks for. Each press gives at most one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ButtonEvent {
    /// Short press: start streaming if stopped, stop if streaming.
    Toggle,
    /// Long press: stop streaming and hold (do not restart by itself).
    StopAndHold,
}

/// The button's timings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ButtonTimings {
    /// How long a level must hold to count.
    pub debounce: Duration,
    /// How long a press must last to be a long press.
    pub long_press: Duration,
}

impl Default for ButtonTimings {
    fn default() -> Self {
        ButtonTimings {
            debounce: Duration::from_millis(30),
            long_press: Duration::from_secs(2),
        }
    }
}

/// Debounce and press classification for one button.
#[derive(Debug, Clone)]
pub struct ButtonMachine {
    timings: ButtonTimings,
    /// Last level seen, and since when.
    raw: bool,
    raw_since: Instant,
    /// Debounced level.
    stable: bool,
    /// Start of the current debounced press; `None` when released, or for a press
    /// that began before the machine did.
    pressed_at: Option<Instant>,
    long_fired: bool,
}

impl ButtonMachine {
    /// A machine whose button reads `pressed` at `now`.
    pub fn new(timings: ButtonTimings, pressed: bool, now: Instant) -> Self {
        ButtonMachine {
            timings,
            raw: pressed,
            raw_since: now,
            stable: pressed,
            pressed_at: None,
            long_fired: false,
        }
    }

    /// The debounced level: `true` while pressed.
    pub fn is_pressed(&self) -> bool {
        self.stable
    }

    /// A sample or edge: the button reads `pressed` at `now`. Times must not go
    /// backwards.
    pub fn on_level(&mut self, pressed: bool, now: Instant) -> Option<ButtonEvent> {
        // What was pending before this sample settles first.
        let ev = self.poll(now);
        if pressed != self.raw {
            self.raw = pressed;
            self.raw_since = now;
        }
        ev
    }

    /// Time has passed: settle a level that has held for the debounce time and
    /// detect a long press.
    pub fn poll(&mut self, now: Instant) -> Option<ButtonEvent> {
        if self.raw != self.stable && now >= self.raw_since + self.timings.debounce {
            self.stable = self.raw;
            if self.stable {
                self.pressed_at = Some(self.raw_since);
                self.long_fired = false;
            } else {
                let pressed_at = self.pressed_at.take();
                let fired = std::mem::replace(&mut self.long_fired, false);
                return match pressed_at {
                    Some(_) if fired => None,
                    // Released late but held long enough (polls came too seldom).
                    Some(p) if self.raw_since >= p + self.timings.long_press => {
                        Some(ButtonEvent::StopAndHold)
                    }
                    Some(_) => Some(ButtonEvent::Toggle),
                    None => None,
                };
            }
        }
        if self.stable && !self.long_fired && self.raw {
            if let Some(p) = self.pressed_at {
                if now >= p + self.timings.long_press {
                    self.long_fired = true;
                    return Some(ButtonEvent::StopAndHold);
                }
            }
        }
        None
    }

    /// When [`ButtonMachine::poll`] has something to do: a pending level settles,
    /// or a press becomes long. `None`: nothing until the next level change.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.raw != self.stable {
            return Some(self.raw_since + self.timings.debounce);
        }
        match self.pressed_at {
            Some(p) if self.stable && !self.long_fired => Some(p + self.timings.long_press),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Replays `(ms, pressed)` samples (sorted), polling at every poll_timeout in
    /// between as the driver does, until `end_ms`. Returns `(ms, event)`.
    fn replay(samples: &[(u64, bool)], end_ms: u64) -> Vec<(u64, ButtonEvent)> {
        let t0 = Instant::now();
        let mut m = ButtonMachine::new(ButtonTimings::default(), false, t0);
        let mut out = Vec::new();
        let mut i = 0;
        let mut now = t0;
        let end = t0 + ms(end_ms);
        loop {
            let next_sample = samples.get(i).map(|(t, _)| t0 + ms(*t));
            let next_poll = m.poll_timeout();
            let next = match (next_sample, next_poll) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => a.or(b).unwrap_or(end),
            };
            if next > end {
                break;
            }
            assert!(next >= now);
            now = next;
            if next_sample == Some(now) {
                if let Some(e) = m.on_level(samples[i].1, now) {
                    out.push(((now - t0).as_millis() as u64, e));
                }
                i += 1;
            } else if let Some(e) = m.poll(now) {
                out.push(((now - t0).as_millis() as u64, e));
            }
            if next_sample.is_none() && next_poll.is_none() {
                break;
            }
        }
        out
    }

    /// A bouncy edge to `level` at `t`: a few flips of a few ms each, settling at `t + 9`.
    fn bounce(t: u64, level: bool) -> Vec<(u64, bool)> {
        vec![
            (t, level),
            (t + 2, !level),
            (t + 3, level),
            (t + 6, !level),
            (t + 9, level),
        ]
    }

    #[test]
    fn clean_short_press_toggles_once_on_release() {
        let ev = replay(&[(100, true), (300, false)], 5000);
        assert_eq!(ev, vec![(330, ButtonEvent::Toggle)]);
    }

    #[test]
    fn bouncy_short_press_toggles_once() {
        let mut s = bounce(100, true);
        s.extend(bounce(400, false));
        let ev = replay(&s, 5000);
        // Settles 30 ms after the last bounce of the release.
        assert_eq!(ev, vec![(439, ButtonEvent::Toggle)]);
    }

    #[test]
    fn glitches_shorter_than_debounce_are_ignored() {
        // Spikes of 1..29 ms, well apart, never a press.
        let mut s = Vec::new();
        for (k, w) in [1u64, 5, 10, 20, 29].into_iter().enumerate() {
            let t = 100 + 200 * k as u64;
            s.push((t, true));
            s.push((t + w, false));
        }
        assert_eq!(replay(&s, 3000), vec![]);
        // A burst of spikes, each short, spaced under the debounce: still nothing.
        let s: Vec<_> = (0..40).map(|k| (1000 + 7 * k, k % 2 == 0)).collect();
        assert_eq!(replay(&s, 3000), vec![]);
    }

    #[test]
    fn exactly_the_debounce_counts() {
        let ev = replay(&[(100, true), (130, false)], 1000);
        assert_eq!(ev, vec![(160, ButtonEvent::Toggle)]);
        let ev = replay(&[(100, true), (129, false)], 1000);
        assert_eq!(ev, vec![]);
    }

    #[test]
    fn long_press_fires_while_held_and_release_is_silent() {
        let mut s = bounce(100, true);
        s.extend(bounce(3500, false));
        let ev = replay(&s, 6000);
        assert_eq!(ev, vec![(2109, ButtonEvent::StopAndHold)]);
    }

    #[test]
    fn press_just_under_long_is_a_toggle() {
        let ev = replay(&[(100, true), (2099, false)], 5000);
        assert_eq!(ev, vec![(2129, ButtonEvent::Toggle)]);
    }

    #[test]
    fn glitch_during_a_long_press_does_not_split_it() {
        // Held from 100 ms; a 4 ms contact drop at 1000 ms.
        let s = [(100, true), (1000, false), (1004, true), (2600, false)];
        let ev = replay(&s, 4000);
        assert_eq!(ev, vec![(2100, ButtonEvent::StopAndHold)]);
    }

    #[test]
    fn two_presses_two_toggles() {
        let mut s = bounce(100, true);
        s.extend(bounce(250, false));
        s.extend(bounce(600, true));
        s.extend(bounce(800, false));
        let ev = replay(&s, 2000);
        assert_eq!(
            ev,
            vec![(289, ButtonEvent::Toggle), (839, ButtonEvent::Toggle)]
        );
    }

    #[test]
    fn held_at_start_gives_nothing_until_pressed_again() {
        let t0 = Instant::now();
        let mut m = ButtonMachine::new(ButtonTimings::default(), true, t0);
        assert!(m.is_pressed());
        assert_eq!(m.poll_timeout(), None);
        assert_eq!(
            m.poll(t0 + ms(5000)),
            None,
            "no long press for a press not seen starting"
        );
        assert_eq!(m.on_level(false, t0 + ms(6000)), None);
        assert_eq!(
            m.poll(t0 + ms(6030)),
            None,
            "release of an unseen press is silent"
        );
        assert!(!m.is_pressed());
        assert_eq!(m.on_level(true, t0 + ms(7000)), None);
        assert_eq!(m.on_level(false, t0 + ms(7100)), None);
        assert_eq!(m.poll(t0 + ms(7130)), Some(ButtonEvent::Toggle));
    }

    #[test]
    fn dense_polling_gives_the_same_events() {
        // Sampling every 5 ms (the polled driver) instead of edges only.
        let t0 = Instant::now();
        let mut m = ButtonMachine::new(ButtonTimings::default(), false, t0);
        let level = |t: u64| matches!(t, 100..=104 | 110..=300 | 303..=305 | 1000..=3200);
        let mut ev = Vec::new();
        for k in 0..1000u64 {
            let t = 5 * k;
            if let Some(e) = m.on_level(level(t), t0 + ms(t)) {
                ev.push((t, e));
            }
        }
        assert_eq!(
            ev,
            vec![(340, ButtonEvent::Toggle), (3000, ButtonEvent::StopAndHold)]
        );
    }

    #[test]
    fn sparse_polls_still_classify_by_edge_times() {
        let t0 = Instant::now();
        let mut m = ButtonMachine::new(ButtonTimings::default(), false, t0);
        assert_eq!(m.on_level(true, t0), None);
        // No poll during the press: the release edge comes 2.5 s later.
        assert_eq!(
            m.on_level(false, t0 + ms(2500)),
            Some(ButtonEvent::StopAndHold)
        );
        assert_eq!(m.poll(t0 + ms(2600)), None, "one event per press");
    }
}
