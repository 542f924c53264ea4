//! Real-time userspace UDP link emulator (netem is not available on our machines).
//!
//! A UDP proxy between the edge and the relay. Every edge link sends to one listening
//! address; links are told apart by the packet's **source IP** (e.g. 127.0.0.11,
//! 127.0.0.12, ...; on Linux all of 127.0.0.0/8 is on loopback, so the edge can bind
//! its link sockets to those addresses without setup). For each client 4-tuple the
//! emulator opens its own upstream socket (bound to `127.0.0.1:0`, or the unspecified
//! address of the relay's family if the relay is not on loopback) connected to the
//! relay, so the relay sees one distinct address per link. Replies from the relay on
//! that socket go back through the link's downlink model and leave from the listening
//! socket to the client's address.
//!
//! Each link has an uplink and a downlink [`LinkModel`] (trace, droptail queue, base
//! delay, random loss, outages; see [`crate::sim::linkmodel`]). Several 4-tuples from
//! the same source IP share the link's models. Packets from unknown source IPs are
//! dropped and counted unless [`EmulatorConfig::pass_unknown`] is set, in which case
//! they (and their replies) are forwarded unshaped.
//!
//! Time zero for traces and outages is the epoch given to [`Emulator::start`] (or
//! `Instant::now()` when it starts if `None`).
//!
//! # In-process use (the sim runner)
//!
//! ```no_run
//! # async fn f(cfg: braid::sim::emulator::EmulatorConfig) -> anyhow::Result<()> {
//! use braid::sim::emulator::Emulator;
//! let handle = Emulator::start(cfg, None).await?;   // binds, spawns a tokio task
//! let addr = handle.local_addr();                   // where the edge links send
//! let live = handle.stats();                        // snapshot, any time
//! let last = handle.shutdown().await?;              // stop and get final stats
//! # Ok(()) }
//! ```
//!
//! Dropping the [`EmulatorHandle`] also stops the emulator. [`run`] is the same loop
//! for a caller that owns the task and a shutdown `watch` channel (the CLI).
//!
//! # Link specs ([`parse_link_spec`])
//!
//! `SOURCE_IP[,key=value]...`, keys (uplink unless prefixed `down-`):
//!
//! | key | meaning | default |
//! |---|---|---|
//! | `name=STR` | link name in stats | the source IP |
//! | `trace=PATH` | mahimahi trace file | unlimited capacity |
//! | `rate=RATE` | constant-rate trace instead, e.g. `4M`, `500k`, `4mbit`, `12e6` (bit/s) | |
//! | `offset=DUR` | where in the trace the epoch falls | `0ms` |
//! | `delay=DUR` | one-way base delay | `0ms` |
//! | `queue=BYTES` | droptail limit | `375000` |
//! | `loss=P` | independent random loss probability | `0` |
//! | `outage=DUR-DUR` | `[start, end)` from the epoch; repeatable | none |
//! | `seed=N` | loss RNG seed | derived from the IP |
//! | `down-trace`, `down-rate`, `down-offset`, `down-delay`, `down-queue`, `down-loss`, `down-outage`, `down-seed` | the same for the downlink | unlimited capacity, the uplink's delay and outages, no loss, 375000 |
//!
//! Durations are a number with a unit: `us`, `ms`, `s` (e.g. `40ms`, `1.5s`). Example:
//! `127.0.0.11,trace=/traces/Verizon-LTE-short.up,delay=40ms,queue=375000,loss=0.01,outage=30s-60s,down-delay=40ms`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

use super::linkmodel::{LinkModel, LinkModelStats, LinkParams};
use super::trace::Trace;

/// Largest datagram handled.
const MAX_DATAGRAM: usize = 65_536;

/// One emulated link, identified by the source IP of the edge's packets.
#[derive(Debug, Clone)]
pub struct EmuLink {
    pub source_ip: IpAddr,
    pub name: String,
    /// Edge -> relay.
    pub up: LinkParams,
    /// Relay -> edge.
    pub down: LinkParams,
}

#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Where the edge links send.
    pub listen: SocketAddr,
    /// The relay.
    pub relay: SocketAddr,
    pub links: Vec<EmuLink>,
    /// Forward packets from unknown source IPs unshaped (else drop and count).
    pub pass_unknown: bool,
}

/// Counters of one link, both directions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EmuLinkStats {
    pub name: String,
    pub source_ip: Option<IpAddr>,
    pub up: LinkModelStats,
    pub down: LinkModelStats,
    /// Client 4-tuples seen on this link.
    pub flows: u64,
    /// Delivered by the model but the socket send failed.
    pub send_errors: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EmulatorStats {
    /// In the order of [`EmulatorConfig::links`].
    pub links: Vec<EmuLinkStats>,
    pub unknown_dropped_packets: u64,
    pub unknown_dropped_bytes: u64,
    /// With `pass_unknown`: packets forwarded unshaped, both directions.
    pub unknown_passed_packets: u64,
    pub unknown_passed_bytes: u64,
    pub unknown_send_errors: u64,
}

impl EmulatorStats {
    /// Stats of the link called `name`.
    pub fn link(&self, name: &str) -> Option<&EmuLinkStats> {
        self.links.iter().find(|l| l.name == name)
    }
}

/// Namespace for [`Emulator::start`].
#[derive(Debug)]
pub struct Emulator;

/// A running emulator; dropping it stops the emulator.
#[derive(Debug)]
pub struct EmulatorHandle {
    local_addr: SocketAddr,
    epoch: Instant,
    stats: Arc<Mutex<EmulatorStats>>,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<anyhow::Result<EmulatorStats>>>,
    /// (link index, loss) changes for the running loop.
    control: mpsc::UnboundedSender<(usize, f64)>,
    names: Vec<String>,
}

impl Emulator {
    /// Bind the listening socket and spawn the emulator on the current tokio runtime.
    /// `epoch` is time zero of traces and outages (default: now).
    pub async fn start(
        cfg: EmulatorConfig,
        epoch: Option<Instant>,
    ) -> anyhow::Result<EmulatorHandle> {
        let epoch = epoch.unwrap_or_else(Instant::now);
        let state = State::new(&cfg, epoch)?;
        let listen = UdpSocket::bind(cfg.listen)
            .await
            .with_context(|| format!("emulator: binding {}", cfg.listen))?;
        let local_addr = listen.local_addr()?;
        let stats = Arc::new(Mutex::new(state.stats.clone()));
        let (tx, rx) = watch::channel(false);
        let (control, control_rx) = mpsc::unbounded_channel();
        let names = cfg.links.iter().map(|l| l.name.clone()).collect();
        let task = tokio::spawn(run_loop(
            cfg,
            state,
            listen,
            rx,
            Some(stats.clone()),
            control_rx,
        ));
        Ok(EmulatorHandle {
            local_addr,
            epoch,
            stats,
            shutdown: tx,
            task: Some(task),
            control,
            names,
        })
    }
}

impl EmulatorHandle {
    /// The listening address (useful when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Time zero of traces and outages.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// Sets the random loss of the link called `name`, both directions, from now on
    /// (1.0 cuts the link, as a modem losing its network; tests of failover seen
    /// from outside). Returns false for an unknown name.
    pub fn set_loss(&self, name: &str, loss: f64) -> bool {
        match self.names.iter().position(|n| n == name) {
            Some(i) => self.control.send((i, loss)).is_ok(),
            None => false,
        }
    }

    /// A snapshot of the counters (updated after every packet/timer event).
    pub fn stats(&self) -> EmulatorStats {
        self.stats.lock().expect("stats lock").clone()
    }

    /// Stop the emulator (packets still queued are discarded) and return final stats.
    pub async fn shutdown(mut self) -> anyhow::Result<EmulatorStats> {
        let _ = self.shutdown.send(true);
        match self.task.take() {
            Some(t) => t.await.context("emulator task panicked")?,
            None => Ok(self.stats()),
        }
    }
}

impl Drop for EmulatorHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// Run the emulator until `shutdown` becomes true (or its sender is dropped); returns
/// the final stats. `epoch` is time zero of traces and outages.
pub async fn run(
    cfg: EmulatorConfig,
    epoch: Instant,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<EmulatorStats> {
    let state = State::new(&cfg, epoch)?;
    let listen = UdpSocket::bind(cfg.listen)
        .await
        .with_context(|| format!("emulator: binding {}", cfg.listen))?;
    // No one changes the links of a standalone emulator: the sender stays here.
    let (_control, control_rx) = mpsc::unbounded_channel();
    run_loop(cfg, state, listen, shutdown, None, control_rx).await
}

struct Flow {
    client: SocketAddr,
    link: Option<usize>,
    upstream: Arc<UdpSocket>,
}

struct LinkState {
    up: LinkModel<(usize, Bytes)>,
    down: LinkModel<(SocketAddr, Bytes)>,
}

struct State {
    links: Vec<LinkState>,
    by_ip: HashMap<IpAddr, usize>,
    flows: Vec<Flow>,
    by_client: HashMap<SocketAddr, usize>,
    stats: EmulatorStats,
}

impl State {
    fn new(cfg: &EmulatorConfig, epoch: Instant) -> anyhow::Result<State> {
        let mut by_ip = HashMap::new();
        let mut links = Vec::new();
        let mut stats = EmulatorStats::default();
        for (i, l) in cfg.links.iter().enumerate() {
            if by_ip.insert(l.source_ip, i).is_some() {
                anyhow::bail!("emulator: two links with source IP {}", l.source_ip);
            }
            links.push(LinkState {
                up: LinkModel::new(l.up.clone(), epoch),
                down: LinkModel::new(l.down.clone(), epoch),
            });
            stats.links.push(EmuLinkStats {
                name: l.name.clone(),
                source_ip: Some(l.source_ip),
                ..EmuLinkStats::default()
            });
        }
        Ok(State {
            links,
            by_ip,
            flows: Vec::new(),
            by_client: HashMap::new(),
            stats,
        })
    }

    fn refresh_stats(&mut self) {
        for (s, l) in self.stats.links.iter_mut().zip(&self.links) {
            s.up = l.up.stats();
            s.down = l.down.stats();
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.links
            .iter()
            .flat_map(|l| [l.up.poll_timeout(), l.down.poll_timeout()])
            .flatten()
            .min()
    }
}

fn transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionReset | Interrupted | WouldBlock
    )
}

/// Datagram from the relay on a flow's upstream socket.
struct FromRelay {
    flow: usize,
    data: Bytes,
}

async fn open_upstream(relay: SocketAddr) -> std::io::Result<UdpSocket> {
    let bind: SocketAddr = match relay.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => (Ipv4Addr::LOCALHOST, 0).into(),
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(ip) if ip.is_loopback() => (Ipv6Addr::LOCALHOST, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let s = UdpSocket::bind(bind).await?;
    s.connect(relay).await?;
    Ok(s)
}

async fn read_upstream(flow: usize, sock: Arc<UdpSocket>, tx: mpsc::UnboundedSender<FromRelay>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match sock.recv(&mut buf).await {
            Ok(n) => {
                let data = Bytes::copy_from_slice(&buf[..n]);
                if tx.send(FromRelay { flow, data }).is_err() {
                    return;
                }
            }
            Err(e) if transient(&e) => continue,
            Err(e) => {
                tracing::warn!("emulator: upstream socket of flow {flow}: {e}");
                return;
            }
        }
    }
}

async fn run_loop(
    cfg: EmulatorConfig,
    mut st: State,
    listen: UdpSocket,
    mut shutdown: watch::Receiver<bool>,
    shared: Option<Arc<Mutex<EmulatorStats>>>,
    mut control: mpsc::UnboundedReceiver<(usize, f64)>,
) -> anyhow::Result<EmulatorStats> {
    let (tx, mut rx) = mpsc::unbounded_channel::<FromRelay>();
    let mut readers = JoinSet::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        if *shutdown.borrow() {
            break;
        }
        // Hand out everything due.
        let now = Instant::now();
        for li in 0..st.links.len() {
            while let Some((flow, data)) = st.links[li].up.poll_deliver(now) {
                if st.flows[flow].upstream.send(&data).await.is_err() {
                    st.stats.links[li].send_errors += 1;
                }
            }
            while let Some((client, data)) = st.links[li].down.poll_deliver(now) {
                if listen.send_to(&data, client).await.is_err() {
                    st.stats.links[li].send_errors += 1;
                }
            }
        }
        st.refresh_stats();
        if let Some(shared) = &shared {
            shared.lock().expect("stats lock").clone_from(&st.stats);
        }
        let deadline = st.next_deadline();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            r = shutdown.changed() => {
                if r.is_err() {
                    break; // sender dropped
                }
            }
            r = listen.recv_from(&mut buf) => {
                let (n, client) = match r {
                    Ok(x) => x,
                    Err(e) if transient(&e) => continue,
                    Err(e) => return Err(e).context("emulator: receiving on the listening socket"),
                };
                let now = Instant::now();
                let data = Bytes::copy_from_slice(&buf[..n]);
                let link = st.by_ip.get(&client.ip()).copied();
                if link.is_none() && !cfg.pass_unknown {
                    st.stats.unknown_dropped_packets += 1;
                    st.stats.unknown_dropped_bytes += n as u64;
                    continue;
                }
                let flow = match st.by_client.get(&client) {
                    Some(&f) => f,
                    None => {
                        let sock = Arc::new(
                            open_upstream(cfg.relay)
                                .await
                                .with_context(|| format!("emulator: upstream socket to {}", cfg.relay))?,
                        );
                        let f = st.flows.len();
                        st.flows.push(Flow { client, link, upstream: sock.clone() });
                        st.by_client.insert(client, f);
                        if let Some(li) = link {
                            st.stats.links[li].flows += 1;
                        }
                        readers.spawn(read_upstream(f, sock, tx.clone()));
                        f
                    }
                };
                match link {
                    Some(li) => {
                        st.links[li].up.enqueue(now, n, (flow, data));
                    }
                    None => {
                        st.stats.unknown_passed_packets += 1;
                        st.stats.unknown_passed_bytes += n as u64;
                        if st.flows[flow].upstream.send(&data).await.is_err() {
                            st.stats.unknown_send_errors += 1;
                        }
                    }
                }
            }
            Some(FromRelay { flow, data }) = rx.recv() => {
                let now = Instant::now();
                let client = st.flows[flow].client;
                match st.flows[flow].link {
                    Some(li) => {
                        let n = data.len();
                        st.links[li].down.enqueue(now, n, (client, data));
                    }
                    None => {
                        st.stats.unknown_passed_packets += 1;
                        st.stats.unknown_passed_bytes += data.len() as u64;
                        if listen.send_to(&data, client).await.is_err() {
                            st.stats.unknown_send_errors += 1;
                        }
                    }
                }
            }
            Some((li, loss)) = control.recv() => {
                if let Some(l) = st.links.get_mut(li) {
                    l.up.set_loss(loss);
                    l.down.set_loss(loss);
                }
            }
            () = sleep => {}
        }
    }
    readers.shutdown().await;
    st.refresh_stats();
    if let Some(shared) = &shared {
        shared.lock().expect("stats lock").clone_from(&st.stats);
    }
    Ok(st.stats)
}

/// Parse a duration with a unit: `500us`, `40ms`, `1.5s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else {
        return Err(format!("duration {s:?} needs a unit (us, ms or s)"));
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("bad duration {s:?}"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("bad duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(v * mult))
}

/// Parse a rate in bit/s: `4000000`, `12e6`, `500k`, `4M`, `1G`, optionally followed by
/// `bit`, `bps` or `bit/s` (`4mbit`, `4Mbps`).
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let mut body = lower.as_str();
    for suffix in ["bit/s", "bps", "bit"] {
        if let Some(b) = body.strip_suffix(suffix) {
            body = b;
            break;
        }
    }
    let (num, mult) = match body.chars().last() {
        Some('k') => (&body[..body.len() - 1], 1e3),
        Some('m') => (&body[..body.len() - 1], 1e6),
        Some('g') => (&body[..body.len() - 1], 1e9),
        _ => (body, 1.0),
    };
    let v: f64 = num.trim().parse().map_err(|_| format!("bad rate {t:?}"))?;
    let v = v * mult;
    if !v.is_finite() || v <= 0.0 {
        return Err(format!("rate must be positive: {t:?}"));
    }
    Ok(v)
}

fn parse_outage(s: &str) -> Result<(Duration, Duration), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("outage {s:?} must be START-END, e.g. 30s-60s"))?;
    let (a, b) = (parse_duration(a)?, parse_duration(b)?);
    if b <= a {
        return Err(format!("outage {s:?} ends before it starts"));
    }
    Ok((a, b))
}

/// Parse a link spec (syntax in the module docs).
pub fn parse_link_spec(s: &str) -> Result<EmuLink, String> {
    let mut parts = s.split(',').map(str::trim);
    let ip_str = parts.next().unwrap_or_default();
    let source_ip: IpAddr = ip_str.parse().map_err(|_| {
        format!("link spec {s:?}: first item must be the source IP, got {ip_str:?}")
    })?;
    let mut name = None;
    let mut up = LinkParams {
        seed: seed_for(source_ip),
        ..LinkParams::default()
    };
    let mut down = LinkParams {
        seed: seed_for(source_ip) ^ 0x9E37_79B9_7F4A_7C15,
        ..LinkParams::default()
    };
    let mut down_delay = None;
    let mut down_outages: Option<Vec<(Duration, Duration)>> = None;
    for item in parts {
        if item.is_empty() {
            continue;
        }
        let (key, value) = item
            .split_once('=')
            .ok_or_else(|| format!("link spec {s:?}: {item:?} is not key=value"))?;
        let err = |e: String| format!("link spec {s:?}: {key}: {e}");
        let (p, k) = match key.strip_prefix("down-") {
            Some(k) => (&mut down, k),
            None => (&mut up, key),
        };
        let is_down = key.starts_with("down-");
        match k {
            "name" if !is_down => name = Some(value.to_string()),
            "trace" => {
                p.trace = Some(Arc::new(
                    Trace::load(value).map_err(|e| err(e.to_string()))?,
                ))
            }
            "rate" => p.trace = Some(Arc::new(Trace::constant(parse_rate(value).map_err(err)?))),
            "offset" => p.trace_offset = parse_duration(value).map_err(err)?,
            "delay" => {
                let d = parse_duration(value).map_err(err)?;
                p.delay = d;
                if is_down {
                    down_delay = Some(d);
                }
            }
            "queue" => {
                p.queue_bytes = value
                    .parse()
                    .map_err(|_| err(format!("bad byte count {value:?}")))?
            }
            "loss" => {
                let l: f64 = value
                    .parse()
                    .map_err(|_| err(format!("bad probability {value:?}")))?;
                if !(0.0..=1.0).contains(&l) {
                    return Err(err(format!("probability {l} not in [0, 1]")));
                }
                p.loss = l;
            }
            "outage" => {
                let o = parse_outage(value).map_err(err)?;
                if is_down {
                    down_outages.get_or_insert_with(Vec::new).push(o);
                } else {
                    p.outages.push(o);
                }
            }
            "seed" => {
                p.seed = value
                    .parse()
                    .map_err(|_| err(format!("bad seed {value:?}")))?
            }
            _ => return Err(format!("link spec {s:?}: unknown key {key:?}")),
        }
    }
    down.delay = down_delay.unwrap_or(up.delay);
    down.outages = down_outages.unwrap_or_else(|| up.outages.clone());
    if up.queue_bytes == 0 || down.queue_bytes == 0 {
        return Err(format!("link spec {s:?}: queue must be > 0"));
    }
    Ok(EmuLink {
        source_ip,
        name: name.unwrap_or_else(|| source_ip.to_string()),
        up,
        down,
    })
}

fn seed_for(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v) => u64::from(u32::from(v)),
        IpAddr::V6(v) => {
            let x = u128::from(v);
            (x as u64) ^ ((x >> 64) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::linkmodel::DEFAULT_QUEUE_BYTES;

    fn ms(x: u64) -> Duration {
        Duration::from_millis(x)
    }

    fn link(ip: &str, delay: Duration) -> EmuLink {
        let source_ip: IpAddr = ip.parse().unwrap();
        EmuLink {
            source_ip,
            name: ip.to_string(),
            up: LinkParams {
                delay,
                ..LinkParams::default()
            },
            down: LinkParams {
                delay,
                ..LinkParams::default()
            },
        }
    }

    /// UDP echo server; returns its address and the set of peers it saw.
    async fn echo_server() -> (SocketAddr, Arc<Mutex<Vec<SocketAddr>>>) {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let peers = Arc::new(Mutex::new(Vec::new()));
        let p = peers.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                {
                    let mut p = p.lock().unwrap();
                    if !p.contains(&from) {
                        p.push(from);
                    }
                }
                let _ = sock.send_to(&buf[..n], from).await;
            }
        });
        (addr, peers)
    }

    fn config(relay: SocketAddr, links: Vec<EmuLink>) -> EmulatorConfig {
        EmulatorConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            relay,
            links,
            pass_unknown: false,
        }
    }

    /// Send `n` pings one after the other; return the RTTs.
    async fn pings(from: &str, to: SocketAddr, n: usize) -> Vec<Duration> {
        let sock = UdpSocket::bind(format!("{from}:0")).await.unwrap();
        let mut rtts = Vec::new();
        let mut buf = [0u8; 64];
        for i in 0..n {
            let t0 = Instant::now();
            sock.send_to(&(i as u32).to_be_bytes(), to).await.unwrap();
            let (len, src) = tokio::time::timeout(ms(1000), sock.recv_from(&mut buf))
                .await
                .expect("echo timed out")
                .unwrap();
            assert_eq!(
                src, to,
                "replies come from the emulator's listening address"
            );
            assert_eq!(&buf[..len], &(i as u32).to_be_bytes());
            rtts.push(t0.elapsed());
        }
        rtts
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rtt_reflects_link_delays_and_unknown_sources_are_dropped() {
        let (relay, peers) = echo_server().await;
        let cfg = config(
            relay,
            vec![link("127.0.0.11", ms(20)), link("127.0.0.12", ms(60))],
        );
        let emu = Emulator::start(cfg, None).await.unwrap();
        let addr = emu.local_addr();
        let (a, b) = tokio::join!(pings("127.0.0.11", addr, 8), pings("127.0.0.12", addr, 4));
        for (rtts, want) in [(a, ms(40)), (b, ms(120))] {
            let min = *rtts.iter().min().unwrap();
            let max = *rtts.iter().max().unwrap();
            assert!(min >= want, "rtt {min:?} < {want:?}");
            assert!(
                max <= want + ms(15),
                "rtt {max:?} too far above {want:?}: {rtts:?}"
            );
        }
        // The relay saw one distinct address per link, none of them the clients'.
        let seen = peers.lock().unwrap().clone();
        assert_eq!(seen.len(), 2, "{seen:?}");

        // Unknown source: dropped and counted (default).
        let sock = UdpSocket::bind("127.0.0.13:0").await.unwrap();
        sock.send_to(b"who", addr).await.unwrap();
        let mut buf = [0u8; 16];
        assert!(tokio::time::timeout(ms(200), sock.recv_from(&mut buf))
            .await
            .is_err());
        let stats = emu.shutdown().await.unwrap();
        assert_eq!(stats.unknown_dropped_packets, 1);
        let l11 = stats.link("127.0.0.11").unwrap();
        assert_eq!(l11.up.packets_delivered, 8);
        assert_eq!(l11.down.packets_delivered, 8);
        assert_eq!(l11.flows, 1);
        assert_eq!(stats.link("127.0.0.12").unwrap().down.packets_delivered, 4);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pass_unknown_forwards_unshaped() {
        let (relay, _) = echo_server().await;
        let mut cfg = config(relay, vec![link("127.0.0.11", ms(50))]);
        cfg.pass_unknown = true;
        let emu = Emulator::start(cfg, None).await.unwrap();
        let rtts = pings("127.0.0.14", emu.local_addr(), 3).await;
        assert!(rtts.iter().all(|&r| r < ms(40)), "{rtts:?}");
        assert!(emu.stats().links[0].up.packets_in == 0);
        let s = emu.shutdown().await.unwrap();
        assert_eq!(s.unknown_passed_packets, 6);
        assert_eq!(s.unknown_dropped_packets, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn outage_window_drops_packets() {
        let (relay, _) = echo_server().await;
        let mut l = link("127.0.0.11", ms(10));
        l.up.outages = vec![(ms(300), ms(700))];
        l.down.outages = vec![(ms(300), ms(700))];
        let epoch = Instant::now();
        let emu = Emulator::start(config(relay, vec![l]), Some(epoch))
            .await
            .unwrap();
        let sock = Arc::new(UdpSocket::bind("127.0.0.11:0").await.unwrap());
        let addr = emu.local_addr();
        let recv_sock = sock.clone();
        let receiver = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut buf = [0u8; 16];
            while let Ok(Ok((n, _))) =
                tokio::time::timeout(ms(800), recv_sock.recv_from(&mut buf)).await
            {
                assert_eq!(n, 4);
                got.push(u32::from_be_bytes(buf[..4].try_into().unwrap()));
            }
            got
        });
        // One packet every 10 ms for 1 s; remember when each was sent.
        let mut sent_at = Vec::new();
        for i in 0..100u32 {
            tokio::time::sleep_until(tokio::time::Instant::from_std(epoch + ms(10 * i as u64)))
                .await;
            sent_at.push(epoch.elapsed());
            sock.send_to(&i.to_be_bytes(), addr).await.unwrap();
        }
        let got = receiver.await.unwrap();
        for (i, &t) in sent_at.iter().enumerate() {
            let received = got.contains(&(i as u32));
            // Uplink drops from 300 ms; replies of packets sent from 290 ms reach the
            // downlink inside the outage. Margins for scheduling jitter.
            if t < ms(280) || t >= ms(710) {
                assert!(received, "packet {i} sent at {t:?} lost");
            } else if t >= ms(300) && t < ms(690) {
                assert!(!received, "packet {i} sent at {t:?} got through the outage");
            }
        }
        let s = emu.shutdown().await.unwrap();
        let l = &s.links[0];
        assert!(l.up.dropped_outage_packets >= 35, "{l:?}");
        assert_eq!(l.up.packets_in, 100);
        assert_eq!(
            l.down.packets_delivered,
            got.len() as u64,
            "every echo that left the downlink arrived"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn constant_trace_caps_throughput() {
        // Sink relay counting bytes with arrival times.
        let sink = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let relay = sink.local_addr().unwrap();
        let arrivals = Arc::new(Mutex::new(Vec::<(Instant, usize)>::new()));
        let a = arrivals.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            while let Ok((n, _)) = sink.recv_from(&mut buf).await {
                a.lock().unwrap().push((Instant::now(), n));
            }
        });
        let mut l = link("127.0.0.11", ms(5));
        l.up = parse_link_spec("127.0.0.11,rate=4M,delay=5ms,queue=100000")
            .unwrap()
            .up;
        let epoch = Instant::now();
        let emu = Emulator::start(config(relay, vec![l]), Some(epoch))
            .await
            .unwrap();
        let addr = emu.local_addr();
        let sock = UdpSocket::bind("127.0.0.11:0").await.unwrap();
        // 8 Mbit/s of 1000-byte packets (one per ms) for 1 s.
        let payload = vec![0x47u8; 1000];
        let mut sent = 0u64;
        while sent < 1000 {
            let due = (epoch.elapsed().as_micros() as u64 / 1000 + 1).min(1000);
            while sent < due {
                sock.send_to(&payload, addr).await.unwrap();
                sent += 1;
            }
            tokio::time::sleep(ms(1)).await;
        }
        let send_end = Instant::now();
        let window_end = send_end + ms(5);
        tokio::time::sleep(ms(400)).await; // the 100 kB queue drains in 200 ms
        let arrivals = arrivals.lock().unwrap().clone();
        let in_window: usize = arrivals
            .iter()
            .filter(|(t, _)| *t <= window_end)
            .map(|(_, n)| n)
            .sum();
        let secs = (window_end - epoch).as_secs_f64();
        let rate = in_window as f64 * 8.0 / secs;
        assert!(
            (rate - 4e6).abs() <= 0.15 * 4e6,
            "throughput {rate} over {secs} s"
        );
        let s = emu.shutdown().await.unwrap();
        let up = s.links[0].up;
        assert_eq!(up.packets_in, 1000);
        assert!(up.dropped_queue_packets > 300, "{up:?}");
        assert_eq!(up.packets_pending(), 0, "{up:?}");
        let total: usize = arrivals.iter().map(|(_, n)| n).sum();
        assert_eq!(total as u64, up.bytes_delivered);
    }

    #[test]
    fn link_spec_parsing() {
        let l = parse_link_spec(
            "127.0.0.11,rate=4M,delay=40ms,queue=375000,loss=0.01,outage=30s-60s,outage=90s-91.5s,down-rate=2mbit",
        )
        .unwrap();
        assert_eq!(l.source_ip, "127.0.0.11".parse::<IpAddr>().unwrap());
        assert_eq!(l.name, "127.0.0.11");
        assert_eq!(l.up.delay, ms(40));
        assert_eq!(l.up.queue_bytes, 375_000);
        assert_eq!(l.up.loss, 0.01);
        assert_eq!(
            l.up.outages,
            vec![(ms(30_000), ms(60_000)), (ms(90_000), ms(91_500))]
        );
        assert_eq!(l.up.trace.as_ref().unwrap().mean_bps(), 4e6);
        // Downlink defaults: same delay and outages, no loss.
        assert_eq!(l.down.delay, ms(40));
        assert_eq!(l.down.outages, l.up.outages);
        assert_eq!(l.down.loss, 0.0);
        assert_eq!(l.down.trace.as_ref().unwrap().mean_bps(), 2e6);
        assert_ne!(l.up.seed, l.down.seed);

        let l = parse_link_spec(
            "127.0.0.12, name=tmo, delay=20ms, down-delay=5ms, down-outage=1s-2s, seed=9",
        )
        .unwrap();
        assert_eq!(l.name, "tmo");
        assert!(l.up.trace.is_none() && l.down.trace.is_none());
        assert_eq!((l.up.delay, l.down.delay), (ms(20), ms(5)));
        assert!(l.up.outages.is_empty());
        assert_eq!(l.down.outages, vec![(ms(1000), ms(2000))]);
        assert_eq!(l.up.seed, 9);
        assert_eq!(l.up.queue_bytes, DEFAULT_QUEUE_BYTES);

        for bad in [
            "",
            "nonsense",
            "127.0.0.11,delay=40",
            "127.0.0.11,loss=2",
            "127.0.0.11,outage=60s-30s",
            "127.0.0.11,frobnicate=1",
            "127.0.0.11,trace=/nonexistent/trace",
            "127.0.0.11,queue=lots",
            "127.0.0.11,rate=0",
            "127.0.0.11,delay",
        ] {
            assert!(parse_link_spec(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn link_spec_loads_trace_files() {
        let path = crate::sim::trace::traces_dir().join("Verizon-LTE-short.up");
        let l = parse_link_spec(&format!("127.0.0.11,trace={},offset=10s", path.display()))
            .unwrap_or_else(|e| panic!("{e} (set BRAID_TRACES to the mahimahi trace directory)"));
        let t = l.up.trace.unwrap();
        assert_eq!(t.name(), "Verizon-LTE-short.up");
        assert_eq!(l.up.trace_offset, ms(10_000));
    }

    #[test]
    fn parse_units() {
        assert_eq!(parse_duration("500us"), Ok(Duration::from_micros(500)));
        assert_eq!(parse_duration("1.5s"), Ok(ms(1500)));
        assert!(parse_duration("-1s").is_err());
        assert_eq!(parse_rate("12e6"), Ok(12e6));
        assert_eq!(parse_rate("500k"), Ok(500e3));
        assert_eq!(parse_rate("4Mbps"), Ok(4e6));
        assert_eq!(parse_rate("1G"), Ok(1e9));
        assert!(parse_rate("fast").is_err());
    }
}
