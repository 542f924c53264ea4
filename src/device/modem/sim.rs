//! A modem emulator on a pseudo-terminal, for tests: answers AT commands in a chosen
//! dialect, with faults that can be switched on while it runs.
//!
//! [`SimModem::start`] opens a pty pair (raw mode) and serves the master side on a
//! thread; the code under test opens [`SimModem::path`] (`/dev/pts/N`) as a serial
//! port. The emulator keeps its own slave fd open, so the master never sees a hang-up
//! when the port under test is closed and reopened. [`SimModem::unplug`] (or the
//! `unplug_on` fault) closes both: the port under test then reads EIO / hang-up, and
//! `/dev/pts/N` disappears.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::pty::openpty;
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};

use super::dialect::Dialect;
use super::parse::AccessTech;

/// What a dialect's emulated modem reports, for tests to compare with.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub maker: &'static str,
    pub model: &'static str,
    pub imei: &'static str,
    pub operator: &'static str,
    pub tech: AccessTech,
    /// `+CSQ` rssi index and its dBm.
    pub csq: u8,
    pub rssi_dbm: f32,
    pub rsrp_dbm: f32,
    pub rsrq_db: f32,
    /// `None` where the dialect's signal command gives none (`AT+CESQ`).
    pub sinr_db: Option<f32>,
}

impl Profile {
    pub fn of(dialect: Dialect) -> Profile {
        match dialect {
            Dialect::Quectel => Profile {
                maker: "Quectel",
                model: "EG25",
                imei: "867698040000011",
                operator: "Braid Mobile",
                tech: AccessTech::Lte,
                csq: 20,
                rssi_dbm: -64.0,
                rsrp_dbm: -95.0,
                rsrq_db: -11.0,
                sinr_db: Some(5.0),
            },
            Dialect::Sierra => Profile {
                maker: "Sierra Wireless, Incorporated",
                model: "EM7455",
                imei: "359072060000022",
                operator: "Sierra Net",
                tech: AccessTech::Lte,
                csq: 18,
                rssi_dbm: -65.0,
                rsrp_dbm: -93.0,
                rsrq_db: -10.5,
                sinr_db: Some(8.4),
            },
            Dialect::Huawei => Profile {
                maker: "huawei",
                model: "ME909s-120",
                imei: "866000000000033",
                operator: "Hua Tel",
                tech: AccessTech::Lte,
                csq: 25,
                rssi_dbm: -61.0,
                rsrp_dbm: -96.0,
                rsrq_db: -8.0,
                sinr_db: Some(5.0),
            },
            Dialect::Simcom => Profile {
                maker: "SIMCOM INCORPORATED",
                model: "SIMCOM_SIM8200EA-M2",
                imei: "868000000000044",
                operator: "Five Gee",
                tech: AccessTech::Nr5g,
                csq: 22,
                rssi_dbm: -69.0,
                rsrp_dbm: -74.0,
                rsrq_db: -11.0,
                sinr_db: Some(14.5),
            },
            Dialect::Generic => Profile {
                maker: "Telit",
                model: "LM960",
                imei: "356000000000055",
                operator: "Generic Cell",
                tech: AccessTech::Lte,
                csq: 15,
                rssi_dbm: -83.0,
                rsrp_dbm: -96.0,
                rsrq_db: -10.0,
                sinr_db: None,
            },
        }
    }
}

/// Faults, switchable at run time.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Read commands and answer nothing.
    pub silent: bool,
    /// Precede every answer with a line of binary junk and an over-long line.
    pub junk: bool,
    /// Answer every command with binary junk only (no result code).
    pub garbage: bool,
    /// Wait this long before answering.
    pub delay: Duration,
    /// Put URCs (`RING`, `+CEREG: 5,...`, `+QIND`) between info lines and the result.
    pub urcs: bool,
    /// Echo commands, and ignore `ATE0`.
    pub echo: bool,
    /// On a command starting with this, send half an answer and unplug.
    pub unplug_on: Option<String>,
    /// Answer `AT+CPIN?` with `+CME ERROR: 10`.
    pub no_sim: bool,
    /// Answer the dialect's signal command with `ERROR` (old firmware).
    pub refuse_vendor_signal: bool,
    /// Report this SINR instead of the profile's (Sierra `!GSTATUS?`): a fading cell.
    pub sinr_db: Option<f32>,
}

#[derive(Debug, Default)]
struct Shared {
    faults: Faults,
    commands: Vec<String>,
}

/// A running emulated modem. Dropping it unplugs it.
pub struct SimModem {
    path: PathBuf,
    dialect: Dialect,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SimModem {
    /// Opens a pty pair and starts answering on it.
    pub fn start(dialect: Dialect) -> std::io::Result<SimModem> {
        let pty = openpty(None, None)?;
        let mut t = tcgetattr(&pty.slave)?;
        cfmakeraw(&mut t);
        tcsetattr(&pty.slave, SetArg::TCSANOW, &t)?;
        let path = nix::unistd::ttyname(&pty.slave)?;
        let shared = Arc::new(Mutex::new(Shared::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let shared = shared.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("sim-modem".into())
                .spawn(move || serve(File::from(pty.master), pty.slave, dialect, shared, stop))?
        };
        Ok(SimModem {
            path,
            dialect,
            shared,
            stop,
            thread: Some(thread),
        })
    }

    /// The slave side, `/dev/pts/N`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Changes the faults.
    pub fn set(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut self.shared.lock().expect("sim lock").faults);
    }

    /// Commands received so far.
    pub fn commands(&self) -> Vec<String> {
        self.shared.lock().expect("sim lock").commands.clone()
    }

    /// Closes the pty (both sides held here) and waits for the thread.
    pub fn unplug(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Whether the emulator has stopped (unplugged by a fault or by [`unplug`](Self::unplug)).
    pub fn unplugged(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }
}

impl Drop for SimModem {
    fn drop(&mut self) {
        self.unplug();
    }
}

fn serve(
    mut master: File,
    slave: OwnedFd,
    dialect: Dialect,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
) {
    let mut line = Vec::new();
    let mut buf = [0u8; 256];
    let mut echo_enabled = true;
    while !stop.load(Ordering::SeqCst) {
        let mut fds = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(20u16)) {
            Ok(0) | Err(_) => continue,
            Ok(_) => {}
        }
        let n = match master.read(&mut buf) {
            Ok(n) => n,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        for &b in &buf[..n] {
            if b != b'\r' && b != b'\n' {
                line.push(b);
                continue;
            }
            if line.is_empty() {
                continue;
            }
            let cmd = String::from_utf8_lossy(&std::mem::take(&mut line))
                .trim()
                .to_string();
            let faults = {
                let mut s = shared.lock().expect("sim lock");
                s.commands.push(cmd.clone());
                s.faults.clone()
            };
            if faults.silent {
                continue;
            }
            if faults.garbage {
                let _ = master
                    .write_all(b"\x7f\xfe\x01\x02\r\n\xc3\x28\xa0\xa1\r\n\x1b[2J\x00OK\x00\r\n");
                continue;
            }
            if !faults.delay.is_zero() {
                std::thread::sleep(faults.delay);
            }
            let mut out = Vec::new();
            if faults.echo || echo_enabled {
                out.extend_from_slice(cmd.as_bytes());
                out.push(b'\r');
            }
            if faults.junk {
                out.extend_from_slice(b"\r\n\xff\xfe\x00garbage\x80\x1b[0m\r\n");
                out.extend(std::iter::repeat_n(b'#', 1500));
                out.extend_from_slice(b"\r\n");
            }
            if cmd.eq_ignore_ascii_case("ATE0") {
                echo_enabled = false;
            }
            let (info, result) = answer(dialect, &cmd, &faults);
            for (i, l) in info.iter().enumerate() {
                out.extend_from_slice(format!("\r\n{l}\r\n").as_bytes());
                if i == 0 && faults.urcs {
                    out.extend_from_slice(
                        b"\r\nRING\r\n\r\n+CEREG: 5,\"1A2B\",\"01A2D001\",7\r\n+QIND: \"csq\",3,99\r\n",
                    );
                }
            }
            if let Some(prefix) = &faults.unplug_on {
                if cmd.starts_with(prefix.as_str()) {
                    let half = out.len() / 2;
                    let _ = master.write_all(&out[..half]);
                    drop(slave);
                    drop(master);
                    return;
                }
            }
            out.extend_from_slice(format!("\r\n{result}\r\n").as_bytes());
            if master.write_all(&out).is_err() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    drop(slave);
}

/// Information lines and final result for `cmd`.
fn answer(dialect: Dialect, cmd: &str, faults: &Faults) -> (Vec<String>, &'static str) {
    let p = Profile::of(dialect);
    let upper = cmd.to_ascii_uppercase();
    let ok = |v: Vec<String>| (v, "OK");
    match upper.as_str() {
        "AT" | "ATE0" | "ATE1" | "AT+CMEE=1" | "AT+CMEE=2" => ok(vec![]),
        "ATI" => ok(match dialect {
            Dialect::Quectel => vec![p.maker.into(), p.model.into(), "Revision: EG25GGBR07A08M2G".into()],
            _ => vec![
                format!("Manufacturer: {}", p.maker),
                format!("Model: {}", p.model),
                "Revision: 1.0".into(),
                format!("IMEI: {}", p.imei),
                "+GCAP: +CGSM".into(),
            ],
        }),
        "AT+CGMI" => ok(vec![p.maker.into()]),
        "AT+CGMM" => ok(vec![p.model.into()]),
        "AT+CGMR" => ok(vec!["1.0".into()]),
        "AT+CGSN" => ok(vec![p.imei.into()]),
        "AT+CPIN?" if faults.no_sim => (vec![], "+CME ERROR: 10"),
        "AT+CPIN?" => ok(vec!["+CPIN: READY".into()]),
        "AT+COPS?" => {
            let act = match p.tech {
                AccessTech::Nr5g => 11,
                AccessTech::Lte => 7,
                AccessTech::Umts => 2,
                AccessTech::Gsm => 0,
            };
            ok(vec![format!("+COPS: 0,0,\"{}\",{act}", p.operator)])
        }
        "AT+CEREG?" => ok(vec!["+CEREG: 0,1".into()]),
        "AT+CREG?" => ok(vec!["+CREG: 0,1".into()]),
        "AT+C5GREG?" if matches!(dialect, Dialect::Simcom) => ok(vec!["+C5GREG: 0,1".into()]),
        "AT+C5GREG?" if matches!(dialect, Dialect::Generic) => ok(vec!["+C5GREG: 0,0".into()]),
        "AT+CSQ" => ok(vec![format!("+CSQ: {},99", p.csq)]),
        "AT+CESQ" => ok(vec!["+CESQ: 99,99,255,255,20,45".into()]),
        _ if faults.refuse_vendor_signal && upper == dialect.signal_command().to_ascii_uppercase() => {
            (vec![], "ERROR")
        }
        "AT+QENG=\"SERVINGCELL\"" if matches!(dialect, Dialect::Quectel) => ok(vec![
            "+QENG: \"servingcell\",\"NOCONN\",\"LTE\",\"FDD\",234,15,1A2B3C4,123,1300,3,5,5,C5F,-95,-11,-64,125,10,-,-".into(),
        ]),
        "AT!GSTATUS?" if matches!(dialect, Dialect::Sierra) => ok(vec![
            "!GSTATUS: ".into(),
            "Current Time:  4017\t\tTemperature: 41".into(),
            "System mode:   LTE        \tPS state:    Attached     ".into(),
            "PCC RxM RSSI:  -65\t\tRSRP (dBm):  -93".into(),
            "PCC RxD RSSI:  -67\t\tRSRP (dBm):  -97".into(),
            "RSRQ (dB):     -10.5\t\tCell ID:     0x01234567 (19088743)".into(),
            format!("SINR (dB):      {:.1}", faults.sinr_db.unwrap_or(8.4)),
        ]),
        "AT^HCSQ?" if matches!(dialect, Dialect::Huawei) => ok(vec!["^HCSQ: \"LTE\",60,45,126,24".into()]),
        "AT+CPSI?" if matches!(dialect, Dialect::Simcom) => ok(vec![
            "+CPSI: NR5G_SA,Online,460-01,0x6F4700,29869309958,95,NR5G_BAND78,627264,-740,-110,145".into(),
        ]),
        _ if upper.starts_with("AT+CGDCONT=") => ok(vec![]),
        _ => (vec![], "ERROR"),
    }
}
