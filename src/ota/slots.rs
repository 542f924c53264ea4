//! A/B slots behind a small trait: directory slots and RAUC.

use super::bundle::Manifest;
use std::io::Read;

/// One of the two slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }
}

/// The slots as the box sees them now.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SlotStatus {
    /// The slot running now.
    pub booted: Slot,
    /// The slot that boots by default (the last confirmed one).
    pub primary: Slot,
    /// A slot set to be tried once at the next boot, not yet confirmed.
    pub try_next: Option<Slot>,
    /// The booted slot was tried once and awaits confirmation (health check).
    pub booted_unconfirmed: bool,
    /// Version installed in each slot, if known: (A, B).
    pub versions: (Option<String>, Option<String>),
}

#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error("slot backend: {0}")]
    Backend(String),
    #[error("slot I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// The A/B mechanism. Installing never touches the booted slot; only
/// [`SlotBackend::set_boot_once`] changes what boots, in one atomic step.
pub trait SlotBackend: Send + Sync {
    fn status(&self) -> Result<SlotStatus, SlotError>;
    /// Writes the payload into the slot that is not booted (marking it unbootable
    /// first, so a crash mid-write leaves it unbootable) and returns that slot.
    /// `progress` is called with bytes written so far.
    fn install(
        &self,
        payload: &mut dyn Read,
        manifest: &Manifest,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Slot, SlotError>;
    /// The next boot tries `slot` once; unless it is confirmed, the boot after that
    /// returns to the primary slot.
    fn set_boot_once(&self, slot: Slot) -> Result<(), SlotError>;
    /// The booted slot passed its health check: it becomes primary.
    fn mark_good(&self) -> Result<(), SlotError>;
    /// The booted slot failed its health check: the next boot returns to the other.
    fn mark_bad(&self) -> Result<(), SlotError>;
}
