//! Fleet updates in `braid edge`: poll hawkBit (`[ota.hawkbit]`), download the
//! deployment's bundle with resume, install it like `braid ota install`, and report.
//!
//! The server hears `Proceeding` while the box downloads and installs, `Failure` with
//! the install error's stage and reason, and `Success` only once the new slot booted
//! and passed its health check (or `Failure` if it was given up). The action waiting
//! for that verdict is kept in `ota.state_dir/hawkbit-action.json`, so a reboot in
//! between loses nothing; [`outcome`] decides from the slots alone.

use super::hawkbit::{Artifact, Client, Deployment, Feedback};
use super::install::{self, InstallLock, Progress};
use super::slots::{Slot, SlotBackend, SlotStatus};
use crate::config::{OtaConfig, OtaHawkbit};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// File in `ota.state_dir` of an installed action awaiting its verdict.
pub const ACTION_FILE: &str = "hawkbit-action.json";
/// File in `ota.state_dir` with the id of the last action reported finished (the
/// server may offer it again before it processed the report: it is not redone).
pub const CLOSED_FILE: &str = "hawkbit-closed.json";

/// A deployment installed into `slot`, waiting for the reboot and health check.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PendingAction {
    pub id: String,
    pub slot: Slot,
    pub version: String,
}

/// What to tell the server about an installed action, from the slots now; `None`
/// while the verdict is still open (waiting for the reboot or the health check).
pub fn outcome(a: &PendingAction, st: &SlotStatus) -> Option<Feedback> {
    if st.booted == a.slot {
        if st.booted_unconfirmed {
            None
        } else {
            Some(Feedback::Success(format!(
                "{} runs in slot {:?} and passed its health check",
                a.version, a.slot
            )))
        }
    } else if st.try_next == Some(a.slot) {
        None
    } else {
        Some(Feedback::Failure(format!(
            "{} in slot {:?} was given up (health check failed, too many starts, or \
             replaced); slot {:?} runs",
            a.version, a.slot, st.booted
        )))
    }
}

fn closed_action(state_dir: &Path) -> Option<String> {
    std::fs::read(state_dir.join(CLOSED_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

fn set_closed_action(state_dir: &Path, id: &str) {
    let r = serde_json::to_vec(id)
        .map_err(std::io::Error::other)
        .and_then(|j| crate::system::atomic::write_atomic(&state_dir.join(CLOSED_FILE), &j));
    if let Err(e) = r {
        tracing::warn!("hawkbit: keeping the finished action id: {e}");
    }
}

fn load_action(state_dir: &Path) -> Option<PendingAction> {
    std::fs::read(state_dir.join(ACTION_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// The bundle among a deployment's artifacts: the first named `*.braidb`, else the
/// only one.
pub fn bundle_artifact(d: &Deployment) -> Option<&Artifact> {
    d.artifacts
        .iter()
        .find(|a| a.filename.ends_with(".braidb"))
        .or(match d.artifacts.as_slice() {
            [only] => Some(only),
            _ => None,
        })
}

/// A file name safe to use in the download directory.
fn local_name(a: &Artifact) -> String {
    let n: String = a
        .filename
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{}-{n}", &a.sha256.get(..16).unwrap_or("x"))
}

/// The poller: one per daemon.
pub struct Fleet {
    cfg: OtaConfig,
    hb: OtaHawkbit,
    client: Client,
    backend: Arc<dyn SlotBackend>,
}

/// Download attempts within one poll cycle (each resumes the last).
const DOWNLOAD_TRIES: u32 = 3;

impl Fleet {
    pub fn new(cfg: OtaConfig, hb: OtaHawkbit, backend: Arc<dyn SlotBackend>) -> Fleet {
        Fleet {
            client: Client::new(hb.client.clone()),
            cfg,
            hb,
            backend,
        }
    }

    /// One cycle: report an earlier action's verdict if it is in, poll, and handle a
    /// new deployment. Returns how long to wait before the next cycle.
    pub async fn step(&self) -> Duration {
        let state_dir = &self.cfg.state_dir;
        let pending = load_action(state_dir);
        if let Some(a) = &pending {
            let b = self.backend.clone();
            let st = tokio::task::spawn_blocking(move || b.status()).await;
            if let Ok(Ok(st)) = st {
                if let Some(f) = outcome(a, &st) {
                    match self.client.feedback(&a.id, &f).await {
                        Ok(()) => {
                            tracing::info!(action = %a.id, ?f, "hawkbit: reported");
                            set_closed_action(state_dir, &a.id);
                            let _ = std::fs::remove_file(state_dir.join(ACTION_FILE));
                        }
                        Err(e) => tracing::warn!("hawkbit: feedback: {e}"),
                    }
                }
            }
        }
        let (deployment, wait) = match self.client.poll().await {
            Ok((d, wait)) => (d, wait),
            Err(e) => {
                tracing::warn!("hawkbit: poll: {e}");
                return self.hb.poll;
            }
        };
        let Some(d) = deployment else {
            return wait;
        };
        let settled = load_action(state_dir).is_some_and(|a| a.id == d.id)
            || closed_action(state_dir).as_deref() == Some(d.id.as_str());
        if settled || d.update == "skip" {
            return wait;
        }
        self.deploy(&d).await;
        wait
    }

    async fn feedback(&self, id: &str, f: Feedback) {
        if let Err(e) = self.client.feedback(id, &f).await {
            tracing::warn!(action = %id, "hawkbit: feedback: {e}");
        }
    }

    async fn deploy(&self, d: &Deployment) {
        let Some(a) = bundle_artifact(d) else {
            set_closed_action(&self.cfg.state_dir, &d.id);
            self.feedback(
                &d.id,
                Feedback::Failure("no bundle among the artifacts (expected one *.braidb)".into()),
            )
            .await;
            return;
        };
        let dir = &self.hb.download_dir;
        if let Err(e) = tokio::fs::create_dir_all(dir).await {
            self.feedback(&d.id, Feedback::Failure(format!("{}: {e}", dir.display())))
                .await;
            return;
        }
        let dest: PathBuf = dir.join(local_name(a));
        self.feedback(
            &d.id,
            Feedback::Proceeding(format!("downloading {}", a.filename)),
        )
        .await;
        let mut done = false;
        for _ in 0..DOWNLOAD_TRIES {
            match self.client.download(a, &dest, &mut |_| {}).await {
                Ok(()) => {
                    done = true;
                    break;
                }
                Err(e) => tracing::warn!(action = %d.id, "hawkbit: download: {e}; resuming"),
            }
        }
        if !done {
            // The next poll offers the action again and the download resumes.
            return;
        }
        self.feedback(&d.id, Feedback::Proceeding("installing".into()))
            .await;
        let r = self.install(&d.id, &dest).await;
        let _ = tokio::fs::remove_file(&dest).await;
        match r {
            Ok(report) => {
                let action = PendingAction {
                    id: d.id.clone(),
                    slot: report.slot,
                    version: report.version.clone(),
                };
                let saved = serde_json::to_vec(&action)
                    .map_err(std::io::Error::other)
                    .and_then(|j| {
                        crate::system::atomic::write_atomic(
                            &self.cfg.state_dir.join(ACTION_FILE),
                            &j,
                        )
                    });
                if let Err(e) = saved {
                    tracing::error!("hawkbit: keeping the action id: {e}");
                }
                self.feedback(
                    &d.id,
                    Feedback::Proceeding(format!(
                        "installed {} into slot {:?}; it boots once at the next reboot (ota.reboot = {})",
                        report.version, report.slot, self.cfg.reboot
                    )),
                )
                .await;
            }
            Err(e) => {
                tracing::error!(action = %d.id, "hawkbit: install failed: {e}");
                set_closed_action(&self.cfg.state_dir, &d.id);
                self.feedback(&d.id, Feedback::Failure(e)).await;
            }
        }
    }

    /// Installs `file` as `braid ota install` does (lock, policy, low priority,
    /// state files), leaving the reboot pending.
    async fn install(&self, id: &str, file: &Path) -> Result<install::InstallReport, String> {
        let _lock = InstallLock::acquire(&self.cfg.state_dir).map_err(|e| e.to_string())?;
        let b = self.backend.clone();
        let st = tokio::task::spawn_blocking(move || b.status())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let policy = install::policy(&self.cfg, &st, false).map_err(|e| e.to_string())?;
        let r = install::install_file_low_priority(
            file.to_path_buf(),
            policy,
            self.backend.clone(),
            Progress::new(),
        )
        .await;
        if let Err(e) = install::record_outcome(&self.cfg, &format!("hawkbit action {id}"), &r) {
            tracing::error!("ota: recording the install: {e}");
        }
        r.map_err(|e| e.to_string())
    }

    /// Polls until `shutdown`.
    pub async fn run(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            let wait = tokio::select! {
                biased;
                _ = shutdown.changed() => return,
                w = self.step() => w,
            };
            tokio::select! {
                biased;
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(booted: Slot, unconfirmed: bool, try_next: Option<Slot>) -> SlotStatus {
        SlotStatus {
            booted,
            primary: if unconfirmed { booted.other() } else { booted },
            try_next,
            booted_unconfirmed: unconfirmed,
            versions: (None, None),
        }
    }

    #[test]
    fn verdict_only_after_the_health_check() {
        let a = PendingAction {
            id: "7".into(),
            slot: Slot::B,
            version: "1.2.0".into(),
        };
        // Installed, waiting for the reboot.
        assert_eq!(outcome(&a, &st(Slot::A, false, Some(Slot::B))), None);
        // Booted, health check running.
        assert_eq!(outcome(&a, &st(Slot::B, true, None)), None);
        // Confirmed.
        assert!(matches!(
            outcome(&a, &st(Slot::B, false, None)),
            Some(Feedback::Success(_))
        ));
        // Back on A without a pending try: given up.
        assert!(
            matches!(outcome(&a, &st(Slot::A, false, None)), Some(Feedback::Failure(m)) if m.contains("given up"))
        );
    }

    #[test]
    fn the_bundle_artifact_is_chosen_and_named_safely() {
        let art = |name: &str| Artifact {
            filename: name.into(),
            size: 1,
            sha256: "ab".repeat(32),
            url: "http://x".into(),
        };
        let mut d = Deployment {
            id: "1".into(),
            update: "attempt".into(),
            artifacts: vec![art("notes.txt"), art("braid-1.2.0.braidb")],
        };
        assert_eq!(bundle_artifact(&d).unwrap().filename, "braid-1.2.0.braidb");
        d.artifacts.pop();
        assert_eq!(
            bundle_artifact(&d).unwrap().filename,
            "notes.txt",
            "the only one"
        );
        d.artifacts.push(art("other.bin"));
        assert_eq!(bundle_artifact(&d), None);
        assert_eq!(
            local_name(&art("../../etc/passwd")),
            "abababababababab-.._.._etc_passwd"
        );
    }
}
