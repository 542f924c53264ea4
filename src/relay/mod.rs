//! Relay daemon: a thin tokio shell around [`crate::core::receiver::Receiver`].
//!
//! - One QUIC endpoint on `relay.listen`; devices are authenticated by TLS client
//!   certificate against the `[[device]]` fingerprints (unknown devices are refused
//!   in the handshake and counted).
//! - One task per connection (= one link): reads the `Join` on the control stream
//!   the edge opens, then forwards datagrams and RTT samples to its session.
//! - One task per session (device, session tag): owns the receiver, the outputs and
//!   the send side of every link (reports and NACKs as datagrams, summaries on the
//!   control streams). A `Join` with a new tag from the same device replaces the
//!   device's session (the edge restarted); a session with no link for 30 s ends.
//! - Outputs ([`Output`]): UDP sent from the session task; SRT, RTMP and file
//!   recording on threads of their own behind bounded queues, restarted with
//!   backoff when they fail ([`backoff`], `worker`).
//! - Stats on `stats.listen`: `/api/stats` (JSON) and `/metrics` (Prometheus).

pub mod backoff;
mod output;
mod output_file;
mod output_gst;
mod session;
mod stats;
mod worker;

pub use output::{
    open as open_output, Output, OutputState, OutputStats, UdpOutput, PARTIAL_FLUSH, UDP_GROUP,
};
pub use output_file::{segment_name, FORCE_ROTATE_AFTER};
pub use session::IDLE_END;
pub use stats::{LinkStats, OutputStatus, RelayStats, SessionStats};
pub use worker::{WorkerOutput, QUEUE_CHUNKS};

use crate::config::{self, RelayConfig};
use crate::core::sender::LinkId;
use crate::core::wire::{self, Control, MAX_CONTROL_FRAME, VERSION};
use crate::transport::{quic, tls};
use anyhow::{Context, Result};
use bytes::Bytes;
use session::{Session, SessionMsg, SessionRef};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;

/// QUIC application close codes used by the relay.
pub const CLOSE_NORMAL: u32 = 0;
/// The first control frame was refused (a `Reject` frame says why).
pub const CLOSE_REJECTED: u32 = 1;
/// A newer connection for the same link, or a newer session of the device, took over.
pub const CLOSE_REPLACED: u32 = 2;
/// The relay is shutting down, or the session ended.
pub const CLOSE_SHUTDOWN: u32 = 3;
/// The control stream broke the protocol (timeout, oversized frame).
pub const CLOSE_PROTOCOL: u32 = 4;

/// How long a connection may take to open its control stream and send `Join`.
const JOIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a connection reports its RTT to the session.
const RTT_INTERVAL: Duration = Duration::from_millis(100);
/// Session tags remembered per device after being replaced (late `Join`s of an
/// old session are refused instead of flipping back to it).
const RETIRED_TAGS: usize = 16;
/// Summaries queued per control stream before new ones are dropped.
const CTL_QUEUE: usize = 16;
/// Receive buffer asked for on the QUIC socket (see [`set_recv_buffer`]).
const RECV_BUFFER: usize = 4 * 1024 * 1024;

/// Observer of every packet the relay releases (used by `braid sim`).
#[derive(Debug, Clone)]
pub struct ReleaseEvent {
    pub device: String,
    pub session: u32,
    pub seq: u64,
    /// Edge ingest time, µs since the edge's session epoch.
    pub send_time_us: u64,
    /// TS bytes released.
    pub bytes: usize,
    /// When it was handed to the outputs.
    pub at: Instant,
}

/// In-process options of [`start`].
#[derive(Debug, Default)]
pub struct RelayOptions {
    pub release_tap: Option<mpsc::UnboundedSender<ReleaseEvent>>,
}

/// Holds a clone of a channel sender; [`RelayHandle::shutdown`] waits until every
/// guard is dropped, i.e. every task has ended.
#[derive(Clone)]
pub(crate) struct TaskGuard(#[allow(dead_code)] mpsc::Sender<()>);

/// Sessions by device.
#[derive(Default)]
pub(crate) struct Registry {
    devices: HashMap<String, DeviceSessions>,
    next_instance: u64,
}

#[derive(Default)]
struct DeviceSessions {
    current: Option<SessionRef>,
    retired: VecDeque<u32>,
}

impl Registry {
    /// Called by a session task on its way out.
    fn remove_if(&mut self, device: &str, instance: u64) {
        if let Some(d) = self.devices.get_mut(device) {
            if d.current.as_ref().is_some_and(|s| s.instance == instance) {
                d.current = None;
            }
        }
    }

    fn all(&self) -> Vec<SessionRef> {
        self.devices
            .values()
            .filter_map(|d| d.current.clone())
            .collect()
    }
}

struct Shared {
    cfg: RelayConfig,
    allow: tls::AllowList,
    rejected: Arc<AtomicU64>,
    connections_total: AtomicU64,
    connections_active: AtomicU64,
    rejected_joins: AtomicU64,
    registry: Arc<Mutex<Registry>>,
    tap: Option<mpsc::UnboundedSender<ReleaseEvent>>,
    shutdown: watch::Receiver<bool>,
    started: Instant,
}

/// A clonable source of [`RelayStats`] snapshots (what the HTTP router holds).
#[derive(Clone)]
pub struct StatsSource(Arc<Shared>);

impl StatsSource {
    /// Asks every session for its counters (each answers from its own task).
    pub async fn snapshot(&self) -> RelayStats {
        let sh = &self.0;
        let refs = sh.registry.lock().unwrap_or_else(|e| e.into_inner()).all();
        let mut waits = Vec::with_capacity(refs.len());
        for r in refs {
            let (tx, rx) = oneshot::channel();
            if r.tx.send(SessionMsg::Stats(tx)).await.is_ok() {
                waits.push(rx);
            }
        }
        let mut sessions = Vec::with_capacity(waits.len());
        for w in waits {
            if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(1), w).await {
                sessions.push(s);
            }
        }
        sessions.sort_by(|a, b| (&a.device, a.session).cmp(&(&b.device, b.session)));
        RelayStats {
            rejected_devices: sh.rejected.load(Ordering::Relaxed),
            connections_total: sh.connections_total.load(Ordering::Relaxed),
            connections_active: sh.connections_active.load(Ordering::Relaxed),
            rejected_joins: sh.rejected_joins.load(Ordering::Relaxed),
            uptime_s: sh.started.elapsed().as_secs_f64(),
            sessions,
        }
    }
}

/// A running relay.
pub struct RelayHandle {
    local_addr: SocketAddr,
    stats_addr: SocketAddr,
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    done: mpsc::Receiver<()>,
    accept_task: JoinHandle<()>,
    http_task: JoinHandle<()>,
}

impl RelayHandle {
    /// QUIC listen address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stats HTTP address (useful with port 0).
    pub fn stats_addr(&self) -> SocketAddr {
        self.stats_addr
    }

    pub async fn stats(&self) -> RelayStats {
        self.stats_source().snapshot().await
    }

    pub fn stats_source(&self) -> StatsSource {
        StatsSource(self.shared.clone())
    }

    /// Stops accepting, ends every session (outputs flushed, links closed with
    /// [`CLOSE_SHUTDOWN`]), stops the stats server and waits for the endpoint to go idle.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        let _ = self.accept_task.await;
        // Every task holds a guard; recv() returns None once all are dropped.
        if tokio::time::timeout(Duration::from_secs(3), self.done.recv())
            .await
            .is_err()
        {
            tracing::warn!("relay tasks still running after 3 s; closing anyway");
        }
        self.endpoint
            .close(CLOSE_SHUTDOWN.into(), b"relay shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
        if tokio::time::timeout(Duration::from_secs(2), &mut self.http_task)
            .await
            .is_err()
        {
            self.http_task.abort();
        }
        tracing::info!("relay stopped");
    }
}

/// Starts the relay: QUIC endpoint on `cfg.listen`, stats on `cfg.stats_listen`.
pub async fn start(cfg: RelayConfig, opts: RelayOptions) -> Result<RelayHandle> {
    // GStreamer's first init scans the plugin registry: off the runtime threads.
    let kinds: Vec<&'static str> = cfg
        .devices
        .iter()
        .flat_map(|d| d.outputs.iter().map(|o| o.kind()))
        .collect();
    tokio::task::spawn_blocking(move || output_gst::preflight(kinds))
        .await
        .context("GStreamer preflight")?
        .map_err(anyhow::Error::msg)?;
    let (chain, key) = tls::load_identity(&cfg.cert, &cfg.key)?;
    let allow: tls::AllowList = Arc::new(RwLock::new(
        cfg.devices
            .iter()
            .map(|d| (d.fingerprint, d.id.clone()))
            .collect(),
    ));
    let rejected = Arc::new(AtomicU64::new(0));
    let server = quic::server_config(chain, key, allow.clone(), rejected.clone())?;
    let sock = std::net::UdpSocket::bind(cfg.listen)
        .with_context(|| format!("binding QUIC socket {}", cfg.listen))?;
    set_recv_buffer(&sock);
    let endpoint = quic::endpoint_on(sock, Some(server))?;
    let local_addr = endpoint.local_addr()?;

    let listener = crate::system::http::bind(cfg.stats_listen).await?;
    let stats_addr = listener.local_addr()?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (done_tx, done_rx) = mpsc::channel::<()>(1);
    let guard = TaskGuard(done_tx);
    let shared = Arc::new(Shared {
        cfg,
        allow,
        rejected,
        connections_total: AtomicU64::new(0),
        connections_active: AtomicU64::new(0),
        rejected_joins: AtomicU64::new(0),
        registry: Arc::new(Mutex::new(Registry::default())),
        tap: opts.release_tap,
        shutdown: shutdown_rx.clone(),
        started: Instant::now(),
    });

    let router = crate::system::http::relay_router(StatsSource(shared.clone()));
    let mut http_shutdown = shutdown_rx.clone();
    let http_task = tokio::spawn(async move {
        let stop = async move {
            let _ = http_shutdown.wait_for(|s| *s).await;
        };
        if let Err(e) = crate::system::http::serve_on(listener, router, stop).await {
            tracing::error!(error = %e, "stats server failed");
        }
    });

    let accept_task = tokio::spawn(accept_loop(endpoint.clone(), shared.clone(), guard));
    tracing::info!(listen = %local_addr, stats = %stats_addr, devices = shared.cfg.devices.len(), "relay listening");
    Ok(RelayHandle {
        local_addr,
        stats_addr,
        endpoint,
        shared,
        shutdown: shutdown_tx,
        done: done_rx,
        accept_task,
        http_task,
    })
}

/// `braid relay --config FILE`: runs until SIGINT/SIGTERM, then shuts down gracefully.
pub async fn run(config_path: &Path) -> Result<()> {
    let cfg = config::load_relay(config_path)?;
    use crate::system::notify;
    let relay = start(cfg, RelayOptions::default()).await?;
    // The systemd watchdog is fed only while the relay answers a stats request
    // (which every session task serves): a hung loop stops the pings.
    let relay_ref = &relay;
    notify::serve_until_signal("the relay", |look| async move {
        tokio::time::timeout(look, relay_ref.stats()).await.is_ok()
    })
    .await;
    tracing::info!("signal received; shutting down");
    relay.shutdown().await;
    Ok(())
}

async fn accept_loop(endpoint: quinn::Endpoint, shared: Arc<Shared>, guard: TaskGuard) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        let incoming = tokio::select! {
            _ = stopping(&mut shutdown) => break,
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
        };
        let shared = shared.clone();
        let guard = guard.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            // Unknown devices fail here (the verifier counts and logs them).
            let mut shutdown = shared.shutdown.clone();
            let conn = tokio::select! {
                _ = stopping(&mut shutdown) => return,
                c = incoming => match c {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(%remote, error = %e, "handshake failed");
                        return;
                    }
                },
            };
            shared.connections_total.fetch_add(1, Ordering::Relaxed);
            shared.connections_active.fetch_add(1, Ordering::Relaxed);
            connection(conn, &shared, guard).await;
            shared.connections_active.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Reads one control frame (`len u16 | type u8 | body`).
async fn read_frame(recv: &mut quinn::RecvStream) -> Result<Control> {
    let mut len = [0u8; 2];
    recv.read_exact(&mut len).await?;
    let len = u16::from_be_bytes(len) as usize;
    if len == 0 || len > MAX_CONTROL_FRAME {
        anyhow::bail!("control frame of {len} bytes");
    }
    let mut frame = vec![0u8; len];
    recv.read_exact(&mut frame).await?;
    Ok(wire::decode_control(&frame)?)
}

/// Writes `Reject`, waits briefly for it to be delivered, closes the connection.
async fn reject(conn: &quinn::Connection, send: &mut quinn::SendStream, code: u32, reason: &str) {
    let frame = wire::encode_control(&Control::Reject {
        reason: reason.to_string(),
    });
    if send.write_all(&frame).await.is_ok() && send.finish().is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
    }
    conn.close(code.into(), reason.as_bytes());
}

struct Join {
    session: u32,
    link: LinkId,
    latency_ms: u32,
    name: String,
}

/// One connection (one link of one session), from handshake to close.
async fn connection(conn: quinn::Connection, shared: &Arc<Shared>, guard: TaskGuard) {
    let remote = conn.remote_address();
    let Some(device) = tls::device_of(&conn, &shared.allow) else {
        tracing::warn!(%remote, "connection without a known device certificate; closing");
        conn.close(CLOSE_REJECTED.into(), b"unknown device");
        return;
    };
    let Some(entry) = shared.cfg.devices.iter().find(|d| d.id == device).cloned() else {
        conn.close(CLOSE_REJECTED.into(), b"unknown device");
        return;
    };
    let mut shutdown = shared.shutdown.clone();

    // Control stream and Join.
    let opened = tokio::select! {
        _ = stopping(&mut shutdown) => { conn.close(CLOSE_SHUTDOWN.into(), b"relay shutting down"); return; }
        r = tokio::time::timeout(JOIN_TIMEOUT, async {
            let (send, mut recv) = conn.accept_bi().await?;
            let first = read_frame(&mut recv).await;
            anyhow::Ok((send, recv, first))
        }) => r,
    };
    let (mut send, recv, first) = match opened {
        Err(_) => {
            tracing::warn!(%device, %remote, "no control stream or Join within {JOIN_TIMEOUT:?}; closing");
            shared.rejected_joins.fetch_add(1, Ordering::Relaxed);
            conn.close(CLOSE_PROTOCOL.into(), b"join timeout");
            return;
        }
        Ok(Err(e)) => {
            tracing::debug!(%device, %remote, error = %e, "connection ended before Join");
            conn.close(CLOSE_PROTOCOL.into(), b"no control stream");
            return;
        }
        Ok(Ok(x)) => x,
    };
    let join = match first {
        Ok(Control::Join {
            version,
            session,
            link_id,
            latency_ms,
            link_name,
        }) => {
            if version != VERSION {
                Err(format!(
                    "unsupported protocol version {version} (relay speaks {VERSION})"
                ))
            } else {
                Ok(Join {
                    session,
                    link: link_id,
                    latency_ms,
                    name: link_name,
                })
            }
        }
        Ok(other) => Err(format!("expected Join, got {}", control_name(&other))),
        Err(e) => Err(format!("bad control frame: {e}")),
    };
    let join = match join {
        Ok(j) => j,
        Err(reason) => {
            tracing::warn!(%device, %remote, %reason, "refusing link");
            shared.rejected_joins.fetch_add(1, Ordering::Relaxed);
            reject(&conn, &mut send, CLOSE_REJECTED, &reason).await;
            return;
        }
    };
    let configured_ms = entry.latency.as_millis() as u32;
    if join.latency_ms != configured_ms {
        tracing::debug!(%device, edge_ms = join.latency_ms, relay_ms = configured_ms, "edge asked for another latency; the relay's configuration applies");
    }

    // Join the session (create or replace it).
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<Bytes>(CTL_QUEUE);
    let mut session = None;
    for _ in 0..3 {
        let r = match session_for(shared, &entry, join.session, &guard) {
            Ok(r) => r,
            Err(reason) => {
                tracing::warn!(%device, session = join.session, %reason, "refusing link");
                shared.rejected_joins.fetch_add(1, Ordering::Relaxed);
                reject(&conn, &mut send, CLOSE_REJECTED, &reason).await;
                return;
            }
        };
        let (reply_tx, reply_rx) = oneshot::channel();
        let msg = SessionMsg::AddLink {
            link: join.link,
            name: join.name.clone(),
            conn: conn.clone(),
            ctl: ctl_tx.clone(),
            reply: reply_tx,
        };
        if r.tx.send(msg).await.is_ok() && reply_rx.await.is_ok() {
            session = Some(r);
            break;
        }
        // The session ended between lookup and join: forget it and retry.
        shared
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove_if(&device, r.instance);
    }
    let Some(session) = session else {
        conn.close(CLOSE_SHUTDOWN.into(), b"session unavailable");
        return;
    };
    let accept = wire::encode_control(&Control::Accept {
        session: join.session,
        latency_ms: configured_ms,
    });
    if send.write_all(&accept).await.is_err() {
        let _ = session
            .tx
            .send(SessionMsg::LinkClosed {
                link: join.link,
                conn_id: conn.stable_id(),
            })
            .await;
        return;
    }

    // Control stream: a writer for the session's summaries, a reader that drains
    // (and ignores) anything further the edge sends.
    tokio::spawn(async move {
        while let Some(f) = ctl_rx.recv().await {
            if send.write_all(&f).await.is_err() {
                break;
            }
        }
    });
    {
        let device = device.clone();
        let mut recv = recv;
        tokio::spawn(async move {
            while let Ok(c) = read_frame(&mut recv).await {
                tracing::debug!(%device, frame = control_name(&c), "ignoring control frame after Join");
            }
        });
    }

    // Datagrams and RTT samples to the session.
    let conn_id = conn.stable_id();
    let mut tick = tokio::time::interval(RTT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let why = loop {
        tokio::select! {
            _ = stopping(&mut shutdown) => {
                conn.close(CLOSE_SHUTDOWN.into(), b"relay shutting down");
                break "relay shutting down".to_string();
            }
            d = conn.read_datagram() => match d {
                Ok(data) => {
                    let msg = SessionMsg::Datagram { link: join.link, data, at: Instant::now() };
                    if session.tx.send(msg).await.is_err() {
                        conn.close(CLOSE_SHUTDOWN.into(), b"session ended");
                        break "session ended".to_string();
                    }
                }
                Err(e) => break e.to_string(),
            },
            _ = tick.tick() => {
                let msg = SessionMsg::Rtt { link: join.link, conn_id, rtt: conn.rtt() };
                if session.tx.send(msg).await.is_err() {
                    conn.close(CLOSE_SHUTDOWN.into(), b"session ended");
                    break "session ended".to_string();
                }
            }
        }
    };
    tracing::info!(%device, session = join.session, link = join.link, name = %join.name, %remote, reason = %why, "link closed");
    let _ = session
        .tx
        .send(SessionMsg::LinkClosed {
            link: join.link,
            conn_id,
        })
        .await;
}

/// The session a `Join` belongs to: the device's current one if the tag matches,
/// else a new one (replacing the current one, whose tag is retired).
fn session_for(
    shared: &Arc<Shared>,
    entry: &config::DeviceEntry,
    tag: u32,
    guard: &TaskGuard,
) -> std::result::Result<SessionRef, String> {
    if *shared.shutdown.borrow() {
        return Err("relay shutting down".into());
    }
    let mut reg = shared.registry.lock().unwrap_or_else(|e| e.into_inner());
    reg.next_instance += 1;
    let instance = reg.next_instance;
    let dev = reg.devices.entry(entry.id.clone()).or_default();
    if dev.retired.contains(&tag) {
        return Err(format!("session {tag} was replaced by a newer session"));
    }
    if let Some(cur) = &dev.current {
        if cur.tag == tag && !cur.tx.is_closed() {
            return Ok(cur.clone());
        }
        if cur.tag != tag {
            tracing::info!(device = %entry.id, old = cur.tag, new = tag, "new session tag: replacing the device's session");
            cur.kill.notify_one();
            dev.retired.push_back(cur.tag);
            if dev.retired.len() > RETIRED_TAGS {
                dev.retired.pop_front();
            }
        }
    }
    let (tx, rx) = mpsc::channel(session::QUEUE);
    let kill = Arc::new(Notify::new());
    let r = SessionRef {
        tag,
        instance,
        tx,
        kill: kill.clone(),
    };
    dev.current = Some(r.clone());
    let s = Session::new(entry, tag, instance, shared.tap.clone());
    tokio::spawn(s.run(
        rx,
        kill,
        shared.shutdown.clone(),
        shared.registry.clone(),
        guard.clone(),
    ));
    Ok(r)
}

/// Asks for [`RECV_BUFFER`] on the QUIC socket; warns when the kernel grants less.
///
/// Every link of every session lands on this one socket, and quinn's endpoint
/// driver drains it in slices between the other tasks. With the default buffer
/// (`net.core.rmem_default`, ~208 KiB: under 100 media datagrams) the socket
/// overflowed within milliseconds at 35 k datagrams/s (50 sessions x 10 Mbit/s on
/// loopback): ~20 % of the datagrams were dropped by the kernel (`RcvbufErrors`)
/// while the relay's core was only 37 % busy.
fn set_recv_buffer(sock: &std::net::UdpSocket) {
    let s = socket2::SockRef::from(sock);
    if let Err(e) = s.set_recv_buffer_size(RECV_BUFFER) {
        tracing::warn!(error = %e, "cannot set the QUIC socket's receive buffer");
        return;
    }
    // Linux doubles the request (bookkeeping overhead) and caps it at net.core.rmem_max.
    match s.recv_buffer_size() {
        Ok(n) if n < RECV_BUFFER => tracing::warn!(
            granted = n,
            wanted = RECV_BUFFER,
            "QUIC socket receive buffer capped by net.core.rmem_max; raise it (sysctl -w net.core.rmem_max={RECV_BUFFER}) or datagrams may be dropped under load"
        ),
        _ => {}
    }
}

/// Completes once shutdown is requested (or the relay handle is gone).
async fn stopping(rx: &mut watch::Receiver<bool>) {
    // Not `wait_for` in a select arm directly: its `Ref` is not `Send`.
    let _ = rx.wait_for(|s| *s).await;
}

fn control_name(c: &Control) -> &'static str {
    match c {
        Control::Join { .. } => "Join",
        Control::Accept { .. } => "Accept",
        Control::Reject { .. } => "Reject",
        Control::Summary(_) => "Summary",
    }
}
