//! GPIO backends for the front panel: output pins (LEDs, tally) and input pins (the
//! button).
//!
//! The panel logic ([`super::leds`], [`super::button`]) never touches a pin; the
//! driver ([`super::panel`]) opens pins through a [`GpioBackend`]:
//!
//! - [`RppalGpio`]: the Raspberry Pi's GPIO via the `rppal` crate (`/dev/gpiomem`
//!   and the GPIO character device). It compiles on any Linux target but only works
//!   on a Raspberry Pi; elsewhere [`RppalGpio::new`] fails. In this project's CI it
//!   is only ever compiled, never run.
//! - [`RecordingGpio`]: keeps every call with the (possibly virtual) time it was
//!   made at and lets a test inject input levels. Used by the tests and on machines
//!   without GPIO, where `backend = "auto"` falls back to it with a warning, so the
//!   rest of the box behaves the same with or without a panel.
//!
//! Every call takes `now`: the recording backend stores it, the real one ignores it.
//! Levels are electrical (`true` = high); active-low wiring is applied by the
//! panel logic, not here.
//!
//! The pin map is [`GpioConfig`], meant for a `[gpio]` table in `edge.toml`:
//!
//! ```toml
//! [gpio]
//! backend = "auto"          # "auto" | "rppal" | "record" | "none"
//! led_red = 17              # one RGB LED, BCM numbering; any channel may be left out
//! led_green = 27
//! led_blue = 22
//! leds_active_low = false   # true for a common-anode LED
//! button = 23
//! button_active_low = true  # button to ground, internal pull-up (the default)
//! button_debounce_ms = 30
//! button_long_press_ms = 2000
//! tally = 24                # on while live
//! tally_active_low = false
//! poll_interval_ms = 5      # input polling when the backend has no edge events
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::mpsc;

/// Which GPIO backend the panel uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// `rppal` when the Raspberry Pi GPIO opens, otherwise the recording backend
    /// (with a warning). With no pin configured the panel is not started at all.
    #[default]
    Auto,
    /// `rppal` only: failing to open it is an error.
    Rppal,
    /// The recording backend: nothing is driven (for tests and bench setups).
    Record,
    /// No panel.
    None,
}

/// Front panel pin map (BCM GPIO numbers) and timings: the `[gpio]` table.
///
/// The box has one RGB status LED; each of its channels is optional. A panel with
/// a single plain LED sets just one channel (say `led_green`): every pattern then
/// shows on that LED (see [`super::leds`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GpioConfig {
    /// `"auto"` (default), `"rppal"`, `"record"` or `"none"`.
    pub backend: BackendKind,
    /// Red channel of the status LED.
    pub led_red: Option<u8>,
    /// Green channel of the status LED.
    pub led_green: Option<u8>,
    /// Blue channel of the status LED.
    pub led_blue: Option<u8>,
    /// LED channels are lit by driving the pin low (common-anode LED). Default false.
    pub leds_active_low: bool,
    /// Push button (start/stop; hold to stop and hold).
    pub button: Option<u8>,
    /// The button pulls the pin low when pressed (internal pull-up is enabled).
    /// Default true. When false the internal pull-down is enabled instead.
    pub button_active_low: bool,
    /// A level change must last this long to count (default 30 ms).
    pub button_debounce_ms: u64,
    /// A press this long is a long press: stop and hold (default 2000 ms).
    pub button_long_press_ms: u64,
    /// Tally output (lamp or relay), on while the stream is live.
    pub tally: Option<u8>,
    /// The tally is on when the pin is low. Default false.
    pub tally_active_low: bool,
    /// Input polling period when the backend gives no edge events (default 5 ms).
    pub poll_interval_ms: u64,
}

impl Default for GpioConfig {
    fn default() -> Self {
        GpioConfig {
            backend: BackendKind::Auto,
            led_red: None,
            led_green: None,
            led_blue: None,
            leds_active_low: false,
            button: None,
            button_active_low: true,
            button_debounce_ms: 30,
            button_long_press_ms: 2000,
            tally: None,
            tally_active_low: false,
            poll_interval_ms: 5,
        }
    }
}

impl GpioConfig {
    /// Every configured pin, for duplicate checks and logs.
    pub fn pins(&self) -> Vec<(&'static str, u8)> {
        [
            ("led_red", self.led_red),
            ("led_green", self.led_green),
            ("led_blue", self.led_blue),
            ("button", self.button),
            ("tally", self.tally),
        ]
        .into_iter()
        .filter_map(|(name, pin)| pin.map(|p| (name, p)))
        .collect()
    }

    /// Checks what serde cannot: no pin used twice, pins within the BCM range
    /// (0..=53), non-zero timings, and a long press longer than the debounce.
    pub fn validate(&self) -> Result<(), String> {
        let pins = self.pins();
        for (i, (name, pin)) in pins.iter().enumerate() {
            if *pin > 53 {
                return Err(format!(
                    "gpio.{name} = {pin}: not a BCM GPIO number (0..=53)"
                ));
            }
            if let Some((other, _)) = pins[..i].iter().find(|(_, p)| p == pin) {
                return Err(format!("gpio.{name} = {pin}: already used by gpio.{other}"));
            }
        }
        if self.button_debounce_ms == 0 || self.poll_interval_ms == 0 {
            return Err("gpio: button_debounce_ms and poll_interval_ms must be > 0".into());
        }
        if self.button_long_press_ms <= self.button_debounce_ms {
            return Err("gpio: button_long_press_ms must be longer than button_debounce_ms".into());
        }
        Ok(())
    }

    /// Debounce as a duration.
    pub fn debounce(&self) -> Duration {
        Duration::from_millis(self.button_debounce_ms)
    }

    /// Long-press threshold as a duration.
    pub fn long_press(&self) -> Duration {
        Duration::from_millis(self.button_long_press_ms)
    }

    /// Input polling period as a duration.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }
}

/// A GPIO failure: the backend cannot be opened or a pin cannot be claimed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("gpio: {0}")]
pub struct GpioError(pub String);

/// Internal bias of an input pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pull {
    /// No bias (external resistor).
    None,
    /// Pull-up: the pin reads high when nothing drives it.
    Up,
    /// Pull-down: the pin reads low when nothing drives it.
    Down,
}

/// A level change on an input pin, as reported by a backend with edge events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    /// The level after the change (`true` = high).
    pub high: bool,
}

/// A pin driven by the box.
pub trait OutputPin: Send {
    /// Drives the pin high (`true`) or low.
    fn write(&mut self, high: bool, now: Instant) -> Result<(), GpioError>;
}

/// A pin read by the box.
pub trait InputPin: Send {
    /// The current level (`true` = high).
    fn read(&mut self, now: Instant) -> Result<bool, GpioError>;

    /// Asks for edge events on both edges, sent to `tx` from whatever thread the
    /// backend uses. `Ok(false)`: this backend has none, poll [`InputPin::read`].
    fn subscribe_edges(
        &mut self,
        tx: mpsc::UnboundedSender<Edge>,
        now: Instant,
    ) -> Result<bool, GpioError>;
}

/// A source of pins.
pub trait GpioBackend: Send {
    /// For logs: `"rppal"` or `"record"`.
    fn name(&self) -> &'static str;
    /// Claims `pin` as an output, initially low.
    fn output(&mut self, pin: u8, now: Instant) -> Result<Box<dyn OutputPin>, GpioError>;
    /// Claims `pin` as an input with the given bias.
    fn input(&mut self, pin: u8, pull: Pull, now: Instant) -> Result<Box<dyn InputPin>, GpioError>;
}

/// Opens the backend `cfg.backend` asks for. `Ok(None)`: no panel (`"none"`, or
/// `"auto"` with no pin configured). `"auto"` falls back to [`RecordingGpio`] with
/// a warning when the Raspberry Pi GPIO cannot be opened.
pub fn open_backend(cfg: &GpioConfig) -> Result<Option<Box<dyn GpioBackend>>, GpioError> {
    match cfg.backend {
        BackendKind::None => Ok(None),
        BackendKind::Auto if cfg.pins().is_empty() => Ok(None),
        BackendKind::Record => Ok(Some(Box::new(RecordingGpio::new()))),
        BackendKind::Rppal => Ok(Some(Box::new(RppalGpio::new()?))),
        BackendKind::Auto => match RppalGpio::new() {
            Ok(g) => Ok(Some(Box::new(g))),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "no Raspberry Pi GPIO here; the front panel runs on the recording backend (LEDs and button do nothing)"
                );
                Ok(Some(Box::new(RecordingGpio::new())))
            }
        },
    }
}

// ---------------------------------------------------------------------------
// rppal

/// Raspberry Pi GPIO through `rppal`.
///
/// Compiles on any Linux target; works only on a Raspberry Pi (BCM283x/BCM2711/
/// BCM2712 with `/dev/gpiomem` and `/dev/gpiochipN`). Not exercised by the tests.
/// Input pins deliver edge events through `rppal`'s asynchronous interrupts (a
/// thread of its own per pin), so the driver does not need to poll them.
pub struct RppalGpio {
    gpio: rppal::gpio::Gpio,
}

impl RppalGpio {
    /// Opens the GPIO peripheral. Fails on anything that is not a Raspberry Pi.
    pub fn new() -> Result<Self, GpioError> {
        rppal::gpio::Gpio::new()
            .map(|gpio| RppalGpio { gpio })
            .map_err(|e| GpioError(format!("cannot open the Raspberry Pi GPIO: {e}")))
    }
}

impl GpioBackend for RppalGpio {
    fn name(&self) -> &'static str {
        "rppal"
    }

    fn output(&mut self, pin: u8, _now: Instant) -> Result<Box<dyn OutputPin>, GpioError> {
        let p = self
            .gpio
            .get(pin)
            .map_err(|e| GpioError(format!("pin {pin}: {e}")))?;
        Ok(Box::new(RppalOutput(p.into_output_low())))
    }

    fn input(
        &mut self,
        pin: u8,
        pull: Pull,
        _now: Instant,
    ) -> Result<Box<dyn InputPin>, GpioError> {
        let p = self
            .gpio
            .get(pin)
            .map_err(|e| GpioError(format!("pin {pin}: {e}")))?;
        let input = match pull {
            Pull::None => p.into_input(),
            Pull::Up => p.into_input_pullup(),
            Pull::Down => p.into_input_pulldown(),
        };
        Ok(Box::new(RppalInput(input)))
    }
}

struct RppalOutput(rppal::gpio::OutputPin);

impl OutputPin for RppalOutput {
    fn write(&mut self, high: bool, _now: Instant) -> Result<(), GpioError> {
        if high {
            self.0.set_high();
        } else {
            self.0.set_low();
        }
        Ok(())
    }
}

struct RppalInput(rppal::gpio::InputPin);

impl InputPin for RppalInput {
    fn read(&mut self, _now: Instant) -> Result<bool, GpioError> {
        Ok(self.0.is_high())
    }

    fn subscribe_edges(
        &mut self,
        tx: mpsc::UnboundedSender<Edge>,
        _now: Instant,
    ) -> Result<bool, GpioError> {
        let pin = self.0.pin();
        self.0
            .set_async_interrupt(rppal::gpio::Trigger::Both, None, move |ev| {
                let high = ev.trigger == rppal::gpio::Trigger::RisingEdge;
                let _ = tx.send(Edge { high });
            })
            .map_err(|e| GpioError(format!("pin {pin}: cannot watch edges: {e}")))?;
        Ok(true)
    }
}

// ---------------------------------------------------------------------------
// recording backend

/// What was done to a pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Claimed as an output (initially low).
    Output,
    /// Claimed as an input.
    Input(Pull),
    /// Driven to this level.
    Write(bool),
    /// Read, with the level returned.
    Read(bool),
    /// Edge events were asked for.
    Subscribe,
}

/// One call on the recording backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    /// The `now` the caller passed.
    pub at: Instant,
    /// BCM pin number.
    pub pin: u8,
    /// What was done.
    pub op: Op,
}

#[derive(Default)]
struct Recorder {
    calls: Vec<Call>,
    /// Input levels set by the test; unset pins read their pull level.
    inputs: HashMap<u8, bool>,
    pulls: HashMap<u8, Pull>,
    subscribers: HashMap<u8, mpsc::UnboundedSender<Edge>>,
}

impl Recorder {
    fn level(&self, pin: u8) -> bool {
        match self.inputs.get(&pin) {
            Some(l) => *l,
            None => self.pulls.get(&pin) == Some(&Pull::Up),
        }
    }
}

/// Backend that drives nothing and records everything; cloning shares the record,
/// so a test keeps a clone while the driver owns the backend.
#[derive(Clone, Default)]
pub struct RecordingGpio {
    rec: Arc<Mutex<Recorder>>,
    edges: bool,
}

impl fmt::Debug for RecordingGpio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordingGpio")
            .field("edges", &self.edges)
            .finish_non_exhaustive()
    }
}

impl RecordingGpio {
    /// Input pins without edge events: the driver polls them.
    pub fn new() -> Self {
        Self::default()
    }

    /// Input pins that also report edges (like `rppal`), for testing that path.
    pub fn with_edges() -> Self {
        RecordingGpio {
            edges: true,
            ..Self::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recorder> {
        // A test that panicked while holding the lock has already failed.
        self.rec.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the level an input pin reads from now on, and reports an edge to a
    /// subscriber if the level changed.
    pub fn set_input(&self, pin: u8, high: bool) {
        let mut r = self.lock();
        let before = r.level(pin);
        r.inputs.insert(pin, high);
        if before != high {
            if let Some(tx) = r.subscribers.get(&pin) {
                let _ = tx.send(Edge { high });
            }
        }
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The writes to `pin`, in order: `(at, level)`.
    pub fn writes(&self, pin: u8) -> Vec<(Instant, bool)> {
        self.lock()
            .calls
            .iter()
            .filter_map(|c| match c.op {
                Op::Write(l) if c.pin == pin => Some((c.at, l)),
                _ => None,
            })
            .collect()
    }

    /// The level `pin` was last driven to at or before `at` (low if never driven).
    pub fn level_at(&self, pin: u8, at: Instant) -> bool {
        self.writes(pin)
            .into_iter()
            .take_while(|(t, _)| *t <= at)
            .last()
            .is_some_and(|(_, l)| l)
    }

    /// Forgets the calls so far (inputs and subscriptions stay).
    pub fn clear(&self) {
        self.lock().calls.clear();
    }

    fn push(&self, at: Instant, pin: u8, op: Op) {
        self.lock().calls.push(Call { at, pin, op });
    }
}

impl GpioBackend for RecordingGpio {
    fn name(&self) -> &'static str {
        "record"
    }

    fn output(&mut self, pin: u8, now: Instant) -> Result<Box<dyn OutputPin>, GpioError> {
        self.push(now, pin, Op::Output);
        Ok(Box::new(RecordedPin {
            gpio: self.clone(),
            pin,
        }))
    }

    fn input(&mut self, pin: u8, pull: Pull, now: Instant) -> Result<Box<dyn InputPin>, GpioError> {
        self.lock().pulls.insert(pin, pull);
        self.push(now, pin, Op::Input(pull));
        Ok(Box::new(RecordedPin {
            gpio: self.clone(),
            pin,
        }))
    }
}

struct RecordedPin {
    gpio: RecordingGpio,
    pin: u8,
}

impl OutputPin for RecordedPin {
    fn write(&mut self, high: bool, now: Instant) -> Result<(), GpioError> {
        self.gpio.push(now, self.pin, Op::Write(high));
        Ok(())
    }
}

impl InputPin for RecordedPin {
    fn read(&mut self, now: Instant) -> Result<bool, GpioError> {
        let level = self.gpio.lock().level(self.pin);
        self.gpio.push(now, self.pin, Op::Read(level));
        Ok(level)
    }

    fn subscribe_edges(
        &mut self,
        tx: mpsc::UnboundedSender<Edge>,
        now: Instant,
    ) -> Result<bool, GpioError> {
        if !self.gpio.edges {
            return Ok(false);
        }
        self.gpio.lock().subscribers.insert(self.pin, tx);
        self.gpio.push(now, self.pin, Op::Subscribe);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_toml_keys() {
        let c: GpioConfig = toml::from_str("").unwrap();
        assert_eq!(c, GpioConfig::default());
        assert_eq!(c.backend, BackendKind::Auto);
        assert!(c.button_active_low);
        assert_eq!(c.debounce(), Duration::from_millis(30));
        assert_eq!(c.long_press(), Duration::from_secs(2));

        let c: GpioConfig = toml::from_str(
            r#"
            backend = "record"
            led_red = 17
            led_green = 27
            led_blue = 22
            leds_active_low = true
            button = 23
            button_active_low = false
            button_debounce_ms = 20
            button_long_press_ms = 3000
            tally = 24
            tally_active_low = true
            poll_interval_ms = 2
            "#,
        )
        .unwrap();
        assert_eq!(c.backend, BackendKind::Record);
        assert_eq!(c.pins().len(), 5);
        assert!(c.validate().is_ok());

        assert!(toml::from_str::<GpioConfig>("led_status = 3").is_err());
        assert!(toml::from_str::<GpioConfig>("backend = \"sysfs\"").is_err());
    }

    #[test]
    fn validate_rejects_duplicates_and_bad_timings() {
        let c = GpioConfig {
            led_red: Some(4),
            button: Some(4),
            ..Default::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .contains("already used by gpio.led_red"));
        let c = GpioConfig {
            tally: Some(60),
            ..Default::default()
        };
        assert!(c.validate().is_err());
        let c = GpioConfig {
            button_long_press_ms: 10,
            ..Default::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn open_backend_choices() {
        let none = GpioConfig {
            backend: BackendKind::None,
            led_red: Some(1),
            ..Default::default()
        };
        assert!(open_backend(&none).unwrap().is_none());
        // auto with no pin: no panel, and no attempt to open anything.
        assert!(open_backend(&GpioConfig::default()).unwrap().is_none());
        let rec = GpioConfig {
            backend: BackendKind::Record,
            ..Default::default()
        };
        assert_eq!(open_backend(&rec).unwrap().unwrap().name(), "record");
        // This machine is not a Raspberry Pi (if it were, rppal would open).
        let auto = GpioConfig {
            led_green: Some(27),
            ..Default::default()
        };
        let b = open_backend(&auto).unwrap().unwrap();
        if RppalGpio::new().is_err() {
            assert_eq!(b.name(), "record");
        }
    }

    #[test]
    fn recording_backend_records_and_injects() {
        let t0 = Instant::now();
        let gpio = RecordingGpio::new();
        let mut backend: Box<dyn GpioBackend> = Box::new(gpio.clone());
        let mut led = backend.output(17, t0).unwrap();
        let mut button = backend.input(23, Pull::Up, t0).unwrap();
        let (tx, _rx) = mpsc::unbounded_channel();
        assert!(!button.subscribe_edges(tx, t0).unwrap());

        led.write(true, t0 + Duration::from_millis(10)).unwrap();
        led.write(false, t0 + Duration::from_millis(20)).unwrap();
        assert!(
            button.read(t0 + Duration::from_millis(30)).unwrap(),
            "pull-up reads high"
        );
        gpio.set_input(23, false);
        assert!(!button.read(t0 + Duration::from_millis(40)).unwrap());

        assert_eq!(
            gpio.writes(17),
            vec![
                (t0 + Duration::from_millis(10), true),
                (t0 + Duration::from_millis(20), false)
            ]
        );
        assert!(gpio.level_at(17, t0 + Duration::from_millis(15)));
        assert!(!gpio.level_at(17, t0 + Duration::from_millis(25)));
        let calls = gpio.calls();
        assert_eq!(calls.len(), 6);
        assert_eq!(
            calls[1],
            Call {
                at: t0,
                pin: 23,
                op: Op::Input(Pull::Up)
            }
        );
        assert_eq!(calls[5].op, Op::Read(false));
    }

    #[test]
    fn recording_backend_edges() {
        let t0 = Instant::now();
        let gpio = RecordingGpio::with_edges();
        let mut backend = gpio.clone();
        let mut button = backend.input(5, Pull::Down, t0).unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        assert!(button.subscribe_edges(tx, t0).unwrap());
        gpio.set_input(5, false); // no change from the pull-down level: no edge
        gpio.set_input(5, true);
        gpio.set_input(5, true);
        gpio.set_input(5, false);
        assert_eq!(rx.try_recv().unwrap(), Edge { high: true });
        assert_eq!(rx.try_recv().unwrap(), Edge { high: false });
        assert!(rx.try_recv().is_err());
    }
}
