//! The AT protocol core, sans-IO: bytes and `now` in, bytes to write and parsed
//! responses out.
//!
//! One command is outstanding at a time (that is all a modem's AT port does reliably).
//! While it is outstanding, received lines are sorted into:
//!
//! - the echo of the command (modems that ignore `ATE0`), dropped;
//! - a final result code (`OK`, `ERROR`, `+CME ERROR: n`, `+CMS ERROR: n`, `NO CARRIER`
//!   ...), which completes the command;
//! - unsolicited result codes (URCs: `RING`, `+CEREG: 1`, `+QIND: ...`): lines with a
//!   known URC prefix that is not the command's own prefix, queued apart so they are
//!   never mistaken for the answer;
//! - information lines, kept for the response.
//!
//! Lines arriving while nothing is outstanding are all URCs (or late answers). Lines that
//! are not valid UTF-8 or hold control characters are dropped and counted, and so are
//! lines longer than [`MAX_LINE`] (the rest of such a line, up to the next terminator,
//! is skipped). Timeouts are driven by the `now` given to [`AtChannel::poll`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Longest line kept, in bytes; a longer line is dropped and counted.
pub const MAX_LINE: usize = 1024;

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Final {
    Ok,
    Error,
    /// `+CME ERROR: <n>` (numeric) or the verbose text when `AT+CMEE=2` is in force.
    CmeError(CmeError),
    /// `+CMS ERROR: <n>` (SMS layer), as given.
    CmsError(String),
    /// `NO CARRIER`, `BUSY`, `NO ANSWER`, `NO DIALTONE`, `ABORTED`.
    Other(String),
}

/// A `+CME ERROR` value: numeric code, or the text of the verbose form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CmeError {
    Code(u16),
    Text(String),
}

impl CmeError {
    /// 3GPP TS 27.007 code 10, "SIM not inserted", in either form.
    pub fn is_sim_not_inserted(&self) -> bool {
        match self {
            CmeError::Code(c) => *c == 10,
            CmeError::Text(t) => t.eq_ignore_ascii_case("SIM not inserted"),
        }
    }
}

/// A completed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The command as sent, without the terminator.
    pub command: String,
    /// Information lines, in order, without echo, URCs and blank lines.
    pub lines: Vec<String>,
    pub result: Final,
}

impl Response {
    pub fn is_ok(&self) -> bool {
        self.result == Final::Ok
    }

    /// Whether this looks like another command's answer: an information line with an
    /// extended-command prefix (`+XXX:`, `^XXX:`) other than this command's own. That
    /// happens when a late answer to an abandoned command shifts every answer by one;
    /// the caller should resynchronise (close, flush, reopen).
    pub fn out_of_step(&self) -> bool {
        let Some(own) = response_prefix(&self.command) else {
            return false;
        };
        self.lines.iter().any(|l| {
            let head = l.split(':').next().unwrap_or("");
            l.contains(':')
                && head.len() > 1
                && matches!(head.as_bytes()[0], b'+' | b'^')
                && head[1..].bytes().all(|b| b.is_ascii_alphanumeric())
                && !format!("{head}:").eq_ignore_ascii_case(&own)
        })
    }
}

/// What the channel has to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AtEvent {
    /// The outstanding command completed.
    Response(Response),
    /// The outstanding command got no final result code in time; it is abandoned.
    Timeout { command: String },
    /// An unsolicited line (or a late answer to an abandoned command).
    Urc(String),
}

/// Counters of what the channel dropped or set aside.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AtStats {
    /// Lines dropped for invalid UTF-8 or control characters.
    pub junk_lines: u64,
    /// Lines dropped for exceeding [`MAX_LINE`].
    pub long_lines: u64,
    /// URCs (and stray lines while idle).
    pub urcs: u64,
    /// Echoed commands dropped.
    pub echoes: u64,
    /// Commands that timed out.
    pub timeouts: u64,
}

/// A command was sent while another is outstanding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("AT command {0:?} still outstanding")]
pub struct Busy(pub String);

#[derive(Debug)]
struct Pending {
    command: String,
    /// `+CSQ:` for `AT+CSQ`, `!GSTATUS:` for `AT!GSTATUS?`; `None` for `ATI`, `AT`.
    prefix: Option<String>,
    deadline: Instant,
    lines: Vec<String>,
}

/// The AT line discipline and transaction state machine for one port.
#[derive(Debug, Default)]
pub struct AtChannel {
    line: Vec<u8>,
    /// Dropping the rest of an over-long line.
    skipping: bool,
    pending: Option<Pending>,
    events: VecDeque<AtEvent>,
    stats: AtStats,
}

/// Prefixes of unsolicited result codes from 27.007 and the vendors we know.
const URC_PREFIXES: &[&str] = &[
    "RING",
    "+CRING:",
    "+CLIP:",
    "+CREG:",
    "+CGREG:",
    "+CEREG:",
    "+C5GREG:",
    "+CMTI:",
    "+CMT:",
    "+CDS:",
    "+CBM:",
    "+CUSD:",
    "+CIEV:",
    "+CGEV:",
    "+CTZV:",
    "+CTZE:",
    "+CPIN:",
    "+CFUN:",
    "+PACSP",
    "RDY",
    "+QIND:",
    "+QUSIM:",
    "+QSTAT:",
    "SMS DONE",
    "PB DONE",
    "*PSUTTZ:",
    "DST:",
    "^RSSI:",
    "^HCSQ:",
    "^MODE:",
    "^SYSSTART",
    "^BOOT:",
    "^SRVST:",
    "^SIMST:",
    "^NDISSTAT:",
    "!PCINFO:",
];

impl AtChannel {
    pub fn new() -> AtChannel {
        AtChannel::default()
    }

    pub fn stats(&self) -> AtStats {
        self.stats
    }

    /// Whether a command is outstanding.
    pub fn busy(&self) -> bool {
        self.pending.is_some()
    }

    /// When the outstanding command times out.
    pub fn deadline(&self) -> Option<Instant> {
        self.pending.as_ref().map(|p| p.deadline)
    }

    /// Starts `command` (e.g. `AT+CSQ`): returns the bytes to write.
    pub fn send(
        &mut self,
        command: &str,
        timeout: Duration,
        now: Instant,
    ) -> Result<Vec<u8>, Busy> {
        if let Some(p) = &self.pending {
            return Err(Busy(p.command.clone()));
        }
        self.pending = Some(Pending {
            command: command.to_string(),
            prefix: response_prefix(command),
            deadline: now + timeout,
            lines: Vec::new(),
        });
        let mut out = command.as_bytes().to_vec();
        out.push(b'\r');
        Ok(out)
    }

    /// Abandons the outstanding command without an event (the port is being closed).
    pub fn reset(&mut self) {
        self.pending = None;
        self.line.clear();
        self.skipping = false;
        self.events.clear();
    }

    /// Feeds received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\r' || b == b'\n' {
                if self.skipping {
                    self.skipping = false;
                } else if !self.line.is_empty() {
                    let line = std::mem::take(&mut self.line);
                    self.on_line(line);
                }
                continue;
            }
            if self.skipping {
                continue;
            }
            if self.line.len() >= MAX_LINE {
                self.stats.long_lines += 1;
                self.line.clear();
                self.skipping = true;
                continue;
            }
            self.line.push(b);
        }
    }

    /// The next event, after checking the outstanding command's deadline against `now`.
    pub fn poll(&mut self, now: Instant) -> Option<AtEvent> {
        if let Some(ev) = self.events.pop_front() {
            return Some(ev);
        }
        if let Some(p) = &self.pending {
            if now >= p.deadline {
                let p = self.pending.take().expect("checked");
                self.stats.timeouts += 1;
                return Some(AtEvent::Timeout { command: p.command });
            }
        }
        None
    }

    fn on_line(&mut self, raw: Vec<u8>) {
        let line = match String::from_utf8(raw) {
            Ok(s) if !s.chars().any(|c| c.is_control() && c != '\t') => s,
            _ => {
                self.stats.junk_lines += 1;
                return;
            }
        };
        let line = line.trim();
        if line.is_empty() {
            return;
        }
        let Some(p) = self.pending.as_mut() else {
            self.stats.urcs += 1;
            self.events.push_back(AtEvent::Urc(line.to_string()));
            return;
        };
        if p.lines.is_empty() && is_echo(line, &p.command) {
            self.stats.echoes += 1;
            return;
        }
        if let Some(result) = final_code(line) {
            let p = self.pending.take().expect("checked");
            self.events.push_back(AtEvent::Response(Response {
                command: p.command,
                lines: p.lines,
                result,
            }));
            return;
        }
        if is_urc(line, p.prefix.as_deref()) {
            self.stats.urcs += 1;
            self.events.push_back(AtEvent::Urc(line.to_string()));
            return;
        }
        p.lines.push(line.to_string());
    }
}

/// The echo of `command`: the same text, possibly with the terminator's neighbours
/// trimmed and case changed.
fn is_echo(line: &str, command: &str) -> bool {
    line.eq_ignore_ascii_case(command.trim())
}

/// Parses a final result code.
pub fn final_code(line: &str) -> Option<Final> {
    match line {
        "OK" => return Some(Final::Ok),
        "ERROR" => return Some(Final::Error),
        "NO CARRIER" | "BUSY" | "NO ANSWER" | "NO DIALTONE" | "ABORTED" => {
            return Some(Final::Other(line.to_string()))
        }
        _ => {}
    }
    if let Some(rest) = line.strip_prefix("+CME ERROR:") {
        let rest = rest.trim();
        return Some(Final::CmeError(match rest.parse::<u16>() {
            Ok(n) => CmeError::Code(n),
            Err(_) => CmeError::Text(rest.to_string()),
        }));
    }
    if let Some(rest) = line.strip_prefix("+CMS ERROR:") {
        return Some(Final::CmsError(rest.trim().to_string()));
    }
    None
}

/// The information-line prefix a command answers with: `AT+CSQ` -> `+CSQ:`,
/// `AT+QENG="servingcell"` -> `+QENG:`, `AT^HCSQ?` -> `^HCSQ:`, `AT!GSTATUS?` ->
/// `!GSTATUS:`. Basic commands (`ATI`, `ATE0`) have none.
pub fn response_prefix(command: &str) -> Option<String> {
    let body = command.get(2..)?;
    if !command[..2].eq_ignore_ascii_case("AT") {
        return None;
    }
    let first = body.chars().next()?;
    if !matches!(first, '+' | '^' | '!' | '$' | '#' | '*') {
        return None;
    }
    let end = body[1..]
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .map_or(body.len(), |i| i + 1);
    Some(format!("{}:", body[..end].to_ascii_uppercase()))
}

/// Whether `line` is unsolicited while a command answering with `prefix` is outstanding.
fn is_urc(line: &str, prefix: Option<&str>) -> bool {
    let upper_head: String = line
        .chars()
        .take(16)
        .collect::<String>()
        .to_ascii_uppercase();
    if let Some(prefix) = prefix {
        if upper_head.starts_with(prefix) {
            // The command's own prefix: an answer, unless it is the unsolicited form of
            // a registration report (`+CEREG: <stat>[,"tac",...]` has no `<n>` first).
            return is_registration(prefix) && !is_registration_query_answer(line);
        }
    }
    URC_PREFIXES.iter().any(|u| upper_head.starts_with(u))
}

fn is_registration(prefix: &str) -> bool {
    matches!(prefix, "+CREG:" | "+CGREG:" | "+CEREG:" | "+C5GREG:")
}

/// `+CEREG: <n>,<stat>[,...]` (query answer) versus `+CEREG: <stat>[,"<tac>",...]`
/// (URC): the answer has at least two fields and an unquoted second one.
fn is_registration_query_answer(line: &str) -> bool {
    let Some((_, args)) = line.split_once(':') else {
        return false;
    };
    let fields: Vec<&str> = args.split(',').map(str::trim).collect();
    fields.len() >= 2 && fields[1].parse::<u8>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        Instant::now()
    }

    fn run(ch: &mut AtChannel, now: Instant) -> Vec<AtEvent> {
        std::iter::from_fn(|| ch.poll(now)).collect()
    }

    #[test]
    fn prefix_of_commands() {
        assert_eq!(response_prefix("AT+CSQ").as_deref(), Some("+CSQ:"));
        assert_eq!(response_prefix("AT+CEREG?").as_deref(), Some("+CEREG:"));
        assert_eq!(
            response_prefix("AT+QENG=\"servingcell\"").as_deref(),
            Some("+QENG:")
        );
        assert_eq!(response_prefix("AT^HCSQ?").as_deref(), Some("^HCSQ:"));
        assert_eq!(response_prefix("AT!GSTATUS?").as_deref(), Some("!GSTATUS:"));
        assert_eq!(response_prefix("ATI"), None);
        assert_eq!(response_prefix("AT"), None);
    }

    #[test]
    fn simple_ok_with_info_line() {
        let now = t0();
        let mut ch = AtChannel::new();
        let out = ch.send("AT+CSQ", Duration::from_secs(1), now).unwrap();
        assert_eq!(out, b"AT+CSQ\r");
        assert!(ch.send("AT", Duration::from_secs(1), now).is_err());
        ch.feed(b"\r\n+CSQ: 20,99\r\n\r\nOK\r\n");
        assert_eq!(
            run(&mut ch, now),
            vec![AtEvent::Response(Response {
                command: "AT+CSQ".into(),
                lines: vec!["+CSQ: 20,99".into()],
                result: Final::Ok
            })]
        );
        assert!(!ch.busy());
    }

    #[test]
    fn echo_is_dropped_and_split_feeds_join() {
        let now = t0();
        let mut ch = AtChannel::new();
        ch.send("AT+CGSN", Duration::from_secs(1), now).unwrap();
        for chunk in [
            &b"AT+C"[..],
            b"GSN\r\r\n8675",
            b"31234567890\r\n",
            b"\r\nO",
            b"K\r\n",
        ] {
            ch.feed(chunk);
        }
        let ev = run(&mut ch, now);
        let AtEvent::Response(r) = &ev[0] else {
            panic!("{ev:?}")
        };
        assert_eq!(r.lines, vec!["867531234567890".to_string()]);
        assert_eq!(ch.stats().echoes, 1);
    }

    #[test]
    fn error_codes() {
        assert_eq!(final_code("ERROR"), Some(Final::Error));
        assert_eq!(
            final_code("+CME ERROR: 10"),
            Some(Final::CmeError(CmeError::Code(10)))
        );
        assert_eq!(
            final_code("+CME ERROR: SIM not inserted"),
            Some(Final::CmeError(CmeError::Text("SIM not inserted".into())))
        );
        assert_eq!(
            final_code("+CMS ERROR: 500"),
            Some(Final::CmsError("500".into()))
        );
        assert_eq!(
            final_code("NO CARRIER"),
            Some(Final::Other("NO CARRIER".into()))
        );
        assert_eq!(final_code("+CSQ: 1,2"), None);
    }

    #[test]
    fn urcs_mid_response_are_set_aside() {
        let now = t0();
        let mut ch = AtChannel::new();
        ch.feed(b"\r\nRDY\r\n");
        ch.send("AT+CEREG?", Duration::from_secs(1), now).unwrap();
        ch.feed(b"\r\n+CEREG: 5\r\n\r\n+CEREG: 2,1,\"1A2B\",\"01A2D001\",7\r\n");
        ch.feed(b"\r\n+CEREG: 1,\"1A2B\",\"01A2D001\",7\r\nRING\r\n+QIND: \"csq\",20,99\r\nOK\r\n");
        let ev = run(&mut ch, now);
        assert_eq!(ev[0], AtEvent::Urc("RDY".into()));
        assert_eq!(ev[1], AtEvent::Urc("+CEREG: 5".into()));
        assert_eq!(
            ev[2],
            AtEvent::Urc("+CEREG: 1,\"1A2B\",\"01A2D001\",7".into())
        );
        assert_eq!(ev[3], AtEvent::Urc("RING".into()));
        assert_eq!(ev[4], AtEvent::Urc("+QIND: \"csq\",20,99".into()));
        let AtEvent::Response(r) = &ev[5] else {
            panic!("{ev:?}")
        };
        assert_eq!(
            r.lines,
            vec!["+CEREG: 2,1,\"1A2B\",\"01A2D001\",7".to_string()]
        );
        assert_eq!(ch.stats().urcs, 5);
    }

    #[test]
    fn own_prefix_urc_type_is_answer_for_signal() {
        // ^HCSQ is both a URC and the answer to AT^HCSQ?: while that command is
        // outstanding it is the answer.
        let now = t0();
        let mut ch = AtChannel::new();
        ch.send("AT^HCSQ?", Duration::from_secs(1), now).unwrap();
        ch.feed(b"\r\n^HCSQ: \"LTE\",50,40,120,20\r\n\r\nOK\r\n");
        let AtEvent::Response(r) = ch.poll(now).unwrap() else {
            panic!()
        };
        assert_eq!(r.lines.len(), 1);
    }

    #[test]
    fn junk_and_long_lines_are_dropped_and_counted() {
        let now = t0();
        let mut ch = AtChannel::new();
        ch.send("AT+CSQ", Duration::from_secs(1), now).unwrap();
        ch.feed(b"\xff\xfe\x80garbage\r\n\x00\x01\x02\r\n");
        ch.feed(&vec![b'A'; MAX_LINE + 10]);
        ch.feed(b"still the long line\r\n+CSQ: 31,99\r\nOK\r\n");
        let ev = run(&mut ch, now);
        let AtEvent::Response(r) = &ev[0] else {
            panic!("{ev:?}")
        };
        assert_eq!(r.lines, vec!["+CSQ: 31,99".to_string()]);
        assert_eq!(ch.stats().junk_lines, 2);
        assert_eq!(ch.stats().long_lines, 1);
    }

    #[test]
    fn timeout_then_late_answer_is_stray() {
        let now = t0();
        let mut ch = AtChannel::new();
        ch.send("AT+COPS?", Duration::from_millis(500), now)
            .unwrap();
        assert_eq!(ch.deadline(), Some(now + Duration::from_millis(500)));
        assert_eq!(ch.poll(now + Duration::from_millis(499)), None);
        assert_eq!(
            ch.poll(now + Duration::from_millis(500)),
            Some(AtEvent::Timeout {
                command: "AT+COPS?".into()
            })
        );
        assert!(!ch.busy());
        ch.feed(b"+COPS: 0,0,\"X\",7\r\n");
        assert_eq!(
            ch.poll(now + Duration::from_secs(1)),
            Some(AtEvent::Urc("+COPS: 0,0,\"X\",7".into()))
        );
        assert_eq!(ch.stats().timeouts, 1);
    }

    #[test]
    fn answers_out_of_step_are_spotted() {
        let r = |command: &str, lines: &[&str]| Response {
            command: command.into(),
            lines: lines.iter().map(|s| s.to_string()).collect(),
            result: Final::Ok,
        };
        assert!(!r("AT+CSQ", &["+CSQ: 20,99"]).out_of_step());
        assert!(r("AT+COPS?", &["+CSQ: 20,99"]).out_of_step());
        assert!(r("AT+CGMM", &["+CGSN: 867698041234567"]).out_of_step());
        assert!(!r("AT+CGMM", &["EC25"]).out_of_step());
        // Basic commands have no own prefix: ATI lists +GCAP.
        assert!(!r("ATI", &["Quectel", "+GCAP: +CGSM"]).out_of_step());
        assert!(!r("AT!GSTATUS?", &["!GSTATUS: ", "RSRP (dBm):  -93"]).out_of_step());
    }

    #[test]
    fn info_lines_without_prefix_are_kept() {
        let now = t0();
        let mut ch = AtChannel::new();
        ch.send("ATI", Duration::from_secs(1), now).unwrap();
        ch.feed(b"ATI\r\r\nQuectel\r\nEC25\r\nRevision: EC25EFAR06A06M4G\r\n\r\nOK\r\n");
        let AtEvent::Response(r) = ch.poll(now).unwrap() else {
            panic!()
        };
        assert_eq!(
            r.lines,
            vec!["Quectel", "EC25", "Revision: EC25EFAR06A06M4G"]
        );
    }
}
