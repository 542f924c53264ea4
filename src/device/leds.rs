//! Status LED and tally patterns, sans-IO: a [`BoxState`] and the time since it was
//! entered give the LED outputs; [`LedMachine::poll_timeout`] says when they next
//! change. No pins, no clocks: the driver ([`super::panel`]) writes the levels.
//!
//! The box has one RGB status LED (pins `led_red`, `led_green`, `led_blue` in
//! [`super::gpio::GpioConfig`], each optional) and an optional tally output.
//! Every pattern repeats from the moment the state was entered:
//!
//! | State      | Meaning                                    | Colour      | Pattern (repeats)                                  | Tally |
//! |------------|--------------------------------------------|-------------|----------------------------------------------------|-------|
//! | `Booting`  | starting up, links not up yet              | blue        | slow blink: 500 ms on, 500 ms off                  | off   |
//! | `Ready`    | links up, not streaming                    | green       | solid                                              | off   |
//! | `Live`     | streaming                                  | red         | heartbeat: 1900 ms on, 100 ms off                  | on    |
//! | `Degraded` | streaming; a link down or bitrate at floor | amber (R+G) | fast blink: 125 ms on, 125 ms off                  | on    |
//! | `Error`    | cannot stream (config, relay, encoder)     | red         | double blink: 150 on, 150 off, 150 on, 1050 off ms | off   |
//! | `Stopped`  | stopped and held by a long press           | blue        | short flash: 100 ms on, 1900 ms off                | off   |
//!
//! The timings alone tell the states apart, so a panel with a single plain LED
//! works too: when none of a colour's channels has a pin, the pattern is shown on
//! every channel that has one. `leds_active_low` / `tally_active_low` invert the
//! electrical level (common-anode LED, relay boards that switch on low).

use std::time::{Duration, Instant};

use super::gpio::GpioConfig;

/// What the box is doing, as the panel shows it. The edge daemon publishes it on a
/// `watch` channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BoxState {
    /// Starting up; links not up yet.
    #[default]
    Booting,
    /// Links up, not streaming.
    Ready,
    /// Streaming.
    Live,
    /// Streaming, but a link is down or the bitrate is at its floor.
    Degraded,
    /// Cannot stream.
    Error,
    /// Stopped and held (long press); a short press starts again.
    Stopped,
}

/// A status LED colour: which channels of the RGB LED light together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Color {
    /// Red channel.
    pub red: bool,
    /// Green channel.
    pub green: bool,
    /// Blue channel.
    pub blue: bool,
}

impl Color {
    /// Red only.
    pub const RED: Color = Color {
        red: true,
        green: false,
        blue: false,
    };
    /// Green only.
    pub const GREEN: Color = Color {
        red: false,
        green: true,
        blue: false,
    };
    /// Blue only.
    pub const BLUE: Color = Color {
        red: false,
        green: false,
        blue: true,
    };
    /// Red and green.
    pub const AMBER: Color = Color {
        red: true,
        green: true,
        blue: false,
    };
}

/// One state's pattern: a colour and a cycle of `(lit, duration)` segments. A
/// single segment means solid (or dark).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pattern {
    /// The colour of the lit segments.
    pub color: Color,
    /// Segments in milliseconds, repeated from the moment the state was entered.
    pub segments_ms: &'static [(bool, u64)],
    /// Tally output on.
    pub tally: bool,
}

impl BoxState {
    /// The pattern shown in this state (the table in the module doc).
    pub fn pattern(self) -> Pattern {
        let (color, segments_ms, tally): (Color, &'static [(bool, u64)], bool) = match self {
            BoxState::Booting => (Color::BLUE, &[(true, 500), (false, 500)], false),
            BoxState::Ready => (Color::GREEN, &[(true, 1000)], false),
            BoxState::Live => (Color::RED, &[(true, 1900), (false, 100)], true),
            BoxState::Degraded => (Color::AMBER, &[(true, 125), (false, 125)], true),
            BoxState::Error => (
                Color::RED,
                &[(true, 150), (false, 150), (true, 150), (false, 1050)],
                false,
            ),
            BoxState::Stopped => (Color::BLUE, &[(true, 100), (false, 1900)], false),
        };
        Pattern {
            color,
            segments_ms,
            tally,
        }
    }
}

/// The logical outputs at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedOutputs {
    /// The status LED's channels (all false when the pattern is dark).
    pub color: Color,
    /// The tally output.
    pub tally: bool,
}

/// A pin and the electrical level to drive it to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinLevel {
    /// BCM pin number.
    pub pin: u8,
    /// `true` = high.
    pub high: bool,
}

/// Which pins show the status LED's channels and the tally, and their polarity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LedPins {
    /// Red channel pin.
    pub red: Option<u8>,
    /// Green channel pin.
    pub green: Option<u8>,
    /// Blue channel pin.
    pub blue: Option<u8>,
    /// LED channels light when driven low.
    pub leds_active_low: bool,
    /// Tally pin.
    pub tally: Option<u8>,
    /// Tally is on when driven low.
    pub tally_active_low: bool,
}

impl LedPins {
    /// The LED and tally part of the `[gpio]` pin map.
    pub fn from_config(cfg: &GpioConfig) -> Self {
        LedPins {
            red: cfg.led_red,
            green: cfg.led_green,
            blue: cfg.led_blue,
            leds_active_low: cfg.leds_active_low,
            tally: cfg.tally,
            tally_active_low: cfg.tally_active_low,
        }
    }

    /// Every output pin, in the order [`LedPins::levels`] returns them.
    pub fn pins(&self) -> Vec<u8> {
        [self.red, self.green, self.blue, self.tally]
            .into_iter()
            .flatten()
            .collect()
    }

    /// Electrical levels for `out`, one per configured pin (red, green, blue, tally).
    /// A lit colour none of whose channels has a pin lights every channel that has one.
    pub fn levels(&self, out: LedOutputs, pattern_color: Color) -> Vec<PinLevel> {
        let channels = [
            (self.red, out.color.red, pattern_color.red),
            (self.green, out.color.green, pattern_color.green),
            (self.blue, out.color.blue, pattern_color.blue),
        ];
        let colour_wired = channels
            .iter()
            .any(|(pin, _, wanted)| pin.is_some() && *wanted);
        let lit_any = out.color.red || out.color.green || out.color.blue;
        let mut v = Vec::with_capacity(4);
        for (pin, lit, _) in channels {
            if let Some(pin) = pin {
                let on = if colour_wired { lit } else { lit_any };
                v.push(PinLevel {
                    pin,
                    high: on != self.leds_active_low,
                });
            }
        }
        if let Some(pin) = self.tally {
            v.push(PinLevel {
                pin,
                high: out.tally != self.tally_active_low,
            });
        }
        v
    }
}

/// The LED state machine: the current [`BoxState`] and when it was entered.
#[derive(Debug, Clone)]
pub struct LedMachine {
    state: BoxState,
    since: Instant,
}

impl LedMachine {
    /// Starts showing `state` at `now`.
    pub fn new(state: BoxState, now: Instant) -> Self {
        LedMachine { state, since: now }
    }

    /// The state shown.
    pub fn state(&self) -> BoxState {
        self.state
    }

    /// Switches to `state`; its pattern starts at `now` (lit first). Setting the
    /// same state again changes nothing (the pattern keeps its phase).
    pub fn set_state(&mut self, state: BoxState, now: Instant) -> bool {
        if state == self.state {
            return false;
        }
        self.state = state;
        self.since = now;
        true
    }

    /// Where `now` falls in the pattern: whether it is lit, and how long until
    /// the current segment ends (`None` for a solid pattern).
    fn phase(&self, now: Instant) -> (bool, Option<Duration>) {
        let segs = self.state.pattern().segments_ms;
        if segs.len() == 1 {
            return (segs[0].0, None);
        }
        let period_ms: u64 = segs.iter().map(|s| s.1).sum();
        let period = Duration::from_millis(period_ms).as_nanos();
        let into = now.saturating_duration_since(self.since).as_nanos() % period;
        let mut end = 0u128;
        for &(lit, ms) in segs {
            end += Duration::from_millis(ms).as_nanos();
            if into < end {
                return (lit, Some(Duration::from_nanos((end - into) as u64)));
            }
        }
        unreachable!("the offset is below the period")
    }

    /// The logical outputs at `now`.
    pub fn outputs(&self, now: Instant) -> LedOutputs {
        let p = self.state.pattern();
        let (lit, _) = self.phase(now);
        let dark = Color {
            red: false,
            green: false,
            blue: false,
        };
        LedOutputs {
            color: if lit { p.color } else { dark },
            tally: p.tally,
        }
    }

    /// The electrical pin levels at `now` for the pins in `pins`.
    pub fn levels(&self, now: Instant, pins: &LedPins) -> Vec<PinLevel> {
        pins.levels(self.outputs(now), self.state.pattern().color)
    }

    /// When the outputs next change, `None` while the pattern is solid.
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        self.phase(now).1.map(|d| now.max(self.since) + d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::gpio::{GpioBackend, OutputPin, RecordingGpio};

    const ALL: [BoxState; 6] = [
        BoxState::Booting,
        BoxState::Ready,
        BoxState::Live,
        BoxState::Degraded,
        BoxState::Error,
        BoxState::Stopped,
    ];

    fn rgb_pins() -> LedPins {
        LedPins {
            red: Some(17),
            green: Some(27),
            blue: Some(22),
            tally: Some(24),
            ..Default::default()
        }
    }

    /// Drives the recording backend from the machine the way the driver does: write
    /// the levels at the start, then at every poll_timeout, for `secs` of virtual time.
    fn run(state: BoxState, pins: &LedPins, secs: u64) -> (RecordingGpio, Instant) {
        let t0 = Instant::now();
        let gpio = RecordingGpio::new();
        let mut backend = gpio.clone();
        let mut outs: Vec<(u8, Box<dyn OutputPin>, Option<bool>)> = pins
            .pins()
            .into_iter()
            .map(|p| (p, backend.output(p, t0).unwrap(), None))
            .collect();
        let m = LedMachine::new(state, t0);
        let end = t0 + Duration::from_secs(secs);
        let mut now = t0;
        loop {
            for lv in m.levels(now, pins) {
                let (_, pin, last) = outs.iter_mut().find(|(p, _, _)| *p == lv.pin).unwrap();
                if *last != Some(lv.high) {
                    pin.write(lv.high, now).unwrap();
                    *last = Some(lv.high);
                }
            }
            match m.poll_timeout(now) {
                Some(t) if t <= end => {
                    assert!(t > now, "poll_timeout must move forward");
                    now = t;
                }
                _ => break,
            }
        }
        (gpio, t0)
    }

    /// The writes to `pin` as (ms since t0, level).
    fn toggles(gpio: &RecordingGpio, pin: u8, t0: Instant) -> Vec<(u64, bool)> {
        gpio.writes(pin)
            .into_iter()
            .map(|(t, l)| ((t - t0).as_millis() as u64, l))
            .collect()
    }

    /// The expected toggles of a cyclic pattern over `secs` seconds.
    fn expected(segs: &[(bool, u64)], secs: u64) -> Vec<(u64, bool)> {
        let mut v = vec![(0, segs[0].0)];
        let mut t = 0;
        'outer: loop {
            for (i, &(_, ms)) in segs.iter().enumerate() {
                t += ms;
                if t > secs * 1000 {
                    break 'outer;
                }
                v.push((t, segs[(i + 1) % segs.len()].0));
            }
        }
        v
    }

    #[test]
    fn booting_blinks_blue_slowly() {
        let pins = rgb_pins();
        let (gpio, t0) = run(BoxState::Booting, &pins, 5);
        let blue = toggles(&gpio, 22, t0);
        assert_eq!(blue.len(), 11);
        for (i, (ms, lit)) in blue.iter().enumerate() {
            assert_eq!(*ms, 500 * i as u64);
            assert_eq!(*lit, i % 2 == 0);
        }
        assert_eq!(toggles(&gpio, 17, t0), vec![(0, false)]);
        assert_eq!(toggles(&gpio, 27, t0), vec![(0, false)]);
        assert_eq!(
            toggles(&gpio, 24, t0),
            vec![(0, false)],
            "no tally while booting"
        );
    }

    #[test]
    fn ready_is_solid_green() {
        let (gpio, t0) = run(BoxState::Ready, &rgb_pins(), 6);
        assert_eq!(toggles(&gpio, 27, t0), vec![(0, true)]);
        assert_eq!(toggles(&gpio, 17, t0), vec![(0, false)]);
        assert_eq!(toggles(&gpio, 22, t0), vec![(0, false)]);
        assert_eq!(toggles(&gpio, 24, t0), vec![(0, false)]);
        assert!(gpio.level_at(27, t0 + Duration::from_secs(6)));
    }

    #[test]
    fn live_is_red_heartbeat_with_tally() {
        let (gpio, t0) = run(BoxState::Live, &rgb_pins(), 6);
        assert_eq!(
            toggles(&gpio, 17, t0),
            vec![
                (0, true),
                (1900, false),
                (2000, true),
                (3900, false),
                (4000, true),
                (5900, false),
                (6000, true)
            ]
        );
        assert_eq!(toggles(&gpio, 24, t0), vec![(0, true)], "tally on, steady");
        assert_eq!(toggles(&gpio, 27, t0), vec![(0, false)]);
    }

    #[test]
    fn degraded_blinks_amber_fast_with_tally() {
        let (gpio, t0) = run(BoxState::Degraded, &rgb_pins(), 3);
        let exp = expected(&[(true, 125), (false, 125)], 3);
        assert_eq!(exp.len(), 25);
        assert_eq!(toggles(&gpio, 17, t0), exp);
        assert_eq!(toggles(&gpio, 27, t0), exp);
        assert_eq!(toggles(&gpio, 22, t0), vec![(0, false)]);
        assert_eq!(toggles(&gpio, 24, t0), vec![(0, true)]);
    }

    #[test]
    fn error_double_blinks_red() {
        let (gpio, t0) = run(BoxState::Error, &rgb_pins(), 4);
        assert_eq!(
            toggles(&gpio, 17, t0),
            vec![
                (0, true),
                (150, false),
                (300, true),
                (450, false),
                (1500, true),
                (1650, false),
                (1800, true),
                (1950, false),
                (3000, true),
                (3150, false),
                (3300, true),
                (3450, false),
            ]
        );
        assert_eq!(toggles(&gpio, 24, t0), vec![(0, false)]);
    }

    #[test]
    fn stopped_flashes_blue_briefly() {
        let (gpio, t0) = run(BoxState::Stopped, &rgb_pins(), 5);
        assert_eq!(
            toggles(&gpio, 22, t0),
            vec![
                (0, true),
                (100, false),
                (2000, true),
                (2100, false),
                (4000, true),
                (4100, false)
            ]
        );
    }

    #[test]
    fn every_state_matches_its_table_row() {
        for s in ALL {
            let p = s.pattern();
            let (gpio, t0) = run(s, &rgb_pins(), 7);
            let pin = if p.color.blue {
                22
            } else if p.color.red {
                17
            } else {
                27
            };
            let exp = if p.segments_ms.len() == 1 {
                vec![(0, true)]
            } else {
                expected(p.segments_ms, 7)
            };
            assert_eq!(toggles(&gpio, pin, t0), exp, "{s:?}");
            assert_eq!(toggles(&gpio, 24, t0), vec![(0, p.tally)], "{s:?}");
        }
    }

    #[test]
    fn single_led_shows_every_pattern() {
        let pins = LedPins {
            green: Some(27),
            ..Default::default()
        };
        let (gpio, t0) = run(BoxState::Booting, &pins, 2);
        assert_eq!(
            toggles(&gpio, 27, t0),
            expected(&[(true, 500), (false, 500)], 2)
        );
        let (gpio, t0) = run(BoxState::Error, &pins, 2);
        assert_eq!(
            toggles(&gpio, 27, t0),
            expected(BoxState::Error.pattern().segments_ms, 2)
        );
        // A colour with a wired channel stays on that channel only.
        let pins = LedPins {
            red: Some(17),
            green: Some(27),
            ..Default::default()
        };
        let (gpio, t0) = run(BoxState::Live, &pins, 1);
        assert_eq!(toggles(&gpio, 27, t0), vec![(0, false)]);
        // Blue (booting) with only red and green wired: shown on both.
        let (gpio, t0) = run(BoxState::Booting, &pins, 1);
        assert_eq!(toggles(&gpio, 17, t0), toggles(&gpio, 27, t0));
        assert_eq!(toggles(&gpio, 17, t0).len(), 3);
    }

    #[test]
    fn active_low_inverts() {
        let pins = LedPins {
            green: Some(27),
            tally: Some(24),
            leds_active_low: true,
            tally_active_low: true,
            ..Default::default()
        };
        let t0 = Instant::now();
        let m = LedMachine::new(BoxState::Ready, t0);
        assert_eq!(
            m.levels(t0, &pins),
            vec![
                PinLevel {
                    pin: 27,
                    high: false
                },
                PinLevel {
                    pin: 24,
                    high: true
                }
            ]
        );
        let m = LedMachine::new(BoxState::Live, t0);
        assert_eq!(
            m.levels(t0 + Duration::from_millis(1950), &pins),
            vec![
                PinLevel {
                    pin: 27,
                    high: true
                },
                PinLevel {
                    pin: 24,
                    high: false
                }
            ]
        );
    }

    #[test]
    fn state_change_restarts_the_pattern() {
        let t0 = Instant::now();
        let mut m = LedMachine::new(BoxState::Booting, t0);
        let t1 = t0 + Duration::from_millis(730);
        assert!(!m.outputs(t1).color.blue);
        assert_eq!(m.poll_timeout(t1), Some(t0 + Duration::from_millis(1000)));
        assert!(
            !m.set_state(BoxState::Booting, t1),
            "same state keeps its phase"
        );
        assert!(m.set_state(BoxState::Degraded, t1));
        assert!(m.outputs(t1).color.red, "a new pattern starts lit");
        assert_eq!(m.poll_timeout(t1), Some(t1 + Duration::from_millis(125)));
        assert!(m.set_state(BoxState::Ready, t1));
        assert_eq!(m.poll_timeout(t1 + Duration::from_secs(100)), None);
        assert_eq!(m.state(), BoxState::Ready);
    }
}
