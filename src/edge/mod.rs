//! Edge daemon: a thin tokio shell around [`crate::core::sender::Sender`].
//!
//! Tasks and who owns what:
//! - the **core task** owns the `Sender`, the TS classifier and every link's
//!   `quinn::Connection` handle; it is the only place datagrams are sent from;
//! - one **link task** per configured link binds its socket (interface or source
//!   address), connects, joins the session on the control stream, forwards the relay's
//!   datagrams to the core task, and reconnects with backoff and jitter when the
//!   connection dies;
//! - the **input task** turns the source into groups of whole TS packets
//!   ([`MediaSource`]; the GStreamer sources are in [`crate::media`]);
//! - the **net watcher** reports interfaces going down, acted on at once;
//! - the **link manager** ([`linkmgr`]) finds and polls the modems and turns their
//!   signal into quality hints for the links they carry;
//! - the **health monitor** ([`crate::device::health`]) feeds the stats and the
//!   bitrate controller's temperature cap;
//! - the **panel** ([`crate::device::panel`]) shows the box's state on the LEDs and
//!   reports button presses (start/stop, stop and hold).
//!
//! With `[stream] autostart` (the default) the stream goes live by itself: media
//! flows as soon as the source produces and a link has joined, and the links keep
//! reconnecting with backoff while none is up. `live_after_s` in the stats is the
//! time from process start to the relay's first acknowledgement of media.

pub mod linkmgr;
pub mod supervisor;
pub mod usage;

use crate::config::{EdgeConfig, InputConfig, LinkBind};
use crate::core::bitrate::{self, BitrateEvent, Controller, ControllerConfig, ControllerStats};
use crate::core::sender::{LinkId, Sender, SenderConfig, SenderEvent, SenderStats};
use crate::core::ts::{Classifier, Packetizer, TestStream};
use crate::core::wire::{self, Control, SessionSummary, TS_PACKET, TS_PER_DATAGRAM};
use crate::device::button::ButtonEvent;
use crate::device::health::HealthSnapshot;
use crate::device::leds::BoxState;
use crate::media::MediaControl;
use crate::transport::{netwatch, quic, socket, tls};
use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Where media comes from: the UDP listener and the test source here, the GStreamer
/// camera/test-pattern encoder and the SRT listener in [`crate::media`].
pub trait MediaSource: Send + 'static {
    /// Run until `shutdown`, sending groups of whole TS packets with their capture time
    /// (when the picture or sound was taken; ingest time for pass-through sources).
    /// `control` carries the bitrate controller's wishes; sources that cannot adapt
    /// ignore it.
    fn spawn(
        self: Box<Self>,
        out: mpsc::Sender<(Instant, Vec<u8>)>,
        control: watch::Receiver<MediaControl>,
        shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()>;

    /// The encoder's bitrate follows [`MediaControl::target_bps`]: the edge runs the
    /// bitrate controller for it. Pass-through sources say no.
    fn adapts(&self) -> bool {
        false
    }

    /// Floor, ceiling and picture ladder for the controller (when it adapts).
    fn controller_config(&self) -> ControllerConfig {
        ControllerConfig::default()
    }
}

/// MPEG-TS over UDP from an external encoder (e.g. ffmpeg `-f mpegts udp://...`).
pub struct UdpSource {
    socket: std::net::UdpSocket,
}

impl UdpSource {
    /// Binds now, so a taken or invalid address fails the start, not silently later.
    pub fn bind(listen: SocketAddr) -> Result<UdpSource> {
        let socket = std::net::UdpSocket::bind(listen)
            .with_context(|| format!("input: cannot listen on udp {listen}"))?;
        socket.set_nonblocking(true)?;
        Ok(UdpSource { socket })
    }
}

impl MediaSource for UdpSource {
    fn spawn(
        self: Box<Self>,
        out: mpsc::Sender<(Instant, Vec<u8>)>,
        _control: watch::Receiver<MediaControl>,
        mut shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let sock = match tokio::net::UdpSocket::from_std(self.socket) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("input: {e}");
                    return;
                }
            };
            let mut p = Packetizer::default();
            let mut buf = vec![0u8; 65536];
            let mut groups = Vec::new();
            loop {
                tokio::select! {
                    biased;
                    _ = shutdown.changed() => return,
                    r = sock.recv_from(&mut buf) => {
                        let Ok((n, _)) = r else { continue };
                        p.push(&buf[..n], &mut groups);
                        // Datagrams from encoders carry whole packets: send what we have
                        // rather than wait for a full group.
                        if let Some(g) = p.flush() { groups.push(g); }
                    }
                }
                let now = Instant::now();
                for g in groups.drain(..) {
                    if out.send((now, g)).await.is_err() {
                        return;
                    }
                }
            }
        })
    }
}

/// Built-in constant-rate test source (well-formed TS with PAT/PMT, video, audio PIDs).
pub struct TestSource {
    pub rate_bps: u64,
}

impl MediaSource for TestSource {
    fn spawn(
        self: Box<Self>,
        out: mpsc::Sender<(Instant, Vec<u8>)>,
        _control: watch::Receiver<MediaControl>,
        mut shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let group = TS_PACKET * TS_PER_DATAGRAM;
            let interval = Duration::from_secs_f64(group as f64 * 8.0 / self.rate_bps as f64);
            let pps = self.rate_bps / 8 / TS_PACKET as u64;
            let mut ts = TestStream::new();
            let mut next = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    biased;
                    _ = shutdown.changed() => return,
                    _ = tokio::time::sleep_until(next) => {}
                }
                let g = ts.next_group(TS_PER_DATAGRAM, pps);
                // Ingest time is the scheduled time, so timer lateness counts against us.
                if out.send((next.into_std(), g)).await.is_err() {
                    return;
                }
                next += interval;
            }
        })
    }
}

/// Per-link state seen by the stats API.
#[derive(Debug, Clone, Serialize, Default)]
pub struct EdgeLinkStatus {
    pub id: LinkId,
    pub name: String,
    pub bind: String,
    pub connected: bool,
    pub connects: u64,
    pub last_error: Option<String>,
    /// The scheduler's hint for this link (modem signal, data cap), 1.0 when none.
    pub quality: f64,
    /// At its monthly data cap.
    pub at_cap: bool,
    /// The modem whose network interface this link uses, if one was found.
    pub modem: Option<LinkModem>,
}

/// What the links list shows of a link's modem (all of it is under `modems`).
#[derive(Debug, Clone, Serialize)]
pub struct LinkModem {
    pub tty: std::path::PathBuf,
    pub state: crate::device::modem::ModemState,
    pub operator: Option<String>,
    pub tech: Option<crate::device::modem::AccessTech>,
    pub rsrp_dbm: Option<f32>,
    pub sinr_db: Option<f32>,
}

/// The edge's stats snapshot (GET /api/stats).
#[derive(Debug, Clone, Serialize, Default)]
pub struct EdgeStats {
    pub device: String,
    pub session: u32,
    pub uptime_s: f64,
    pub first_packet_after_s: Option<f64>,
    /// From process start to the relay's first acknowledgement of media
    /// (power-on-to-live, less the boot before the process).
    pub live_after_s: Option<f64>,
    /// What the LEDs show.
    pub state: BoxState,
    /// Media is being sent (false: stopped by the button, or not started yet
    /// with `autostart = false`).
    pub live: bool,
    pub health: Option<HealthSnapshot>,
    pub modems: Vec<linkmgr::ModemView>,
    /// Data sent per link, per day and billing month (`[usage]`).
    pub usage: Option<usage::UsageView>,
    pub links: Vec<EdgeLinkStatus>,
    pub sender: SenderStats,
    pub relay: Option<SessionSummary>,
    /// Bitrate controller state (None when the source does not adapt).
    pub bitrate: Option<ControllerStats>,
    /// The picture size the controller's ladder is on (e.g. "1280x720"), when the
    /// source encodes here.
    pub picture: Option<String>,
    /// What the source actually produced over the last second, bit/s.
    pub source_bps: f64,
    pub events: Vec<String>,
}

enum LinkMsg {
    Joined(LinkId, quinn::Connection, u32),
    Datagram(LinkId, Bytes),
    Summary(SessionSummary),
    Gone(LinkId, String),
    /// The link manager's quality hint (modem signal).
    Quality(LinkId, f64),
}

/// Options for in-process use (`braid sim`, tests).
#[derive(Default)]
pub struct EdgeOptions {
    /// Called with every sender event (link up/down) as it happens.
    pub events: Option<mpsc::UnboundedSender<SenderEvent>>,
    /// When the process started, for `live_after_s` (default: when the edge starts).
    pub started: Option<Instant>,
    /// Start live or stopped regardless of `[stream] autostart` (a stream restart
    /// from the web page keeps what the engineer chose).
    pub start_live: Option<bool>,
}

/// What a running edge takes from a changed configuration without a restart
/// (the web page's settings marked `live`).
#[derive(Debug, Clone, PartialEq)]
pub struct LiveSettings {
    /// Monthly data cap per link name (bytes; None: no cap).
    pub caps: Vec<(String, Option<u64>)>,
    /// Whole-stream floor and ceiling of the bitrate controller (bit/s), for
    /// sources that encode here.
    pub bounds: Option<(u64, u64)>,
    pub duplicate_budget: f64,
}

impl LiveSettings {
    pub fn from_config(cfg: &EdgeConfig) -> LiveSettings {
        let bounds = matches!(
            cfg.input,
            InputConfig::V4l2 { .. } | InputConfig::Pattern { .. }
        )
        .then(|| {
            let c = crate::media::controller_config(&cfg.video, &cfg.audio);
            (c.floor_bps, c.ceiling_bps)
        });
        LiveSettings {
            caps: cfg
                .links
                .iter()
                .map(|l| (l.name.clone(), l.data_cap_bytes))
                .collect(),
            bounds,
            duplicate_budget: cfg.scheduler.duplicate_budget,
        }
    }
}

/// Requests to the core task from outside (web page).
#[derive(Debug)]
enum CoreCommand {
    /// Start (true) or stop and hold (false), as the button does.
    SetLive(bool),
    Apply(LiveSettings),
}

pub struct EdgeHandle {
    epoch: Instant,
    stats_addr: Option<SocketAddr>,
    stats: Arc<Mutex<EdgeStats>>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    commands: mpsc::Sender<CoreCommand>,
}

impl EdgeHandle {
    /// Time zero of `send_time_us` in this edge's media headers.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }
    /// Where the stats HTTP endpoint listens (useful with port 0), if enabled.
    pub fn stats_addr(&self) -> Option<SocketAddr> {
        self.stats_addr
    }
    pub fn stats(&self) -> EdgeStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }
    /// Start (true) or stop and hold (false) sending media, as the button does.
    /// Takes effect within the core task's next turn.
    pub fn set_live(&self, live: bool) {
        let _ = self.commands.try_send(CoreCommand::SetLive(live));
    }
    /// Apply what can change while streaming (caps, bitrate bounds, duplicates).
    pub fn apply_live(&self, settings: LiveSettings) {
        let _ = self.commands.try_send(CoreCommand::Apply(settings));
    }
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
    }
}

/// The bitrate the source starts at, before the controller has measured anything.
fn initial_target_bps(cfg: &EdgeConfig) -> u64 {
    match cfg.input {
        InputConfig::Test { rate_bps } => rate_bps,
        InputConfig::Udp { .. } | InputConfig::Srt { .. } => 2_000_000,
        InputConfig::V4l2 { .. } | InputConfig::Pattern { .. } => {
            crate::media::initial_target_bps(&cfg.video, &cfg.audio)
        }
    }
}

fn source_for(cfg: &EdgeConfig) -> Result<Box<dyn MediaSource>> {
    if let Some(s) = crate::media::source_for_input(&cfg.input, &cfg.video, &cfg.audio) {
        return s.context("input: media pipeline");
    }
    Ok(match &cfg.input {
        InputConfig::Udp { listen } => Box::new(UdpSource::bind(*listen)?),
        InputConfig::Test { rate_bps } => Box::new(TestSource {
            rate_bps: *rate_bps,
        }),
        other => return Err(anyhow!("input {other:?} has no source")),
    })
}

/// Start the edge with its configured source.
pub async fn start(cfg: EdgeConfig, opts: EdgeOptions) -> Result<EdgeHandle> {
    let source = source_for(&cfg)?;
    start_with_source(cfg, source, opts).await
}

/// Start the edge with any [`MediaSource`].
pub async fn start_with_source(
    cfg: EdgeConfig,
    source: Box<dyn MediaSource>,
    opts: EdgeOptions,
) -> Result<EdgeHandle> {
    let started = opts.started.unwrap_or_else(Instant::now);
    let (chain, key) = tls::load_identity(&cfg.device.cert, &cfg.device.key)?;
    let client = quic::client_config(chain, key, &cfg.relay.trust)?;
    let relay_addr = tokio::net::lookup_host(cfg.relay.address.to_string())
        .await
        .with_context(|| format!("resolving relay address {}", cfg.relay.address))?
        .next()
        .ok_or_else(|| anyhow!("relay address {} resolves to nothing", cfg.relay.address))?;
    let epoch = Instant::now();
    let session: u32 = rand::random::<u32>() | 1;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let stats = Arc::new(Mutex::new(EdgeStats {
        device: cfg.device.id.clone(),
        session,
        ..Default::default()
    }));
    let (media_tx, media_rx) = mpsc::channel(1024);
    let (link_tx, link_rx) = mpsc::channel(4096);
    let controller = source.adapts().then(|| {
        let mut c = source.controller_config();
        c.latency = cfg.relay.latency;
        Controller::new(c, Instant::now())
    });
    let start_bps = controller
        .as_ref()
        .map_or(initial_target_bps(&cfg), |c| c.target().bps);
    let (control_tx, control_rx) = watch::channel(MediaControl::new(start_bps));
    let mut tasks = vec![source.spawn(media_tx, control_rx, shutdown_rx.clone())];

    let links: Vec<(LinkId, String, LinkBind)> = cfg
        .links
        .iter()
        .filter(|l| l.enabled)
        .enumerate()
        .map(|(i, l)| (i as LinkId, l.name.clone(), l.bind.clone()))
        .collect();
    {
        let mut s = stats.lock().expect("fresh mutex");
        s.links = links
            .iter()
            .map(|(id, name, bind)| EdgeLinkStatus {
                id: *id,
                name: name.clone(),
                bind: bind.to_string(),
                ..Default::default()
            })
            .collect();
    }
    // One kick channel per link: the net watcher closes a link's connection at once
    // when its interface goes down.
    let mut kicks = Vec::new();
    for (id, name, bind) in &links {
        let (kick_tx, kick_rx) = watch::channel(0u64);
        kicks.push((*id, name.clone(), bind.clone(), kick_tx));
        let lt = LinkTask {
            id: *id,
            name: name.clone(),
            bind: bind.clone(),
            relay: relay_addr,
            server_name: cfg.relay.server_name.clone(),
            client: client.clone(),
            session,
            latency_ms: cfg.relay.latency.as_millis() as u32,
            out: link_tx.clone(),
            stats: stats.clone(),
        };
        tasks.push(tokio::spawn(lt.run(shutdown_rx.clone(), kick_rx)));
    }
    if kicks.iter().any(|k| matches!(k.2, LinkBind::Interface(_))) {
        match netwatch::watch(64) {
            Ok((watcher, mut rx)) => {
                let mut sd = shutdown_rx.clone();
                tasks.push(tokio::spawn(async move {
                    let _watcher = watcher;
                    loop {
                        tokio::select! {
                            biased;
                            _ = sd.changed() => return,
                            ev = rx.recv() => {
                                let Some(ev) = ev else { return };
                                // Down: the link's packets in flight are lost, act now.
                                // Address change: the old path is gone, reconnect now
                                // rather than wait for the idle timeout.
                                let (name, why) = match &ev {
                                    netwatch::NetEvent::Down { name } => (name, "interface down"),
                                    netwatch::NetEvent::AddrChanged { name, .. } => (name, "address changed"),
                                    netwatch::NetEvent::Up { .. } => continue,
                                };
                                for (_, lname, bind, kick) in &kicks {
                                    if matches!(bind, LinkBind::Interface(i) if i == name) {
                                        tracing::warn!(link = %lname, interface = %name, "{why}: dropping link now");
                                        kick.send_modify(|k| *k += 1);
                                    }
                                }
                            }
                        }
                    }
                }));
            }
            Err(e) => tracing::warn!("interface watcher unavailable: {e:#}"),
        }
    }

    let mut scfg = SenderConfig {
        session,
        latency: cfg.relay.latency,
        duplicate_budget: cfg.scheduler.duplicate_budget,
        ..Default::default()
    };
    if controller.is_some() {
        // The encoder absorbs capacity changes: keep network queues short.
        scfg.queue_share = bitrate::ADAPTIVE_QUEUE_SHARE;
    }
    // Link manager: modems tied to the links bound to their interfaces.
    let (hint_tx, hint_rx) = mpsc::channel(64);
    let (modems_tx, modems_rx) = watch::channel(Vec::new());
    let iface_links: Vec<(LinkId, String, String)> = links
        .iter()
        .filter_map(|(id, name, bind)| match bind {
            LinkBind::Interface(i) => Some((*id, name.clone(), i.clone())),
            _ => None,
        })
        .collect();
    tasks.push(tokio::spawn(linkmgr::run(
        cfg.modem.clone(),
        linkmgr::Discovery::system(),
        iface_links,
        modems_tx,
        hint_tx,
        shutdown_rx.clone(),
    )));
    // Health: sysinfo's first refresh takes a moment, so it starts off the runtime.
    let (health_tx, health_rx) = watch::channel(None);
    {
        let data_dir = cfg
            .device
            .key
            .parent()
            .map_or_else(|| Path::new("/").to_path_buf(), Path::to_path_buf);
        let sd = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            let Ok(monitor) = tokio::task::spawn_blocking(move || {
                crate::device::health::HealthMonitor::new(data_dir)
            })
            .await
            else {
                return;
            };
            let (mut rx, task) = monitor.spawn(HEALTH_EVERY, sd);
            while rx.changed().await.is_ok() {
                let snap = rx.borrow_and_update().clone();
                if health_tx.send(snap).is_err() {
                    break;
                }
            }
            let _ = task.await;
        }));
    }
    // Front panel: LEDs follow the state, the button starts and stops the stream.
    let (state_tx, state_rx) = watch::channel(BoxState::Booting);
    let (button_tx, button_rx) = mpsc::channel(8);
    let (command_tx, command_rx) = mpsc::channel(16);
    match crate::device::panel::start_panel(&cfg.gpio, state_rx, button_tx, shutdown_rx.clone()) {
        Ok(Some(t)) => tasks.push(t),
        Ok(None) => {}
        Err(e) => tracing::warn!("front panel unavailable: {}", e.0),
    }
    // Data usage per link: counters from the last run, caps from the config.
    let usage = {
        let path = cfg.usage.file.clone();
        let mut f = match &path {
            Some(p) => {
                if let Some(dir) = p.parent() {
                    match crate::system::atomic::cleanup_stale_temps(dir) {
                        Ok(n) if n > 0 => {
                            tracing::info!(dir = %dir.display(), n, "removed stale temporary files")
                        }
                        _ => {}
                    }
                }
                let (f, err) = usage::UsageFile::open(p, cfg.usage.billing_day);
                if let Some(e) = err {
                    tracing::warn!("data usage: {e}; counting from zero");
                }
                Some(f)
            }
            None => None,
        };
        let mut store = f
            .as_ref()
            .map(|f| f.store.clone())
            .unwrap_or_else(|| usage::Usage::new(cfg.usage.billing_day));
        for l in cfg.links.iter().filter(|l| l.enabled) {
            let cap = usage::Cap {
                monthly_bytes: l.data_cap_bytes,
            };
            store.set_cap(&l.name, cap);
            if let Some(f) = f.as_mut() {
                f.store.set_cap(&l.name, cap);
            }
        }
        UsageState {
            file: f,
            memory: store,
            last_totals: Default::default(),
            last_count: None,
            capped: Default::default(),
        }
    };
    let core = CoreTask {
        sender: Sender::new(scfg, epoch),
        conns: Vec::new(),
        stats: stats.clone(),
        events: opts.events,
        epoch,
        names: links.iter().map(|l| (l.0, l.1.clone())).collect(),
        control: control_tx,
        relay_lost: 0,
        controller,
        source_window: std::collections::VecDeque::new(),
        started,
        live: opts.start_live.unwrap_or(cfg.autostart),
        held: false,
        last_connected: Instant::now(),
        links_configured: links.len(),
        state: state_tx,
        health: health_rx,
        modems: modems_rx,
        hints: Default::default(),
        usage,
    };
    tasks.push(tokio::spawn(core.run(
        media_rx,
        link_rx,
        Inputs {
            hints: hint_rx,
            buttons: button_rx,
            commands: command_rx,
        },
        shutdown_rx.clone(),
    )));

    let mut stats_addr = None;
    if let Some(listen) = cfg.stats_listen {
        let st = stats.clone();
        let router = axum::Router::new().route(
            "/api/stats",
            axum::routing::get(move || {
                let st = st.clone();
                async move { axum::Json(st.lock().map(|s| s.clone()).unwrap_or_default()) }
            }),
        );
        let mut sd = shutdown_rx.clone();
        let listener = crate::system::http::bind(listen).await?;
        stats_addr = Some(listener.local_addr()?);
        tasks.push(tokio::spawn(async move {
            let _ = crate::system::http::serve_on(listener, router, async move {
                let _ = sd.changed().await;
            })
            .await;
        }));
    }
    Ok(EdgeHandle {
        epoch,
        stats_addr,
        stats,
        shutdown: shutdown_tx,
        tasks,
        commands: command_tx,
    })
}

/// `braid edge --config FILE`: run until SIGINT/SIGTERM.
pub async fn run(cfg: EdgeConfig, config_path: std::path::PathBuf) -> Result<()> {
    use crate::system::notify;
    let web = cfg.web.clone();
    // First, before anything that could crash: count this start against an
    // unconfirmed slot (and give it up when it has had too many).
    let ota = cfg.ota.clone().and_then(crate::ota::cli::start_monitor);
    let sup = supervisor::Supervisor::start(cfg, process_start()).await?;
    tracing::info!("edge running");
    let (ota_stop, ota_stop_rx) = watch::channel(false);
    if let Some(m) = ota {
        sup.set_updater(Arc::new(crate::ota::install::WebUpdater::new(
            m.config().clone(),
            m.backend(),
        )));
        if let Some(hb) = m.config().hawkbit.clone() {
            let fleet = crate::ota::fleet::Fleet::new(m.config().clone(), hb, m.backend());
            tokio::spawn(fleet.run(ota_stop_rx.clone()));
        }
        let s = sup.clone();
        let observe = move || crate::ota::health::Observation::from_stats(&s.snapshot());
        tokio::spawn(m.run(observe, ota_stop_rx));
    }
    // The local web page outlives stream restarts: it talks to the supervisor.
    let (web_stop, web_stop_rx) = watch::channel(false);
    let mut web_task = None;
    if let Some(w) = web {
        let control: Arc<dyn crate::web::EdgeControl> = Arc::new(sup.clone());
        match crate::web::api::serve(w, config_path, control, web_stop_rx).await {
            Ok((addr, task)) => {
                tracing::info!(%addr, "web page listening");
                web_task = Some(task);
            }
            // The stream matters more than the page: run without it.
            Err(e) => tracing::error!("web page not started: {e:#}"),
        }
    }
    // The systemd watchdog is fed only while the core task refreshes the stats
    // (every 100 ms): a hung core loop stops the pings and systemd restarts us.
    // (A stream restart starts the uptime again: any change counts.)
    let mut last_uptime = -1.0;
    notify::serve_until_signal("the edge's core task", |_| {
        let uptime = sup.snapshot().uptime_s;
        let alive = uptime != last_uptime;
        last_uptime = uptime;
        std::future::ready(alive)
    })
    .await;
    tracing::info!("shutting down");
    let _ = ota_stop.send(true);
    let _ = web_stop.send(true);
    if let Some(t) = web_task {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
    sup.shutdown().await;
    Ok(())
}

/// How often health is sampled.
const HEALTH_EVERY: Duration = Duration::from_secs(2);
/// Live with no link for this long shows as an error on the panel.
const NO_LINK_ERROR_AFTER: Duration = Duration::from_secs(30);
/// Live with no media from the source for this long shows as an error.
const NO_MEDIA_ERROR_AFTER: Duration = Duration::from_secs(3);

static PROCESS_START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// Records when the process started (call first thing in `main`), for
/// `live_after_s`.
pub fn mark_process_start() {
    let _ = PROCESS_START.set(Instant::now());
}

fn process_start() -> Option<Instant> {
    PROCESS_START.get().copied()
}

/// The box's state as the LEDs show it (see [`crate::device::leds`]).
#[derive(Debug, Clone, Copy)]
struct StateInputs {
    live: bool,
    held: bool,
    connected: usize,
    configured: usize,
    since_connected: Duration,
    since_media: Option<Duration>,
    at_floor: bool,
}

fn box_state(i: StateInputs) -> BoxState {
    if i.held {
        return BoxState::Stopped;
    }
    if i.connected == 0 {
        return if i.live && i.since_connected >= NO_LINK_ERROR_AFTER {
            BoxState::Error
        } else {
            BoxState::Booting
        };
    }
    if !i.live {
        return BoxState::Ready;
    }
    match i.since_media {
        None => return BoxState::Ready,
        Some(d) if d >= NO_MEDIA_ERROR_AFTER => return BoxState::Error,
        Some(_) => {}
    }
    if i.connected < i.configured || i.at_floor {
        BoxState::Degraded
    } else {
        BoxState::Live
    }
}

/// Inputs of the core task beside media and link messages.
struct Inputs {
    hints: mpsc::Receiver<(LinkId, f64)>,
    buttons: mpsc::Receiver<ButtonEvent>,
    commands: mpsc::Receiver<CoreCommand>,
}

struct CoreTask {
    sender: Sender,
    conns: Vec<(LinkId, quinn::Connection)>,
    stats: Arc<Mutex<EdgeStats>>,
    events: Option<mpsc::UnboundedSender<SenderEvent>>,
    epoch: Instant,
    names: Vec<(LinkId, String)>,
    /// What the media source is asked to do (bitrate, picture size, keyframes).
    control: watch::Sender<MediaControl>,
    /// The relay's `lost` count last seen: a rise means the picture is damaged until
    /// the next keyframe, so one is asked for.
    relay_lost: u64,
    controller: Option<Controller>,
    /// (arrival, bytes) from the source over the last second.
    source_window: std::collections::VecDeque<(Instant, usize)>,
    started: Instant,
    /// Media goes to the links (the button toggles it).
    live: bool,
    /// Stopped by a long press.
    held: bool,
    /// Last time a link was connected (or the start).
    last_connected: Instant,
    links_configured: usize,
    state: watch::Sender<BoxState>,
    health: watch::Receiver<Option<HealthSnapshot>>,
    modems: watch::Receiver<Vec<linkmgr::ModemView>>,
    /// Last quality hint per link, applied again when a link reconnects.
    hints: std::collections::HashMap<LinkId, f64>,
    usage: UsageState,
}

/// Per-link data usage: persisted when `[usage] file` is set, else in memory.
struct UsageState {
    file: Option<usage::UsageFile>,
    /// Used when there is no file: the same counting, never saved.
    memory: usage::Usage,
    /// Last cumulative bytes-sent counter per link (for the in-memory store).
    last_totals: std::collections::HashMap<String, u64>,
    /// When the links' counters were last read.
    last_count: Option<Instant>,
    /// Links at their monthly cap.
    capped: std::collections::HashSet<LinkId>,
}

/// Hint for a link at its data cap: carry only what the others cannot.
const CAPPED_QUALITY: f64 = 0.0;

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl CoreTask {
    async fn run(
        mut self,
        mut media: mpsc::Receiver<(Instant, Vec<u8>)>,
        mut links: mpsc::Receiver<LinkMsg>,
        mut inputs: Inputs,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut classify = Classifier::new();
        let mut stats_tick = tokio::time::interval(Duration::from_millis(100));
        let mut media_open = true;
        loop {
            let mut timeout = self.sender.poll_timeout();
            if let Some(c) = &self.controller {
                let t = c.poll_timeout();
                timeout = Some(timeout.map_or(t, |x| x.min(t)));
            }
            let sleep = async {
                match timeout {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                m = links.recv() => match m {
                    Some(m) => self.on_link(m),
                    None => break,
                },
                Some((id, q)) = inputs.hints.recv() => self.on_link(LinkMsg::Quality(id, q)),
                Some(b) = inputs.buttons.recv() => self.on_button(b),
                Some(c) = inputs.commands.recv() => self.on_command(c),
                m = media.recv(), if media_open => match m {
                    Some((at, g)) => {
                        let arrived = Instant::now();
                        self.source_window.push_back((arrived, g.len()));
                        while self.source_window.front().is_some_and(|f| arrived.duration_since(f.0) > Duration::from_secs(1)) {
                            self.source_window.pop_front();
                        }
                        if !self.live {
                            // Stopped: the source keeps running (a restart is instant)
                            // but nothing goes out.
                            continue;
                        }
                        let per = self.ts_per_datagram();
                        for chunk in g.chunks(per * TS_PACKET) {
                            let flags = classify.classify(chunk);
                            self.sender.push_media_captured(arrived, at, chunk, flags);
                        }
                        let mut st = self.stats.lock().expect("stats");
                        if st.first_packet_after_s.is_none() && !self.conns.is_empty() {
                            st.first_packet_after_s = Some(at.duration_since(self.epoch).as_secs_f64());
                        }
                    }
                    None => {
                        // The source ended: keep serving links (repairs in flight,
                        // stats) until shutdown.
                        tracing::warn!("media source ended");
                        media_open = false;
                    }
                },
                _ = sleep => {
                    let now = Instant::now();
                    self.sender.handle_timeout(now);
                    self.drive_controller(now);
                }
                _ = stats_tick.tick() => {
                    let now = Instant::now();
                    let s = self.sender.stats();
                    let health = self.health.borrow().clone();
                    if let (Some(c), Some(t)) = (
                        self.controller.as_mut(),
                        health.as_ref().and_then(|h| h.max_temp_c()),
                    ) {
                        c.handle_temperature(now, f64::from(t));
                    }
                    if !self.conns.is_empty() {
                        self.last_connected = now;
                    }
                    let state = box_state(StateInputs {
                        live: self.live,
                        held: self.held,
                        connected: self.conns.len(),
                        configured: self.links_configured,
                        since_connected: now.duration_since(self.last_connected),
                        since_media: self.source_window.back().map(|w| now.duration_since(w.0)),
                        at_floor: self.controller.as_ref().is_some_and(|c| {
                            c.target().bps <= c.config().floor_bps
                        }),
                    });
                    self.state.send_if_modified(|s| {
                        let changed = *s != state;
                        *s = state;
                        changed
                    });
                    let usage_view = self.tick_usage(now);
                    if let Ok(mut st) = self.stats.lock() {
                        st.usage = Some(usage_view);
                        if st.live_after_s.is_none() {
                            st.live_after_s = s.first_media_acked_s.map(|a| {
                                (self.epoch + Duration::from_secs_f64(a))
                                    .duration_since(self.started)
                                    .as_secs_f64()
                            });
                        }
                        st.state = state;
                        st.live = self.live;
                        st.health = health;
                        st.modems = self.modems.borrow().clone();
                        // One list of links: transport state, hint, cap and modem.
                        let modems = st.modems.clone();
                        for l in st.links.iter_mut() {
                            l.at_cap = self.usage.capped.contains(&l.id);
                            // As the sender applies it (clamped), 1.0 while not joined.
                            l.quality = s
                                .links
                                .iter()
                                .find(|x| x.id == l.id)
                                .map_or(1.0, |x| x.quality);
                            l.modem = modems
                                .iter()
                                .find(|m| m.link.as_deref() == Some(l.name.as_str()))
                                .map(|m| LinkModem {
                                    tty: m.port.tty.clone(),
                                    state: m.status.state,
                                    operator: m.status.operator.clone(),
                                    tech: m.status.tech,
                                    rsrp_dbm: m.status.rsrp_dbm,
                                    sinr_db: m.status.sinr_db,
                                });
                        }
                        st.sender = s;
                        st.uptime_s = self.epoch.elapsed().as_secs_f64();
                        st.bitrate = self.controller.as_ref().map(|c| c.stats());
                        st.picture = self.controller.as_ref().and_then(|c| {
                            c.config().ladder.get(c.target().rung).map(|r| r.name.clone())
                        });
                        st.source_bps = self.source_window.iter().map(|w| w.1).sum::<usize>() as f64 * 8.0;
                    }
                }
            }
            self.flush();
        }
        // Shutdown: the last counts reach the file.
        self.count_usage();
        if let Some(f) = self.usage.file.as_mut() {
            if let Err(e) = f.flush() {
                tracing::warn!("data usage not saved at shutdown: {e}");
            }
        }
    }

    /// Runs the bitrate controller when its tick is due and publishes a changed target.
    fn drive_controller(&mut self, now: Instant) {
        let Some(c) = self.controller.as_mut() else {
            return;
        };
        if now < c.poll_timeout() {
            return;
        }
        c.handle_observation(now, &self.sender.observe());
        while let Some(e) = c.poll_event() {
            match e {
                BitrateEvent::Cut {
                    from_bps,
                    to_bps,
                    queue_ms,
                    ..
                } => tracing::debug!(
                    from_kbps = from_bps / 1000,
                    to_kbps = to_bps / 1000,
                    queue_ms,
                    "bitrate cut"
                ),
                BitrateEvent::Rung { rung, name, .. } => {
                    tracing::info!(rung, picture = %name, "picture size changed")
                }
            }
        }
        let t = c.target();
        self.control.send_if_modified(|m| {
            let changed = m.target_bps != t.bps || m.rung != t.rung;
            m.target_bps = t.bps;
            m.rung = t.rung;
            changed
        });
    }

    /// TS packets per media datagram: 7 where every joined link's QUIC path takes
    /// them, fewer when one can't (quinn falls back to 1200-byte packets on a path
    /// that drops 1400-byte ones, and refuses larger datagrams). A copy may be resent
    /// on any link, so the smallest link sets the size.
    fn ts_per_datagram(&self) -> usize {
        let min = self
            .conns
            .iter()
            .filter_map(|(_, c)| c.max_datagram_size())
            .min()
            .unwrap_or(wire::MEDIA_HEADER + TS_PER_DATAGRAM * TS_PACKET);
        ts_per_datagram(min)
    }

    fn on_link(&mut self, m: LinkMsg) {
        let now = Instant::now();
        match m {
            LinkMsg::Joined(id, conn, latency_ms) => {
                self.sender
                    .set_latency(Duration::from_millis(u64::from(latency_ms)));
                if let Some(c) = self.controller.as_mut() {
                    c.set_latency(Duration::from_millis(u64::from(latency_ms)));
                }
                self.sender.add_link(now, id);
                // A new connection starts from scratch; the radio and the data cap
                // have not changed.
                self.apply_quality(id);
                self.conns.retain(|c| c.0 != id);
                self.conns.push((id, conn));
            }
            LinkMsg::Datagram(id, d) => self.sender.handle_datagram(now, id, &d),
            LinkMsg::Summary(s) => {
                if s.lost > self.relay_lost {
                    self.control.send_modify(|c| c.keyframe_requests += 1);
                }
                self.relay_lost = s.lost;
                if let Ok(mut st) = self.stats.lock() {
                    st.relay = Some(s);
                }
            }
            LinkMsg::Gone(id, why) => {
                tracing::warn!(link = id, "link lost: {why}");
                // Count what it sent before its connection (and counter) goes.
                self.count_usage();
                self.sender.remove_link(now, id);
                self.conns.retain(|c| c.0 != id);
            }
            LinkMsg::Quality(id, q) => {
                self.hints.insert(id, q);
                self.apply_quality(id);
            }
        }
    }

    /// The sender's hint for a link: its modem's, or the lowest at its data cap.
    fn apply_quality(&mut self, id: LinkId) {
        let q = if self.usage.capped.contains(&id) {
            CAPPED_QUALITY
        } else {
            self.hints.get(&id).copied().unwrap_or(1.0)
        };
        self.sender.set_link_quality(id, q);
    }

    /// Adds each connected link's bytes sent since the last count.
    fn count_usage(&mut self) {
        let totals: Vec<(String, u64)> = self
            .conns
            .iter()
            .filter_map(|(id, c)| {
                let name = self.names.iter().find(|n| n.0 == *id)?.1.clone();
                Some((name, c.stats().udp_tx.bytes))
            })
            .collect();
        let now = unix_now();
        match self.usage.file.as_mut() {
            Some(f) => {
                if let Err(e) = f.tick(now, &totals) {
                    tracing::warn!("data usage not saved: {e}");
                }
            }
            None => {
                for (name, total) in totals {
                    let prev = self
                        .usage
                        .last_totals
                        .insert(name.clone(), total)
                        .unwrap_or(0);
                    let delta = if total >= prev { total - prev } else { total };
                    self.usage.memory.add(now, &name, delta);
                }
            }
        }
    }

    /// Once a second: count, enforce caps, and return the view for the stats.
    fn tick_usage(&mut self, now: Instant) -> usage::UsageView {
        let due = self
            .usage
            .last_count
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1));
        if due {
            self.count_usage();
            self.usage.last_count = Some(now);
            let store = match &self.usage.file {
                Some(f) => &f.store,
                None => &self.usage.memory,
            };
            let capped: std::collections::HashSet<LinkId> = self
                .names
                .iter()
                .filter(|(_, name)| store.status(name).cap_reached)
                .map(|(id, _)| *id)
                .collect();
            if capped != self.usage.capped {
                for (id, name) in &self.names {
                    if capped.contains(id) != self.usage.capped.contains(id) {
                        tracing::warn!(link = %name, at_cap = capped.contains(id), "monthly data cap");
                    }
                }
                self.usage.capped = capped;
                let ids: Vec<LinkId> = self.names.iter().map(|n| n.0).collect();
                for id in ids {
                    self.apply_quality(id);
                }
            }
        }
        match &self.usage.file {
            Some(f) => f.store.view(),
            None => self.usage.memory.view(),
        }
    }

    fn on_command(&mut self, c: CoreCommand) {
        match c {
            CoreCommand::SetLive(live) => {
                let was = self.live;
                self.live = live;
                self.held = !live;
                tracing::info!(
                    live,
                    "stream {} from the web page",
                    if live { "started" } else { "stopped" }
                );
                if live && !was {
                    self.control.send_modify(|c| c.keyframe_requests += 1);
                }
            }
            CoreCommand::Apply(s) => {
                tracing::info!(?s, "settings applied while running");
                for (name, cap) in &s.caps {
                    let cap = usage::Cap {
                        monthly_bytes: *cap,
                    };
                    self.usage.memory.set_cap(name, cap);
                    if let Some(f) = self.usage.file.as_mut() {
                        f.store.set_cap(name, cap);
                    }
                }
                // Re-judge the caps at the next stats tick.
                self.usage.last_count = None;
                if let (Some(c), Some((floor, ceiling))) = (self.controller.as_mut(), s.bounds) {
                    c.set_bounds(floor, ceiling);
                }
                self.sender.set_duplicate_budget(s.duplicate_budget);
            }
        }
    }

    fn on_button(&mut self, b: ButtonEvent) {
        match b {
            ButtonEvent::Toggle => {
                self.live = !self.live;
                self.held = false;
            }
            ButtonEvent::StopAndHold => {
                self.live = false;
                self.held = true;
            }
        }
        tracing::info!(live = self.live, held = self.held, "button: {b:?}");
        if self.live {
            // The picture starts clean.
            self.control.send_modify(|c| c.keyframe_requests += 1);
        }
    }

    fn flush(&mut self) {
        let now = Instant::now();
        while let Some(t) = self.sender.poll_transmit(now) {
            if let Some((_, c)) = self.conns.iter().find(|c| c.0 == t.link) {
                if let Err(e) = c.send_datagram(t.data) {
                    tracing::debug!(link = t.link, "send_datagram: {e}");
                }
            }
        }
        while let Some(e) = self.sender.poll_event() {
            let name = |l: LinkId| {
                self.names
                    .iter()
                    .find(|n| n.0 == l)
                    .map_or_else(|| l.to_string(), |n| n.1.clone())
            };
            let line = match &e {
                SenderEvent::LinkDown { link, at, reason } => format!(
                    "{:.3}s link {} down ({reason})",
                    at.duration_since(self.epoch).as_secs_f64(),
                    name(*link)
                ),
                SenderEvent::LinkUp { link, at } => format!(
                    "{:.3}s link {} up",
                    at.duration_since(self.epoch).as_secs_f64(),
                    name(*link)
                ),
            };
            tracing::info!("{line}");
            if let Ok(mut st) = self.stats.lock() {
                st.events.push(line);
                if st.events.len() > 100 {
                    st.events.remove(0);
                }
            }
            if let Some(tx) = &self.events {
                let _ = tx.send(e);
            }
        }
    }
}

struct LinkTask {
    id: LinkId,
    name: String,
    bind: LinkBind,
    relay: SocketAddr,
    server_name: String,
    client: quinn::ClientConfig,
    session: u32,
    latency_ms: u32,
    out: mpsc::Sender<LinkMsg>,
    stats: Arc<Mutex<EdgeStats>>,
}

impl LinkTask {
    fn status(&self, f: impl FnOnce(&mut EdgeLinkStatus)) {
        if let Ok(mut s) = self.stats.lock() {
            if let Some(l) = s.links.iter_mut().find(|l| l.id == self.id) {
                f(l);
            }
        }
    }

    async fn run(self, mut shutdown: watch::Receiver<bool>, mut kick: watch::Receiver<u64>) {
        let mut backoff = Duration::from_millis(200);
        loop {
            let started = Instant::now();
            let r = tokio::select! {
                biased;
                _ = shutdown.changed() => return,
                r = self.session_once(&mut kick) => r,
            };
            let why = match r {
                Ok(()) => "closed".to_string(),
                Err(e) => format!("{e:#}"),
            };
            self.status(|l| {
                l.connected = false;
                l.last_error = Some(why.clone());
            });
            let _ = self.out.send(LinkMsg::Gone(self.id, why)).await;
            // Reset the backoff only after the link proved good for a while.
            if started.elapsed() > Duration::from_secs(10) {
                backoff = Duration::from_millis(200);
            }
            let jitter = Duration::from_millis(u64::from(rand::random::<u8>()));
            tokio::select! {
                biased;
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(backoff + jitter) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn session_once(&self, kick: &mut watch::Receiver<u64>) -> Result<()> {
        let sock = socket::bind_link_socket(&self.bind, self.relay)?;
        let ep = quic::endpoint_on(sock, None)?;
        let conn = ep
            .connect_with(self.client.clone(), self.relay, &self.server_name)?
            .await
            .context("QUIC handshake")?;
        let (mut send, mut recv) = conn.open_bi().await.context("control stream")?;
        let join = wire::encode_control(&Control::Join {
            version: wire::VERSION,
            session: self.session,
            link_id: self.id,
            latency_ms: self.latency_ms,
            link_name: self.name.clone(),
        });
        send.write_all(&join).await?;
        let accept = tokio::time::timeout(Duration::from_secs(5), read_frame(&mut recv))
            .await
            .context("no answer to join")??;
        let latency_ms = match accept {
            Control::Accept { latency_ms, .. } => latency_ms,
            Control::Reject { reason } => return Err(anyhow!("relay refused: {reason}")),
            other => return Err(anyhow!("unexpected answer to join: {other:?}")),
        };
        tracing::info!(link = %self.name, relay = %self.relay, latency_ms, "link joined");
        self.status(|l| {
            l.connected = true;
            l.connects += 1;
            l.last_error = None;
        });
        self.out
            .send(LinkMsg::Joined(self.id, conn.clone(), latency_ms))
            .await?;
        let kicked = *kick.borrow_and_update();
        let mut kick_alive = true;
        loop {
            tokio::select! {
                biased;
                r = kick.changed(), if kick_alive => {
                    if r.is_err() {
                        // No watcher for this link (address-bound): never kicked.
                        kick_alive = false;
                        continue;
                    }
                    if *kick.borrow() != kicked {
                        conn.close(0u32.into(), b"interface change");
                        return Err(anyhow!("interface down or address changed"));
                    }
                }
                d = conn.read_datagram() => {
                    let d = d.context("connection")?;
                    if self.out.send(LinkMsg::Datagram(self.id, d)).await.is_err() {
                        return Ok(());
                    }
                }
                f = read_frame(&mut recv) => {
                    match f? {
                        Control::Summary(s) => { let _ = self.out.send(LinkMsg::Summary(s)).await; }
                        Control::Reject { reason } => return Err(anyhow!("relay refused: {reason}")),
                        _ => {}
                    }
                }
            }
        }
    }
}

/// Whole TS packets that fit a datagram of `max_datagram` bytes behind the media
/// header, between 1 and 7.
pub fn ts_per_datagram(max_datagram: usize) -> usize {
    (max_datagram.saturating_sub(wire::MEDIA_HEADER) / TS_PACKET).clamp(1, TS_PER_DATAGRAM)
}

async fn read_frame(recv: &mut quinn::RecvStream) -> Result<Control> {
    let mut len = [0u8; 2];
    recv.read_exact(&mut len).await.context("control stream")?;
    let len = u16::from_be_bytes(len) as usize;
    if len == 0 || len > wire::MAX_CONTROL_FRAME {
        return Err(anyhow!("bad control frame length {len}"));
    }
    let mut buf = vec![0u8; len];
    recv.read_exact(&mut buf).await?;
    Ok(wire::decode_control(&buf)?)
}

/// Load `edge.toml` (used by main for exit-code mapping).
pub fn load(path: &Path) -> Result<EdgeConfig, crate::config::ConfigError> {
    crate::config::load_edge(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(input: &str) -> EdgeConfig {
        let text = format!(
            "[device]\nid = \"cam\"\ncert = \"c\"\nkey = \"k\"\n\
             [relay]\naddress = \"127.0.0.1:7000\"\nfingerprint = \"{}\"\n\
             [input]\n{input}\n[[link]]\nname = \"l\"\nbind = \"127.0.0.1\"\n",
            "ab".repeat(32)
        );
        crate::config::parse_edge(&text, Path::new("edge.toml")).unwrap()
    }

    #[test]
    fn media_inputs_get_gstreamer_sources() {
        // Built (elements created, encoder chosen) but not started.
        for input in [
            "kind = \"pattern\"",
            "kind = \"v4l2\"\ndevice = \"/dev/video-braid-none\"",
            "kind = \"srt\"\nlisten = \"127.0.0.1:0\"",
        ] {
            let cfg = config(input);
            assert!(source_for(&cfg).is_ok(), "{input}");
        }
        let cfg = config("kind = \"pattern\"");
        assert_eq!(
            initial_target_bps(&cfg),
            crate::media::initial_target_bps(&cfg.video, &cfg.audio)
        );
        assert_eq!(
            crate::media::video_bitrate(initial_target_bps(&cfg), &cfg.video, &cfg.audio),
            2_000_000
        );
        let mut cfg = config("kind = \"pattern\"");
        cfg.video.encoder = crate::config::EncoderChoice::Named("v4l2h264enc".into());
        let e = source_for(&cfg)
            .err()
            .expect("no V4L2 encoder on this machine");
        assert!(format!("{e:#}").contains("not installed"), "{e:#}");
    }

    #[test]
    fn datagram_size_sets_ts_packets_per_datagram() {
        // initial_mtu 1400 on quinn gives 1362 bytes of datagram: 7 packets (1344).
        assert_eq!(ts_per_datagram(1362), 7);
        assert_eq!(ts_per_datagram(1344), 7);
        assert_eq!(ts_per_datagram(1343), 6);
        // quinn's 1200-byte fallback: 1162 bytes -> 6 packets (1156).
        assert_eq!(ts_per_datagram(1162), 6);
        assert_eq!(ts_per_datagram(100), 1);
        assert_eq!(ts_per_datagram(9000), 7);
    }
}
