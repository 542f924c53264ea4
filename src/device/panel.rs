//! The front panel driver: the IO shell that runs [`LedMachine`] and
//! [`ButtonMachine`] against a [`GpioBackend`].
//!
//! One tokio task. It writes a pin only when its level changes, wakes at the LED
//! pattern's next change, at the button's debounce / long-press deadlines, on a
//! new [`BoxState`], on an input edge (backends with edge events, e.g. `rppal`) or
//! every `poll_interval_ms` to sample the button (backends without). Button events
//! go to `events_tx` with `try_send`: a full channel drops the event with a
//! warning rather than stall the LEDs. On shutdown every LED and the tally are
//! switched off.
//!
//! Time is `tokio::time::Instant`, so the driver runs in virtual time under
//! `tokio::time::pause()`; the backend sees it converted to `std::time::Instant`.

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::button::{ButtonEvent, ButtonMachine, ButtonTimings};
use super::gpio::{open_backend, GpioBackend, GpioConfig, GpioError, InputPin, OutputPin, Pull};
use super::leds::{BoxState, LedMachine, LedPins, PinLevel};

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

struct Output {
    pin: u8,
    out: Box<dyn OutputPin>,
    last: Option<bool>,
}

struct Button {
    pin: u8,
    input: Box<dyn InputPin>,
    machine: ButtonMachine,
    active_low: bool,
    /// No edge events: sample every poll interval.
    polled: bool,
}

/// Starts the panel task. `state_rx` says what to show (the LED patterns of
/// [`super::leds`]); presses are sent on `events_tx`. The task ends when
/// `shutdown` turns true or its sender is dropped. Pins that cannot be claimed are
/// skipped with a warning; the rest of the panel still runs.
pub fn spawn_panel(
    backend: Box<dyn GpioBackend>,
    cfg: GpioConfig,
    state_rx: watch::Receiver<BoxState>,
    events_tx: mpsc::Sender<ButtonEvent>,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(run(backend, cfg, state_rx, events_tx, shutdown))
}

/// Validates `cfg`, opens its backend ([`open_backend`]) and starts the panel.
/// `Ok(None)`: no panel configured (`backend = "none"`, or `"auto"` without pins).
pub fn start_panel(
    cfg: &GpioConfig,
    state_rx: watch::Receiver<BoxState>,
    events_tx: mpsc::Sender<ButtonEvent>,
    shutdown: watch::Receiver<bool>,
) -> Result<Option<JoinHandle<()>>, GpioError> {
    cfg.validate().map_err(GpioError)?;
    let Some(backend) = open_backend(cfg)? else {
        return Ok(None);
    };
    Ok(Some(spawn_panel(
        backend,
        cfg.clone(),
        state_rx,
        events_tx,
        shutdown,
    )))
}

fn write_levels(outputs: &mut [Output], levels: &[PinLevel], now: Instant) {
    for lv in levels {
        let Some(o) = outputs.iter_mut().find(|o| o.pin == lv.pin) else {
            continue;
        };
        if o.last == Some(lv.high) {
            continue;
        }
        match o.out.write(lv.high, now) {
            Ok(()) => o.last = Some(lv.high),
            Err(e) => tracing::warn!(pin = o.pin, error = %e, "cannot drive panel pin"),
        }
    }
}

fn send(events_tx: &mpsc::Sender<ButtonEvent>, ev: Option<ButtonEvent>) {
    let Some(ev) = ev else { return };
    tracing::info!(event = ?ev, "panel button");
    match events_tx.try_send(ev) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => {
            tracing::warn!(event = ?ev, "button event dropped: nobody is reading them fast enough")
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            tracing::debug!(event = ?ev, "button event dropped: no receiver")
        }
    }
}

async fn run(
    mut backend: Box<dyn GpioBackend>,
    cfg: GpioConfig,
    mut state_rx: watch::Receiver<BoxState>,
    events_tx: mpsc::Sender<ButtonEvent>,
    mut shutdown: watch::Receiver<bool>,
) {
    let t = now();
    let pins = LedPins::from_config(&cfg);
    let mut outputs: Vec<Output> = Vec::new();
    for pin in pins.pins() {
        match backend.output(pin, t) {
            Ok(out) => outputs.push(Output {
                pin,
                out,
                last: None,
            }),
            Err(e) => tracing::warn!(pin, error = %e, "panel output pin unavailable; skipped"),
        }
    }

    let (edge_tx, mut edge_rx) = mpsc::unbounded_channel();
    let mut button: Option<Button> = None;
    if let Some(pin) = cfg.button {
        let pull = if cfg.button_active_low {
            Pull::Up
        } else {
            Pull::Down
        };
        match backend.input(pin, pull, t) {
            Ok(mut input) => {
                let polled = match input.subscribe_edges(edge_tx.clone(), t) {
                    Ok(edges) => !edges,
                    Err(e) => {
                        tracing::warn!(pin, error = %e, "no edge events for the button; polling it");
                        true
                    }
                };
                let pressed = match input.read(t) {
                    Ok(high) => high != cfg.button_active_low,
                    Err(e) => {
                        tracing::warn!(pin, error = %e, "cannot read the button");
                        false
                    }
                };
                let timings = ButtonTimings {
                    debounce: cfg.debounce(),
                    long_press: cfg.long_press(),
                };
                let machine = ButtonMachine::new(timings, pressed, t);
                button = Some(Button {
                    pin,
                    input,
                    machine,
                    active_low: cfg.button_active_low,
                    polled,
                });
            }
            Err(e) => tracing::warn!(pin, error = %e, "panel button unavailable; skipped"),
        }
    }
    let has_edges = button.as_ref().is_some_and(|b| !b.polled);
    tracing::info!(
        backend = backend.name(),
        outputs = outputs.len(),
        button = button.is_some(),
        button_polled = button.as_ref().is_some_and(|b| b.polled),
        "front panel started"
    );

    let poll_every = cfg.poll_interval().max(Duration::from_millis(1));
    let mut leds = LedMachine::new(*state_rx.borrow_and_update(), t);
    let mut state_open = true;
    let mut next_sample = t + poll_every;
    loop {
        let t = now();
        if let Some(b) = button.as_mut() {
            if b.polled && t >= next_sample {
                match b.input.read(t) {
                    Ok(high) => send(&events_tx, b.machine.on_level(high != b.active_low, t)),
                    Err(e) => tracing::warn!(pin = b.pin, error = %e, "cannot read the button"),
                }
                next_sample = t + poll_every;
            }
            send(&events_tx, b.machine.poll(t));
        }
        write_levels(&mut outputs, &leds.levels(t, &pins), t);

        let mut deadline = leds.poll_timeout(t);
        if let Some(b) = &button {
            for d in [b.machine.poll_timeout(), b.polled.then_some(next_sample)]
                .into_iter()
                .flatten()
            {
                deadline = Some(deadline.map_or(d, |x| x.min(d)));
            }
        }
        let wake = match deadline {
            Some(d) => tokio::time::Instant::from_std(d),
            None => tokio::time::Instant::now() + Duration::from_secs(3600),
        };

        tokio::select! {
            r = shutdown.changed() => {
                if r.is_err() || *shutdown.borrow() {
                    break;
                }
            }
            r = state_rx.changed(), if state_open => match r {
                Ok(()) => {
                    let s = *state_rx.borrow_and_update();
                    if leds.set_state(s, now()) {
                        tracing::debug!(state = ?s, "panel state");
                    }
                }
                // The publisher is gone: keep showing the last state.
                Err(_) => state_open = false,
            },
            Some(edge) = edge_rx.recv(), if has_edges => {
                if let Some(b) = button.as_mut() {
                    send(&events_tx, b.machine.on_level(edge.high != b.active_low, now()));
                }
            }
            _ = tokio::time::sleep_until(wake) => {}
        }
    }

    // Dark panel, tally off.
    let t = now();
    let off: Vec<PinLevel> = outputs
        .iter()
        .map(|o| {
            let active_low = if Some(o.pin) == pins.tally {
                pins.tally_active_low
            } else {
                pins.leds_active_low
            };
            PinLevel {
                pin: o.pin,
                high: active_low,
            }
        })
        .collect();
    write_levels(&mut outputs, &off, t);
    drop(edge_tx);
    tracing::info!("front panel stopped");
}
