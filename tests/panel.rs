//! The front panel driver against the recording backend, in virtual time
//! (`tokio::time::pause`): LED toggles at the pattern's times, state changes, button
//! presses (polled and edge-driven) and a dark panel on shutdown.

use std::time::{Duration, Instant};

use braid::device::button::ButtonEvent;
use braid::device::gpio::{BackendKind, GpioConfig, Op, RecordingGpio};
use braid::device::leds::BoxState;
use braid::device::panel::spawn_panel;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::sleep;

const RED: u8 = 17;
const GREEN: u8 = 27;
const BLUE: u8 = 22;
const BUTTON: u8 = 23;
const TALLY: u8 = 24;

fn cfg() -> GpioConfig {
    GpioConfig {
        backend: BackendKind::Record,
        led_red: Some(RED),
        led_green: Some(GREEN),
        led_blue: Some(BLUE),
        button: Some(BUTTON),
        tally: Some(TALLY),
        ..Default::default()
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn vnow() -> Instant {
    tokio::time::Instant::now().into_std()
}

struct Panel {
    gpio: RecordingGpio,
    t0: Instant,
    state: watch::Sender<BoxState>,
    events: mpsc::Receiver<ButtonEvent>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

fn start(gpio: RecordingGpio, cfg: GpioConfig) -> Panel {
    let (state, state_rx) = watch::channel(BoxState::Booting);
    let (ev_tx, events) = mpsc::channel(8);
    let (shutdown, sd_rx) = watch::channel(false);
    let t0 = vnow();
    let task = spawn_panel(Box::new(gpio.clone()), cfg, state_rx, ev_tx, sd_rx);
    Panel {
        gpio,
        t0,
        state,
        events,
        shutdown,
        task,
    }
}

impl Panel {
    async fn stop(self) -> (RecordingGpio, Instant) {
        self.shutdown.send(true).unwrap();
        self.task.await.unwrap();
        (self.gpio, self.t0)
    }

    fn at(&self) -> u64 {
        (vnow() - self.t0).as_millis() as u64
    }
}

/// Writes to `pin` as (ms since t0, level).
fn toggles(gpio: &RecordingGpio, pin: u8, t0: Instant) -> Vec<(u64, bool)> {
    gpio.writes(pin)
        .into_iter()
        .map(|(t, l)| ((t - t0).as_millis() as u64, l))
        .collect()
}

/// Same levels in the same order, each within 2 ms of the expected time (the
/// timer wheel rounds wake-ups to whole milliseconds).
fn assert_toggles(actual: &[(u64, bool)], expected: &[(u64, bool)], what: &str) {
    assert_eq!(
        actual.len(),
        expected.len(),
        "{what}: {actual:?} vs {expected:?}"
    );
    for (a, e) in actual.iter().zip(expected) {
        assert_eq!(a.1, e.1, "{what}: {actual:?} vs {expected:?}");
        assert!(a.0.abs_diff(e.0) <= 2, "{what}: {actual:?} vs {expected:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn leds_follow_the_box_state_in_virtual_time() {
    let p = start(RecordingGpio::new(), cfg());
    sleep(ms(2250)).await;
    p.state.send(BoxState::Live).unwrap();
    sleep(ms(4050)).await;
    p.state.send(BoxState::Degraded).unwrap();
    sleep(ms(1060)).await;
    let (gpio, t0) = p.stop().await;

    // Booting: blue 500/500 from 0, cut at 2250 by Live.
    assert_toggles(
        &toggles(&gpio, BLUE, t0),
        &[
            (0, true),
            (500, false),
            (1000, true),
            (1500, false),
            (2000, true),
            (2250, false),
        ],
        "blue",
    );
    // Live from 2250: red heartbeat 1900 on / 100 off; Degraded from 6300 keeps red
    // lit (no write) and blinks it 125/125 with green; off at shutdown (7360, in
    // the lit half-period that starts at 7300).
    let mut red = vec![
        (0, false),
        (2250, true),
        (4150, false),
        (4250, true),
        (6150, false),
    ];
    red.push((6250, true));
    let mut green = vec![(0, false), (6300, true)];
    let mut t = 6300;
    let mut lit = true;
    while t + 125 <= 7360 {
        t += 125;
        lit = !lit;
        green.push((t, lit));
        red.push((t, lit));
    }
    assert!(lit, "8 half-periods: lit at 7300");
    green.push((7360, false));
    red.push((7360, false));
    assert_toggles(&toggles(&gpio, RED, t0), &red, "red");
    assert_toggles(&toggles(&gpio, GREEN, t0), &green, "green");
    // Tally: on from Live, through Degraded, off at shutdown.
    assert_toggles(
        &toggles(&gpio, TALLY, t0),
        &[(0, false), (2250, true), (7360, false)],
        "tally",
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_darkens_an_active_low_panel() {
    let cfg = GpioConfig {
        leds_active_low: true,
        tally_active_low: true,
        button: None,
        ..cfg()
    };
    let p = start(RecordingGpio::new(), cfg);
    p.state.send(BoxState::Ready).unwrap();
    sleep(ms(300)).await;
    let (gpio, t0) = p.stop().await;
    // Ready (sent before the task first ran): green lit = driven low; everything
    // high (dark) after shutdown.
    assert_toggles(
        &toggles(&gpio, GREEN, t0),
        &[(0, false), (300, true)],
        "green",
    );
    for pin in [RED, BLUE, TALLY] {
        assert!(
            gpio.level_at(pin, t0 + ms(300)),
            "pin {pin} ends high (off)"
        );
    }
}

/// Presses the (active-low) button with contact bounce: a few flips 1-3 ms apart.
async fn bouncy(gpio: &RecordingGpio, pressed: bool) {
    for (i, wait) in [2u64, 1, 3, 3].into_iter().enumerate() {
        gpio.set_input(BUTTON, if i % 2 == 0 { !pressed } else { pressed });
        sleep(ms(wait)).await;
    }
    gpio.set_input(BUTTON, !pressed);
}

async fn button_session(gpio: RecordingGpio, edges: bool) {
    let mut p = start(gpio.clone(), cfg());
    sleep(ms(100)).await;

    // A 10 ms glitch: nothing.
    gpio.set_input(BUTTON, false);
    sleep(ms(10)).await;
    gpio.set_input(BUTTON, true);
    sleep(ms(500)).await;
    assert!(p.events.try_recv().is_err(), "a glitch is not a press");

    // Short press, bouncy both ways.
    bouncy(&gpio, true).await;
    sleep(ms(300)).await;
    bouncy(&gpio, false).await;
    let released = p.at();
    let ev = p.events.recv().await.unwrap();
    let after = p.at() - released;
    assert_eq!(ev, ButtonEvent::Toggle);
    if edges {
        assert_eq!(
            after, 30,
            "edge-driven: exactly the debounce after the last bounce"
        );
    } else {
        assert!(
            (30..=40).contains(&after),
            "polled: debounce plus up to a poll period: {after}"
        );
    }
    sleep(ms(500)).await;
    assert!(p.events.try_recv().is_err(), "one event per press");

    // Long press: the event comes while the button is still down.
    bouncy(&gpio, true).await;
    let pressed = p.at();
    let ev = p.events.recv().await.unwrap();
    let held = p.at() - pressed;
    assert_eq!(ev, ButtonEvent::StopAndHold);
    if edges {
        assert_eq!(held, 2000);
    } else {
        // Timed from the last change a sample saw: up to a poll period either side
        // of the last bounce (flips between two samples can go unseen).
        assert!((1990..=2010).contains(&held), "{held}");
    }
    sleep(ms(1000)).await;
    bouncy(&gpio, false).await;
    sleep(ms(1000)).await;
    assert!(
        p.events.try_recv().is_err(),
        "the release after a long press is silent"
    );

    let start_reads = p.t0;
    let (gpio, _) = p.stop().await;
    let reads = gpio
        .calls()
        .iter()
        .filter(|c| matches!(c.op, Op::Read(_)))
        .count();
    let secs = (vnow() - start_reads).as_secs_f64();
    if edges {
        assert_eq!(reads, 1, "edge-driven: one read at start");
    } else {
        // One sample every 5 ms (200 a second), give or take timer rounding.
        assert!(reads as f64 >= secs * 150.0, "{reads} reads in {secs} s");
        assert!(
            reads as f64 <= secs * 201.0 + 2.0,
            "{reads} reads in {secs} s"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn polled_button_short_and_long_press() {
    button_session(RecordingGpio::new(), false).await;
}

#[tokio::test(start_paused = true)]
async fn edge_button_short_and_long_press() {
    button_session(RecordingGpio::with_edges(), true).await;
}

#[tokio::test(start_paused = true)]
async fn missing_state_publisher_keeps_the_last_pattern() {
    let p = start(
        RecordingGpio::new(),
        GpioConfig {
            button: None,
            ..cfg()
        },
    );
    p.state.send(BoxState::Ready).unwrap();
    sleep(ms(100)).await;
    let Panel {
        gpio,
        t0,
        state,
        events: _events,
        shutdown,
        task,
    } = p;
    drop(state);
    sleep(ms(5000)).await;
    assert!(!task.is_finished());
    shutdown.send(true).unwrap();
    task.await.unwrap();
    assert_toggles(
        &toggles(&gpio, GREEN, t0),
        &[(0, true), (5100, false)],
        "green",
    );
}

#[tokio::test(start_paused = true)]
async fn start_panel_validates_and_skips_an_empty_config() {
    use braid::device::panel::start_panel;
    let (_state, state_rx) = watch::channel(BoxState::Booting);
    let (ev_tx, _events) = mpsc::channel(8);
    let (shutdown, sd_rx) = watch::channel(false);
    let none = GpioConfig::default();
    assert!(
        start_panel(&none, state_rx.clone(), ev_tx.clone(), sd_rx.clone())
            .unwrap()
            .is_none()
    );
    let dup = GpioConfig {
        led_red: Some(5),
        tally: Some(5),
        ..cfg()
    };
    assert!(start_panel(&dup, state_rx.clone(), ev_tx.clone(), sd_rx.clone()).is_err());
    let task = start_panel(&cfg(), state_rx, ev_tx, sd_rx)
        .unwrap()
        .unwrap();
    sleep(ms(100)).await;
    shutdown.send(true).unwrap();
    task.await.unwrap();
}
