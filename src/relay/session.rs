//! One session task per (device, session tag): owns the sans-IO
//! [`Receiver`], the session's outputs, and the send side of its links.

use super::output::{self, Output};
use super::stats::{LatencyWindow, LinkStats, OutputStatus, SessionStats};
use super::{ReleaseEvent, TaskGuard, CLOSE_REPLACED, CLOSE_SHUTDOWN};
use crate::config::DeviceEntry;
use crate::core::receiver::{Receiver, ReceiverConfig};
use crate::core::sender::LinkId;
use crate::core::wire::{self, Control};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch, Notify};

/// A session with no link for this long ends.
pub const IDLE_END: Duration = Duration::from_secs(30);
/// Messages handled per wake-up before the receiver is serviced.
const BATCH: usize = 64;
/// Queue from the connection tasks to the session task.
pub(super) const QUEUE: usize = 4096;

pub(super) enum SessionMsg {
    /// A link joined; `reply` confirms the session took it.
    AddLink {
        link: LinkId,
        name: String,
        conn: quinn::Connection,
        ctl: mpsc::Sender<Bytes>,
        reply: oneshot::Sender<()>,
    },
    Datagram {
        link: LinkId,
        data: Bytes,
        at: Instant,
    },
    /// quinn's RTT estimate of a link's connection.
    Rtt {
        link: LinkId,
        conn_id: usize,
        rtt: Duration,
    },
    LinkClosed {
        link: LinkId,
        conn_id: usize,
    },
    Stats(oneshot::Sender<SessionStats>),
}

/// How other tasks reach a session.
#[derive(Clone)]
pub(super) struct SessionRef {
    pub tag: u32,
    /// Unique per session task (a tag may be reused after a session ended).
    pub instance: u64,
    pub tx: mpsc::Sender<SessionMsg>,
    /// Ends the session now (replaced by a newer session of the same device).
    pub kill: Arc<Notify>,
}

struct Link {
    name: String,
    conn: quinn::Connection,
    ctl: mpsc::Sender<Bytes>,
    rtt: Duration,
    min_rtt: Option<Duration>,
    since: Instant,
}

pub(super) struct Session {
    device: String,
    instance: u64,
    rx: Receiver,
    links: BTreeMap<LinkId, Link>,
    outputs: Vec<SessionOutput>,
    tap: Option<mpsc::UnboundedSender<ReleaseEvent>>,
    /// Capture-to-output and ingest-to-output of recent releases.
    glass: LatencyWindow,
    transport: LatencyWindow,
    /// Capture-to-output percentiles for the edge's summaries, recomputed at most
    /// once a second (a sort of the window): (when, p50 ms, p95 ms).
    glass_summary: Option<(Instant, Option<u32>, Option<u32>)>,
    started: Instant,
    no_link_since: Option<Instant>,
    next_summary: Instant,
}

/// One opened output and where it sits in the configuration.
struct SessionOutput {
    index: usize,
    kind: &'static str,
    out: Box<dyn Output>,
}

/// Why the session loop ended.
enum End {
    Shutdown,
    Replaced,
    Idle,
    Orphaned,
}

impl Session {
    pub fn new(
        device: &DeviceEntry,
        tag: u32,
        instance: u64,
        tap: Option<mpsc::UnboundedSender<ReleaseEvent>>,
    ) -> Self {
        let now = Instant::now();
        let cfg = ReceiverConfig {
            session: tag,
            latency: device.latency,
            ..Default::default()
        };
        let summary_interval = cfg.summary_interval;
        let mut outputs = Vec::with_capacity(device.outputs.len());
        for (i, o) in device.outputs.iter().enumerate() {
            let seed = instance.wrapping_mul(1000).wrapping_add(i as u64);
            match output::open(o, &device.id, seed) {
                Ok(out) => outputs.push(SessionOutput {
                    index: i,
                    kind: o.kind(),
                    out,
                }),
                Err(e) => {
                    tracing::error!(device = %device.id, output = %o.describe(), error = %e, "cannot open output; session continues without it")
                }
            }
        }
        Self {
            device: device.id.clone(),
            instance,
            rx: Receiver::new(cfg, now),
            links: BTreeMap::new(),
            outputs,
            tap,
            glass: LatencyWindow::default(),
            transport: LatencyWindow::default(),
            glass_summary: None,
            started: now,
            no_link_since: Some(now),
            next_summary: now + summary_interval,
        }
    }

    /// Runs until shutdown, replacement, or 30 s without a link; then removes
    /// itself from `registry` (if still registered) and closes its links.
    pub async fn run(
        mut self,
        mut msgs: mpsc::Receiver<SessionMsg>,
        kill: Arc<Notify>,
        mut shutdown: watch::Receiver<bool>,
        registry: Arc<std::sync::Mutex<super::Registry>>,
        _guard: TaskGuard,
    ) {
        let tag = self.rx.session();
        tracing::info!(device = %self.device, session = tag, latency_ms = self.rx.latency().as_millis() as u64, "session started");
        let end = loop {
            let deadline = self.deadline();
            let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline));
            tokio::select! {
                biased;
                _ = shutdown.changed() => break End::Shutdown,
                _ = kill.notified() => break End::Replaced,
                m = msgs.recv() => {
                    let Some(m) = m else { break End::Orphaned };
                    self.handle(m);
                    for _ in 1..BATCH {
                        match msgs.try_recv() {
                            Ok(m) => self.handle(m),
                            Err(_) => break,
                        }
                    }
                }
                _ = sleep => {}
            }
            let now = Instant::now();
            self.service(now);
            if self.no_link_since.is_some_and(|t| now >= t + IDLE_END) {
                break End::Idle;
            }
        };
        {
            let mut reg = registry.lock().unwrap_or_else(|e| e.into_inner());
            reg.remove_if(&self.device, self.instance);
        }
        for o in &mut self.outputs {
            o.out.flush();
        }
        let (code, why): (u32, &[u8]) = match end {
            End::Shutdown => (CLOSE_SHUTDOWN, b"relay shutting down"),
            End::Replaced => (CLOSE_REPLACED, b"session replaced"),
            End::Idle | End::Orphaned => (CLOSE_SHUTDOWN, b"session ended"),
        };
        for l in self.links.values() {
            l.conn.close(code.into(), why);
        }
        let s = self.rx.stats();
        tracing::info!(
            device = %self.device,
            session = tag,
            reason = match end { End::Shutdown => "shutdown", End::Replaced => "replaced", End::Idle => "no link", End::Orphaned => "orphaned" },
            released = s.released,
            lost = s.lost,
            late = s.late,
            duplicates = s.duplicates,
            junk = s.junk,
            "session ended"
        );
    }

    fn deadline(&self) -> Instant {
        let now = Instant::now();
        let mut t = now + Duration::from_secs(3600);
        if let Some(x) = self.rx.poll_timeout() {
            t = t.min(x);
        }
        for o in &self.outputs {
            if let Some(x) = o.out.poll_timeout() {
                t = t.min(x);
            }
        }
        if !self.links.is_empty() {
            t = t.min(self.next_summary);
        }
        if let Some(since) = self.no_link_since {
            t = t.min(since + IDLE_END);
        }
        // Never spin: a deadline in the past that servicing did not clear would
        // otherwise wake the loop continuously.
        t.max(now + Duration::from_micros(500))
    }

    fn handle(&mut self, m: SessionMsg) {
        match m {
            SessionMsg::AddLink {
                link,
                name,
                conn,
                ctl,
                reply,
            } => {
                let now = Instant::now();
                tracing::info!(device = %self.device, session = self.rx.session(), link, name = %name, remote = %conn.remote_address(), "link joined");
                let new = Link {
                    name,
                    rtt: conn.rtt(),
                    conn,
                    ctl,
                    min_rtt: None,
                    since: now,
                };
                if let Some(old) = self.links.insert(link, new) {
                    // Same link id again (the edge reconnected that link): the
                    // newer connection wins.
                    old.conn.close(CLOSE_REPLACED.into(), b"link replaced");
                    self.rx.remove_link(link);
                }
                self.no_link_since = None;
                let _ = reply.send(());
            }
            SessionMsg::Datagram { link, data, at } => {
                // Refusals are counted inside the receiver.
                let _ = self.rx.handle_datagram(at, link, &data);
            }
            SessionMsg::Rtt { link, conn_id, rtt } => {
                if let Some(l) = self.links.get_mut(&link) {
                    if l.conn.stable_id() != conn_id {
                        return;
                    }
                    l.rtt = rtt;
                    let min = l.min_rtt.map_or(rtt, |m| m.min(rtt));
                    l.min_rtt = Some(min);
                    self.rx.handle_rtt(Instant::now(), link, min);
                }
            }
            SessionMsg::LinkClosed { link, conn_id } => {
                if self
                    .links
                    .get(&link)
                    .is_some_and(|l| l.conn.stable_id() == conn_id)
                {
                    let l = self.links.remove(&link).expect("checked");
                    self.rx.remove_link(link);
                    tracing::info!(device = %self.device, session = self.rx.session(), link, name = %l.name, "link left");
                    if self.links.is_empty() {
                        self.no_link_since = Some(Instant::now());
                    }
                }
            }
            SessionMsg::Stats(reply) => {
                let _ = reply.send(self.stats());
            }
        }
    }

    /// Timers, then drain the receiver into outputs, links and control streams.
    fn service(&mut self, now: Instant) {
        self.rx.handle_timeout(now);
        while let Some(r) = self.rx.poll_output() {
            // Every output takes the packet here, at `now`: capture to here is the
            // glass-to-glass delay up to the outputs (queued outputs add their own
            // queueing after this).
            self.glass.record(r.capture_to_output());
            self.transport.record(r.delay);
            for o in &mut self.outputs {
                o.out.write(now, &r.payload);
            }
            if let Some(tap) = &self.tap {
                let _ = tap.send(ReleaseEvent {
                    device: self.device.clone(),
                    session: self.rx.session(),
                    seq: r.seq,
                    send_time_us: r.send_time_us,
                    bytes: r.payload.len(),
                    at: now,
                });
            }
        }
        for o in &mut self.outputs {
            o.out.handle_timeout(now);
        }
        while let Some((link, d)) = self.rx.poll_feedback() {
            if let Some(l) = self.links.get(&link) {
                // A link that is going away: its feedback is moot.
                let _ = l.conn.send_datagram(d);
            }
        }
        if let Some(mut s) = self.rx.poll_summary(now) {
            if self
                .glass_summary
                .is_none_or(|g| now.duration_since(g.0) >= Duration::from_secs(1))
            {
                let p = self.glass.percentiles();
                self.glass_summary = Some((
                    now,
                    p.map(|p| p.p50.round() as u32),
                    p.map(|p| p.p95.round() as u32),
                ));
            }
            if let Some((_, p50, p95)) = self.glass_summary {
                s.capture_to_output_p50_ms = p50;
                s.capture_to_output_p95_ms = p95;
            }
            let frame = wire::encode_control(&Control::Summary(s));
            for l in self.links.values() {
                // A control stream that is not draining loses summaries, not the session.
                let _ = l.ctl.try_send(frame.clone());
            }
        }
        if now >= self.next_summary {
            self.next_summary = now + Duration::from_millis(100);
        }
    }

    fn stats(&self) -> SessionStats {
        let now = Instant::now();
        let receiver = self.rx.stats();
        let links = self
            .links
            .iter()
            .map(|(&id, l)| {
                let rl = receiver.links.iter().find(|r| r.id == id);
                LinkStats {
                    id,
                    name: l.name.clone(),
                    remote: l.conn.remote_address().to_string(),
                    rtt_ms: l.rtt.as_secs_f64() * 1e3,
                    min_rtt_ms: l.min_rtt.unwrap_or(l.rtt).as_secs_f64() * 1e3,
                    datagrams: rl.map_or(0, |r| r.datagrams),
                    bytes: rl.map_or(0, |r| r.bytes),
                    connected_s: now.duration_since(l.since).as_secs_f64(),
                }
            })
            .collect();
        let (mut dg, mut bytes, mut errors) = (0, 0, 0);
        let mut outputs = Vec::with_capacity(self.outputs.len());
        for o in &self.outputs {
            let s = o.out.stats();
            dg += s.datagrams;
            bytes += s.bytes;
            errors += s.errors;
            outputs.push(OutputStatus {
                index: o.index,
                kind: o.kind.to_string(),
                target: o.out.describe(),
                stats: s,
            });
        }
        SessionStats {
            device: self.device.clone(),
            session: self.rx.session(),
            latency_ms: self.rx.latency().as_millis() as u32,
            links,
            receiver,
            outputs,
            output_datagrams: dg,
            output_bytes: bytes,
            output_errors: errors,
            uptime_s: now.duration_since(self.started).as_secs_f64(),
            capture_to_output_ms: self.glass.percentiles(),
            ingest_to_output_ms: self.transport.percentiles(),
        }
    }
}
