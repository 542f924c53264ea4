//! Over-the-air updates (issue 7): signed bundles, A/B slots, automatic rollback.
//!
//! - [`bundle`]: the bundle format, Ed25519 signing (minisign-compatible), and a
//!   streaming verifier: signature, compatibility and version are checked before
//!   any payload byte is handed on, the payload hash as it streams.
//! - [`slots`]: the A/B install behind [`slots::SlotBackend`]: directory slots (for
//!   development and tests, with the bootloader's boot-once / confirm / fall-back
//!   semantics) and RAUC.
//! - [`install`]: the install flow (verify -> inactive slot -> boot once), the health
//!   check that confirms a new slot or falls back, `braid ota`, the web upload.
//! - [`health`]: after an update, the health check that confirms the new slot or
//!   gives it up (boot-attempt counter, timeout), and the reboot policy.
//! - [`fleet`]: the edge's hawkBit poller: download, install, report the verdict.
//! - [`cli`]: `braid ota install | status | confirm | mark-bad | boot`.
//! - [`hawkbit`]: fleet polling of an Eclipse hawkBit server (DDI API).

pub mod bundle;
pub mod bundle_cli;
pub mod cli;
pub mod fleet;
pub mod hawkbit;
pub mod health;
pub mod install;
pub mod keys;
pub mod rauc;
pub mod slots;
