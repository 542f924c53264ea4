//! Parsers for the answers the poller asks for, each taking the information lines of a
//! completed [`Response`](super::at::Response) (echo and URCs already removed).
//!
//! Standard forms follow 3GPP TS 27.007; vendor forms follow the vendors' AT manuals
//! (Quectel `+QENG`, Sierra `!GSTATUS`, Huawei `^HCSQ`, SIMCom `+CPSI`).

use serde::Serialize;

use super::at::{CmeError, Final, Response};

/// SIM state from `AT+CPIN?`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SimState {
    Ready,
    /// Waiting for a code: `SIM PIN`, `SIM PUK`, `PH-SIM PIN`, ... as given.
    Locked(String),
    NotInserted,
    /// Any other error (`+CME ERROR: 13` SIM failure, 14 busy, ...).
    Error(String),
}

/// Radio access technology.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessTech {
    Gsm,
    Umts,
    Lte,
    /// 5G NR, standalone (NG-RAN) or as LTE dual connectivity (EN-DC).
    Nr5g,
}

/// Network registration (`<stat>` of `+CREG`/`+CEREG`/`+C5GREG`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RegState {
    NotRegistered,
    Home,
    Searching,
    Denied,
    Unknown,
    Roaming,
    /// SMS-only or emergency-only registrations (stat 6..=10).
    Limited,
}

impl RegState {
    pub fn registered(self) -> bool {
        matches!(self, RegState::Home | RegState::Roaming)
    }
}

/// Signal figures; `None` where the modem gave no (or an "unknown") value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Signal {
    pub rssi_dbm: Option<f32>,
    pub rsrp_dbm: Option<f32>,
    pub rsrq_db: Option<f32>,
    pub sinr_db: Option<f32>,
    /// Technology the vendor command reported, if any.
    pub tech: Option<AccessTech>,
}

impl Signal {
    /// Fills the fields `self` lacks from `other`.
    pub fn or(self, other: Signal) -> Signal {
        Signal {
            rssi_dbm: self.rssi_dbm.or(other.rssi_dbm),
            rsrp_dbm: self.rsrp_dbm.or(other.rsrp_dbm),
            rsrq_db: self.rsrq_db.or(other.rsrq_db),
            sinr_db: self.sinr_db.or(other.sinr_db),
            tech: self.tech.or(other.tech),
        }
    }
}

/// Maker, model, revision and IMEI, from `ATI` and the `+CGMx` commands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Identity {
    pub maker: Option<String>,
    pub model: Option<String>,
    pub revision: Option<String>,
    pub imei: Option<String>,
}

/// The arguments after `prefix` (`+CSQ:`) on the first line that has it, split on
/// commas outside quotes, trimmed, quotes removed.
fn args(lines: &[String], prefix: &str) -> Option<Vec<String>> {
    let line = lines.iter().find_map(|l| strip_prefix_ci(l, prefix))?;
    Some(split_fields(line))
}

fn strip_prefix_ci<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
    let head = line.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &line[prefix.len()..])
}

/// Splits `a,"b,c",d` into `a`, `b,c`, `d`.
pub fn split_fields(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur).trim().to_string()),
            _ => cur.push(c),
        }
    }
    out.push(cur.trim().to_string());
    out
}

fn num(s: Option<&String>) -> Option<f32> {
    s?.trim().parse::<f32>().ok()
}

fn int(s: Option<&String>) -> Option<i64> {
    s?.trim().parse::<i64>().ok()
}

/// A value line of `AT+CGMI`/`AT+CGMM`/`AT+CGMR`: the first line, with an optional
/// `+CGMM:` style prefix and quotes removed.
pub fn parse_plain(lines: &[String], prefix: &str) -> Option<String> {
    let l = lines.first()?;
    let v = strip_prefix_ci(l, prefix)
        .unwrap_or(l)
        .trim()
        .trim_matches('"')
        .trim();
    (!v.is_empty()).then(|| v.to_string())
}

/// `AT+CGSN`: the IMEI, 14 to 17 digits, bare or as `+CGSN: "..."`.
pub fn parse_imei(lines: &[String]) -> Option<String> {
    lines.iter().find_map(|l| {
        let digits: String = l
            .trim_start_matches("+CGSN:")
            .trim()
            .trim_matches('"')
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        (14..=17).contains(&digits.len()).then_some(digits)
    })
}

/// `ATI`: either `Key: value` lines (Sierra, Huawei, SIMCom) or Quectel's bare
/// maker and model lines followed by `Revision: ...`.
pub fn parse_ati(lines: &[String]) -> Identity {
    let mut id = Identity::default();
    let mut bare = Vec::new();
    for l in lines {
        match l.split_once(':') {
            Some((k, v)) if !k.starts_with('+') => {
                let v = v.trim().to_string();
                match k.trim().to_ascii_lowercase().as_str() {
                    "manufacturer" => id.maker = Some(v),
                    "model" => id.model = Some(v),
                    "revision" => id.revision = Some(v),
                    "imei" => id.imei = Some(v),
                    _ => {}
                }
            }
            Some(_) => {}
            None => bare.push(l.trim().to_string()),
        }
    }
    if id.maker.is_none() {
        id.maker = bare.first().cloned();
    }
    if id.model.is_none() {
        id.model = bare.get(1).cloned();
    }
    id
}

/// `AT+CPIN?`, from the whole response: `+CPIN: READY`, a code request, or
/// `+CME ERROR: 10` (not inserted).
pub fn parse_cpin(resp: &Response) -> Option<SimState> {
    match &resp.result {
        Final::Ok => {
            let v = resp
                .lines
                .iter()
                .find_map(|l| strip_prefix_ci(l, "+CPIN:"))?
                .trim();
            Some(if v.eq_ignore_ascii_case("READY") {
                SimState::Ready
            } else {
                SimState::Locked(v.to_string())
            })
        }
        Final::CmeError(e) if e.is_sim_not_inserted() => Some(SimState::NotInserted),
        Final::CmeError(CmeError::Code(n)) => Some(SimState::Error(format!("+CME ERROR: {n}"))),
        Final::CmeError(CmeError::Text(t)) => Some(SimState::Error(t.clone())),
        _ => None,
    }
}

/// `<AcT>` of `+COPS`/`+CEREG` (27.007 7.3) to a technology.
pub fn act_to_tech(act: i64) -> Option<AccessTech> {
    Some(match act {
        0 | 1 | 3 | 8 => AccessTech::Gsm,
        2 | 4 | 5 | 6 => AccessTech::Umts,
        7 | 9 | 10 => AccessTech::Lte,
        11..=13 => AccessTech::Nr5g,
        _ => return None,
    })
}

/// `AT+COPS?`: `+COPS: <mode>[,<format>,<oper>[,<AcT>]]`. Returns the operator
/// and the technology; `(None, None)` when not registered (`+COPS: 0`).
pub fn parse_cops(lines: &[String]) -> Option<(Option<String>, Option<AccessTech>)> {
    let a = args(lines, "+COPS:")?;
    let oper = a.get(2).filter(|s| !s.is_empty()).cloned();
    let tech = int(a.get(3)).and_then(act_to_tech);
    Some((oper, tech))
}

/// `AT+CREG?`/`AT+CEREG?`/`AT+C5GREG?`: `+CEREG: <n>,<stat>[,...]`.
pub fn parse_reg(lines: &[String], prefix: &str) -> Option<RegState> {
    let a = args(lines, prefix)?;
    let stat = if a.len() >= 2 {
        int(a.get(1))
    } else {
        int(a.first())
    }?;
    Some(match stat {
        0 => RegState::NotRegistered,
        1 => RegState::Home,
        2 => RegState::Searching,
        3 => RegState::Denied,
        5 => RegState::Roaming,
        6..=10 => RegState::Limited,
        _ => RegState::Unknown,
    })
}

/// `AT+CSQ`: `+CSQ: <rssi>,<ber>`; rssi 0..=31 is -113..=-51 dBm, 99 unknown.
pub fn parse_csq(lines: &[String]) -> Option<Signal> {
    let a = args(lines, "+CSQ:")?;
    let v = int(a.first())?;
    let rssi_dbm = (0..=31).contains(&v).then(|| -113.0 + 2.0 * v as f32);
    Some(Signal {
        rssi_dbm,
        ..Signal::default()
    })
}

/// `AT+CESQ`: `+CESQ: <rxlev>,<ber>,<rscp>,<ecno>,<rsrq>,<rsrp>[,<ss_rsrq>,<ss_rsrp>,
/// <ss_sinr>]`. LTE rsrq 0..=34 is -20 + 0.5 n dB, rsrp 0..=97 is -141 + n dBm; the NR
/// fields (Rel-15) are used when LTE ones are unknown (255).
pub fn parse_cesq(lines: &[String]) -> Option<Signal> {
    let a = args(lines, "+CESQ:")?;
    let get = |i: usize, max: i64| int(a.get(i)).filter(|v| (0..=max).contains(v));
    let mut s = Signal {
        rsrq_db: get(4, 34).map(|v| -20.0 + 0.5 * v as f32),
        rsrp_dbm: get(5, 97).map(|v| -141.0 + v as f32),
        ..Signal::default()
    };
    if s.rsrp_dbm.is_some() {
        s.tech = Some(AccessTech::Lte);
    } else if let Some(rsrp) = get(7, 126) {
        s.rsrp_dbm = Some(-157.0 + rsrp as f32);
        s.rsrq_db = get(6, 126).map(|v| -43.5 + 0.5 * v as f32);
        s.sinr_db = get(8, 127).map(|v| -23.5 + 0.5 * v as f32);
        s.tech = Some(AccessTech::Nr5g);
    }
    Some(s)
}

/// Quectel `AT+QENG="servingcell"`. LTE:
/// `+QENG: "servingcell",<state>,"LTE",<is_tdd>,<MCC>,<MNC>,<cellID>,<PCID>,<earfcn>,
/// <band>,<ul_bw>,<dl_bw>,<TAC>,<RSRP>,<RSRQ>,<RSSI>,<SINR>,...` where SINR is
/// 0..=250 for -20..=30 dB. NR standalone: `+QENG: "servingcell",<state>,"NR5G-SA",
/// <duplex>,<MCC>,<MNC>,<cellID>,<PCID>,<TAC>,<ARFCN>,<band>,<bw>,<RSRP>,<RSRQ>,<SINR>,...`.
/// NSA answers in lines: `+QENG: "servingcell",<state>`, `+QENG: "LTE",<is_tdd>,...`
/// and `+QENG: "NR5G-NSA",<MCC>,<MNC>,<PCID>,<RSRP>,<SINR>,<RSRQ>,...`; NR figures win
/// when present.
pub fn parse_qeng(lines: &[String]) -> Option<Signal> {
    let mut lte = None;
    let mut nr = None;
    for l in lines {
        let Some(rest) = strip_prefix_ci(l, "+QENG:") else {
            continue;
        };
        let f = split_fields(rest);
        let (kind, base) = match f.first().map(String::as_str) {
            Some("servingcell") => (f.get(2).map(String::as_str), 3),
            Some(k) => (Some(k), 1),
            None => continue,
        };
        // `base` indexes the field after the technology name.
        match kind {
            Some("LTE") => {
                // In the servingcell line the LTE fields follow <is_tdd>; in the NSA line too.
                let at = |i: usize| num(f.get(base + i));
                lte = Some(Signal {
                    rsrp_dbm: at(10),
                    rsrq_db: at(11),
                    rssi_dbm: at(12),
                    sinr_db: at(13).map(|v| v / 5.0 - 20.0),
                    tech: Some(AccessTech::Lte),
                });
            }
            Some("NR5G-SA") => {
                let at = |i: usize| num(f.get(base + i));
                nr = Some(Signal {
                    rsrp_dbm: at(9),
                    rsrq_db: at(10),
                    sinr_db: at(11),
                    rssi_dbm: None,
                    tech: Some(AccessTech::Nr5g),
                });
            }
            Some("NR5G-NSA") => {
                let at = |i: usize| num(f.get(base + i));
                nr = Some(Signal {
                    rsrp_dbm: at(3),
                    sinr_db: at(4),
                    rsrq_db: at(5),
                    rssi_dbm: None,
                    tech: Some(AccessTech::Nr5g),
                });
            }
            _ => {}
        }
    }
    match (nr, lte) {
        (Some(n), Some(l)) => Some(n.or(l)),
        (n, l) => n.or(l),
    }
}

/// Sierra `AT!GSTATUS?`: a report of tab-separated `Key: value` cells, e.g.
/// `PCC RxM RSSI:  -65\t\tRSRP (dBm):  -95`, `RSRQ (dB):     -10.5`, `SINR (dB):  8.4`,
/// `System mode:   LTE`. The first RSRP (primary receive path) is taken.
pub fn parse_gstatus(lines: &[String]) -> Option<Signal> {
    let mut s = Signal::default();
    let mut any = false;
    for l in lines {
        for cell in l.split('\t') {
            let Some((k, v)) = cell.split_once(':') else {
                continue;
            };
            let k = k.trim().to_ascii_lowercase();
            let v = v.split_whitespace().next().unwrap_or("");
            let n = v.parse::<f32>().ok();
            match k.as_str() {
                "rsrp (dbm)" if s.rsrp_dbm.is_none() => s.rsrp_dbm = n,
                "rsrq (db)" if s.rsrq_db.is_none() => s.rsrq_db = n,
                "sinr (db)" if s.sinr_db.is_none() => s.sinr_db = n,
                "pcc rxm rssi" | "rssi (dbm)" if s.rssi_dbm.is_none() => s.rssi_dbm = n,
                "system mode" => {
                    s.tech = match v.to_ascii_uppercase().as_str() {
                        "LTE" => Some(AccessTech::Lte),
                        "WCDMA" | "UMTS" | "HSPA" => Some(AccessTech::Umts),
                        "GSM" => Some(AccessTech::Gsm),
                        "ENDC" | "NR5G" | "5G" => Some(AccessTech::Nr5g),
                        _ => None,
                    }
                }
                _ => continue,
            }
            any = true;
        }
    }
    any.then_some(s)
}

/// Huawei `AT^HCSQ?`: `^HCSQ: "LTE",<rssi>,<rsrp>,<sinr>,<rsrq>` with rssi n ->
/// -121 + n dBm, rsrp n -> -141 + n dBm, sinr n -> -20.2 + 0.2 n dB, rsrq n ->
/// -20 + 0.5 n dB (lower edge of each reported bucket; 255 is unknown);
/// `"WCDMA",<rssi>,<rscp>,<ecio>`, `"GSM",<rssi>`, `"NOSERVICE"`.
pub fn parse_hcsq(lines: &[String]) -> Option<Signal> {
    let a = args(lines, "^HCSQ:")?;
    let get = |i: usize| int(a.get(i)).filter(|&v| v != 255);
    let rssi = get(1).map(|v| -121.0 + v as f32);
    Some(match a.first()?.as_str() {
        "LTE" => Signal {
            rssi_dbm: rssi,
            rsrp_dbm: get(2).map(|v| -141.0 + v as f32),
            sinr_db: get(3).map(|v| -20.2 + 0.2 * v as f32),
            rsrq_db: get(4).map(|v| -20.0 + 0.5 * v as f32),
            tech: Some(AccessTech::Lte),
        },
        "WCDMA" | "TD-SCDMA" => Signal {
            rssi_dbm: rssi,
            tech: Some(AccessTech::Umts),
            ..Signal::default()
        },
        "GSM" => Signal {
            rssi_dbm: rssi,
            tech: Some(AccessTech::Gsm),
            ..Signal::default()
        },
        _ => Signal::default(),
    })
}

/// SIMCom `AT+CPSI?`. LTE: `+CPSI: LTE,Online,<MCC>-<MNC>,<TAC>,<SCellID>,<PCellID>,
/// <band>,<earfcn>,<dlbw>,<ulbw>,<RSRQ>,<RSRP>,<RSSI>,<RSSNR>` with RSRQ, RSRP and RSSI
/// in tenths (of dB / dBm) and RSSNR in dB. NR standalone: `+CPSI: NR5G_SA,Online,
/// <MCC>-<MNC>,<TAC>,<SCellID>,<PCellID>,<band>,<ARFCN>,<RSRP>,<RSRQ>,<SINR>` in tenths.
/// NR non-standalone adds a second line after the LTE one: `+CPSI: NR5G_NSA,<PCellID>,
/// <band>,<ARFCN>,<RSRP>,<RSRQ>,<SINR>` in tenths; NR figures win. Other systems (GSM,
/// WCDMA, NO SERVICE) give only the technology.
pub fn parse_cpsi(lines: &[String]) -> Option<Signal> {
    let mut lte = None;
    let mut nr = None;
    let mut other = None;
    for l in lines {
        let Some(rest) = strip_prefix_ci(l, "+CPSI:") else {
            continue;
        };
        let a = split_fields(rest);
        let tenth = |i: usize| num(a.get(i)).map(|v| v / 10.0);
        match a.first().map(|m| m.to_ascii_uppercase()).as_deref() {
            Some("LTE") => {
                lte = Some(Signal {
                    rsrq_db: tenth(10),
                    rsrp_dbm: tenth(11),
                    rssi_dbm: tenth(12),
                    sinr_db: num(a.get(13)),
                    tech: Some(AccessTech::Lte),
                })
            }
            Some("NR5G_SA") => {
                nr = Some(Signal {
                    rsrp_dbm: tenth(8),
                    rsrq_db: tenth(9),
                    sinr_db: tenth(10),
                    rssi_dbm: None,
                    tech: Some(AccessTech::Nr5g),
                })
            }
            Some("NR5G_NSA") => {
                nr = Some(Signal {
                    rsrp_dbm: tenth(4),
                    rsrq_db: tenth(5),
                    sinr_db: tenth(6),
                    rssi_dbm: None,
                    tech: Some(AccessTech::Nr5g),
                })
            }
            Some("WCDMA") => {
                other = Some(Signal {
                    tech: Some(AccessTech::Umts),
                    ..Signal::default()
                })
            }
            Some("GSM") => {
                other = Some(Signal {
                    tech: Some(AccessTech::Gsm),
                    ..Signal::default()
                })
            }
            Some(_) => other = other.or(Some(Signal::default())),
            None => {}
        }
    }
    match (nr, lte) {
        (Some(n), Some(l)) => Some(n.or(l)),
        (n, l) => n.or(l).or(other),
    }
}

/// The command setting PDP context 1's APN: `AT+CGDCONT=1,"IP","apn"`. `None` for an
/// APN that cannot be sent safely (quotes, control characters, too long).
pub fn apn_command(apn: &str) -> Option<String> {
    let ok = !apn.is_empty()
        && apn.len() <= 100
        && apn
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    ok.then(|| format!("AT+CGDCONT=1,\"IP\",\"{apn}\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(s: &str) -> Vec<String> {
        s.lines()
            .map(|x| x.trim_end_matches('\r').to_string())
            .collect()
    }

    fn resp(lines: &str, result: Final) -> Response {
        Response {
            command: "AT+CPIN?".into(),
            lines: l(lines),
            result,
        }
    }

    fn close(a: Option<f32>, b: f32) -> bool {
        a.is_some_and(|a| (a - b).abs() < 0.01)
    }

    #[test]
    fn fields_split_outside_quotes() {
        assert_eq!(
            split_fields(r#" 0,0,"Vodafone, UK",7"#),
            vec!["0", "0", "Vodafone, UK", "7"]
        );
    }

    #[test]
    fn identity_lines() {
        let q = parse_ati(&l("Quectel\nEC25\nRevision: EC25EFAR06A06M4G"));
        assert_eq!(q.maker.as_deref(), Some("Quectel"));
        assert_eq!(q.model.as_deref(), Some("EC25"));
        assert_eq!(q.revision.as_deref(), Some("EC25EFAR06A06M4G"));
        let s = parse_ati(&l(
            "Manufacturer: Sierra Wireless, Incorporated\nModel: EM7455\nRevision: SWI9X30C_02.24.05.06 r7040 CARMD-EV-FRMWR2 2017/05/19 06:23:09\nMEID: 35907206045169\nIMEI: 359072060451693\nIMEI SV: 9\nFSN: LF717403850210\n+GCAP: +CGSM",
        ));
        assert_eq!(s.maker.as_deref(), Some("Sierra Wireless, Incorporated"));
        assert_eq!(s.model.as_deref(), Some("EM7455"));
        assert_eq!(s.imei.as_deref(), Some("359072060451693"));
        assert_eq!(
            parse_plain(&l("+CGMM: ME909s-120"), "+CGMM:").as_deref(),
            Some("ME909s-120")
        );
        assert_eq!(
            parse_plain(&l("SIMCOM_SIM7600E-H"), "+CGMM:").as_deref(),
            Some("SIMCOM_SIM7600E-H")
        );
        assert_eq!(
            parse_imei(&l("867698041234567")).as_deref(),
            Some("867698041234567")
        );
        assert_eq!(
            parse_imei(&l("+CGSN: \"867698041234567\"")).as_deref(),
            Some("867698041234567")
        );
        assert_eq!(parse_imei(&l("ERRORISH")), None);
    }

    #[test]
    fn sim_states() {
        assert_eq!(
            parse_cpin(&resp("+CPIN: READY", Final::Ok)),
            Some(SimState::Ready)
        );
        assert_eq!(
            parse_cpin(&resp("+CPIN: SIM PIN", Final::Ok)),
            Some(SimState::Locked("SIM PIN".into()))
        );
        assert_eq!(
            parse_cpin(&resp("", Final::CmeError(CmeError::Code(10)))),
            Some(SimState::NotInserted)
        );
        assert_eq!(
            parse_cpin(&resp(
                "",
                Final::CmeError(CmeError::Text("SIM not inserted".into()))
            )),
            Some(SimState::NotInserted)
        );
        assert!(matches!(
            parse_cpin(&resp("", Final::CmeError(CmeError::Code(13)))),
            Some(SimState::Error(_))
        ));
        assert_eq!(parse_cpin(&resp("", Final::Error)), None);
    }

    #[test]
    fn operator_and_tech() {
        assert_eq!(
            parse_cops(&l("+COPS: 0,0,\"Vodafone UK\",7")),
            Some((Some("Vodafone UK".into()), Some(AccessTech::Lte)))
        );
        assert_eq!(
            parse_cops(&l("+COPS: 0,0,\"T-Mobile\",13")),
            Some((Some("T-Mobile".into()), Some(AccessTech::Nr5g)))
        );
        assert_eq!(
            parse_cops(&l("+COPS: 0,2,\"23415\",2")),
            Some((Some("23415".into()), Some(AccessTech::Umts)))
        );
        assert_eq!(
            parse_cops(&l("+COPS: 0,0,\"EE\",0")),
            Some((Some("EE".into()), Some(AccessTech::Gsm)))
        );
        assert_eq!(parse_cops(&l("+COPS: 0")), Some((None, None)));
        assert_eq!(act_to_tech(11), Some(AccessTech::Nr5g));
        assert_eq!(act_to_tech(42), None);
    }

    #[test]
    fn registration() {
        assert_eq!(
            parse_reg(&l("+CEREG: 0,1"), "+CEREG:"),
            Some(RegState::Home)
        );
        assert_eq!(
            parse_reg(&l("+CEREG: 2,5,\"1A2B\",\"01A2D001\",7"), "+CEREG:"),
            Some(RegState::Roaming)
        );
        assert_eq!(
            parse_reg(&l("+CREG: 0,2"), "+CREG:"),
            Some(RegState::Searching)
        );
        assert_eq!(
            parse_reg(&l("+C5GREG: 0,3"), "+C5GREG:"),
            Some(RegState::Denied)
        );
        assert_eq!(
            parse_reg(&l("+CEREG: 0,0"), "+CEREG:"),
            Some(RegState::NotRegistered)
        );
        assert_eq!(
            parse_reg(&l("+CEREG: 0,4"), "+CEREG:"),
            Some(RegState::Unknown)
        );
        assert!(RegState::Roaming.registered());
        assert!(!RegState::Searching.registered());
    }

    #[test]
    fn csq_and_cesq() {
        assert!(close(parse_csq(&l("+CSQ: 20,99")).unwrap().rssi_dbm, -73.0));
        assert!(close(parse_csq(&l("+CSQ: 0,0")).unwrap().rssi_dbm, -113.0));
        assert_eq!(parse_csq(&l("+CSQ: 99,99")).unwrap().rssi_dbm, None);
        let s = parse_cesq(&l("+CESQ: 99,99,255,255,20,45")).unwrap();
        assert!(close(s.rsrq_db, -10.0));
        assert!(close(s.rsrp_dbm, -96.0));
        let s = parse_cesq(&l("+CESQ: 99,99,255,255,255,255,60,70,80")).unwrap();
        assert!(close(s.rsrp_dbm, -87.0));
        assert!(close(s.rsrq_db, -13.5));
        assert!(close(s.sinr_db, 16.5));
        assert_eq!(s.tech, Some(AccessTech::Nr5g));
        let s = parse_cesq(&l("+CESQ: 99,99,255,255,255,255")).unwrap();
        assert_eq!(s.rsrp_dbm, None);
    }

    #[test]
    fn quectel_lte() {
        let s = parse_qeng(&l(
            "+QENG: \"servingcell\",\"NOCONN\",\"LTE\",\"FDD\",234,15,1A2B3C4,123,1300,3,5,5,C5F,-95,-11,-64,125,10,-,-",
        ))
        .unwrap();
        assert!(close(s.rsrp_dbm, -95.0));
        assert!(close(s.rsrq_db, -11.0));
        assert!(close(s.rssi_dbm, -64.0));
        assert!(close(s.sinr_db, 5.0));
        assert_eq!(s.tech, Some(AccessTech::Lte));
    }

    #[test]
    fn quectel_nr_sa_and_nsa() {
        let s = parse_qeng(&l(
            "+QENG: \"servingcell\",\"NOCONN\",\"NR5G-SA\",\"TDD\",310,260,12A3B4C05,371,1A2B3C,627264,78,12,-88,-11,14,1,-",
        ))
        .unwrap();
        assert!(close(s.rsrp_dbm, -88.0));
        assert!(close(s.rsrq_db, -11.0));
        assert!(close(s.sinr_db, 14.0));
        assert_eq!(s.tech, Some(AccessTech::Nr5g));
        let s = parse_qeng(&l(
            "+QENG: \"servingcell\",\"NOCONN\"\n+QENG: \"LTE\",\"FDD\",310,260,1A2B3C4,123,66986,66,5,5,C5F,-97,-12,-66,100,10,-,-\n+QENG: \"NR5G-NSA\",310,260,500,-91,17,-12,632736,77,12,1",
        ))
        .unwrap();
        assert!(close(s.rsrp_dbm, -91.0));
        assert!(close(s.sinr_db, 17.0));
        assert!(close(s.rsrq_db, -12.0));
        assert!(close(s.rssi_dbm, -66.0), "LTE RSSI fills in: {s:?}");
        assert_eq!(s.tech, Some(AccessTech::Nr5g));
    }

    #[test]
    fn sierra_gstatus() {
        let text = "!GSTATUS: \nCurrent Time:  4017\t\tTemperature: 41\nReset Counter: 1\t\tMode:        ONLINE         \nSystem mode:   LTE        \tPS state:    Attached     \nLTE band:      B3     \t\tLTE bw:      20 MHz  \nLTE Rx chan:   1300\t\tLTE Tx chan: 19300\nEMM state:     Registered     \tNormal Service \nRRC state:     RRC Idle       \nIMS reg state: No Srv  \t\t\n\nPCC RxM RSSI:  -65\t\tRSRP (dBm):  -93\nPCC RxD RSSI:  -67\t\tRSRP (dBm):  -97\nTx Power:      0\t\tTAC:         1234 (4660)\nRSRQ (dB):     -10.5\t\tCell ID:     0x01234567 (19088743)\nSINR (dB):      8.4";
        let s = parse_gstatus(&l(text)).unwrap();
        assert!(close(s.rsrp_dbm, -93.0));
        assert!(close(s.rsrq_db, -10.5));
        assert!(close(s.sinr_db, 8.4));
        assert!(close(s.rssi_dbm, -65.0));
        assert_eq!(s.tech, Some(AccessTech::Lte));
        assert_eq!(parse_gstatus(&l("nothing here")), None);
    }

    #[test]
    fn huawei_hcsq() {
        let s = parse_hcsq(&l("^HCSQ: \"LTE\",60,45,126,24")).unwrap();
        assert!(close(s.rssi_dbm, -61.0));
        assert!(close(s.rsrp_dbm, -96.0));
        assert!(close(s.sinr_db, 5.0));
        assert!(close(s.rsrq_db, -8.0));
        let s = parse_hcsq(&l("^HCSQ: \"WCDMA\",30,30,58")).unwrap();
        assert_eq!(s.tech, Some(AccessTech::Umts));
        assert_eq!(
            parse_hcsq(&l("^HCSQ: \"NOSERVICE\"")).unwrap(),
            Signal::default()
        );
    }

    #[test]
    fn simcom_cpsi() {
        let s = parse_cpsi(&l(
            "+CPSI: LTE,Online,460-00,0x1816,1010046,256,EUTRAN-BAND3,1825,4,4,-62,-958,-695,15",
        ))
        .unwrap();
        assert!(close(s.rsrq_db, -6.2));
        assert!(close(s.rsrp_dbm, -95.8));
        assert!(close(s.rssi_dbm, -69.5));
        assert!(close(s.sinr_db, 15.0));
        let s = parse_cpsi(&l(
            "+CPSI: NR5G_SA,Online,460-01,0x6F4700,29869309958,95,NR5G_BAND78,627264,-740,-110,145",
        ))
        .unwrap();
        assert!(close(s.rsrp_dbm, -74.0));
        assert!(close(s.rsrq_db, -11.0));
        assert!(close(s.sinr_db, 14.5));
        assert_eq!(
            parse_cpsi(&l("+CPSI: NO SERVICE,Online")).unwrap(),
            Signal::default()
        );
    }

    #[test]
    fn apn() {
        assert_eq!(
            apn_command("internet.example").as_deref(),
            Some("AT+CGDCONT=1,\"IP\",\"internet.example\"")
        );
        assert_eq!(apn_command("bad\"apn"), None);
        assert_eq!(apn_command(""), None);
    }
}
