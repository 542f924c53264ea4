//! `braid ota`: install a bundle, show the slots, confirm or give up the booted
//! slot, and (directory slots) play the bootloader. Glue over [`super::install`] and
//! [`super::health`]; errors are `anyhow` for `main`.

use super::health::{self, Monitor};
use super::install::{self, record_outcome, Progress, Stage};
use super::slots::SlotBackend;
use crate::config::{OtaConfig, RebootPolicy};
use anyhow::{anyhow, Context, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

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
            let _lock = lock(&cfg.state_dir)?;
            let st = backend(&cfg)?.status()?;
            let last: Option<serde_json::Value> =
                std::fs::read(cfg.state_dir.join(install::LAST_INSTALL_FILE))
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
            let _lock = lock(&cfg.state_dir)?;
            backend(&cfg)?.mark_good()?;
            health::reset_starts(&cfg.state_dir)?;
            eprintln!("braid: booted slot confirmed");
            Ok(())
        }
        OtaCmd::MarkBad { config } => {
            let cfg = load(&config)?;
            let _lock = lock(&cfg.state_dir)?;
            backend(&cfg)?.mark_bad()?;
            eprintln!("braid: booted slot marked bad; the next boot returns to the other slot");
            Ok(())
        }
        OtaCmd::Boot { config } => {
            let cfg = load(&config)?;
            let _lock = lock(&cfg.state_dir)?;
            let slot = boot_dir_slots(&cfg)?;
            println!("{}", serde_json::to_string(&slot)?);
            Ok(())
        }
    }
}

/// The simulated bootloader of directory slots.
fn boot_dir_slots(cfg: &OtaConfig) -> Result<super::slots::Slot> {
    match &cfg.backend {
        crate::config::OtaBackend::Dir { slots_dir } => {
            Ok(super::slots::DirSlots::open(slots_dir)?.boot()?)
        }
        crate::config::OtaBackend::Rauc => Err(anyhow!(
            "braid ota boot: only for directory slots (ota.backend = \"dir\"); with RAUC the bootloader boots"
        )),
    }
}

fn lock(state_dir: &Path) -> Result<install::InstallLock> {
    Ok(install::InstallLock::acquire(state_dir)?)
}

async fn cmd_install(
    cfg: &OtaConfig,
    source: &str,
    force: bool,
    allow_downgrade: bool,
) -> Result<()> {
    let _lock = lock(&cfg.state_dir)?;
    let downloaded = source.starts_with("http://") || source.starts_with("https://");
    let file = if downloaded {
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
    if downloaded {
        // Installed or refused, the download has served: a retry downloads afresh.
        let _ = std::fs::remove_file(&file);
    }
    record_outcome(cfg, source, &r)?;
    match r {
        Err(e) => Err(anyhow!(e)).context(format!("installing {source}")),
        Ok(report) => {
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

/// Download attempts before giving up (resuming each time).
const DOWNLOAD_ATTEMPTS: u32 = 6;
/// A download that receives nothing for this long is cut and resumed.
const DOWNLOAD_STALL: Duration = Duration::from_secs(60);

/// Downloads `url` into `ota.state_dir/download/` (as `NAME.partial` until complete),
/// resuming what an earlier attempt or run left with an HTTP Range request. The
/// bundle's signature and hash are what make it trusted, not the transfer.
async fn download(cfg: &OtaConfig, url: &str) -> Result<PathBuf> {
    use sha2::Digest;
    let dir = cfg.state_dir.join("download");
    tokio::fs::create_dir_all(&dir)
        .await
        .with_context(|| format!("creating {}", dir.display()))?;
    let name = hex::encode(&sha2::Sha256::digest(url.as_bytes())[..8]);
    let done = dir.join(format!("{name}.braid"));
    let part = dir.join(format!("{name}.braid.partial"));
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(15))
        .build()
        .context("HTTP client")?;
    let mut last_err = None;
    for attempt in 0..DOWNLOAD_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1 << attempt.min(5))).await;
        }
        match download_once(&client, url, &part).await {
            Ok(()) => {
                tokio::fs::rename(&part, &done).await?;
                eprintln!("braid: downloaded {url}");
                return Ok(done);
            }
            Err(Fetch::Fatal(e)) => return Err(e.context(format!("downloading {url}"))),
            Err(Fetch::Retry(e)) => {
                eprintln!("braid: download of {url} interrupted ({e:#}); resuming");
                last_err = Some(e);
            }
        }
    }
    Err(last_err
        .unwrap_or_else(|| anyhow!("no attempt"))
        .context(format!(
            "downloading {url}: gave up after {DOWNLOAD_ATTEMPTS} attempts"
        )))
}

enum Fetch {
    /// Worth another try (transport error, stall, server error).
    Retry(anyhow::Error),
    Fatal(anyhow::Error),
}

async fn download_once(client: &reqwest::Client, url: &str, part: &Path) -> Result<(), Fetch> {
    use tokio::io::AsyncWriteExt;
    let io = |e: std::io::Error| Fetch::Fatal(anyhow!("{}: {e}", part.display()));
    let held = match tokio::fs::metadata(part).await {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(io(e)),
    };
    let mut req = client.get(url);
    if held > 0 {
        req = req.header(reqwest::header::RANGE, format!("bytes={held}-"));
    }
    let mut resp = req.send().await.map_err(|e| Fetch::Retry(e.into()))?;
    let status = resp.status();
    let mut file = match status.as_u16() {
        206 if held > 0 => tokio::fs::OpenOptions::new()
            .append(true)
            .open(part)
            .await
            .map_err(io)?,
        200 => tokio::fs::File::create(part).await.map_err(io)?,
        // Nothing past what we hold: it is complete.
        416 if held > 0 => return Ok(()),
        s if s >= 500 => return Err(Fetch::Retry(anyhow!("HTTP {s}"))),
        s => return Err(Fetch::Fatal(anyhow!("HTTP {s}"))),
    };
    loop {
        let chunk = match tokio::time::timeout(DOWNLOAD_STALL, resp.chunk()).await {
            Err(_) => Err(anyhow!("nothing received for {DOWNLOAD_STALL:?}")),
            Ok(Err(e)) => Err(e.into()),
            Ok(Ok(c)) => Ok(c),
        };
        match chunk {
            Ok(Some(c)) => file.write_all(&c).await.map_err(io)?,
            Ok(None) => break,
            Err(e) => {
                // Keep what arrived for the next attempt.
                file.flush().await.map_err(io)?;
                file.sync_all().await.map_err(io)?;
                return Err(Fetch::Retry(e));
            }
        }
    }
    file.flush().await.map_err(io)?;
    file.sync_all().await.map_err(io)?;
    Ok(())
}
