//! `braid ota`: install a bundle, show the slots, confirm or give up the booted
//! slot, and (directory slots) play the bootloader. Glue over [`super::install`] and
//! [`super::health`]; errors are `anyhow` for `main`.

use super::health::{self, Monitor, RebootPending};
use super::install::{self, Progress, Stage};
use super::slots::SlotBackend;
use crate::config::{OtaConfig, RebootPolicy};
use anyhow::{anyhow, Context, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// File in `ota.state_dir` with the outcome of the last install.
pub const LAST_INSTALL_FILE: &str = "last-install.json";
/// Lock file in `ota.state_dir`: one install at a time.
pub const LOCK_FILE: &str = "install.lock";

#[derive(Debug, clap::Subcommand)]
pub enum OtaCmd {
    /// Verify a signed bundle and install it into the slot not running; it boots once
    /// at the next reboot, which happens per `ota.reboot` (never while live).
    Install {
        #[arg(long, default_value = "/etc/braid/edge.toml")]
        config: PathBuf,
        /// Bundle file, or an http(s):// URL (downloaded into ota.state_dir, resumed).
        source: String,
        /// Reboot right after the install, even while live.
        #[arg(long)]
        force: bool,
        /// Accept a version not newer than the running one.
        #[arg(long)]
        allow_downgrade: bool,
    },
    /// The slots, the boot-attempt counter and the last install, as JSON.
    Status {
        #[arg(long, default_value = "/etc/braid/edge.toml")]
        config: PathBuf,
    },
    /// Confirm the booted slot by hand (it becomes the one that boots).
    Confirm {
        #[arg(long, default_value = "/etc/braid/edge.toml")]
        config: PathBuf,
    },
    /// Give up the booted slot: the next boot returns to the other one.
    MarkBad {
        #[arg(long, default_value = "/etc/braid/edge.toml")]
        config: PathBuf,
    },
    /// Directory slots only: what the bootloader does at power-on (development, tests).
    Boot {
        #[arg(long, default_value = "/etc/braid/edge.toml")]
        config: PathBuf,
    },
}

fn load(config: &Path) -> Result<OtaConfig> {
    let cfg = crate::config::load_edge(config)?;
    cfg.ota.ok_or_else(|| {
        anyhow!(
            "{}: no [ota] table: updates are not configured",
            config.display()
        )
    })
}

fn backend(cfg: &OtaConfig) -> Result<Arc<dyn SlotBackend>> {
    install::open_backend(cfg).map_err(|e| anyhow!("{e}"))
}

/// Starts the daemon's OTA monitor (see [`Monitor::start`]); errors are logged, the
/// stream runs regardless.
pub fn start_monitor(cfg: OtaConfig) -> Option<Monitor> {
    let b = match install::open_backend(&cfg) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!("ota: {e}; no health check this run");
            return None;
        }
    };
    match Monitor::start(cfg, b) {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::error!("ota: {e}; no health check this run");
            None
        }
    }
}

pub async fn run(cmd: OtaCmd) -> Result<()> {
    match cmd {
        OtaCmd::Install {
            config,
            source,
            force,
            allow_downgrade,
        } => cmd_install(&load(&config)?, &source, force, allow_downgrade).await,
        OtaCmd::Status { config } => {
            let cfg = load(&config)?;
            let st = backend(&cfg)?.status()?;
            let last: Option<serde_json::Value> =
                std::fs::read(cfg.state_dir.join(LAST_INSTALL_FILE))
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok());
            let out = serde_json::json!({
                "slots": st,
                "current_version": install::current_version(&st),
                "boot_starts": health::boot_starts(&cfg.state_dir, st.booted),
                "max_boot_attempts": cfg.max_boot_attempts,
                "reboot_pending": health::reboot_pending(&cfg.state_dir),
                "reboot_policy": cfg.reboot.to_string(),
                "last_install": last,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }
        OtaCmd::Confirm { config } => {
            let cfg = load(&config)?;
            backend(&cfg)?.mark_good()?;
            health::reset_starts(&cfg.state_dir)?;
            eprintln!("braid: booted slot confirmed");
            Ok(())
        }
        OtaCmd::MarkBad { config } => {
            let cfg = load(&config)?;
            backend(&cfg)?.mark_bad()?;
            eprintln!("braid: booted slot marked bad; the next boot returns to the other slot");
            Ok(())
        }
        OtaCmd::Boot { config } => {
            let cfg = load(&config)?;
            let slot = boot_dir_slots(&cfg)?;
            println!("{}", serde_json::to_string(&slot)?);
            Ok(())
        }
    }
}

/// The simulated bootloader of directory slots.
fn boot_dir_slots(cfg: &OtaConfig) -> Result<super::slots::Slot> {
    let _ = cfg;
    Err(anyhow!("braid ota boot: directory slots not built yet"))
}

/// Holds `ota.state_dir/install.lock` (flock) for the life of the value.
struct InstallLock(#[allow(dead_code)] std::fs::File);

fn lock(state_dir: &Path) -> Result<InstallLock> {
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    let path = state_dir.join(LOCK_FILE);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    if rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        return Err(anyhow!(
            "another install is running ({} is locked)",
            path.display()
        ));
    }
    Ok(InstallLock(f))
}

fn record_outcome(state_dir: &Path, v: &serde_json::Value) {
    let _ = crate::system::atomic::write_atomic(
        &state_dir.join(LAST_INSTALL_FILE),
        v.to_string().as_bytes(),
    );
}

async fn cmd_install(
    cfg: &OtaConfig,
    source: &str,
    force: bool,
    allow_downgrade: bool,
) -> Result<()> {
    let _lock = lock(&cfg.state_dir)?;
    let file = if source.starts_with("http://") || source.starts_with("https://") {
        download(cfg, source).await?
    } else {
        PathBuf::from(source)
    };
    let backend = backend(cfg)?;
    let status = backend.status()?;
    let policy = install::policy(cfg, &status, allow_downgrade).map_err(|e| anyhow!("{e}"))?;
    let progress = Progress::new();
    let printer = {
        let p = progress.clone();
        tokio::spawn(async move {
            let mut last = Stage::Idle;
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let v = p.snapshot();
                if v.stage != last || v.stage == Stage::Write {
                    last = v.stage;
                    match v.total {
                        Some(t) if v.stage == Stage::Write => {
                            eprintln!("braid: {}: {} / {} bytes", v.stage, v.bytes, t)
                        }
                        _ => eprintln!("braid: {}", v.stage),
                    }
                }
            }
        })
    };
    let r = install::install_file_low_priority(file.clone(), policy, backend, progress).await;
    printer.abort();
    match r {
        Err(e) => {
            record_outcome(
                &cfg.state_dir,
                &serde_json::json!({"ok": false, "stage": e.stage(), "error": e.to_string(), "file": file}),
            );
            Err(anyhow!(e)).context(format!("installing {}", file.display()))
        }
        Ok(report) => {
            health::reset_starts(&cfg.state_dir)?;
            health::set_reboot_pending(
                &cfg.state_dir,
                &RebootPending {
                    slot: report.slot,
                    version: report.version.clone(),
                },
            )?;
            record_outcome(
                &cfg.state_dir,
                &serde_json::json!({"ok": true, "report": report, "file": file}),
            );
            println!("{}", serde_json::to_string(&report)?);
            if force {
                eprintln!("braid: installed; rebooting now (--force)");
                health::run_reboot_command(&cfg.reboot_command)
                    .with_context(|| format!("running {:?}", cfg.reboot_command))?;
            } else {
                eprintln!(
                    "braid: installed {} into slot {:?}; it boots once at the next reboot: {}",
                    report.version,
                    report.slot,
                    match cfg.reboot {
                        RebootPolicy::Idle => "the edge daemon reboots when the stream is not live".to_string(),
                        RebootPolicy::Never => "reboot the box yourself (or install with --force)".to_string(),
                        at => format!("the edge daemon reboots from {at} local time, once the stream is not live"),
                    }
                );
            }
            Ok(())
        }
    }
}

/// Downloads `url` into `ota.state_dir/download/`, resuming a partial file.
async fn download(cfg: &OtaConfig, url: &str) -> Result<PathBuf> {
    let _ = cfg;
    Err(anyhow!(
        "{url}: downloading is not built yet; download the bundle and give its path"
    ))
}
