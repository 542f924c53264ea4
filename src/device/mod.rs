//! The box's own hardware: the front panel (status LED, tally, button) over GPIO,
//! and health (CPU, memory, temperatures, disk).
//!
//! - [`gpio`]: the pin map ([`gpio::GpioConfig`], the `[gpio]` table) and the
//!   backends (`rppal` on a Raspberry Pi, a recording backend elsewhere and in tests).
//! - [`leds`]: sans-IO LED and tally patterns per [`leds::BoxState`].
//! - [`button`]: sans-IO debounce and short/long press.
//! - [`panel`]: the tokio task running both against a backend.
//! - [`health`]: `sysinfo` snapshots published on a `watch`.

pub mod button;
pub mod gpio;
pub mod health;
pub mod leds;
pub mod panel;
