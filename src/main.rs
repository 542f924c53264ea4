//! `braid`: one binary for the edge box, the cloud relay and the tools.
//!
//! Exit codes: 0 ok; 1 runtime failure (systemd restarts it); 2 usage error (clap);
//! 78 (EX_CONFIG) bad configuration: systemd units list it in
//! `RestartPreventExitStatus=` so a bad file does not restart-loop.

use anyhow::{anyhow, Result};
use braid::sim::scenario::{LinkEventKind, Scenario};
use braid::sim::{emulator, real, virt};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const EXIT_CONFIG: u8 = 78;

#[derive(Parser)]
#[command(name = "braid", version, about = "Bonded-cellular live-video uplink")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the edge box: input -> bonded QUIC links -> relay.
    Edge {
        #[arg(long, default_value = "/etc/braid/edge.toml")]
        config: PathBuf,
    },
    /// Run the cloud relay: links -> reorder at fixed latency -> outputs.
    Relay {
        #[arg(long, default_value = "/etc/braid/relay.toml")]
        config: PathBuf,
    },
    /// Run relay, edge and link emulator on this machine and print a JSON report.
    Sim {
        /// dev | failover-clean | failover-real
        #[arg(long, default_value = "dev")]
        scenario: String,
        /// Constant input rate, e.g. 5M, 4500k, 5000000.
        #[arg(long)]
        rate: Option<String>,
        /// Seconds (default: the scenario's).
        #[arg(long)]
        duration: Option<f64>,
        /// Latency budget in ms (default 500).
        #[arg(long)]
        latency: Option<u64>,
        /// Run the sans-IO cores in virtual time instead of QUIC in real time.
        #[arg(long = "virtual")]
        virtual_time: bool,
        /// Search the highest constant rate with >= 99.9 % on time (bisection).
        #[arg(long)]
        search: bool,
        /// `test`: the constant-rate test stream. `x264`: the test pattern through
        /// x264enc (1280x720 30 fps) under the bitrate controller (with --virtual: the
        /// encoder model); prints the bitrate trace beside the transport report.
        #[arg(long, default_value = "test")]
        source: String,
        /// Whole-stream bitrate ceiling of the controller (x264 source).
        #[arg(long, default_value = "12M")]
        ceiling: String,
        /// Test picture for the x264 source: snow (noise: the encoder uses every bit
        /// it is given), ball or smpte.
        #[arg(long, default_value = "snow")]
        pattern: String,
    },
    /// Userspace link emulator (a UDP proxy applying traces, delay, loss, outages).
    Emulate {
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long)]
        relay: std::net::SocketAddr,
        /// e.g. 127.0.0.11,trace=PATH,delay=40ms,queue=375000,loss=0.01,outage=30s-60s
        #[arg(long = "link", required = true)]
        links: Vec<String>,
        /// Forward packets from unknown source addresses unshaped.
        #[arg(long)]
        pass_unknown: bool,
    },
    /// Generate a certificate and key (DIR/NAME.crt, DIR/NAME.key); prints the fingerprint.
    Keygen {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        name: String,
    },
    /// Load generator: many edges against a relay in another process (CPU per Gbit).
    Loadgen {
        #[command(subcommand)]
        cmd: braid::sim::loadgen::LoadgenCmd,
    },
    /// Over-the-air updates: install a signed bundle, status, confirm, mark bad.
    Ota {
        #[command(subcommand)]
        cmd: braid::ota::cli::OtaCmd,
    },
    /// Signed update bundles: keygen, create, verify, bench (docs/ota.md).
    Bundle {
        #[command(subcommand)]
        cmd: braid::ota::bundle_cli::BundleCmd,
    },
}

fn init_logs(default: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // stderr (journald under systemd) and the last lines in memory for the web
    // page's log view (braid::web::logs).
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(braid::web::logs::layer())
        .try_init();
}

fn main() -> ExitCode {
    braid::edge::mark_process_start();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("braid: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        match dispatch(cli.cmd).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                if let Some(c) = e.downcast_ref::<braid::config::ConfigError>() {
                    eprintln!("braid: configuration error: {c}");
                    return ExitCode::from(EXIT_CONFIG);
                }
                eprintln!("braid: {e:#}");
                ExitCode::FAILURE
            }
        }
    })
}

async fn dispatch(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Edge { config } => {
            init_logs("info");
            let cfg = braid::config::load_edge(&config)?;
            braid::edge::run(cfg, config).await
        }
        Cmd::Relay { config } => {
            init_logs("info");
            braid::config::load_relay(&config)?;
            braid::relay::run(&config).await
        }
        Cmd::Sim {
            scenario,
            rate,
            duration,
            latency,
            virtual_time,
            search,
            source,
            ceiling,
            pattern,
        } => {
            init_logs("warn");
            let rate = rate
                .map(|r| emulator::parse_rate(&r))
                .transpose()
                .map_err(|e| anyhow!("--rate: {e}"))?;
            let mut sc = Scenario::preset(&scenario, rate).map_err(|e| anyhow!(e))?;
            if let Some(d) = duration {
                sc.duration = Duration::from_secs_f64(d);
            }
            if let Some(l) = latency {
                sc.latency = Duration::from_millis(l);
            }
            match source.as_str() {
                "test" => {}
                "x264" => {
                    let ceiling =
                        emulator::parse_rate(&ceiling).map_err(|e| anyhow!("--ceiling: {e}"))?;
                    let out = sim_encoder(&sc, ceiling as u64, &pattern, virtual_time).await?;
                    println!("{}", serde_json::to_string_pretty(&out)?);
                    return Ok(());
                }
                other => return Err(anyhow!("--source: {other:?} is not test or x264")),
            }
            if search {
                let out = search_max_rate(&sc, virtual_time).await?;
                println!("{}", serde_json::to_string_pretty(&out)?);
                return Ok(());
            }
            let scripted_radio = sc
                .link_events
                .iter()
                .any(|e| matches!(e.kind, LinkEventKind::Quality(_) | LinkEventKind::Loss(_)));
            if scripted_radio && !virtual_time {
                return Err(anyhow!(
                    "scenario {scenario:?} scripts radio quality and loss, which only the \
                     virtual-time harness models: add --virtual"
                ));
            }
            if scripted_radio {
                let run = virt::run_detailed(&sc, Instant::now());
                let mut out = serde_json::to_value(&run.report)?;
                out["fade"] = virt::fade_report(&sc, &run);
                println!("{}", serde_json::to_string_pretty(&out)?);
                return Ok(());
            }
            let report = if virtual_time {
                virt::run(&sc, Instant::now())
            } else {
                real::run(&sc).await?
            };
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Cmd::Emulate {
            listen,
            relay,
            links,
            pass_unknown,
        } => {
            init_logs("info");
            let links = links
                .iter()
                .map(|s| emulator::parse_link_spec(s))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow!("--link: {e}"))?;
            let cfg = emulator::EmulatorConfig {
                listen,
                relay,
                links,
                pass_unknown,
            };
            let (tx, rx) = tokio::sync::watch::channel(false);
            let run = tokio::spawn(emulator::run(cfg, Instant::now(), rx));
            braid::system::shutdown_signal().await;
            let _ = tx.send(true);
            let stats = run.await??;
            println!("{}", serde_json::to_string_pretty(&stats)?);
            Ok(())
        }
        Cmd::Keygen { dir, name } => {
            std::fs::create_dir_all(&dir)?;
            let fp = braid::transport::tls::write_identity(&dir, &name)?;
            println!("{}", braid::transport::tls::format_fingerprint(&fp));
            Ok(())
        }
        Cmd::Loadgen { cmd } => {
            init_logs("warn");
            braid::sim::loadgen::cli(cmd).await
        }
        Cmd::Ota { cmd } => {
            init_logs("warn");
            braid::ota::cli::run(cmd).await
        }
        Cmd::Bundle { cmd } => braid::ota::bundle_cli::cli(cmd),
    }
}

/// `braid sim --source x264`: the test pattern through x264enc at 720p30 with the
/// bitrate controller, for real (or the encoder model in virtual time).
async fn sim_encoder(
    sc: &Scenario,
    ceiling_bps: u64,
    pattern: &str,
    virtual_time: bool,
) -> Result<braid::sim::adaptive::AdaptiveReport> {
    use braid::config::{AudioConfig, EncoderChoice, TestPattern, VideoConfig};
    use braid::sim::adaptive;
    let pattern = match pattern {
        "snow" => TestPattern::Snow,
        "ball" => TestPattern::Ball,
        "smpte" => TestPattern::Smpte,
        p => return Err(anyhow!("--pattern: {p:?} is not snow, ball or smpte")),
    };
    let audio = AudioConfig::default();
    let mut video = VideoConfig {
        encoder: EncoderChoice::Named("x264enc".into()),
        ..Default::default()
    };
    // The video ceiling that makes the whole stream's ceiling `ceiling_bps`.
    while video.max_bps > video.min_bps
        && braid::media::stream_bps(video.max_bps, &audio) > ceiling_bps
    {
        video.max_bps -= 10_000;
    }
    let ccfg = braid::media::controller_config(&video, &audio);
    let sc = adaptive::adaptive_scenario(sc);
    if virtual_time {
        let (r, _) = adaptive::run(&sc, ccfg, adaptive::EncoderModel::default(), Instant::now());
        return Ok(r);
    }
    let run = real::run_with(
        &sc,
        real::SimSource::Encoder {
            video,
            audio,
            pattern,
        },
    )
    .await?;
    Ok(adaptive::report_real(
        &sc,
        &run,
        ccfg.ceiling_bps,
        ccfg.floor_bps,
    ))
}

/// Bisection for the highest constant input rate with >= 99.9 % of packets on time.
async fn search_max_rate(sc: &Scenario, virtual_time: bool) -> Result<serde_json::Value> {
    let bound = sc.bound_bps(sc.latency);
    let mut lo = 0.5e6;
    let mut hi = bound.unwrap_or(20e6) * 1.05;
    let mut runs = Vec::new();
    let steps = if virtual_time { 12 } else { 5 };
    for _ in 0..steps {
        let mid = (lo + hi) / 2.0;
        let mut s = sc.clone();
        s.input_bps = mid;
        let r = if virtual_time {
            virt::run(&s, Instant::now())
        } else {
            real::run(&s).await?
        };
        let ok = r.on_time_fraction >= 0.999;
        runs.push(
            serde_json::json!({"rate_bps": mid, "on_time_fraction": r.on_time_fraction, "ok": ok}),
        );
        if ok {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(serde_json::json!({
        "scenario": sc.name,
        "mode": if virtual_time { "virtual" } else { "real" },
        "budget_ms": sc.latency.as_millis() as u64,
        "highest_ok_rate_bps": lo,
        "bound_bps": bound,
        "fraction_of_bound": bound.map(|b| lo / b),
        "runs": runs,
    }))
}
