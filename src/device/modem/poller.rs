//! The IO shell: one tokio task per modem, polling it and publishing a [`ModemStatus`]
//! on a `watch` channel.
//!
//! The serial port is owned by a dedicated std thread (reads with a 20 ms timeout,
//! writes from a channel), so no blocking call ever runs on the runtime. The task
//! drives the sans-IO [`AtChannel`] with what that thread reads, and runs identity once
//! per opening, then, every `poll_interval`, SIM, operator, registration and signal.
//!
//! A command without a final result code within `command_timeout` (silence, or only
//! garbage) makes the modem `Unresponsive`; a read or write error, EOF, or a port that
//! cannot be opened makes it `Gone`. Either way the port is closed and reopened after a
//! backoff (250 ms doubling to 10 s, back to 250 ms once the modem answers again), and
//! radio figures are cleared so nothing stale is reported.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Deserializer, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::at::{AtChannel, AtEvent, AtStats, Final, Response};
use super::dialect::Dialect;
use super::parse::{self, AccessTech, RegState, Signal, SimState};

/// First reopen delay after a failure.
pub const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// Longest reopen delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Serial read timeout of the IO thread: bounds write latency and close time.
const READ_SLICE: Duration = Duration::from_millis(20);

/// `[modem]` settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModemConfig {
    /// APN for PDP context 1 (`AT+CGDCONT=1,"IP",apn`), set once per opening; `None`
    /// leaves the modem's own setting.
    pub apn: Option<String>,
    /// Time between polls (`poll_interval_ms`, default 5000).
    #[serde(rename = "poll_interval_ms", deserialize_with = "millis")]
    pub poll_interval: Duration,
    /// How long one AT command may take (`command_timeout_ms`, default 3000).
    #[serde(rename = "command_timeout_ms", deserialize_with = "millis")]
    pub command_timeout: Duration,
}

impl Default for ModemConfig {
    fn default() -> Self {
        ModemConfig {
            apn: None,
            poll_interval: Duration::from_secs(5),
            command_timeout: Duration::from_secs(3),
        }
    }
}

fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let ms = u64::deserialize(d)?;
    if ms == 0 || ms > 3_600_000 {
        return Err(serde::de::Error::custom("must be 1..=3600000 ms"));
    }
    Ok(Duration::from_millis(ms))
}

/// Whether the modem is there and answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModemState {
    /// Not opened yet.
    Starting,
    /// Answering.
    Present,
    /// The port is open but a command got no answer in time (or only garbage).
    Unresponsive,
    /// The port failed, hung up or cannot be opened.
    Gone,
}

/// A snapshot of one modem, published after every change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModemStatus {
    pub port: PathBuf,
    pub state: ModemState,
    pub maker: Option<String>,
    pub model: Option<String>,
    pub revision: Option<String>,
    pub imei: Option<String>,
    pub dialect: Option<Dialect>,
    pub sim: Option<SimState>,
    pub operator: Option<String>,
    pub tech: Option<AccessTech>,
    pub registration: Option<RegState>,
    pub rssi_dbm: Option<f32>,
    pub rsrp_dbm: Option<f32>,
    pub rsrq_db: Option<f32>,
    pub sinr_db: Option<f32>,
    /// The APN set on this opening, once the modem accepted it.
    pub apn: Option<String>,
    /// Last complete answer, Unix time in milliseconds.
    pub last_ok: Option<u64>,
    /// Failures: timeouts, port errors, answers not understood.
    pub errors: u64,
    pub timeouts: u64,
    /// Lines dropped as junk (not UTF-8, control characters, over-long).
    pub junk_lines: u64,
    /// Unsolicited lines seen.
    pub urcs: u64,
    /// Successful port openings.
    pub opens: u64,
    pub last_error: Option<String>,
}

impl ModemStatus {
    pub fn new(port: PathBuf) -> ModemStatus {
        ModemStatus {
            port,
            state: ModemState::Starting,
            maker: None,
            model: None,
            revision: None,
            imei: None,
            dialect: None,
            sim: None,
            operator: None,
            tech: None,
            registration: None,
            rssi_dbm: None,
            rsrp_dbm: None,
            rsrq_db: None,
            sinr_db: None,
            apn: None,
            last_ok: None,
            errors: 0,
            timeouts: 0,
            junk_lines: 0,
            urcs: 0,
            opens: 0,
            last_error: None,
        }
    }

    fn clear_radio(&mut self) {
        self.sim = None;
        self.operator = None;
        self.tech = None;
        self.registration = None;
        self.rssi_dbm = None;
        self.rsrp_dbm = None;
        self.rsrq_db = None;
        self.sinr_db = None;
        self.apn = None;
    }
}

/// A running poller. Dropping it stops the task (the port closes within ~20 ms).
pub struct ModemHandle {
    status: watch::Receiver<ModemStatus>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl ModemHandle {
    /// The status channel; clone it freely.
    pub fn status(&self) -> watch::Receiver<ModemStatus> {
        self.status.clone()
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> ModemStatus {
        self.status.borrow().clone()
    }

    /// Stops the task and waits for it.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for ModemHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Starts polling the modem whose AT port is `port` (a path; it may be a symlink and
/// need not exist yet). Must be called inside a tokio runtime.
pub fn spawn_poller(port: PathBuf, cfg: ModemConfig) -> ModemHandle {
    let (status_tx, status) = watch::channel(ModemStatus::new(port.clone()));
    let (stop, stop_rx) = watch::channel(false);
    let poller = Poller {
        status: ModemStatus::new(port.clone()),
        path: port,
        cfg,
        status_tx,
        stop: stop_rx,
        totals: AtStats::default(),
    };
    let task = tokio::spawn(poller.run());
    ModemHandle {
        status,
        stop,
        task: Some(task),
    }
}

/// Opens `path`, sends `AT` and says whether `OK` came back within `timeout`. Blocking;
/// for discovery of ports not in the vendor table.
pub fn probe_at(path: &Path, timeout: Duration) -> bool {
    let Ok(mut port) = open_serial(path) else {
        return false;
    };
    let mut ch = AtChannel::new();
    let start = Instant::now();
    let Ok(cmd) = ch.send("AT", timeout, start) else {
        return false;
    };
    if port.write_all(&cmd).is_err() {
        return false;
    }
    let mut buf = [0u8; 256];
    loop {
        match ch.poll(Instant::now()) {
            Some(AtEvent::Response(r)) => return r.is_ok(),
            Some(AtEvent::Timeout { .. }) => return false,
            Some(AtEvent::Urc(_)) => continue,
            None => {}
        }
        match port.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => ch.feed(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return false,
        }
    }
}

fn open_serial(path: &Path) -> Result<serialport::TTYPort, String> {
    use serialport::SerialPort;
    let port = serialport::new(path.to_string_lossy(), 115_200)
        .timeout(READ_SLICE)
        .open_native()
        .map_err(|e| format!("open {}: {e}", path.display()))?;
    // Late answers from a previous opening must not be taken for new ones.
    let _ = port.clear(serialport::ClearBuffer::All);
    Ok(port)
}

enum IoMsg {
    Data(Vec<u8>),
    Closed(String),
}

/// An open port: its IO thread and the channels to it.
struct PortIo {
    tx: std::sync::mpsc::Sender<Vec<u8>>,
    rx: mpsc::Receiver<IoMsg>,
    thread: std::thread::JoinHandle<()>,
}

impl PortIo {
    fn open(path: &Path) -> Result<PortIo, String> {
        let port = open_serial(path)?;
        let (tx, wrx) = std::sync::mpsc::channel::<Vec<u8>>();
        let (rtx, rx) = mpsc::channel(64);
        let thread = std::thread::Builder::new()
            .name("modem-io".into())
            .spawn(move || io_loop(port, wrx, rtx))
            .map_err(|e| format!("spawn IO thread: {e}"))?;
        Ok(PortIo { tx, rx, thread })
    }

    /// Closes the port: ends the thread and waits for it off the runtime.
    async fn close(self) {
        drop(self.tx);
        drop(self.rx);
        let t = self.thread;
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
}

fn io_loop(
    mut port: serialport::TTYPort,
    wrx: std::sync::mpsc::Receiver<Vec<u8>>,
    rtx: mpsc::Sender<IoMsg>,
) {
    use std::sync::mpsc::TryRecvError;
    let mut buf = [0u8; 512];
    loop {
        loop {
            match wrx.try_recv() {
                Ok(bytes) => {
                    if let Err(e) = port.write_all(&bytes) {
                        let _ = rtx.blocking_send(IoMsg::Closed(format!("write: {e}")));
                        return;
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        match port.read(&mut buf) {
            Ok(0) => {
                let _ = rtx.blocking_send(IoMsg::Closed("end of file".into()));
                return;
            }
            Ok(n) => {
                if rtx.blocking_send(IoMsg::Data(buf[..n].to_vec())).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                let _ = rtx.blocking_send(IoMsg::Closed(format!("read: {e}")));
                return;
            }
        }
    }
}

/// Why a session on an open port ended.
enum End {
    Stopped,
    /// No final result in time, or an answer that belongs to an earlier command.
    Timeout(String),
    Gone(String),
}

struct Poller {
    path: PathBuf,
    cfg: ModemConfig,
    status: ModemStatus,
    status_tx: watch::Sender<ModemStatus>,
    stop: watch::Receiver<bool>,
    /// AT counters of finished sessions.
    totals: AtStats,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Poller {
    fn publish(&self) {
        self.status_tx.send_if_modified(|s| {
            if *s == self.status {
                false
            } else {
                *s = self.status.clone();
                true
            }
        });
    }

    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    fn count(&mut self, ch: &AtChannel) {
        let s = ch.stats();
        self.status.junk_lines =
            self.totals.junk_lines + self.totals.long_lines + s.junk_lines + s.long_lines;
        self.status.urcs = self.totals.urcs + s.urcs;
    }

    async fn run(mut self) {
        let mut backoff = BACKOFF_MIN;
        while !self.stopped() {
            match PortIo::open(&self.path) {
                Err(e) => {
                    if self.status.state != ModemState::Gone {
                        tracing::warn!(port = %self.path.display(), error = %e, "modem gone");
                        self.status.errors += 1;
                    }
                    self.status.state = ModemState::Gone;
                    self.status.last_error = Some(e);
                    self.status.clear_radio();
                    self.publish();
                }
                Ok(mut io) => {
                    self.status.opens += 1;
                    let mut ch = AtChannel::new();
                    let end = self.session(&mut io, &mut ch).await;
                    io.close().await;
                    let s = ch.stats();
                    self.totals.junk_lines += s.junk_lines;
                    self.totals.long_lines += s.long_lines;
                    self.totals.urcs += s.urcs;
                    let answered = self.status.state == ModemState::Present;
                    match end {
                        End::Stopped => break,
                        End::Timeout(cmd) => {
                            tracing::warn!(port = %self.path.display(), command = %cmd, "modem unresponsive");
                            self.status.state = ModemState::Unresponsive;
                            self.status.timeouts += 1;
                            self.status.last_error = Some(format!("no answer to {cmd}"));
                        }
                        End::Gone(e) => {
                            tracing::warn!(port = %self.path.display(), error = %e, "modem gone");
                            self.status.state = ModemState::Gone;
                            self.status.last_error = Some(e);
                        }
                    }
                    self.status.errors += 1;
                    self.status.clear_radio();
                    self.publish();
                    if answered {
                        backoff = BACKOFF_MIN;
                    }
                }
            }
            let mut stop = self.stop.clone();
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Sends `cmd` and waits for its response, passing URCs by.
    async fn exec(
        &mut self,
        io: &mut PortIo,
        ch: &mut AtChannel,
        cmd: &str,
    ) -> Result<Response, End> {
        let bytes = ch
            .send(cmd, self.cfg.command_timeout, Instant::now())
            .map_err(|e| End::Gone(e.to_string()))?;
        io.tx
            .send(bytes)
            .map_err(|_| End::Gone("IO thread ended".into()))?;
        loop {
            while let Some(ev) = ch.poll(Instant::now()) {
                match ev {
                    AtEvent::Response(r) => {
                        self.count(ch);
                        if r.out_of_step() {
                            return Err(End::Timeout(format!(
                                "{cmd} (answered out of step: {:?})",
                                r.lines
                            )));
                        }
                        return Ok(r);
                    }
                    AtEvent::Timeout { command } => {
                        self.count(ch);
                        return Err(End::Timeout(command));
                    }
                    AtEvent::Urc(u) => {
                        tracing::debug!(port = %self.path.display(), urc = %u, "modem URC")
                    }
                }
            }
            let deadline = ch.deadline().expect("a command is outstanding");
            tokio::select! {
                msg = io.rx.recv() => match msg {
                    Some(IoMsg::Data(b)) => ch.feed(&b),
                    Some(IoMsg::Closed(e)) => return Err(End::Gone(e)),
                    None => return Err(End::Gone("IO thread ended".into())),
                },
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {}
                _ = self.stop.wait_for(|s| *s) => return Err(End::Stopped),
            }
        }
    }

    /// Waits `d` between polls, still reading (URCs, hang-up).
    async fn idle(&mut self, io: &mut PortIo, ch: &mut AtChannel, d: Duration) -> Result<(), End> {
        let until = tokio::time::Instant::now() + d;
        loop {
            while let Some(ev) = ch.poll(Instant::now()) {
                if let AtEvent::Urc(u) = ev {
                    tracing::debug!(port = %self.path.display(), urc = %u, "modem URC");
                }
            }
            self.count(ch);
            tokio::select! {
                msg = io.rx.recv() => match msg {
                    Some(IoMsg::Data(b)) => ch.feed(&b),
                    Some(IoMsg::Closed(e)) => return Err(End::Gone(e)),
                    None => return Err(End::Gone("IO thread ended".into())),
                },
                _ = tokio::time::sleep_until(until) => return Ok(()),
                _ = self.stop.wait_for(|s| *s) => return Err(End::Stopped),
            }
        }
    }

    fn answered(&mut self) {
        self.status.last_ok = Some(unix_ms());
        if self.status.state != ModemState::Present {
            tracing::info!(port = %self.path.display(), "modem answering");
            self.status.state = ModemState::Present;
        }
    }

    fn not_understood(&mut self, r: &Response) {
        self.status.errors += 1;
        self.status.last_error = Some(format!(
            "{}: unexpected answer {:?} {:?}",
            r.command, r.lines, r.result
        ));
    }

    async fn session(&mut self, io: &mut PortIo, ch: &mut AtChannel) -> End {
        match self.session_inner(io, ch).await {
            Ok(()) => End::Stopped,
            Err(e) => e,
        }
    }

    async fn session_inner(&mut self, io: &mut PortIo, ch: &mut AtChannel) -> Result<(), End> {
        self.exec(io, ch, "AT").await?;
        self.answered();
        self.exec(io, ch, "ATE0").await?;
        self.exec(io, ch, "AT+CMEE=1").await?;
        self.identify(io, ch).await?;
        self.publish();
        let mut dialect = self.status.dialect.unwrap_or_default();
        if let Some(apn) = self.cfg.apn.clone() {
            match parse::apn_command(&apn) {
                Some(cmd) => {
                    let r = self.exec(io, ch, &cmd).await?;
                    if r.is_ok() {
                        self.status.apn = Some(apn);
                    } else {
                        self.not_understood(&r);
                    }
                }
                None => {
                    self.status.last_error = Some(format!("APN {apn:?} not sent: bad characters"))
                }
            }
        }
        loop {
            self.poll_once(io, ch, &mut dialect).await?;
            self.answered();
            self.publish();
            let d = self.cfg.poll_interval;
            self.idle(io, ch, d).await?;
        }
    }

    async fn identify(&mut self, io: &mut PortIo, ch: &mut AtChannel) -> Result<(), End> {
        let ati = self.exec(io, ch, "ATI").await?;
        let mut id = if ati.is_ok() {
            parse::parse_ati(&ati.lines)
        } else {
            Default::default()
        };
        let r = self.exec(io, ch, "AT+CGMI").await?;
        if let Some(v) = r
            .is_ok()
            .then(|| parse::parse_plain(&r.lines, "+CGMI:"))
            .flatten()
        {
            id.maker = Some(v);
        }
        let r = self.exec(io, ch, "AT+CGMM").await?;
        if let Some(v) = r
            .is_ok()
            .then(|| parse::parse_plain(&r.lines, "+CGMM:"))
            .flatten()
        {
            id.model = Some(v);
        }
        let r = self.exec(io, ch, "AT+CGSN").await?;
        if let Some(v) = r.is_ok().then(|| parse::parse_imei(&r.lines)).flatten() {
            id.imei = Some(v);
        }
        let dialect = Dialect::detect(id.maker.as_deref(), id.model.as_deref());
        tracing::info!(port = %self.path.display(), maker = ?id.maker, model = ?id.model, ?dialect, "modem identified");
        self.status.maker = id.maker;
        self.status.model = id.model;
        self.status.revision = id.revision;
        self.status.imei = id.imei;
        self.status.dialect = Some(dialect);
        Ok(())
    }

    async fn poll_once(
        &mut self,
        io: &mut PortIo,
        ch: &mut AtChannel,
        dialect: &mut Dialect,
    ) -> Result<(), End> {
        let d = *dialect;
        let r = self.exec(io, ch, "AT+CPIN?").await?;
        self.status.sim = parse::parse_cpin(&r);
        if self.status.sim.is_none() {
            self.not_understood(&r);
        }

        let r = self.exec(io, ch, "AT+COPS?").await?;
        let cops = if r.is_ok() {
            parse::parse_cops(&r.lines)
        } else {
            None
        };
        if cops.is_none() && r.result != Final::Error {
            self.not_understood(&r);
        }
        let (operator, cops_tech) = cops.unwrap_or_default();

        let mut regs = Vec::new();
        let mut reg_cmds = vec![("AT+CEREG?", "+CEREG:"), ("AT+CREG?", "+CREG:")];
        if d.may_have_5g() {
            reg_cmds.insert(0, ("AT+C5GREG?", "+C5GREG:"));
        }
        for (cmd, prefix) in reg_cmds {
            let r = self.exec(io, ch, cmd).await?;
            if let Some(reg) = r
                .is_ok()
                .then(|| parse::parse_reg(&r.lines, prefix))
                .flatten()
            {
                regs.push(reg);
                if reg.registered() {
                    break;
                }
            }
        }
        let registration = regs
            .iter()
            .copied()
            .find(|r| r.registered())
            .or(regs.first().copied());

        let r = self.exec(io, ch, "AT+CSQ").await?;
        let csq = r.is_ok().then(|| parse::parse_csq(&r.lines)).flatten();
        if csq.is_none() {
            self.not_understood(&r);
        }
        let r = self.exec(io, ch, d.signal_command()).await?;
        let vendor = r.is_ok().then(|| d.parse_signal(&r.lines)).flatten();
        if vendor.is_none() {
            self.not_understood(&r);
            if d != Dialect::Generic && matches!(r.result, Final::Error | Final::CmeError(_)) {
                // Firmware without the vendor command: 27.007 `AT+CESQ` from now on.
                tracing::info!(port = %self.path.display(), command = %r.command, "vendor signal command refused; using AT+CESQ");
                *dialect = Dialect::Generic;
            }
        }
        let signal = vendor.unwrap_or_default().or(csq.unwrap_or_default());
        let tech = match (cops_tech, signal.tech) {
            (_, Some(AccessTech::Nr5g)) => Some(AccessTech::Nr5g),
            (Some(t), _) => Some(t),
            (None, t) => t,
        };
        self.status.operator = operator;
        self.status.tech = tech;
        self.status.registration = registration;
        self.set_signal(signal);
        Ok(())
    }

    fn set_signal(&mut self, s: Signal) {
        self.status.rssi_dbm = s.rssi_dbm;
        self.status.rsrp_dbm = s.rsrp_dbm;
        self.status.rsrq_db = s.rsrq_db;
        self.status.sinr_db = s.sinr_db;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_names() {
        let c: ModemConfig = toml::from_str("").unwrap();
        assert_eq!(c, ModemConfig::default());
        let c: ModemConfig = toml::from_str(
            "apn = \"internet\"\npoll_interval_ms = 2000\ncommand_timeout_ms = 1500",
        )
        .unwrap();
        assert_eq!(c.apn.as_deref(), Some("internet"));
        assert_eq!(c.poll_interval, Duration::from_secs(2));
        assert_eq!(c.command_timeout, Duration::from_millis(1500));
        assert!(toml::from_str::<ModemConfig>("poll_interval = 5").is_err());
        assert!(toml::from_str::<ModemConfig>("command_timeout_ms = 0").is_err());
    }

    #[test]
    fn status_serializes() {
        let mut s = ModemStatus::new("/dev/ttyUSB2".into());
        s.state = ModemState::Present;
        s.tech = Some(AccessTech::Nr5g);
        s.sim = Some(SimState::Ready);
        let j = serde_json::to_value(&s).unwrap();
        assert_eq!(j["state"], "present");
        assert_eq!(j["tech"], "nr5g");
        assert_eq!(j["sim"], "ready");
        assert_eq!(j["port"], "/dev/ttyUSB2");
    }
}
