//! Vendor dialects: which extra command gives the best signal figures.

use serde::Serialize;

use super::parse::{self, Signal};

/// AT dialect of a modem, from its manufacturer and model strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    Quectel,
    Sierra,
    Huawei,
    Simcom,
    /// 27.007 only: `AT+CESQ` for RSRP/RSRQ.
    #[default]
    Generic,
}

impl Dialect {
    pub const ALL: [Dialect; 5] = [
        Dialect::Quectel,
        Dialect::Sierra,
        Dialect::Huawei,
        Dialect::Simcom,
        Dialect::Generic,
    ];

    /// Picks the dialect from `AT+CGMI`/`ATI` maker and `AT+CGMM` model text.
    pub fn detect(maker: Option<&str>, model: Option<&str>) -> Dialect {
        let text = format!(
            "{} {}",
            maker.unwrap_or_default(),
            model.unwrap_or_default()
        )
        .to_ascii_lowercase();
        if text.contains("quectel") {
            Dialect::Quectel
        } else if text.contains("sierra") {
            Dialect::Sierra
        } else if text.contains("huawei") {
            Dialect::Huawei
        } else if text.contains("simcom") || text.contains("simtech") {
            Dialect::Simcom
        } else {
            // Known model families reported without a maker.
            let model = model.unwrap_or_default().to_ascii_uppercase();
            if ["EC2", "EG", "EM0", "EM1", "RM5", "RG5", "BG9"]
                .iter()
                .any(|p| model.starts_with(p))
            {
                Dialect::Quectel
            } else if model.starts_with("EM74")
                || model.starts_with("EM75")
                || model.starts_with("MC7")
                || model.starts_with("EM91")
            {
                Dialect::Sierra
            } else if model.starts_with("ME9")
                || model.starts_with("E33")
                || model.starts_with("MU7")
            {
                Dialect::Huawei
            } else if model.starts_with("SIM7") || model.starts_with("SIM8") {
                Dialect::Simcom
            } else {
                Dialect::Generic
            }
        }
    }

    /// The command polled for RSRP/RSRQ/SINR.
    pub fn signal_command(self) -> &'static str {
        match self {
            Dialect::Quectel => "AT+QENG=\"servingcell\"",
            Dialect::Sierra => "AT!GSTATUS?",
            Dialect::Huawei => "AT^HCSQ?",
            Dialect::Simcom => "AT+CPSI?",
            Dialect::Generic => "AT+CESQ",
        }
    }

    /// Parses the answer to [`signal_command`](Self::signal_command).
    pub fn parse_signal(self, lines: &[String]) -> Option<Signal> {
        match self {
            Dialect::Quectel => parse::parse_qeng(lines),
            Dialect::Sierra => parse::parse_gstatus(lines),
            Dialect::Huawei => parse::parse_hcsq(lines),
            Dialect::Simcom => parse::parse_cpsi(lines),
            Dialect::Generic => parse::parse_cesq(lines),
        }
    }

    /// Whether the modem may be 5G-capable, so `AT+C5GREG?` is worth asking.
    pub fn may_have_5g(self) -> bool {
        matches!(self, Dialect::Quectel | Dialect::Simcom | Dialect::Generic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection() {
        assert_eq!(
            Dialect::detect(Some("Quectel"), Some("EC25")),
            Dialect::Quectel
        );
        assert_eq!(
            Dialect::detect(Some("QUECTEL"), Some("RM500Q-GL")),
            Dialect::Quectel
        );
        assert_eq!(
            Dialect::detect(Some("Sierra Wireless, Incorporated"), Some("EM7455")),
            Dialect::Sierra
        );
        assert_eq!(
            Dialect::detect(Some("huawei"), Some("ME909s-120")),
            Dialect::Huawei
        );
        assert_eq!(
            Dialect::detect(Some("SIMCOM INCORPORATED"), Some("SIMCOM_SIM7600E-H")),
            Dialect::Simcom
        );
        assert_eq!(Dialect::detect(None, Some("EM7565")), Dialect::Sierra);
        assert_eq!(
            Dialect::detect(Some("SimTech, Incorporated"), None),
            Dialect::Simcom
        );
        assert_eq!(Dialect::detect(None, Some("EG25-G")), Dialect::Quectel);
        assert_eq!(
            Dialect::detect(Some("Telit"), Some("LM960")),
            Dialect::Generic
        );
        assert_eq!(Dialect::detect(None, None), Dialect::Generic);
    }

    #[test]
    fn commands() {
        assert_eq!(Dialect::Generic.signal_command(), "AT+CESQ");
        assert_eq!(Dialect::Huawei.signal_command(), "AT^HCSQ?");
        let s = Dialect::Simcom
            .parse_signal(&["+CPSI: LTE,Online,234-15,0x1816,1010046,256,EUTRAN-BAND3,1825,4,4,-62,-958,-695,15".to_string()])
            .unwrap();
        assert_eq!(s.rsrp_dbm, Some(-95.8));
    }
}
