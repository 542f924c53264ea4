//! The box's own hardware: cellular modems, the front panel (status LED, tally,
//! button) over GPIO, and health (CPU, memory, temperatures, disk).
//!
//! - [`modem`]: AT ports found in sysfs, polled on a thread each (identity, SIM,
//!   operator, registration, signal), simulated on pseudo-terminals in tests.
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
pub mod modem;
pub mod panel;
