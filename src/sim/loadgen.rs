//! `braid loadgen`: many in-process edges against an existing relay, to measure the
//! relay's (and the edges') CPU cost per bit of media on loopback, without emulation.
//!
//! Two steps, because the relay runs in another process (so its CPU can be measured
//! on its own, e.g. pinned to one core):
//!
//! 1. [`prepare`] writes one device identity per session (`DIR/devN.crt`, `.key`) and
//!    `DIR/relay.toml` listing every device with a UDP output to a discard address.
//!    The relay's own identity (`DIR/relay.crt`, `.key`) comes from `braid keygen`.
//! 2. [`run`] starts `sessions` edges (test source at `rate_bps`, `links` QUIC
//!    connections each, link `j` of every edge bound to source address
//!    `127.0.0.{11 + j}`), lets them connect for `warmup`, then measures for
//!    `duration`: media offered and this process's CPU time (utime + stime from
//!    `/proc/self/stat`). The window's start and end are announced on stderr
//!    ([`MARK_START`], [`MARK_END`]) so a script can sample the relay at the same times.

use crate::config;
use crate::edge::{self, EdgeHandle, EdgeOptions, MediaSource, TestSource};
use crate::transport::tls;
use anyhow::{anyhow, Context, Result};
use serde::Serialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Printed on stderr when the measurement window opens.
pub const MARK_START: &str = "loadgen: window start";
/// Printed on stderr when the measurement window closes.
pub const MARK_END: &str = "loadgen: window end";

/// How long the edges stay up after [`MARK_END`].
pub const HOLD: Duration = Duration::from_secs(1);

/// Clock ticks per second of `/proc/*/stat` times (`sysconf(_SC_CLK_TCK)`): Linux's
/// USER_HZ, which is 100 on every architecture Braid targets (x86_64, aarch64).
pub const CLK_TCK: f64 = 100.0;

/// Device id of session `i`.
pub fn device_id(i: usize) -> String {
    format!("dev{i}")
}

/// Options of [`prepare`].
#[derive(Debug, Clone)]
pub struct PrepareOptions {
    pub dir: PathBuf,
    pub sessions: usize,
    /// `relay.listen` written to relay.toml.
    pub listen: SocketAddr,
    /// `stats.listen` written to relay.toml.
    pub stats_listen: SocketAddr,
    /// Every device's output (default 127.0.0.1:9, discard).
    pub output: SocketAddr,
    pub latency_ms: u32,
}

/// Writes `DIR/devN.crt/.key` for N in `0..sessions` and `DIR/relay.toml`. Returns
/// the path of relay.toml.
pub fn prepare(opts: &PrepareOptions) -> Result<PathBuf> {
    std::fs::create_dir_all(&opts.dir)
        .with_context(|| format!("creating {}", opts.dir.display()))?;
    let mut toml = format!(
        "# Written by `braid loadgen prepare`. Relay identity: `braid keygen --dir {dir} --name relay`.\n\
         [relay]\nlisten = \"{}\"\ncert = \"relay.crt\"\nkey = \"relay.key\"\nlatency_ms = {}\n\
         [stats]\nlisten = \"{}\"\n",
        opts.listen,
        opts.latency_ms,
        opts.stats_listen,
        dir = opts.dir.display(),
    );
    for i in 0..opts.sessions {
        let id = device_id(i);
        let fp = tls::write_identity(&opts.dir, &id)?;
        toml += &format!(
            "\n[[device]]\nid = \"{id}\"\nfingerprint = \"{}\"\n[[device.output]]\nkind = \"udp\"\naddress = \"{}\"\n",
            tls::format_fingerprint(&fp),
            opts.output
        );
    }
    let path = opts.dir.join("relay.toml");
    // Check it before anyone relies on it.
    config::parse_relay(&toml, &path)?;
    std::fs::write(&path, toml).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Options of [`run`].
#[derive(Debug, Clone)]
pub struct LoadgenOptions {
    /// Where [`prepare`] wrote the device identities.
    pub dir: PathBuf,
    pub relay: SocketAddr,
    /// `sha256:...` of the relay certificate.
    pub relay_fingerprint: String,
    pub sessions: usize,
    /// Media rate of each session, bit/s.
    pub rate_bps: u64,
    /// Links (QUIC connections) per session.
    pub links: usize,
    /// Measured window.
    pub duration: Duration,
    /// Time for the links to connect before the window opens.
    pub warmup: Duration,
    pub latency_ms: u32,
}

/// What the edges did during the window.
#[derive(Debug, Clone, Serialize)]
pub struct LoadgenReport {
    pub sessions: usize,
    pub links_per_session: usize,
    pub rate_bps_per_session: u64,
    pub window_s: f64,
    /// Links connected at the end of the window (of `sessions * links`).
    pub links_connected: usize,
    /// TS bytes the sources handed to the edges in the window, in bits.
    pub offered_media_bits: u64,
    pub offered_mbps: f64,
    /// Datagram bytes the edges sent on their links (media + Braid header, copies,
    /// retransmits, probes), in bits; QUIC framing not included.
    pub sent_datagram_bits: u64,
    pub sent_mbps: f64,
    pub datagrams_sent: u64,
    pub retransmits: u64,
    pub duplicates: u64,
    pub expired_unsent: u64,
    /// Edge process CPU (user + system) in the window.
    pub edge_cpu_s: f64,
    pub edge_cpu_user_s: f64,
    pub edge_cpu_sys_s: f64,
    /// Cores used on average (`edge_cpu_s / window_s`).
    pub edge_cpu_util: f64,
    pub edge_cpu_s_per_gbit: f64,
}

/// (utime, stime) of process `pid` ("self" for this one) in seconds.
pub fn proc_cpu(pid: &str) -> Result<(f64, f64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    parse_stat_cpu(&text).ok_or_else(|| anyhow!("malformed /proc/{pid}/stat"))
}

/// utime and stime (fields 14 and 15) of a `/proc/PID/stat` line, in seconds.
fn parse_stat_cpu(text: &str) -> Option<(f64, f64)> {
    // comm (field 2) may contain spaces and parentheses: fields resume after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state), so field 14 is f[11].
    let u: u64 = f.get(11)?.parse().ok()?;
    let s: u64 = f.get(12)?.parse().ok()?;
    Some((u as f64 / CLK_TCK, s as f64 / CLK_TCK))
}

#[derive(Default)]
struct Totals {
    media_bytes: u64,
    sent_bytes: u64,
    datagrams: u64,
    retransmits: u64,
    duplicates: u64,
    expired: u64,
    connected: usize,
}

fn totals(edges: &[EdgeHandle]) -> Totals {
    let mut t = Totals::default();
    for e in edges {
        let s = e.stats();
        t.media_bytes += s.sender.media_bytes_in;
        t.retransmits += s.sender.retransmits;
        t.duplicates += s.sender.duplicates;
        t.expired += s.sender.expired_unsent;
        for l in &s.sender.links {
            t.sent_bytes += l.bytes_sent;
            t.datagrams += l.datagrams_sent;
        }
        t.connected += s.links.iter().filter(|l| l.connected).count();
    }
    t
}

fn edge_toml(opts: &LoadgenOptions, i: usize) -> String {
    let id = device_id(i);
    let mut t = format!(
        "[device]\nid = \"{id}\"\ncert = \"{id}.crt\"\nkey = \"{id}.key\"\n\
         [relay]\naddress = \"{}\"\nfingerprint = \"{}\"\nlatency_ms = {}\n\
         [input]\nkind = \"test\"\nrate_kbps = {}\n[stats]\nenabled = false\n",
        opts.relay,
        opts.relay_fingerprint,
        opts.latency_ms,
        (opts.rate_bps / 1000).max(100)
    );
    for j in 0..opts.links {
        t += &format!("[[link]]\nname = \"l{j}\"\nbind = \"127.0.0.{}\"\n", 11 + j);
    }
    t
}

/// Runs the edges for `warmup + duration` and reports the window.
pub async fn run(opts: LoadgenOptions) -> Result<LoadgenReport> {
    if opts.sessions == 0 || opts.links == 0 || opts.links > 200 {
        return Err(anyhow!("need sessions >= 1 and 1 <= links <= 200"));
    }
    let mut edges = Vec::with_capacity(opts.sessions);
    for i in 0..opts.sessions {
        let path: &Path = &opts.dir.join(format!("{}.toml", device_id(i)));
        let cfg = config::parse_edge(&edge_toml(&opts, i), path)?;
        let source: Box<dyn MediaSource> = Box::new(TestSource {
            rate_bps: opts.rate_bps,
        });
        let e = edge::start_with_source(cfg, source, EdgeOptions::default())
            .await
            .with_context(|| format!("starting edge {}", device_id(i)))?;
        edges.push(e);
    }
    tokio::time::sleep(opts.warmup).await;

    let a = totals(&edges);
    let cpu_a = proc_cpu("self")?;
    let t_a = Instant::now();
    eprintln!("{MARK_START} (links connected: {})", a.connected);
    tokio::time::sleep(opts.duration).await;
    let b = totals(&edges);
    let cpu_b = proc_cpu("self")?;
    let window = t_a.elapsed().as_secs_f64();
    eprintln!("{MARK_END} (links connected: {})", b.connected);
    // Keep the links up a moment so the relay can be sampled with them connected.
    tokio::time::sleep(HOLD).await;

    for e in edges {
        e.shutdown().await;
    }

    let media_bits = (b.media_bytes - a.media_bytes) * 8;
    let sent_bits = (b.sent_bytes - a.sent_bytes) * 8;
    let (user, sys) = (cpu_b.0 - cpu_a.0, cpu_b.1 - cpu_a.1);
    let cpu = user + sys;
    Ok(LoadgenReport {
        sessions: opts.sessions,
        links_per_session: opts.links,
        rate_bps_per_session: opts.rate_bps,
        window_s: window,
        links_connected: b.connected,
        offered_media_bits: media_bits,
        offered_mbps: media_bits as f64 / window / 1e6,
        sent_datagram_bits: sent_bits,
        sent_mbps: sent_bits as f64 / window / 1e6,
        datagrams_sent: b.datagrams - a.datagrams,
        retransmits: b.retransmits - a.retransmits,
        duplicates: b.duplicates - a.duplicates,
        expired_unsent: b.expired - a.expired,
        edge_cpu_s: cpu,
        edge_cpu_user_s: user,
        edge_cpu_sys_s: sys,
        edge_cpu_util: cpu / window,
        edge_cpu_s_per_gbit: if media_bits > 0 {
            cpu / (media_bits as f64 / 1e9)
        } else {
            0.0
        },
    })
}

/// `braid loadgen ...` (the CLI lives here so main.rs only dispatches).
#[derive(Debug, clap::Subcommand)]
pub enum LoadgenCmd {
    /// Write DIR/devN.crt/.key for N in 0..SESSIONS and DIR/relay.toml listing them
    /// (the relay's identity: `braid keygen --dir DIR --name relay`).
    Prepare {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        sessions: usize,
        #[arg(long, default_value = "127.0.0.1:7000")]
        listen: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:9091")]
        stats_listen: SocketAddr,
        /// Every device's UDP output (default: discard port, nothing listening).
        #[arg(long, default_value = "127.0.0.1:9")]
        output: SocketAddr,
        #[arg(long, default_value_t = 500)]
        latency_ms: u32,
    },
    /// Run SESSIONS edges against RELAY and print a JSON report of the window.
    Run {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        relay: SocketAddr,
        /// sha256:... printed by `braid keygen` for the relay.
        #[arg(long)]
        relay_fingerprint: String,
        #[arg(long)]
        sessions: usize,
        /// Media rate per session, e.g. 10M.
        #[arg(long, default_value = "10M")]
        rate: String,
        #[arg(long, default_value_t = 2)]
        links: usize,
        /// Measured window, seconds.
        #[arg(long, default_value_t = 20.0)]
        duration: f64,
        /// Seconds for the links to connect before the window opens.
        #[arg(long, default_value_t = 3.0)]
        warmup: f64,
        #[arg(long, default_value_t = 500)]
        latency_ms: u32,
    },
}

/// Runs one `braid loadgen` subcommand, printing its result on stdout.
pub async fn cli(cmd: LoadgenCmd) -> Result<()> {
    match cmd {
        LoadgenCmd::Prepare {
            dir,
            sessions,
            listen,
            stats_listen,
            output,
            latency_ms,
        } => {
            let path = prepare(&PrepareOptions {
                dir,
                sessions,
                listen,
                stats_listen,
                output,
                latency_ms,
            })?;
            println!("{}", path.display());
        }
        LoadgenCmd::Run {
            dir,
            relay,
            relay_fingerprint,
            sessions,
            rate,
            links,
            duration,
            warmup,
            latency_ms,
        } => {
            let rate_bps =
                super::emulator::parse_rate(&rate).map_err(|e| anyhow!("--rate: {e}"))?;
            let report = run(LoadgenOptions {
                dir,
                relay,
                relay_fingerprint,
                sessions,
                rate_bps: rate_bps as u64,
                links,
                duration: Duration::from_secs_f64(duration),
                warmup: Duration::from_secs_f64(warmup),
                latency_ms,
            })
            .await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_comm_with_spaces() {
        let line = "1234 (tokio (rt) w) S 1 2 3 4 5 6 7 8 9 10 250 75 0 0 20 0 8 0";
        assert_eq!(parse_stat_cpu(line), Some((2.5, 0.75)));
        assert!(proc_cpu("self").is_ok());
    }

    #[test]
    fn prepare_writes_a_valid_relay_config() {
        let dir = std::env::temp_dir().join(format!("braid-loadgen-{}", std::process::id()));
        let p = prepare(&PrepareOptions {
            dir: dir.clone(),
            sessions: 2,
            listen: "127.0.0.1:7000".parse().unwrap(),
            stats_listen: "127.0.0.1:9091".parse().unwrap(),
            output: "127.0.0.1:9".parse().unwrap(),
            latency_ms: 500,
        })
        .unwrap();
        let cfg = config::load_relay(&p).unwrap();
        assert_eq!(cfg.devices.len(), 2);
        assert!(dir.join("dev1.key").exists());
        let t = edge_toml(
            &LoadgenOptions {
                dir: dir.clone(),
                relay: "127.0.0.1:7000".parse().unwrap(),
                relay_fingerprint: tls::format_fingerprint(&[7; 32]),
                sessions: 2,
                rate_bps: 10_000_000,
                links: 2,
                duration: Duration::from_secs(1),
                warmup: Duration::from_secs(1),
                latency_ms: 500,
            },
            1,
        );
        let e = config::parse_edge(&t, &dir.join("dev1.toml")).unwrap();
        assert_eq!(e.links.len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
