//! The local web page (docs/web-api.md): engineers on site watch and configure the
//! box from a phone or laptop.
//!
//! - [`auth`]: admin password (argon2 hash in a file), sessions, CSRF tokens, login
//!   rate limit: plain state, no HTTP inside.
//! - [`settings`]: edge.toml as the page's form: values, field descriptions, changes
//!   applied to the file's text and checked by [`crate::config::parse_edge`], errors
//!   per field, atomic save.
//! - [`assets`]: the page's files, compiled into the binary (gzip-compressed, cached).
//! - [`api`]: the axum router (`/api/...` and the page), TLS, serving.
//! - [`logs`]: the daemon's recent log lines in memory (a `tracing` layer).
//!
//! The daemon behind the page is reached through [`EdgeControl`], so the API can be
//! tested against a double as well as the real edge.

pub mod api;
pub mod assets;
pub mod auth;
pub mod logs;
pub mod settings;
pub mod update;

use crate::config::EdgeConfig;
use crate::device::leds::BoxState;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A boxed future (the trait stays object-safe without an extra crate).
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What the page needs of the running edge.
pub trait EdgeControl: Send + Sync + 'static {
    /// The stats snapshot (`/api/stats`, `/api/events`), as [`crate::edge::EdgeStats`]
    /// serialises it.
    fn stats(&self) -> serde_json::Value;
    /// What the LEDs show (for `/api/health`).
    fn state(&self) -> BoxState;
    /// Start (`true`) or stop sending media, as the front-panel button does. Returns
    /// whether the stream is live afterwards.
    fn set_live(&self, live: bool) -> bool;
    /// A validated configuration was saved: apply at once what can change while
    /// streaming (see [`settings::Apply::Live`]); the rest waits for
    /// [`EdgeControl::restart_stream`].
    fn apply_live(&self, cfg: &EdgeConfig);
    /// Restart the stream with `cfg` (the saved file): sources, links and
    /// session are rebuilt; the web page keeps running.
    fn restart_stream(&self, cfg: EdgeConfig) -> BoxFuture<Result<(), String>>;
    /// What installs update bundles uploaded from the page (`/api/update`), when the
    /// box has `[ota]`.
    fn updater(&self) -> Option<Arc<dyn Updater>> {
        None
    }
}

/// Installs an update bundle from the page's upload (the OTA side implements it).
pub trait Updater: Send + Sync + 'static {
    /// Largest upload accepted, bytes.
    fn max_bytes(&self) -> u64;
    /// Installs the bundle read from `body`, on a blocking thread: verification
    /// first, nothing written to a slot unless it passes. `force`: allow a
    /// downgrade and reboot at once. Returns what was installed (JSON for the page)
    /// or why not.
    fn install(
        &self,
        body: &mut dyn std::io::Read,
        force: bool,
    ) -> Result<serde_json::Value, String>;
}
