//! The running edge behind the web page: one [`EdgeHandle`] at a time, replaced by a
//! new one when the engineer restarts the stream with changed settings. The web
//! server and the systemd watchdog outlive the restarts.

use super::{EdgeHandle, EdgeOptions, EdgeStats, LiveSettings};
use crate::config::EdgeConfig;
use crate::device::leds::BoxState;
use crate::web::{BoxFuture, EdgeControl};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

/// The edge as the web page drives it.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

struct Inner {
    /// The edge now running (None only while a restart is between the old and the
    /// new one, or after shutdown).
    edge: tokio::sync::Mutex<Option<EdgeHandle>>,
    /// The running edge's stats and what was last asked of it (readable without
    /// waiting for a restart).
    view: RwLock<View>,
    /// Process start, for `live_after_s`.
    started: Option<Instant>,
    /// Installs bundles uploaded from the page (`[ota]`), once set.
    updater: std::sync::OnceLock<Arc<dyn crate::web::Updater>>,
}

struct View {
    stats: Arc<Mutex<EdgeStats>>,
    live: bool,
}

impl Supervisor {
    /// Starts the edge with `cfg`.
    pub async fn start(cfg: EdgeConfig, started: Option<Instant>) -> anyhow::Result<Supervisor> {
        let live = cfg.autostart;
        let h = super::start(
            cfg,
            EdgeOptions {
                started,
                ..Default::default()
            },
        )
        .await?;
        let view = View {
            stats: h.stats.clone(),
            live,
        };
        Ok(Supervisor {
            inner: Arc::new(Inner {
                edge: tokio::sync::Mutex::new(Some(h)),
                view: RwLock::new(view),
                started,
                updater: std::sync::OnceLock::new(),
            }),
        })
    }

    /// The stats snapshot of the edge now running.
    pub fn snapshot(&self) -> EdgeStats {
        let stats = self.inner.view.read().map(|v| v.stats.clone());
        stats
            .ok()
            .and_then(|s| s.lock().ok().map(|s| s.clone()))
            .unwrap_or_default()
    }

    /// What installs the page's update uploads (set once, at start, with `[ota]`).
    pub fn set_updater(&self, u: Arc<dyn crate::web::Updater>) {
        let _ = self.inner.updater.set(u);
    }

    /// Stops the edge (the daemon is exiting).
    pub async fn shutdown(&self) {
        if let Some(h) = self.inner.edge.lock().await.take() {
            h.shutdown().await;
        }
    }

    /// Replaces the running edge by one started with `cfg`, keeping live/stopped as
    /// it was. If the new one cannot start the error is returned and no edge runs
    /// until the next successful restart (the page shows it; the old configuration
    /// is what failed to be replaced, so retrying with a fixed file works).
    pub async fn restart(&self, cfg: EdgeConfig) -> anyhow::Result<()> {
        let mut edge = self.inner.edge.lock().await;
        if let Some(h) = edge.take() {
            h.shutdown().await;
        }
        let live = self
            .inner
            .view
            .read()
            .map(|v| v.live)
            .unwrap_or(cfg.autostart);
        tracing::info!(live, "restarting the stream with the saved settings");
        let h = super::start(
            cfg,
            EdgeOptions {
                started: self.inner.started,
                start_live: Some(live),
                ..Default::default()
            },
        )
        .await?;
        if let Ok(mut v) = self.inner.view.write() {
            v.stats = h.stats.clone();
        }
        *edge = Some(h);
        Ok(())
    }

    fn with_edge(&self, f: impl FnOnce(&EdgeHandle)) {
        // Commands are sent without waiting: a restart in progress holds the lock
        // and the request applies to nothing (the new edge starts from the file).
        if let Ok(edge) = self.inner.edge.try_lock() {
            if let Some(h) = edge.as_ref() {
                f(h);
            }
        }
    }
}

impl EdgeControl for Supervisor {
    fn updater(&self) -> Option<Arc<dyn crate::web::Updater>> {
        self.inner.updater.get().cloned()
    }

    fn stats(&self) -> serde_json::Value {
        serde_json::to_value(self.snapshot()).unwrap_or(serde_json::Value::Null)
    }

    fn state(&self) -> BoxState {
        self.snapshot().state
    }

    fn set_live(&self, live: bool) -> bool {
        if let Ok(mut v) = self.inner.view.write() {
            v.live = live;
        }
        self.with_edge(|h| h.set_live(live));
        live
    }

    fn apply_live(&self, cfg: &EdgeConfig) {
        let s = LiveSettings::from_config(cfg);
        self.with_edge(|h| h.apply_live(s));
    }

    fn restart_stream(&self, cfg: EdgeConfig) -> BoxFuture<Result<(), String>> {
        let me = self.clone();
        Box::pin(async move { me.restart(cfg).await.map_err(|e| format!("{e:#}")) })
    }
}
