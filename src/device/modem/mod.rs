//! Cellular modems: find them, talk AT to them, report their state.
//!
//! - [`at`]: the AT line discipline and transaction state machine (sans-IO).
//! - [`parse`]: parsers for identity, SIM, operator, registration and signal answers.
//! - [`dialect`]: vendor detection and the vendor's signal command.
//! - [`discover`]: finding each modem's AT tty and network interface in sysfs.
//! - [`poller`]: the IO shell, one task per modem, publishing a [`ModemStatus`].
//! - [`sim`]: a modem emulator on a pty, for tests.

pub mod at;
pub mod dialect;
pub mod discover;
pub mod parse;
pub mod poller;
#[doc(hidden)]
pub mod sim;

pub use dialect::Dialect;
pub use discover::{discover, discover_system, ModemPort};
pub use parse::{AccessTech, RegState, SimState};
pub use poller::{spawn_poller, ModemConfig, ModemHandle, ModemState, ModemStatus};
