//! TOML configuration for the edge (`edge.toml`) and the relay (`relay.toml`).
//!
//! The files are deserialized into private "raw" serde structs (every table has
//! `deny_unknown_fields`, every validated value is a [`toml::Spanned`]) and then
//! validated into the public types below ([`EdgeConfig`], [`RelayConfig`]), which
//! are what the rest of the program uses: socket addresses, durations, enums and
//! resolved paths, never raw strings.
//!
//! Every error is a [`ConfigError`] whose `Display` is `FILE:LINE: reason`
//! (or `FILE: reason` when there is no line, e.g. the file cannot be read).
//! Relative paths (`cert`, `key`, `ca`, `usage.file`, the `[web]` files) are
//! resolved against the directory of the configuration file. See `docs/config.md` for the user-facing reference.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

// ---------------------------------------------------------------------------
// Defaults and limits (documented in docs/config.md)
// ---------------------------------------------------------------------------

/// Default TLS server name the edge expects on the relay certificate.
pub const DEFAULT_SERVER_NAME: &str = "braid-relay";
/// Default end-to-end latency budget (edge) / release latency (relay).
pub const DEFAULT_LATENCY: Duration = Duration::from_millis(500);
/// Allowed range of `latency_ms`, in milliseconds.
pub const LATENCY_MS_RANGE: RangeInclusive<i64> = 50..=10_000;
/// Default listen address of the edge `udp` input.
pub const DEFAULT_INPUT_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5000));
/// Default rate of the edge `test` input, in kbit/s.
pub const DEFAULT_TEST_RATE_KBPS: i64 = 5000;
/// Allowed range of `input.rate_kbps`.
pub const TEST_RATE_KBPS_RANGE: RangeInclusive<i64> = 100..=100_000;
/// Default V4L2 capture device of the edge `v4l2` input.
pub const DEFAULT_V4L2_DEVICE: &str = "/dev/video0";
/// Default SRT listen address of the edge `srt` input (all interfaces: the external
/// encoder is usually another box on the LAN).
pub const DEFAULT_SRT_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 9000));
/// Allowed length of an SRT passphrase, input or output (libsrt `SRTO_PASSPHRASE`:
/// 10 to 79 characters).
pub const SRT_PASSPHRASE_LEN: RangeInclusive<usize> = 10..=79;
/// Default picture size and frame rate of the encoded video.
pub const DEFAULT_VIDEO_SIZE: PictureSize = PictureSize {
    width: 1280,
    height: 720,
};
/// Default frame rate of the encoded video.
pub const DEFAULT_FPS: u32 = 30;
/// Allowed range of `video.width`.
pub const WIDTH_RANGE: RangeInclusive<i64> = 64..=7680;
/// Allowed range of `video.height`.
pub const HEIGHT_RANGE: RangeInclusive<i64> = 64..=4320;
/// Allowed range of `video.fps`.
pub const FPS_RANGE: RangeInclusive<i64> = 1..=120;
/// Default keyframe interval in milliseconds.
pub const DEFAULT_KEYFRAME_INTERVAL_MS: i64 = 1000;
/// Allowed range of `video.keyframe_interval_ms`.
pub const KEYFRAME_INTERVAL_MS_RANGE: RangeInclusive<i64> = 100..=10_000;
/// Default floor of the video encoder bitrate, in kbit/s.
pub const DEFAULT_MIN_KBPS: i64 = 500;
/// Default ceiling of the video encoder bitrate, in kbit/s.
pub const DEFAULT_MAX_KBPS: i64 = 12_000;
/// Allowed range of `video.min_kbps` and `video.max_kbps`.
pub const VIDEO_KBPS_RANGE: RangeInclusive<i64> = 100..=100_000;
/// Most rungs a `video.ladder` may have.
pub const MAX_LADDER_RUNGS: usize = 8;
/// Default audio bitrate in kbit/s.
pub const DEFAULT_AUDIO_KBPS: i64 = 128;
/// Allowed range of `audio.bitrate_kbps`.
pub const AUDIO_KBPS_RANGE: RangeInclusive<i64> = 16..=512;
/// Default ALSA capture device.
pub const DEFAULT_ALSA_DEVICE: &str = "default";
/// Most ALSA devices `audio.devices` may list (two hosts, mixed).
pub const MAX_AUDIO_DEVICES: usize = 2;
/// Maximum number of `[[link]]` entries in `edge.toml`.
pub const MAX_LINKS: usize = 8;
/// Default listen address of the edge stats HTTP endpoint.
pub const DEFAULT_EDGE_STATS_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8081));
/// Default listen address of the relay stats HTTP endpoint.
pub const DEFAULT_RELAY_STATS_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9091));
/// Default fraction of media bytes that may be spent on duplicates.
pub const DEFAULT_DUPLICATE_BUDGET: f64 = 0.02;
/// Allowed range of `scheduler.duplicate_budget`.
pub const DUPLICATE_BUDGET_RANGE: RangeInclusive<f64> = 0.0..=0.5;
/// Default `web.password_file` (relative to the config file's directory).
pub const DEFAULT_WEB_PASSWORD_FILE: &str = "web-password";
/// Default `web.session_idle_minutes`.
pub const DEFAULT_SESSION_IDLE_MINUTES: i64 = 720;
/// Allowed range of `web.session_idle_minutes` (five minutes to a week).
pub const SESSION_IDLE_MINUTES_RANGE: RangeInclusive<i64> = 5..=10_080;
/// Default `web.reboot_command`.
pub const DEFAULT_REBOOT_COMMAND: &[&str] = &["systemctl", "reboot"];
/// Default `web.log_unit`.
pub const DEFAULT_LOG_UNIT: &str = "braid-edge";
/// Default `ota.max_payload_mb`.
pub const DEFAULT_OTA_MAX_PAYLOAD_MB: i64 = 2048;
/// Allowed range of `ota.max_payload_mb`.
pub const OTA_MAX_PAYLOAD_MB_RANGE: RangeInclusive<i64> = 1..=65_536;
/// Default `ota.health_timeout_s`.
pub const DEFAULT_OTA_HEALTH_TIMEOUT_S: i64 = 120;
/// Allowed range of `ota.health_timeout_s`.
pub const OTA_HEALTH_TIMEOUT_S_RANGE: RangeInclusive<i64> = 10..=3600;
/// Default `ota.max_boot_attempts`.
pub const DEFAULT_OTA_MAX_BOOT_ATTEMPTS: i64 = 3;
/// Allowed range of `ota.max_boot_attempts`.
pub const OTA_MAX_BOOT_ATTEMPTS_RANGE: RangeInclusive<i64> = 1..=20;
/// Default `ota.state_dir`.
pub const DEFAULT_OTA_STATE_DIR: &str = "/var/lib/braid/ota";
/// Default `ota.hawkbit.poll_s`.
pub const DEFAULT_HAWKBIT_POLL_S: i64 = 300;
/// Allowed range of `ota.hawkbit.poll_s`.
pub const HAWKBIT_POLL_S_RANGE: RangeInclusive<i64> = 10..=86_400;

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// A configuration error. `Display` is `FILE:LINE: reason`, or `FILE: reason`
/// when no line applies (unreadable file, a required top-level table missing).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read: {}", .path.display(), io_reason(.source))]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// TOML syntax error, unknown key, wrong type or missing required key
    /// (reported by the toml deserializer).
    #[error("{}: {message}", location(.path, .line))]
    Syntax {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },
    /// The file is well-formed but a value is not acceptable (range, format,
    /// duplicates, mutually exclusive keys). `message` starts with the key path.
    #[error("{}: {message}", location(.path, .line))]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },
}

impl ConfigError {
    /// 1-based line the error points at, if any.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Syntax { line, .. } | ConfigError::Invalid { line, .. } => *line,
        }
    }

    /// The configuration file path, as given by the caller.
    pub fn path(&self) -> &Path {
        match self {
            ConfigError::Read { path, .. }
            | ConfigError::Syntax { path, .. }
            | ConfigError::Invalid { path, .. } => path,
        }
    }

    /// The reason without the `FILE:LINE: ` prefix (e.g. for a web form).
    pub fn reason(&self) -> String {
        match self {
            ConfigError::Read { source, .. } => format!("cannot read: {}", io_reason(source)),
            ConfigError::Syntax { message, .. } | ConfigError::Invalid { message, .. } => {
                message.clone()
            }
        }
    }
}

fn location(path: &Path, line: &Option<usize>) -> String {
    match line {
        Some(line) => format!("{}:{line}", path.display()),
        None => path.display().to_string(),
    }
}

/// `io::Error` display without the trailing ` (os error N)`.
fn io_reason(e: &io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(i) if s.ends_with(')') => s[..i].to_string(),
        _ => s,
    }
}

/// 1-based line of a byte offset in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    1 + text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

/// Where errors point: the file name for messages, its text for line numbers
/// and its directory for resolving relative paths.
struct Ctx<'a> {
    path: &'a Path,
    text: &'a str,
    base: &'a Path,
}

impl<'a> Ctx<'a> {
    fn new(path: &'a Path, text: &'a str) -> Self {
        let base = path.parent().unwrap_or(Path::new(""));
        Ctx { path, text, base }
    }

    fn line(&self, span: Option<Range<usize>>) -> Option<usize> {
        span.map(|s| line_of(self.text, s.start))
    }

    fn invalid(&self, span: Option<Range<usize>>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line: self.line(span),
            message: message.into(),
        }
    }

    /// Converts a toml deserializer error. `top_level` are the top-level
    /// tables of the schema (a missing one has no meaningful line).
    fn syntax(&self, e: toml::de::Error, top_level: &[&str]) -> ConfigError {
        let mut message = e.message().trim_end().to_string();
        let mut line = self.line(e.span());
        // toml reports a missing key at the span of the table that lacks it
        // (the whole document for top-level tables): name the table.
        if let Some(field) = message.strip_prefix("missing field `") {
            let field = field.trim_end_matches('`');
            let at = e
                .span()
                .and_then(|s| self.text.get(s.start..))
                .unwrap_or("");
            let first = at.lines().next().unwrap_or("");
            let header = first.split('#').next().unwrap_or("").trim();
            if top_level.contains(&field) {
                line = None;
            } else if header.starts_with('[') {
                message = format!("{message} in {header}");
            }
        }
        ConfigError::Syntax {
            path: self.path.to_path_buf(),
            line,
            message,
        }
    }

    /// A non-empty path, resolved against the config file's directory.
    fn file_path(&self, key: &str, value: &Spanned<String>) -> Result<PathBuf, ConfigError> {
        let s = value.get_ref();
        if s.trim().is_empty() {
            return Err(self.invalid(Some(value.span()), format!("{key}: must not be empty")));
        }
        Ok(self.base.join(s))
    }

    fn socket_addr(&self, key: &str, value: &Spanned<String>) -> Result<SocketAddr, ConfigError> {
        value.get_ref().parse().map_err(|_| {
            self.invalid(
                Some(value.span()),
                format!(
                    "{key}: expected IP:PORT (e.g. \"127.0.0.1:5000\" or \"[::1]:5000\"), got {:?}",
                    value.get_ref()
                ),
            )
        })
    }

    fn latency(&self, key: &str, value: Option<&Spanned<i64>>) -> Result<Duration, ConfigError> {
        match value {
            None => Ok(DEFAULT_LATENCY),
            Some(v) => {
                let ms = self.int_in_range(key, v, &LATENCY_MS_RANGE)?;
                Ok(Duration::from_millis(ms as u64))
            }
        }
    }

    fn int_in_range(
        &self,
        key: &str,
        value: &Spanned<i64>,
        range: &RangeInclusive<i64>,
    ) -> Result<i64, ConfigError> {
        let v = *value.get_ref();
        if range.contains(&v) {
            Ok(v)
        } else {
            Err(self.invalid(
                Some(value.span()),
                format!(
                    "{key}: must be between {} and {}, got {v}",
                    range.start(),
                    range.end()
                ),
            ))
        }
    }

    fn name(&self, key: &str, value: &Spanned<String>) -> Result<String, ConfigError> {
        let s = value.get_ref();
        if is_valid_name(s) {
            Ok(s.clone())
        } else {
            Err(self.invalid(
                Some(value.span()),
                format!("{key}: must be 1 to 64 characters from A-Z a-z 0-9 _ -, got {s:?}"),
            ))
        }
    }
}

/// `[A-Za-z0-9_-]{1,64}`: device ids and link names.
fn is_valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// DNS host name: dot-separated labels of `[A-Za-z0-9-]{1,63}` not starting or
/// ending with `-`, at most 253 characters, optional trailing dot.
fn is_dns_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Linux interface name rules (`dev_valid_name`): 1..=15 bytes, not `.`/`..`,
/// no `/`, `:` or whitespace.
fn is_valid_interface(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s != "."
        && s != ".."
        && !s
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
}

// ---------------------------------------------------------------------------
// Fingerprints
// ---------------------------------------------------------------------------

/// Parses a SHA-256 certificate fingerprint.
///
/// Accepts 64 hex digits (any case), optionally prefixed with `sha256:` (any
/// case) and optionally with a `:` between every byte (`AB:CD:...`, as printed
/// by `openssl x509 -fingerprint -sha256`).
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32], String> {
    let t = s.trim();
    let hex = match t.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("sha256:") => &t[7..],
        _ => t,
    };
    let digits: Vec<u8> = if hex.contains(':') {
        let groups: Vec<&str> = hex.split(':').collect();
        if groups.len() != 32 || groups.iter().any(|g| g.len() != 2) {
            return Err(format!(
                "expected sha256:<64 hex digits> (optionally AB:CD:.. with a colon between \
                 every byte), got {s:?}"
            ));
        }
        groups.concat().into_bytes()
    } else {
        hex.as_bytes().to_vec()
    };
    if digits.len() != 64 {
        return Err(format!(
            "expected sha256:<64 hex digits>, got {} characters in {s:?}",
            digits.len()
        ));
    }
    let mut out = [0u8; 32];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        let hi = hex_value(pair[0]);
        let lo = hex_value(pair[1]);
        match (hi, lo) {
            (Some(hi), Some(lo)) => out[i] = (hi << 4) | lo,
            _ => return Err(format!("expected hex digits 0-9 a-f, got {s:?}")),
        }
    }
    Ok(out)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Formats a SHA-256 fingerprint as `sha256:<64 lowercase hex digits>`, the
/// form [`parse_fingerprint`] accepts and the config files use.
pub fn format_fingerprint(fp: &[u8; 32]) -> String {
    use fmt::Write;
    let mut s = String::with_capacity(7 + 64);
    s.push_str("sha256:");
    for b in fp {
        let _ = write!(s, "{b:02x}");
    }
    s
}

// ---------------------------------------------------------------------------
// Public validated types: edge
// ---------------------------------------------------------------------------

/// Validated `edge.toml`.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeConfig {
    /// `[device]`: who this edge box is.
    pub device: DeviceIdentity,
    /// `[relay]`: where to send and how to authenticate the relay.
    pub relay: RelayTarget,
    /// `[input]`: where the MPEG-TS comes from. Default: test source at 5000 kbit/s.
    pub input: InputConfig,
    /// `[[link]]`: 1..=8 uplinks, unique names, unique interfaces / bind addresses.
    pub links: Vec<LinkConfig>,
    /// `[stats] listen`: local HTTP for `GET /api/stats`. Default
    /// `Some(127.0.0.1:8081)`; `None` when `[stats] enabled = false`.
    pub stats_listen: Option<SocketAddr>,
    /// `[scheduler]`: tuning knobs, all defaulted.
    pub scheduler: SchedulerTuning,
    /// `[video]`: encoder, picture size, bitrate bounds (inputs `v4l2` and `pattern`).
    pub video: VideoConfig,
    /// `[audio]`: sound source, processing and codec (inputs `v4l2` and `pattern`).
    pub audio: AudioConfig,
    /// `[stream] autostart`: go live by itself once the source and a link are up
    /// (default `true`); when `false` the stream waits for the button.
    pub autostart: bool,
    /// `[modem]`: APN and polling of the USB modems found in sysfs (all defaulted).
    pub modem: crate::device::modem::ModemConfig,
    /// `[gpio]`: front panel pins (status LED, button, tally), all optional.
    pub gpio: crate::device::gpio::GpioConfig,
    /// `[usage]`: where per-link data usage is kept, and the billing day.
    pub usage: UsageConfig,
    /// `[web]`: the local web page (docs/web-api.md). `None` when the table is
    /// absent or `enabled = false`.
    pub web: Option<WebConfig>,
    /// `[ota]`: signed updates into A/B slots and the health check that confirms
    /// them (docs/ota.md). `None` when the table is absent.
    pub ota: Option<OtaConfig>,
}

/// `[ota]` of `edge.toml`: over-the-air updates (docs/ota.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtaConfig {
    /// How the A/B slots are switched.
    pub backend: OtaBackend,
    /// minisign public key files whose keys may sign bundles (at least one).
    pub public_keys: Vec<PathBuf>,
    /// This box's hardware id; a bundle must name it.
    pub compatible: String,
    /// Accept a bundle whose version is not newer than the running one.
    pub allow_downgrade: bool,
    /// Largest payload accepted, in bytes.
    pub max_payload: u64,
    /// How long a new slot has to show a link up or the stream live.
    pub health_timeout: Duration,
    /// Daemon starts of an unconfirmed slot before it is given up.
    pub max_boot_attempts: u32,
    /// When the box reboots into a freshly installed slot.
    pub reboot: RebootPolicy,
    /// Program and arguments that reboot the box (never empty).
    pub reboot_command: Vec<String>,
    /// Boot-attempt counter, pending reboot, downloads.
    pub state_dir: PathBuf,
    /// `[ota.hawkbit]`: fleet polling, if configured.
    pub hawkbit: Option<OtaHawkbit>,
}

/// `ota.backend`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OtaBackend {
    /// Directory slots (development, tests): `ota.slots_dir`.
    Dir { slots_dir: PathBuf },
    /// RAUC (`rauc install`, `rauc status mark-good`).
    Rauc,
}

/// `ota.reboot`: when a box with a freshly installed slot reboots into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebootPolicy {
    /// As soon as the stream is not live.
    Idle,
    /// Never by itself (the admin reboots, or `braid ota install --force`).
    Never,
    /// From this local time of day on, once the stream is not live.
    At { hour: u8, minute: u8 },
}

impl fmt::Display for RebootPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RebootPolicy::Idle => f.write_str("idle"),
            RebootPolicy::Never => f.write_str("never"),
            RebootPolicy::At { hour, minute } => write!(f, "{hour:02}:{minute:02}"),
        }
    }
}

/// `[ota.hawkbit]`: where the box polls for deployments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtaHawkbit {
    pub client: crate::ota::hawkbit::HawkbitConfig,
    /// Where artifacts are downloaded (resumed after a link loss).
    pub download_dir: PathBuf,
    /// Polling interval until the server asks for another.
    pub poll: Duration,
}

/// `[web]` of `edge.toml`: the local web page and its API (docs/web-api.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfig {
    /// Where the page is served (required).
    pub listen: SocketAddr,
    /// Argon2 PHC hash of the admin password; written by the page on first visit.
    /// Resolved against the config file's directory (default `web-password`).
    pub password_file: PathBuf,
    /// First-boot plaintext password, hashed into `password_file` at start when that
    /// does not exist yet, then deleted.
    pub initial_password_file: Option<PathBuf>,
    /// HTTPS instead of HTTP.
    pub tls: Option<WebTls>,
    /// A session not used for this long is logged out (5 minutes to a week).
    pub session_idle: Duration,
    /// Program and arguments run by "reboot" (never empty).
    pub reboot_command: Vec<String>,
    /// systemd unit whose journal the log view shows.
    pub log_unit: String,
}

/// Where the web page's TLS certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebTls {
    /// `cert` and `key` given (resolved paths).
    Files { cert: PathBuf, key: PathBuf },
    /// A self-signed certificate generated once beside `password_file`
    /// (`web-cert.pem`, `web-key.pem`).
    SelfSigned,
}

/// `[usage]` of `edge.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageConfig {
    /// JSON file of the counters (written atomically at most once a minute and at
    /// shutdown). `None`: counted in memory only, lost at restart.
    pub file: Option<PathBuf>,
    /// First day of the billing month, 1..=28. Default 1.
    pub billing_day: u8,
}

impl Default for UsageConfig {
    fn default() -> Self {
        UsageConfig {
            file: None,
            billing_day: 1,
        }
    }
}

/// `[device]` of `edge.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceIdentity {
    /// `[A-Za-z0-9_-]{1,64}`.
    pub id: String,
    /// PEM certificate path, resolved against the config file's directory.
    pub cert: PathBuf,
    /// PEM private key path, resolved against the config file's directory.
    pub key: PathBuf,
}

/// `[relay]` of `edge.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayTarget {
    /// Relay host (DNS name or IP literal) and UDP port.
    pub address: RelayAddress,
    /// TLS server name expected on the relay certificate. Default `braid-relay`.
    pub server_name: String,
    /// How the relay certificate is verified.
    pub trust: RelayTrust,
    /// End-to-end latency budget, 50 ms..=10 s. Default 500 ms.
    pub latency: Duration,
}

/// How the edge verifies the relay certificate (one type, shared with the TLS code).
pub use crate::transport::tls::RelayTrust;

/// A relay address: a host (DNS name or IP literal, IPv6 without brackets)
/// and a port. Resolution of DNS names happens at connect time, not here.
/// `to_string()` gives `host:port` (`[v6]:port` for IPv6).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RelayAddress {
    pub host: String,
    pub port: u16,
}

impl RelayAddress {
    /// The host as an IP address if it is an IP literal.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl fmt::Display for RelayAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for RelayAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(sa) = s.parse::<SocketAddr>() {
            if sa.port() == 0 {
                return Err(format!("port must not be 0 in {s:?}"));
            }
            return Ok(RelayAddress {
                host: sa.ip().to_string(),
                port: sa.port(),
            });
        }
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err(format!("expected HOST:PORT, got {s:?}"));
        };
        if host.starts_with('[') || host.contains(':') {
            return Err(format!(
                "expected HOST:PORT with IPv6 literals in brackets (e.g. \"[2001:db8::1]:7000\"), got {s:?}"
            ));
        }
        let port: u16 = match port.parse() {
            Ok(p) if p != 0 => p,
            _ => return Err(format!("expected a port 1-65535 after ':', got {s:?}")),
        };
        if !is_dns_name(host) {
            return Err(format!(
                "host must be a DNS name or IP address, got {host:?} in {s:?}"
            ));
        }
        Ok(RelayAddress {
            host: host.to_string(),
            port,
        })
    }
}

/// `[input]` of `edge.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputConfig {
    /// MPEG-TS over UDP from an external encoder.
    Udp {
        /// Default `127.0.0.1:5000`.
        listen: SocketAddr,
    },
    /// Built-in constant-rate test source.
    Test {
        /// Bits per second (`rate_kbps * 1000`), 100 kbit/s..=100 Mbit/s.
        rate_bps: u64,
    },
    /// Camera (or HDMI capture card) through Video4Linux2, encoded here.
    V4l2 {
        /// Default `/dev/video0`.
        device: PathBuf,
    },
    /// Built-in test signal (test pattern with a running clock, test tone), encoded here.
    Pattern {
        /// Default [`TestPattern::Smpte`].
        pattern: TestPattern,
    },
    /// MPEG-TS from an external encoder over SRT (this box listens), passed through.
    Srt {
        /// Default `0.0.0.0:9000`.
        listen: SocketAddr,
        /// SRT encryption passphrase, 10..=79 characters. Default none (no encryption).
        passphrase: Option<String>,
    },
}

/// Picture of the built-in test signal (`input.pattern`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TestPattern {
    /// Colour bars: cheap to encode.
    Smpte,
    /// A moving ball: some motion.
    Ball,
    /// Random noise: uses every bit it is given (rate tests).
    Snow,
}

impl TestPattern {
    /// The `videotestsrc` `pattern` nick.
    pub fn nick(self) -> &'static str {
        match self {
            TestPattern::Smpte => "smpte",
            TestPattern::Ball => "ball",
            TestPattern::Snow => "snow",
        }
    }
}

/// A picture size in pixels (both even, for 4:2:0 video).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PictureSize {
    pub width: u32,
    pub height: u32,
}

impl fmt::Display for PictureSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

impl FromStr for PictureSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("expected WIDTHxHEIGHT (e.g. \"1280x720\"), got {s:?}");
        let (w, h) = s.split_once('x').ok_or_else(bad)?;
        let width: u32 = w.parse().map_err(|_| bad())?;
        let height: u32 = h.parse().map_err(|_| bad())?;
        if !WIDTH_RANGE.contains(&i64::from(width)) || !HEIGHT_RANGE.contains(&i64::from(height)) {
            return Err(format!(
                "size {s:?} out of range ({}..={} x {}..={})",
                WIDTH_RANGE.start(),
                WIDTH_RANGE.end(),
                HEIGHT_RANGE.start(),
                HEIGHT_RANGE.end()
            ));
        }
        if width % 2 != 0 || height % 2 != 0 {
            return Err(format!("width and height must be even, got {s:?}"));
        }
        Ok(PictureSize { width, height })
    }
}

impl PictureSize {
    /// `self` scaled by `num/den`, rounded down to even numbers.
    fn scaled(self, num: u32, den: u32) -> PictureSize {
        PictureSize {
            width: (self.width * num / den) & !1,
            height: (self.height * num / den) & !1,
        }
    }
}

/// Which video encoder to use (`video.encoder`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncoderChoice {
    /// The first one present of the hardware encoders, then `x264enc`
    /// (order in [`crate::media::encoder`]).
    Auto,
    /// This GStreamer element factory; an error at start if it is not installed.
    Named(String),
}

/// `[video]` of `edge.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoConfig {
    /// Default [`EncoderChoice::Auto`].
    pub encoder: EncoderChoice,
    /// Largest encoded picture (what the camera is asked for). Default 1280x720.
    pub size: PictureSize,
    /// Frames per second, 1..=120. Default 30.
    pub fps: u32,
    /// Time between keyframes, 100 ms..=10 s. Default 1 s.
    pub keyframe_interval: Duration,
    /// Video encoder bitrate floor in bit/s. Default 500 kbit/s.
    pub min_bps: u64,
    /// Video encoder bitrate ceiling in bit/s. Default 12 Mbit/s.
    pub max_bps: u64,
    /// Picture sizes from largest (rung 0) to smallest, none larger than `size`.
    /// Default: `size`, 3/4 of it, 1/2 of it.
    pub ladder: Vec<PictureSize>,
}

impl Default for VideoConfig {
    fn default() -> Self {
        VideoConfig {
            encoder: EncoderChoice::Auto,
            size: DEFAULT_VIDEO_SIZE,
            fps: DEFAULT_FPS,
            keyframe_interval: Duration::from_millis(DEFAULT_KEYFRAME_INTERVAL_MS as u64),
            min_bps: DEFAULT_MIN_KBPS as u64 * 1000,
            max_bps: DEFAULT_MAX_KBPS as u64 * 1000,
            ladder: default_ladder(DEFAULT_VIDEO_SIZE),
        }
    }
}

/// The ladder used when `video.ladder` is not given: full, 3/4 and 1/2 size.
pub fn default_ladder(size: PictureSize) -> Vec<PictureSize> {
    let mut l = vec![size];
    for (n, d) in [(3, 4), (1, 2)] {
        let s = size.scaled(n, d);
        if s.width >= *WIDTH_RANGE.start() as u32 && s.height >= *HEIGHT_RANGE.start() as u32 {
            l.push(s);
        }
    }
    l
}

/// Where the sound comes from (`audio.source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AudioSourceKind {
    /// A test tone (`audiotestsrc`).
    Test,
    /// One or two ALSA capture devices (`alsasrc`), mixed.
    Alsa,
}

/// Audio codec (`audio.codec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AudioCodec {
    Aac,
    Opus,
}

/// `[audio]` of `edge.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioConfig {
    /// Send audio at all. Default true.
    pub enabled: bool,
    /// Default [`AudioSourceKind::Test`].
    pub source: AudioSourceKind,
    /// ALSA devices for `source = alsa`, 1 or 2 (mixed). Default `["default"]`;
    /// empty for `source = test`.
    pub devices: Vec<String>,
    /// WebRTC noise suppression. Default true.
    pub noise_suppression: bool,
    /// WebRTC automatic gain control. Default true.
    pub gain_control: bool,
    /// Hard limiter before the encoder. Default true.
    pub limiter: bool,
    /// Default [`AudioCodec::Aac`].
    pub codec: AudioCodec,
    /// Encoder bitrate in bit/s. Default 128 kbit/s.
    pub bitrate_bps: u64,
}

impl Default for AudioConfig {
    fn default() -> Self {
        AudioConfig {
            enabled: true,
            source: AudioSourceKind::Test,
            devices: Vec::new(),
            noise_suppression: true,
            gain_control: true,
            limiter: true,
            codec: AudioCodec::Aac,
            bitrate_bps: DEFAULT_AUDIO_KBPS as u64 * 1000,
        }
    }
}

/// One `[[link]]` of `edge.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkConfig {
    /// Unique, `[A-Za-z0-9_-]{1,64}`.
    pub name: String,
    /// Which network path the link's socket uses.
    pub bind: LinkBind,
    /// Disabled links are configured but not used. Default `true`.
    pub enabled: bool,
    /// Monthly data cap in bytes (`data_cap_mb` x 10^6), for metered SIMs.
    pub data_cap_bytes: Option<u64>,
}

/// How a link's socket is tied to one uplink (one type, shared with the socket code).
pub use crate::transport::socket::LinkBind;

/// `[scheduler]` of `edge.toml`.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerTuning {
    /// Fraction of media bytes that may be spent on duplicates of important
    /// packets, 0.0..=0.5. Default 0.02.
    pub duplicate_budget: f64,
}

impl Default for SchedulerTuning {
    fn default() -> Self {
        SchedulerTuning {
            duplicate_budget: DEFAULT_DUPLICATE_BUDGET,
        }
    }
}

// ---------------------------------------------------------------------------
// Public validated types: relay
// ---------------------------------------------------------------------------

/// Validated `relay.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// QUIC (UDP) listen address.
    pub listen: SocketAddr,
    /// PEM certificate path, resolved against the config file's directory.
    pub cert: PathBuf,
    /// PEM private key path, resolved against the config file's directory.
    pub key: PathBuf,
    /// Default release latency, 50 ms..=10 s. Default 500 ms.
    pub latency: Duration,
    /// Stats HTTP (`/api/stats`, `/metrics`). Default `127.0.0.1:9091`.
    pub stats_listen: SocketAddr,
    /// Devices allowed to connect; ids and fingerprints are unique.
    pub devices: Vec<DeviceEntry>,
}

impl RelayConfig {
    /// The device whose certificate has this SHA-256 fingerprint.
    pub fn device_by_fingerprint(&self, fp: &[u8; 32]) -> Option<&DeviceEntry> {
        self.devices.iter().find(|d| &d.fingerprint == fp)
    }
}

/// One `[[device]]` of `relay.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceEntry {
    /// `[A-Za-z0-9_-]{1,64}`, unique.
    pub id: String,
    /// SHA-256 of the device certificate (DER), unique.
    pub fingerprint: [u8; 32],
    /// Release latency for this device: its `latency_ms`, else `relay.latency_ms`.
    pub latency: Duration,
    /// One or more outputs.
    pub outputs: Vec<OutputConfig>,
}

/// One `[[device.output]]` of `relay.toml`.
///
/// `Debug` and [`OutputConfig::describe`] never show SRT passphrases or RTMP
/// stream keys, so the value can be logged.
#[derive(Clone, PartialEq, Eq)]
pub enum OutputConfig {
    /// MPEG-TS in 7x188-byte UDP datagrams to `address`.
    Udp { address: SocketAddr },
    /// MPEG-TS over SRT (GStreamer `srtsink`).
    Srt(SrtOutputConfig),
    /// H.264/AAC remuxed from the TS into FLV and pushed over RTMP(S).
    Rtmp(RtmpOutputConfig),
    /// MPEG-TS recorded to time-rotated segment files.
    File(FileOutputConfig),
}

/// Default SRT receiver latency (`latency_ms` of an `srt` output).
pub const DEFAULT_SRT_LATENCY: Duration = Duration::from_millis(120);
/// Allowed range of an `srt` output's `latency_ms`.
pub const SRT_LATENCY_MS_RANGE: RangeInclusive<i64> = 20..=8000;
/// SRT stream id limit (libsrt `SRTO_STREAMID`: at most 512 bytes).
pub const SRT_STREAMID_MAX: usize = 512;
/// Default segment length of a `file` output.
pub const DEFAULT_SEGMENT_SECONDS: i64 = 600;
/// Allowed range of a `file` output's `segment_seconds`.
pub const SEGMENT_SECONDS_RANGE: RangeInclusive<i64> = 1..=86_400;
/// Default number of segments a `file` output keeps.
pub const DEFAULT_KEEP_SEGMENTS: i64 = 24;
/// Allowed range of a `file` output's `keep`.
pub const KEEP_SEGMENTS_RANGE: RangeInclusive<i64> = 1..=100_000;

/// Who opens the SRT connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrtMode {
    /// The relay listens on `address`; players call it.
    Listener,
    /// The relay calls a listener at `address`.
    Caller,
}

impl SrtMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SrtMode::Listener => "listener",
            SrtMode::Caller => "caller",
        }
    }
}

/// `kind = "srt"`.
#[derive(Clone, PartialEq, Eq)]
pub struct SrtOutputConfig {
    pub mode: SrtMode,
    /// Listener: local `IP:PORT` to listen on. Caller: `HOST:PORT` to call.
    pub address: RelayAddress,
    /// AES passphrase, 10..=79 characters. Never logged.
    pub passphrase: Option<String>,
    /// AES key length in bytes (16, 24 or 32); `None` lets libsrt choose (16).
    pub pbkeylen: Option<u8>,
    /// SRT latency (receiver buffer), 20 ms..=8 s. Default 120 ms.
    pub latency: Duration,
    /// `SRTO_STREAMID` sent by a caller, at most 512 bytes.
    pub streamid: Option<String>,
}

impl fmt::Debug for SrtOutputConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtOutputConfig")
            .field("mode", &self.mode)
            .field("address", &self.address)
            .field(
                "passphrase",
                &self.passphrase.as_ref().map(|_| "<redacted>"),
            )
            .field("pbkeylen", &self.pbkeylen)
            .field("latency", &self.latency)
            .field("streamid", &self.streamid)
            .finish()
    }
}

/// `kind = "rtmp"`.
#[derive(Clone, PartialEq, Eq)]
pub struct RtmpOutputConfig {
    /// `rtmp://HOST[:PORT]/APP/STREAM` or `rtmps://...`. Holds the stream key:
    /// log [`RtmpOutputConfig::redacted`] instead.
    pub url: String,
}

impl RtmpOutputConfig {
    /// The URL with its last path segment (the stream key) and any query replaced
    /// by `***`.
    pub fn redacted(&self) -> String {
        redact_rtmp_url(&self.url)
    }
}

impl fmt::Debug for RtmpOutputConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RtmpOutputConfig")
            .field("url", &self.redacted())
            .finish()
    }
}

/// `kind = "file"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOutputConfig {
    /// Directory for the segments (created if missing), resolved against the
    /// config file's directory.
    pub dir: PathBuf,
    /// A new segment starts after this long (at the next PAT). Default 600 s.
    pub segment: Duration,
    /// Segments kept in `dir` for this device; older ones are deleted. Default 24.
    pub keep: usize,
}

impl OutputConfig {
    /// Short description safe for logs and stats (no secrets).
    pub fn describe(&self) -> String {
        match self {
            OutputConfig::Udp { address } => format!("udp://{address}"),
            OutputConfig::Srt(s) => format!(
                "srt://{}?mode={}{}",
                s.address,
                s.mode.as_str(),
                if s.passphrase.is_some() {
                    " (encrypted)"
                } else {
                    ""
                }
            ),
            OutputConfig::Rtmp(r) => r.redacted(),
            OutputConfig::File(f) => format!("file://{}", f.dir.display()),
        }
    }

    /// `udp`, `srt`, `rtmp` or `file`.
    pub fn kind(&self) -> &'static str {
        match self {
            OutputConfig::Udp { .. } => "udp",
            OutputConfig::Srt(_) => "srt",
            OutputConfig::Rtmp(_) => "rtmp",
            OutputConfig::File(_) => "file",
        }
    }
}

impl fmt::Debug for OutputConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutputConfig::Udp { address } => {
                f.debug_struct("Udp").field("address", address).finish()
            }
            OutputConfig::Srt(s) => f.debug_tuple("Srt").field(s).finish(),
            OutputConfig::Rtmp(r) => f.debug_tuple("Rtmp").field(r).finish(),
            OutputConfig::File(c) => f.debug_tuple("File").field(c).finish(),
        }
    }
}

/// `scheme://host/***`: everything after the first path segment (the RTMP
/// application) is hidden, as is any query or user info.
fn redact_rtmp_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".to_string();
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = authority.rsplit('@').next().unwrap_or("");
    let app = path.split(['/', '?']).next().unwrap_or("");
    if app.is_empty() {
        format!("{scheme}://{host}/***")
    } else {
        format!("{scheme}://{host}/{app}/***")
    }
}

/// Checks an RTMP URL: `rtmp://` or `rtmps://`, a host (optionally `:port`) and
/// a path of at least an application and a stream name. The message never
/// repeats the path (it holds the stream key).
fn check_rtmp_url(url: &str) -> Result<(), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("expected rtmp://HOST[:PORT]/APP/STREAM or rtmps://...".into());
    };
    if scheme != "rtmp" && scheme != "rtmps" {
        return Err(format!(
            "scheme must be rtmp or rtmps, got {scheme:?} (expected rtmp://HOST[:PORT]/APP/STREAM)"
        ));
    }
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.contains('@') {
        return Err("credentials in the URL are not supported".into());
    }
    let host_ok = if let Some((h, p)) = authority
        .rsplit_once(':')
        .filter(|_| !authority.ends_with(']'))
    {
        p.parse::<u16>().is_ok_and(|p| p != 0)
            && (is_dns_name(h)
                || h.parse::<IpAddr>().is_ok()
                || h.strip_prefix('[')
                    .and_then(|h| h.strip_suffix(']'))
                    .is_some_and(|h| h.parse::<std::net::Ipv6Addr>().is_ok()))
    } else {
        is_dns_name(authority)
            || authority.parse::<IpAddr>().is_ok()
            || authority
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .is_some_and(|h| h.parse::<std::net::Ipv6Addr>().is_ok())
    };
    if !host_ok {
        return Err(format!(
            "expected {scheme}://HOST[:PORT]/APP/STREAM, the host part {authority:?} is not a host name or IP address with an optional port 1-65535"
        ));
    }
    let path = path.split('?').next().unwrap_or("");
    let segments = path.split('/').filter(|s| !s.is_empty()).count();
    if segments < 2 {
        return Err(format!(
            "expected {scheme}://HOST[:PORT]/APP/STREAM: the path needs an application and a stream name"
        ));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters".into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Raw serde structs
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEdge {
    device: RawDeviceIdentity,
    relay: Spanned<RawRelayTarget>,
    #[serde(default)]
    input: Option<RawInput>,
    #[serde(default)]
    link: Vec<Spanned<RawLink>>,
    #[serde(default)]
    stats: Option<RawEdgeStats>,
    #[serde(default)]
    scheduler: Option<RawScheduler>,
    #[serde(default)]
    video: Option<Spanned<RawVideo>>,
    #[serde(default)]
    audio: Option<Spanned<RawAudio>>,
    #[serde(default)]
    stream: Option<RawStream>,
    #[serde(default)]
    modem: Option<crate::device::modem::ModemConfig>,
    #[serde(default)]
    gpio: Option<Spanned<crate::device::gpio::GpioConfig>>,
    #[serde(default)]
    usage: Option<RawUsage>,
    #[serde(default)]
    web: Option<Spanned<RawWeb>>,
    #[serde(default)]
    ota: Option<Spanned<RawOta>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOta {
    backend: Spanned<String>,
    slots_dir: Option<Spanned<String>>,
    public_keys: Spanned<Vec<Spanned<String>>>,
    compatible: Spanned<String>,
    allow_downgrade: Option<bool>,
    max_payload_mb: Option<Spanned<i64>>,
    health_timeout_s: Option<Spanned<i64>>,
    max_boot_attempts: Option<Spanned<i64>>,
    reboot: Option<Spanned<String>>,
    reboot_command: Option<Spanned<Vec<Spanned<String>>>>,
    state_dir: Option<Spanned<String>>,
    hawkbit: Option<Spanned<RawHawkbit>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHawkbit {
    server: Spanned<String>,
    tenant: Spanned<String>,
    controller_id: Option<Spanned<String>>,
    token: Option<Spanned<String>>,
    download_dir: Option<Spanned<String>>,
    poll_s: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWeb {
    enabled: Option<bool>,
    listen: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    initial_password_file: Option<Spanned<String>>,
    tls: Option<Spanned<bool>>,
    cert: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    session_idle_minutes: Option<Spanned<i64>>,
    reboot_command: Option<Spanned<Vec<Spanned<String>>>>,
    log_unit: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStream {
    autostart: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUsage {
    file: Option<Spanned<String>>,
    billing_day: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeviceIdentity {
    id: Spanned<String>,
    cert: Spanned<String>,
    key: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelayTarget {
    address: Spanned<String>,
    server_name: Option<Spanned<String>>,
    fingerprint: Option<Spanned<String>>,
    ca: Option<Spanned<String>>,
    latency_ms: Option<Spanned<i64>>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum RawInputKind {
    Udp,
    Test,
    V4l2,
    Pattern,
    Srt,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInput {
    kind: Option<RawInputKind>,
    listen: Option<Spanned<String>>,
    rate_kbps: Option<Spanned<i64>>,
    device: Option<Spanned<String>>,
    pattern: Option<Spanned<TestPattern>>,
    passphrase: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVideo {
    encoder: Option<Spanned<String>>,
    width: Option<Spanned<i64>>,
    height: Option<Spanned<i64>>,
    fps: Option<Spanned<i64>>,
    keyframe_interval_ms: Option<Spanned<i64>>,
    min_kbps: Option<Spanned<i64>>,
    max_kbps: Option<Spanned<i64>>,
    ladder: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudio {
    enabled: Option<bool>,
    source: Option<AudioSourceKind>,
    devices: Option<Spanned<Vec<Spanned<String>>>>,
    noise_suppression: Option<bool>,
    gain_control: Option<bool>,
    limiter: Option<bool>,
    codec: Option<AudioCodec>,
    bitrate_kbps: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLink {
    name: Spanned<String>,
    interface: Option<Spanned<String>>,
    bind: Option<Spanned<String>>,
    enabled: Option<bool>,
    data_cap_mb: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEdgeStats {
    enabled: Option<bool>,
    listen: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScheduler {
    duplicate_budget: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelayFile {
    relay: RawRelayServer,
    #[serde(default)]
    stats: Option<RawRelayStats>,
    #[serde(default)]
    device: Vec<Spanned<RawDeviceEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelayServer {
    listen: Spanned<String>,
    cert: Spanned<String>,
    key: Spanned<String>,
    latency_ms: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelayStats {
    listen: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeviceEntry {
    id: Spanned<String>,
    fingerprint: Spanned<String>,
    latency_ms: Option<Spanned<i64>>,
    #[serde(default)]
    output: Vec<Spanned<RawOutput>>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum RawOutputKind {
    Udp,
    Srt,
    Rtmp,
    File,
}

impl RawOutputKind {
    fn as_str(self) -> &'static str {
        match self {
            RawOutputKind::Udp => "udp",
            RawOutputKind::Srt => "srt",
            RawOutputKind::Rtmp => "rtmp",
            RawOutputKind::File => "file",
        }
    }
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum RawSrtMode {
    Listener,
    Caller,
}

/// Every key of every output kind; which apply to which kind is checked in
/// [`relay_output`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    kind: RawOutputKind,
    address: Option<Spanned<String>>,
    mode: Option<Spanned<RawSrtMode>>,
    passphrase: Option<Spanned<String>>,
    pbkeylen: Option<Spanned<i64>>,
    latency_ms: Option<Spanned<i64>>,
    streamid: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    dir: Option<Spanned<String>>,
    segment_seconds: Option<Spanned<i64>>,
    keep: Option<Spanned<i64>>,
}

// ---------------------------------------------------------------------------
// Loading and validation
// ---------------------------------------------------------------------------

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads and validates an `edge.toml`.
pub fn load_edge(path: &Path) -> Result<EdgeConfig, ConfigError> {
    parse_edge(&read(path)?, path)
}

/// Reads and validates a `relay.toml`.
pub fn load_relay(path: &Path) -> Result<RelayConfig, ConfigError> {
    parse_relay(&read(path)?, path)
}

/// Validates `edge.toml` text. `path_for_messages` is used in error messages
/// and its directory to resolve relative paths.
pub fn parse_edge(text: &str, path_for_messages: &Path) -> Result<EdgeConfig, ConfigError> {
    let ctx = Ctx::new(path_for_messages, text);
    let raw: RawEdge = toml::from_str(text).map_err(|e| ctx.syntax(e, &["device", "relay"]))?;

    let device = DeviceIdentity {
        id: ctx.name("device.id", &raw.device.id)?,
        cert: ctx.file_path("device.cert", &raw.device.cert)?,
        key: ctx.file_path("device.key", &raw.device.key)?,
    };

    let relay = edge_relay(&ctx, &raw.relay)?;
    let input = edge_input(&ctx, raw.input.as_ref())?;
    let video = edge_video(&ctx, raw.video.as_ref())?;
    let audio = edge_audio(&ctx, raw.audio.as_ref())?;
    let links = edge_links(&ctx, &raw.link)?;

    let stats_listen = match &raw.stats {
        None => Some(DEFAULT_EDGE_STATS_LISTEN),
        Some(s) => match (s.enabled.unwrap_or(true), &s.listen) {
            (false, _) => None,
            (true, None) => Some(DEFAULT_EDGE_STATS_LISTEN),
            (true, Some(l)) => Some(ctx.socket_addr("stats.listen", l)?),
        },
    };

    let mut scheduler = SchedulerTuning::default();
    if let Some(b) = raw
        .scheduler
        .as_ref()
        .and_then(|s| s.duplicate_budget.as_ref())
    {
        let v = *b.get_ref();
        if !DUPLICATE_BUDGET_RANGE.contains(&v) {
            return Err(ctx.invalid(
                Some(b.span()),
                format!(
                    "scheduler.duplicate_budget: must be between {} and {}, got {v}",
                    DUPLICATE_BUDGET_RANGE.start(),
                    DUPLICATE_BUDGET_RANGE.end()
                ),
            ));
        }
        scheduler.duplicate_budget = v;
    }

    let gpio = match raw.gpio {
        Some(g) => {
            let span = g.span();
            let g = g.into_inner();
            g.validate().map_err(|e| ctx.invalid(Some(span), e))?;
            g
        }
        None => Default::default(),
    };
    let mut usage = UsageConfig::default();
    if let Some(u) = &raw.usage {
        if let Some(f) = &u.file {
            usage.file = Some(ctx.file_path("usage.file", f)?);
        }
        if let Some(d) = &u.billing_day {
            usage.billing_day = ctx.int_in_range("usage.billing_day", d, &(1..=28))? as u8;
        }
    }
    let web = match &raw.web {
        Some(w) => edge_web(&ctx, w)?,
        None => None,
    };
    let ota = match &raw.ota {
        Some(o) => Some(edge_ota(&ctx, o, &device.id)?),
        None => None,
    };
    Ok(EdgeConfig {
        ota,
        device,
        relay,
        input,
        links,
        usage,
        web,
        stats_listen,
        scheduler,
        video,
        audio,
        autostart: raw.stream.and_then(|s| s.autostart).unwrap_or(true),
        modem: raw.modem.unwrap_or_default(),
        gpio,
    })
}

fn edge_web(ctx: &Ctx, raw: &Spanned<RawWeb>) -> Result<Option<WebConfig>, ConfigError> {
    let w = raw.get_ref();
    if w.enabled == Some(false) {
        return Ok(None);
    }
    let listen = match &w.listen {
        Some(l) => ctx.socket_addr("web.listen", l)?,
        None => {
            return Err(ctx.invalid(
                Some(raw.span()),
                "web.listen: required when [web] is enabled (e.g. \"0.0.0.0:80\")",
            ))
        }
    };
    let password_file = match &w.password_file {
        Some(p) => ctx.file_path("web.password_file", p)?,
        None => ctx.base.join(DEFAULT_WEB_PASSWORD_FILE),
    };
    let initial_password_file = match &w.initial_password_file {
        Some(p) => {
            let path = ctx.file_path("web.initial_password_file", p)?;
            if path == password_file {
                return Err(ctx.invalid(
                    Some(p.span()),
                    "web.initial_password_file: must not be the same file as web.password_file",
                ));
            }
            Some(path)
        }
        None => None,
    };
    let tls_on = w.tls.as_ref().is_some_and(|t| *t.get_ref());
    let tls = match (&w.cert, &w.key) {
        (Some(c), Some(k)) => {
            if !tls_on {
                return Err(ctx.invalid(
                    Some(c.span()),
                    "web.cert: cert and key are used only with tls = true",
                ));
            }
            Some(WebTls::Files {
                cert: ctx.file_path("web.cert", c)?,
                key: ctx.file_path("web.key", k)?,
            })
        }
        (Some(c), None) => {
            return Err(ctx.invalid(
                Some(c.span()),
                "web.cert: give both cert and key, or neither (self-signed)",
            ))
        }
        (None, Some(k)) => {
            return Err(ctx.invalid(
                Some(k.span()),
                "web.key: give both cert and key, or neither (self-signed)",
            ))
        }
        (None, None) => tls_on.then_some(WebTls::SelfSigned),
    };
    let minutes = match &w.session_idle_minutes {
        Some(m) => ctx.int_in_range("web.session_idle_minutes", m, &SESSION_IDLE_MINUTES_RANGE)?,
        None => DEFAULT_SESSION_IDLE_MINUTES,
    };
    let reboot_command = match &w.reboot_command {
        Some(cmd) => {
            let argv = cmd.get_ref();
            if argv.is_empty() {
                return Err(ctx.invalid(
                    Some(cmd.span()),
                    "web.reboot_command: must name a program (e.g. [\"systemctl\", \"reboot\"])",
                ));
            }
            for a in argv {
                if a.get_ref().is_empty() || a.get_ref().contains('\0') {
                    return Err(ctx.invalid(
                        Some(a.span()),
                        format!(
                            "web.reboot_command: arguments must be non-empty and without NUL, got {:?}",
                            a.get_ref()
                        ),
                    ));
                }
            }
            argv.iter().map(|a| a.get_ref().clone()).collect()
        }
        None => DEFAULT_REBOOT_COMMAND
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    let log_unit = match &w.log_unit {
        Some(u) => {
            let s = u.get_ref();
            let ok = (1..=256).contains(&s.len())
                && !s.starts_with('-')
                && s.bytes().all(|b| {
                    b.is_ascii_alphanumeric()
                        || matches!(b, b'-' | b'_' | b'.' | b'@' | b':' | b'\\')
                });
            if !ok {
                return Err(ctx.invalid(
                    Some(u.span()),
                    format!("web.log_unit: expected a systemd unit name (e.g. \"braid-edge\"), got {s:?}"),
                ));
            }
            s.clone()
        }
        None => DEFAULT_LOG_UNIT.to_string(),
    };
    Ok(Some(WebConfig {
        listen,
        password_file,
        initial_password_file,
        tls,
        session_idle: Duration::from_secs(minutes as u64 * 60),
        reboot_command,
        log_unit,
    }))
}

/// A program and its arguments (`web.reboot_command`, `ota.reboot_command`).
fn command(
    ctx: &Ctx,
    key: &str,
    value: Option<&Spanned<Vec<Spanned<String>>>>,
) -> Result<Vec<String>, ConfigError> {
    let Some(cmd) = value else {
        return Ok(DEFAULT_REBOOT_COMMAND
            .iter()
            .map(|s| s.to_string())
            .collect());
    };
    if cmd.get_ref().is_empty() {
        return Err(ctx.invalid(
            Some(cmd.span()),
            format!("{key}: must name a program (e.g. [\"systemctl\", \"reboot\"])"),
        ));
    }
    for a in cmd.get_ref() {
        if a.get_ref().is_empty() || a.get_ref().contains('\0') {
            return Err(ctx.invalid(
                Some(a.span()),
                format!(
                    "{key}: arguments must be non-empty and without NUL, got {:?}",
                    a.get_ref()
                ),
            ));
        }
    }
    Ok(cmd.get_ref().iter().map(|a| a.get_ref().clone()).collect())
}

/// `HH:MM`, 00:00 to 23:59.
fn parse_hh_mm(s: &str) -> Option<(u8, u8)> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 || !(h.bytes().chain(m.bytes())).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m): (u8, u8) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some((h, m))
}

/// `[A-Za-z0-9_.-]{1,64}`: hardware ids and hawkBit tenants.
fn is_valid_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn edge_ota(ctx: &Ctx, raw: &Spanned<RawOta>, device_id: &str) -> Result<OtaConfig, ConfigError> {
    let o = raw.get_ref();
    let backend = match (o.backend.get_ref().as_str(), &o.slots_dir) {
        ("dir", Some(d)) => OtaBackend::Dir {
            slots_dir: ctx.file_path("ota.slots_dir", d)?,
        },
        ("dir", None) => {
            return Err(ctx.invalid(
                Some(o.backend.span()),
                "ota.slots_dir: required with backend = \"dir\"",
            ))
        }
        ("rauc", None) => OtaBackend::Rauc,
        ("rauc", Some(d)) => {
            return Err(ctx.invalid(
                Some(d.span()),
                "ota.slots_dir: only used with backend = \"dir\"",
            ))
        }
        (other, _) => {
            return Err(ctx.invalid(
                Some(o.backend.span()),
                format!("ota.backend: expected \"dir\" or \"rauc\", got {other:?}"),
            ))
        }
    };
    if o.public_keys.get_ref().is_empty() {
        return Err(ctx.invalid(
            Some(o.public_keys.span()),
            "ota.public_keys: list at least one minisign public key file",
        ));
    }
    let public_keys = o
        .public_keys
        .get_ref()
        .iter()
        .map(|k| ctx.file_path("ota.public_keys", k))
        .collect::<Result<Vec<_>, _>>()?;
    let compatible = o.compatible.get_ref();
    if !is_valid_id(compatible) {
        return Err(ctx.invalid(
            Some(o.compatible.span()),
            format!(
                "ota.compatible: must be 1 to 64 characters from A-Z a-z 0-9 _ - ., got {compatible:?}"
            ),
        ));
    }
    let int = |key: &str, v: &Option<Spanned<i64>>, range, default| match v {
        Some(v) => ctx.int_in_range(key, v, range),
        None => Ok(default),
    };
    let max_payload_mb = int(
        "ota.max_payload_mb",
        &o.max_payload_mb,
        &OTA_MAX_PAYLOAD_MB_RANGE,
        DEFAULT_OTA_MAX_PAYLOAD_MB,
    )?;
    let health_timeout_s = int(
        "ota.health_timeout_s",
        &o.health_timeout_s,
        &OTA_HEALTH_TIMEOUT_S_RANGE,
        DEFAULT_OTA_HEALTH_TIMEOUT_S,
    )?;
    let max_boot_attempts = int(
        "ota.max_boot_attempts",
        &o.max_boot_attempts,
        &OTA_MAX_BOOT_ATTEMPTS_RANGE,
        DEFAULT_OTA_MAX_BOOT_ATTEMPTS,
    )?;
    let reboot = match &o.reboot {
        None => RebootPolicy::Idle,
        Some(r) => match r.get_ref().as_str() {
            "idle" => RebootPolicy::Idle,
            "never" => RebootPolicy::Never,
            s => match parse_hh_mm(s) {
                Some((hour, minute)) => RebootPolicy::At { hour, minute },
                None => {
                    return Err(ctx.invalid(
                        Some(r.span()),
                        format!(
                            "ota.reboot: expected \"idle\", \"never\" or a local time \"HH:MM\", got {s:?}"
                        ),
                    ))
                }
            },
        },
    };
    let reboot_command = command(ctx, "ota.reboot_command", o.reboot_command.as_ref())?;
    let state_dir = match &o.state_dir {
        Some(d) => ctx.file_path("ota.state_dir", d)?,
        None => PathBuf::from(DEFAULT_OTA_STATE_DIR),
    };
    let hawkbit = match &o.hawkbit {
        Some(h) => Some(edge_hawkbit(ctx, h.get_ref(), device_id, &state_dir)?),
        None => None,
    };
    Ok(OtaConfig {
        backend,
        public_keys,
        compatible: compatible.clone(),
        allow_downgrade: o.allow_downgrade.unwrap_or(false),
        max_payload: max_payload_mb as u64 * 1024 * 1024,
        health_timeout: Duration::from_secs(health_timeout_s as u64),
        max_boot_attempts: max_boot_attempts as u32,
        reboot,
        reboot_command,
        state_dir,
        hawkbit,
    })
}

fn edge_hawkbit(
    ctx: &Ctx,
    h: &RawHawkbit,
    device_id: &str,
    state_dir: &Path,
) -> Result<OtaHawkbit, ConfigError> {
    let server = h.server.get_ref().trim_end_matches('/');
    let host = server
        .strip_prefix("https://")
        .or_else(|| server.strip_prefix("http://"));
    if host.is_none_or(|h| h.is_empty() || h.chars().any(|c| c.is_whitespace() || c.is_control())) {
        return Err(ctx.invalid(
            Some(h.server.span()),
            format!(
                "ota.hawkbit.server: expected an http:// or https:// URL (e.g. \"https://hawkbit.example.com\"), got {:?}",
                h.server.get_ref()
            ),
        ));
    }
    if !is_valid_id(h.tenant.get_ref()) {
        return Err(ctx.invalid(
            Some(h.tenant.span()),
            format!(
                "ota.hawkbit.tenant: must be 1 to 64 characters from A-Z a-z 0-9 _ - ., got {:?}",
                h.tenant.get_ref()
            ),
        ));
    }
    let controller_id = match &h.controller_id {
        Some(c) if is_valid_id(c.get_ref()) => c.get_ref().clone(),
        Some(c) => {
            return Err(ctx.invalid(
                Some(c.span()),
                format!(
                    "ota.hawkbit.controller_id: must be 1 to 64 characters from A-Z a-z 0-9 _ - ., got {:?}",
                    c.get_ref()
                ),
            ))
        }
        None => device_id.to_string(),
    };
    let token = match &h.token {
        Some(t) if t.get_ref().trim().is_empty() || t.get_ref().chars().any(|c| c.is_control()) => {
            return Err(ctx.invalid(
                Some(t.span()),
                "ota.hawkbit.token: must not be empty or hold control characters",
            ))
        }
        Some(t) => Some(t.get_ref().clone()),
        None => None,
    };
    let download_dir = match &h.download_dir {
        Some(d) => ctx.file_path("ota.hawkbit.download_dir", d)?,
        None => state_dir.join("download"),
    };
    let poll_s = match &h.poll_s {
        Some(p) => ctx.int_in_range("ota.hawkbit.poll_s", p, &HAWKBIT_POLL_S_RANGE)?,
        None => DEFAULT_HAWKBIT_POLL_S,
    };
    Ok(OtaHawkbit {
        client: crate::ota::hawkbit::HawkbitConfig {
            server: server.to_string(),
            tenant: h.tenant.get_ref().clone(),
            controller_id,
            token,
        },
        download_dir,
        poll: Duration::from_secs(poll_s as u64),
    })
}

fn edge_relay(ctx: &Ctx, raw: &Spanned<RawRelayTarget>) -> Result<RelayTarget, ConfigError> {
    let r = raw.get_ref();
    let address: RelayAddress = r
        .address
        .get_ref()
        .parse()
        .map_err(|e| ctx.invalid(Some(r.address.span()), format!("relay.address: {e}")))?;

    let server_name = match &r.server_name {
        None => DEFAULT_SERVER_NAME.to_string(),
        Some(s) => {
            let name = s.get_ref();
            if rustls::pki_types::ServerName::try_from(name.as_str()).is_err() {
                return Err(ctx.invalid(
                    Some(s.span()),
                    format!("relay.server_name: not a valid DNS name or IP address: {name:?}"),
                ));
            }
            name.clone()
        }
    };

    let trust = match (&r.fingerprint, &r.ca) {
        (Some(_), Some(ca)) => {
            return Err(ctx.invalid(
                Some(ca.span()),
                "relay: give exactly one of fingerprint / ca, not both",
            ))
        }
        (None, None) => {
            return Err(ctx.invalid(
                Some(raw.span()),
                "relay: one of fingerprint (pinned relay certificate) / ca is required",
            ))
        }
        (Some(fp), None) => RelayTrust::Pinned(
            parse_fingerprint(fp.get_ref())
                .map_err(|e| ctx.invalid(Some(fp.span()), format!("relay.fingerprint: {e}")))?,
        ),
        (None, Some(ca)) => RelayTrust::Ca(ctx.file_path("relay.ca", ca)?),
    };

    Ok(RelayTarget {
        address,
        server_name,
        trust,
        latency: ctx.latency("relay.latency_ms", r.latency_ms.as_ref())?,
    })
}

/// An `[input]` key: name, where it is, the kinds it applies to, those kinds in words.
type KindKey<'a> = (&'a str, Option<Range<usize>>, &'a [RawInputKind], &'a str);

fn edge_input(ctx: &Ctx, raw: Option<&RawInput>) -> Result<InputConfig, ConfigError> {
    use RawInputKind as K;
    let Some(raw) = raw else {
        return Ok(InputConfig::Test {
            rate_bps: DEFAULT_TEST_RATE_KBPS as u64 * 1000,
        });
    };
    let kind = raw.kind.unwrap_or(K::Test);
    // A key meant for another kind would be silently ignored: refuse it.
    let keys: [KindKey; 5] = [
        (
            "listen",
            raw.listen.as_ref().map(Spanned::span),
            &[K::Udp, K::Srt],
            "kind = \"udp\" or \"srt\"",
        ),
        (
            "rate_kbps",
            raw.rate_kbps.as_ref().map(Spanned::span),
            &[K::Test],
            "kind = \"test\"",
        ),
        (
            "device",
            raw.device.as_ref().map(Spanned::span),
            &[K::V4l2],
            "kind = \"v4l2\"",
        ),
        (
            "pattern",
            raw.pattern.as_ref().map(Spanned::span),
            &[K::Pattern],
            "kind = \"pattern\"",
        ),
        (
            "passphrase",
            raw.passphrase.as_ref().map(Spanned::span),
            &[K::Srt],
            "kind = \"srt\"",
        ),
    ];
    for (key, span, kinds, which) in keys {
        if let Some(span) = span {
            if !kinds.contains(&kind) {
                return Err(
                    ctx.invalid(Some(span), format!("input.{key}: only applies to {which}"))
                );
            }
        }
    }
    let listen = |default| match &raw.listen {
        None => Ok(default),
        Some(l) => ctx.socket_addr("input.listen", l),
    };
    Ok(match kind {
        K::Udp => InputConfig::Udp {
            listen: listen(DEFAULT_INPUT_LISTEN)?,
        },
        K::Test => {
            let kbps = match &raw.rate_kbps {
                None => DEFAULT_TEST_RATE_KBPS,
                Some(r) => ctx.int_in_range("input.rate_kbps", r, &TEST_RATE_KBPS_RANGE)?,
            };
            InputConfig::Test {
                rate_bps: kbps as u64 * 1000,
            }
        }
        K::V4l2 => InputConfig::V4l2 {
            device: match &raw.device {
                None => PathBuf::from(DEFAULT_V4L2_DEVICE),
                Some(d) => ctx.file_path("input.device", d)?,
            },
        },
        K::Pattern => InputConfig::Pattern {
            pattern: raw
                .pattern
                .as_ref()
                .map_or(TestPattern::Smpte, |p| *p.get_ref()),
        },
        K::Srt => {
            let passphrase = match &raw.passphrase {
                None => None,
                Some(p) => {
                    let n = p.get_ref().chars().count();
                    if !SRT_PASSPHRASE_LEN.contains(&n) {
                        return Err(ctx.invalid(
                            Some(p.span()),
                            format!(
                                "input.passphrase: must be {} to {} characters, got {n}",
                                SRT_PASSPHRASE_LEN.start(),
                                SRT_PASSPHRASE_LEN.end()
                            ),
                        ));
                    }
                    Some(p.get_ref().clone())
                }
            };
            InputConfig::Srt {
                listen: listen(DEFAULT_SRT_LISTEN)?,
                passphrase,
            }
        }
    })
}

/// An optional integer key in `range`, or `default`.
fn opt_int(
    ctx: &Ctx,
    key: &str,
    value: Option<&Spanned<i64>>,
    range: &RangeInclusive<i64>,
    default: i64,
) -> Result<i64, ConfigError> {
    value.map_or(Ok(default), |v| ctx.int_in_range(key, v, range))
}

fn edge_video(ctx: &Ctx, raw: Option<&Spanned<RawVideo>>) -> Result<VideoConfig, ConfigError> {
    let Some(raw) = raw else {
        return Ok(VideoConfig::default());
    };
    let v = raw.get_ref();
    let encoder = match &v.encoder {
        None => EncoderChoice::Auto,
        Some(e) if e.get_ref() == "auto" => EncoderChoice::Auto,
        Some(e) => {
            let name = e.get_ref();
            let ok = !name.is_empty()
                && name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                });
            if !ok {
                return Err(ctx.invalid(
                    Some(e.span()),
                    format!(
                        "video.encoder: expected \"auto\" or a GStreamer element name (e.g. \"x264enc\"), got {name:?}"
                    ),
                ));
            }
            EncoderChoice::Named(name.clone())
        }
    };
    let even = |key: &str, value: Option<&Spanned<i64>>, range, default| {
        let n = opt_int(ctx, key, value, range, default)?;
        if n % 2 != 0 {
            return Err(ctx.invalid(
                value.map(Spanned::span),
                format!("{key}: must be even, got {n}"),
            ));
        }
        Ok(n as u32)
    };
    let size = PictureSize {
        width: even(
            "video.width",
            v.width.as_ref(),
            &WIDTH_RANGE,
            i64::from(DEFAULT_VIDEO_SIZE.width),
        )?,
        height: even(
            "video.height",
            v.height.as_ref(),
            &HEIGHT_RANGE,
            i64::from(DEFAULT_VIDEO_SIZE.height),
        )?,
    };
    let fps = opt_int(
        ctx,
        "video.fps",
        v.fps.as_ref(),
        &FPS_RANGE,
        i64::from(DEFAULT_FPS),
    )? as u32;
    let keyframe_ms = opt_int(
        ctx,
        "video.keyframe_interval_ms",
        v.keyframe_interval_ms.as_ref(),
        &KEYFRAME_INTERVAL_MS_RANGE,
        DEFAULT_KEYFRAME_INTERVAL_MS,
    )?;
    let min_kbps = opt_int(
        ctx,
        "video.min_kbps",
        v.min_kbps.as_ref(),
        &VIDEO_KBPS_RANGE,
        DEFAULT_MIN_KBPS,
    )?;
    let max_kbps = opt_int(
        ctx,
        "video.max_kbps",
        v.max_kbps.as_ref(),
        &VIDEO_KBPS_RANGE,
        DEFAULT_MAX_KBPS,
    )?;
    if min_kbps > max_kbps {
        let span = v
            .max_kbps
            .as_ref()
            .or(v.min_kbps.as_ref())
            .map(Spanned::span);
        return Err(ctx.invalid(
            span,
            format!("video.max_kbps: must not be below min_kbps ({min_kbps}), got {max_kbps}"),
        ));
    }
    let ladder = match &v.ladder {
        None => default_ladder(size),
        Some(l) => {
            let items = l.get_ref();
            if items.is_empty() || items.len() > MAX_LADDER_RUNGS {
                return Err(ctx.invalid(
                    Some(l.span()),
                    format!(
                        "video.ladder: must list 1 to {MAX_LADDER_RUNGS} picture sizes, got {}",
                        items.len()
                    ),
                ));
            }
            let mut rungs: Vec<PictureSize> = Vec::with_capacity(items.len());
            for item in items {
                let r: PictureSize = item
                    .get_ref()
                    .parse()
                    .map_err(|e| ctx.invalid(Some(item.span()), format!("video.ladder: {e}")))?;
                if r.width > size.width || r.height > size.height {
                    return Err(ctx.invalid(
                        Some(item.span()),
                        format!("video.ladder: {r} is larger than the video size {size}"),
                    ));
                }
                if let Some(prev) = rungs.last() {
                    if r.width > prev.width || r.height > prev.height || r == *prev {
                        return Err(ctx.invalid(
                            Some(item.span()),
                            format!(
                                "video.ladder: sizes must go from largest to smallest, {r} follows {prev}"
                            ),
                        ));
                    }
                }
                rungs.push(r);
            }
            rungs
        }
    };
    Ok(VideoConfig {
        encoder,
        size,
        fps,
        keyframe_interval: Duration::from_millis(keyframe_ms as u64),
        min_bps: min_kbps as u64 * 1000,
        max_bps: max_kbps as u64 * 1000,
        ladder,
    })
}

fn edge_audio(ctx: &Ctx, raw: Option<&Spanned<RawAudio>>) -> Result<AudioConfig, ConfigError> {
    let d = AudioConfig::default();
    let Some(raw) = raw else {
        return Ok(d);
    };
    let a = raw.get_ref();
    let source = a.source.unwrap_or(d.source);
    let devices = match (&a.devices, source) {
        (Some(l), AudioSourceKind::Test) => {
            return Err(ctx.invalid(
                Some(l.span()),
                "audio.devices: only applies to source = \"alsa\"",
            ))
        }
        (None, AudioSourceKind::Test) => Vec::new(),
        (None, AudioSourceKind::Alsa) => vec![DEFAULT_ALSA_DEVICE.to_string()],
        (Some(l), AudioSourceKind::Alsa) => {
            let items = l.get_ref();
            if items.is_empty() || items.len() > MAX_AUDIO_DEVICES {
                return Err(ctx.invalid(
                    Some(l.span()),
                    format!(
                        "audio.devices: must list 1 to {MAX_AUDIO_DEVICES} ALSA devices, got {}",
                        items.len()
                    ),
                ));
            }
            let mut out: Vec<String> = Vec::with_capacity(items.len());
            for item in items {
                let dev = item.get_ref();
                if dev.trim().is_empty() {
                    return Err(ctx.invalid(Some(item.span()), "audio.devices: empty device name"));
                }
                if out.contains(dev) {
                    return Err(ctx.invalid(
                        Some(item.span()),
                        format!("audio.devices: device {dev:?} is listed twice"),
                    ));
                }
                out.push(dev.clone());
            }
            out
        }
    };
    let kbps = opt_int(
        ctx,
        "audio.bitrate_kbps",
        a.bitrate_kbps.as_ref(),
        &AUDIO_KBPS_RANGE,
        DEFAULT_AUDIO_KBPS,
    )?;
    Ok(AudioConfig {
        enabled: a.enabled.unwrap_or(d.enabled),
        source,
        devices,
        noise_suppression: a.noise_suppression.unwrap_or(d.noise_suppression),
        gain_control: a.gain_control.unwrap_or(d.gain_control),
        limiter: a.limiter.unwrap_or(d.limiter),
        codec: a.codec.unwrap_or(d.codec),
        bitrate_bps: kbps as u64 * 1000,
    })
}

fn edge_links(ctx: &Ctx, raw: &[Spanned<RawLink>]) -> Result<Vec<LinkConfig>, ConfigError> {
    if raw.is_empty() {
        return Err(ctx.invalid(None, "link: at least one [[link]] is required"));
    }
    if raw.len() > MAX_LINKS {
        return Err(ctx.invalid(
            Some(raw[MAX_LINKS].span()),
            format!(
                "link: at most {MAX_LINKS} [[link]] entries are allowed, got {}",
                raw.len()
            ),
        ));
    }
    let mut links: Vec<LinkConfig> = Vec::with_capacity(raw.len());
    // Span of each accepted link's name and bind value, for "first defined on line N".
    let mut seen: Vec<(Range<usize>, Range<usize>)> = Vec::with_capacity(raw.len());
    for item in raw {
        let l = item.get_ref();
        let name = ctx.name("link.name", &l.name)?;
        let (bind, bind_span) = match (&l.interface, &l.bind) {
            (Some(_), Some(b)) => {
                return Err(ctx.invalid(
                    Some(b.span()),
                    format!("link {name:?}: give exactly one of interface / bind, not both"),
                ))
            }
            (None, None) => {
                return Err(ctx.invalid(
                    Some(item.span()),
                    format!("link {name:?}: one of interface / bind is required"),
                ))
            }
            (Some(i), None) => {
                if !is_valid_interface(i.get_ref()) {
                    return Err(ctx.invalid(
                        Some(i.span()),
                        format!(
                            "link.interface: not a valid interface name (1-15 characters, no '/', ':' or spaces): {:?}",
                            i.get_ref()
                        ),
                    ));
                }
                (LinkBind::Interface(i.get_ref().clone()), i.span())
            }
            (None, Some(b)) => {
                let ip: IpAddr = b.get_ref().parse().map_err(|_| {
                    ctx.invalid(
                        Some(b.span()),
                        format!(
                            "link.bind: expected a local IP address (no port), got {:?}",
                            b.get_ref()
                        ),
                    )
                })?;
                if ip.is_unspecified() || ip.is_multicast() {
                    return Err(ctx.invalid(
                        Some(b.span()),
                        format!("link.bind: must be a local unicast address, got {ip}"),
                    ));
                }
                (LinkBind::Address(ip), b.span())
            }
        };
        for (prev, (prev_name, prev_bind)) in links.iter().zip(&seen) {
            if prev.name == name {
                return Err(ctx.invalid(
                    Some(l.name.span()),
                    format!(
                        "link.name: duplicate link name {name:?} (first defined on line {})",
                        line_of(ctx.text, prev_name.start)
                    ),
                ));
            }
            if prev.bind == bind {
                let what = match &bind {
                    LinkBind::Interface(i) => format!("link.interface: interface {i:?}"),
                    LinkBind::Address(a) => format!("link.bind: address {a}"),
                };
                return Err(ctx.invalid(
                    Some(bind_span),
                    format!(
                        "{what} is already used by link {:?} (line {}); each link needs its own path",
                        prev.name,
                        line_of(ctx.text, prev_bind.start)
                    ),
                ));
            }
        }
        seen.push((l.name.span(), bind_span));
        let data_cap_bytes = l
            .data_cap_mb
            .as_ref()
            .map(|v| ctx.int_in_range("link.data_cap_mb", v, &(1..=100_000_000)))
            .transpose()?
            .map(|mb| mb as u64 * 1_000_000);
        links.push(LinkConfig {
            name,
            bind,
            enabled: l.enabled.unwrap_or(true),
            data_cap_bytes,
        });
    }
    Ok(links)
}

/// Validates `relay.toml` text. `path_for_messages` is used in error messages
/// and its directory to resolve relative paths.
pub fn parse_relay(text: &str, path_for_messages: &Path) -> Result<RelayConfig, ConfigError> {
    let ctx = Ctx::new(path_for_messages, text);
    let raw: RawRelayFile = toml::from_str(text).map_err(|e| ctx.syntax(e, &["relay"]))?;

    let listen = ctx.socket_addr("relay.listen", &raw.relay.listen)?;
    let cert = ctx.file_path("relay.cert", &raw.relay.cert)?;
    let key = ctx.file_path("relay.key", &raw.relay.key)?;
    let latency = ctx.latency("relay.latency_ms", raw.relay.latency_ms.as_ref())?;
    let stats_listen = match raw.stats.as_ref().and_then(|s| s.listen.as_ref()) {
        None => DEFAULT_RELAY_STATS_LISTEN,
        Some(l) => ctx.socket_addr("stats.listen", l)?,
    };

    let mut devices: Vec<DeviceEntry> = Vec::with_capacity(raw.device.len());
    // (id span, fingerprint span) of accepted devices.
    let mut seen: Vec<(Range<usize>, Range<usize>)> = Vec::with_capacity(raw.device.len());
    // SRT listener addresses of every device so far, with the line of each.
    let mut listeners: Vec<(SocketAddr, usize)> = Vec::new();
    for item in &raw.device {
        let d = item.get_ref();
        let id = ctx.name("device.id", &d.id)?;
        let fingerprint = parse_fingerprint(d.fingerprint.get_ref()).map_err(|e| {
            ctx.invalid(
                Some(d.fingerprint.span()),
                format!("device.fingerprint: {e}"),
            )
        })?;
        for (prev, (prev_id, prev_fp)) in devices.iter().zip(&seen) {
            if prev.id == id {
                return Err(ctx.invalid(
                    Some(d.id.span()),
                    format!(
                        "device.id: duplicate device id {id:?} (first defined on line {})",
                        line_of(ctx.text, prev_id.start)
                    ),
                ));
            }
            if prev.fingerprint == fingerprint {
                return Err(ctx.invalid(
                    Some(d.fingerprint.span()),
                    format!(
                        "device.fingerprint: device {id:?} has the same fingerprint as device {:?} (line {})",
                        prev.id,
                        line_of(ctx.text, prev_fp.start)
                    ),
                ));
            }
        }
        let device_latency = match &d.latency_ms {
            None => latency,
            Some(v) => ctx.latency("device.latency_ms", Some(v))?,
        };
        if d.output.is_empty() {
            return Err(ctx.invalid(
                Some(item.span()),
                format!("device {id:?}: at least one [[device.output]] is required"),
            ));
        }
        let mut outputs = Vec::with_capacity(d.output.len());
        // Recording directories of this device, with the line of each.
        let mut dirs: Vec<(PathBuf, usize)> = Vec::new();
        for o in &d.output {
            let out = relay_output(&ctx, o)?;
            let line = line_of(ctx.text, o.span().start);
            match &out {
                OutputConfig::Srt(c) if c.mode == SrtMode::Listener => {
                    let a = o.get_ref().address.as_ref().expect("srt has an address");
                    let sa =
                        SocketAddr::new(c.address.ip().expect("listener is an IP"), c.address.port);
                    if let Some((_, prev)) = listeners.iter().find(|(p, _)| {
                        p.port() == sa.port()
                            && (p.ip() == sa.ip()
                                || p.ip().is_unspecified()
                                || sa.ip().is_unspecified())
                    }) {
                        return Err(ctx.invalid(
                            Some(a.span()),
                            format!(
                                "device.output.address: SRT listener {sa} clashes with the SRT listener of the output on line {prev}"
                            ),
                        ));
                    }
                    listeners.push((sa, line));
                }
                OutputConfig::File(c) => {
                    if let Some((_, prev)) = dirs.iter().find(|(p, _)| *p == c.dir) {
                        let dspan = o.get_ref().dir.as_ref().expect("file has a dir").span();
                        return Err(ctx.invalid(
                            Some(dspan),
                            format!(
                                "device.output.dir: device {id:?} already records into this directory (output on line {prev}); its segments would prune each other"
                            ),
                        ));
                    }
                    dirs.push((c.dir.clone(), line));
                }
                _ => {}
            }
            outputs.push(out);
        }
        seen.push((d.id.span(), d.fingerprint.span()));
        devices.push(DeviceEntry {
            id,
            fingerprint,
            latency: device_latency,
            outputs,
        });
    }

    Ok(RelayConfig {
        listen,
        cert,
        key,
        latency,
        stats_listen,
        devices,
    })
}

/// Validates one `[[device.output]]`: the keys its kind needs are present, no
/// key of another kind is given, every value is in range.
fn relay_output(ctx: &Ctx, raw: &Spanned<RawOutput>) -> Result<OutputConfig, ConfigError> {
    let o = raw.get_ref();
    let kind = o.kind;
    // (key, span if given, kinds it applies to)
    type KeyUse<'k> = (&'k str, Option<Range<usize>>, &'k [RawOutputKind]);
    let keys: [KeyUse; 10] = [
        (
            "address",
            o.address.as_ref().map(|v| v.span()),
            &[RawOutputKind::Udp, RawOutputKind::Srt],
        ),
        (
            "mode",
            o.mode.as_ref().map(|v| v.span()),
            &[RawOutputKind::Srt],
        ),
        (
            "passphrase",
            o.passphrase.as_ref().map(|v| v.span()),
            &[RawOutputKind::Srt],
        ),
        (
            "pbkeylen",
            o.pbkeylen.as_ref().map(|v| v.span()),
            &[RawOutputKind::Srt],
        ),
        (
            "latency_ms",
            o.latency_ms.as_ref().map(|v| v.span()),
            &[RawOutputKind::Srt],
        ),
        (
            "streamid",
            o.streamid.as_ref().map(|v| v.span()),
            &[RawOutputKind::Srt],
        ),
        (
            "url",
            o.url.as_ref().map(|v| v.span()),
            &[RawOutputKind::Rtmp],
        ),
        (
            "dir",
            o.dir.as_ref().map(|v| v.span()),
            &[RawOutputKind::File],
        ),
        (
            "segment_seconds",
            o.segment_seconds.as_ref().map(|v| v.span()),
            &[RawOutputKind::File],
        ),
        (
            "keep",
            o.keep.as_ref().map(|v| v.span()),
            &[RawOutputKind::File],
        ),
    ];
    for (key, span, kinds) in &keys {
        if let Some(span) = span {
            if !kinds.contains(&kind) {
                let list: Vec<String> = kinds
                    .iter()
                    .map(|k| format!("\"{}\"", k.as_str()))
                    .collect();
                return Err(ctx.invalid(
                    Some(span.clone()),
                    format!(
                        "device.output.{key}: only applies to kind = {} (this output is kind = \"{}\")",
                        list.join(" / "),
                        kind.as_str()
                    ),
                ));
            }
        }
    }
    let required = |key: &str, present: bool| {
        if present {
            Ok(())
        } else {
            Err(ctx.invalid(
                Some(raw.span()),
                format!(
                    "missing field `{key}` in [[device.output]] (needed by kind = \"{}\")",
                    kind.as_str()
                ),
            ))
        }
    };
    match kind {
        RawOutputKind::Udp => {
            required("address", o.address.is_some())?;
            let address = o.address.as_ref().expect("checked");
            Ok(OutputConfig::Udp {
                address: ctx.socket_addr("device.output.address", address)?,
            })
        }
        RawOutputKind::Srt => {
            required("mode", o.mode.is_some())?;
            required("address", o.address.is_some())?;
            let mode = match *o.mode.as_ref().expect("checked").get_ref() {
                RawSrtMode::Listener => SrtMode::Listener,
                RawSrtMode::Caller => SrtMode::Caller,
            };
            let a = o.address.as_ref().expect("checked");
            let address: RelayAddress = match mode {
                // A listener binds: an IP literal (0.0.0.0 for every interface).
                SrtMode::Listener => {
                    let sa = ctx.socket_addr("device.output.address", a)?;
                    if sa.port() == 0 {
                        return Err(ctx.invalid(
                            Some(a.span()),
                            "device.output.address: an SRT listener needs a fixed port (not 0)",
                        ));
                    }
                    RelayAddress {
                        host: sa.ip().to_string(),
                        port: sa.port(),
                    }
                }
                SrtMode::Caller => a.get_ref().parse().map_err(|e| {
                    ctx.invalid(Some(a.span()), format!("device.output.address: {e}"))
                })?,
            };
            let passphrase = match &o.passphrase {
                None => None,
                Some(p) => {
                    let n = p.get_ref().chars().count();
                    if !SRT_PASSPHRASE_LEN.contains(&n) {
                        return Err(ctx.invalid(
                            Some(p.span()),
                            format!(
                                "device.output.passphrase: SRT needs {} to {} characters, got {n}",
                                SRT_PASSPHRASE_LEN.start(),
                                SRT_PASSPHRASE_LEN.end()
                            ),
                        ));
                    }
                    if p.get_ref().chars().any(|c| c.is_control()) {
                        return Err(ctx.invalid(
                            Some(p.span()),
                            "device.output.passphrase: must not contain control characters",
                        ));
                    }
                    Some(p.get_ref().clone())
                }
            };
            let pbkeylen = match &o.pbkeylen {
                None => None,
                Some(k) => {
                    if passphrase.is_none() {
                        return Err(ctx.invalid(
                            Some(k.span()),
                            "device.output.pbkeylen: only applies with a passphrase",
                        ));
                    }
                    match *k.get_ref() {
                        v @ (16 | 24 | 32) => Some(v as u8),
                        v => {
                            return Err(ctx.invalid(
                                Some(k.span()),
                                format!("device.output.pbkeylen: must be 16, 24 or 32, got {v}"),
                            ))
                        }
                    }
                }
            };
            let latency = match &o.latency_ms {
                None => DEFAULT_SRT_LATENCY,
                Some(v) => Duration::from_millis(ctx.int_in_range(
                    "device.output.latency_ms",
                    v,
                    &SRT_LATENCY_MS_RANGE,
                )? as u64),
            };
            let streamid = match &o.streamid {
                None => None,
                Some(s) => {
                    let v = s.get_ref();
                    if v.is_empty()
                        || v.len() > SRT_STREAMID_MAX
                        || v.chars().any(|c| c.is_control())
                    {
                        return Err(ctx.invalid(
                            Some(s.span()),
                            format!(
                                "device.output.streamid: must be 1 to {SRT_STREAMID_MAX} bytes without control characters"
                            ),
                        ));
                    }
                    Some(v.clone())
                }
            };
            Ok(OutputConfig::Srt(SrtOutputConfig {
                mode,
                address,
                passphrase,
                pbkeylen,
                latency,
                streamid,
            }))
        }
        RawOutputKind::Rtmp => {
            required("url", o.url.is_some())?;
            let u = o.url.as_ref().expect("checked");
            check_rtmp_url(u.get_ref())
                .map_err(|e| ctx.invalid(Some(u.span()), format!("device.output.url: {e}")))?;
            Ok(OutputConfig::Rtmp(RtmpOutputConfig {
                url: u.get_ref().clone(),
            }))
        }
        RawOutputKind::File => {
            required("dir", o.dir.is_some())?;
            let dir = ctx.file_path("device.output.dir", o.dir.as_ref().expect("checked"))?;
            let segment = match &o.segment_seconds {
                None => DEFAULT_SEGMENT_SECONDS,
                Some(v) => {
                    ctx.int_in_range("device.output.segment_seconds", v, &SEGMENT_SECONDS_RANGE)?
                }
            };
            let keep = match &o.keep {
                None => DEFAULT_KEEP_SEGMENTS,
                Some(v) => ctx.int_in_range("device.output.keep", v, &KEEP_SEGMENTS_RANGE)?,
            };
            Ok(OutputConfig::File(FileOutputConfig {
                dir,
                segment: Duration::from_secs(segment as u64),
                keep: keep as usize,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FP_A: &str = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    const FP_B: &str = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

    const EDGE: &str = r#"[device]
id = "cam1"
cert = "device.crt"
key = "/abs/device.key"

[relay]
address = "relay.example.net:7000"
fingerprint = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
latency_ms = 500

[input]
kind = "udp"

[[link]]
name = "modem0"
interface = "wwan0"

[[link]]
name = "modem1"
bind = "192.0.2.10"
"#;

    const RELAY: &str = r#"[relay]
listen = "0.0.0.0:7000"
cert = "relay.crt"
key = "relay.key"

[[device]]
id = "cam1"
fingerprint = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
[[device.output]]
kind = "udp"
address = "127.0.0.1:6000"

[[device]]
id = "cam2"
fingerprint = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
latency_ms = 900
[[device.output]]
kind = "udp"
address = "127.0.0.1:6010"
"#;

    /// `text` with `from` replaced by `to`; panics if `from` is not there exactly once.
    fn edit(text: &str, from: &str, to: &str) -> String {
        assert_eq!(text.matches(from).count(), 1, "{from:?} must occur once");
        text.replacen(from, to, 1)
    }

    /// 1-based line of the `nth` (0-based) line equal to `line` after trimming.
    fn line_no(text: &str, line: &str, nth: usize) -> usize {
        text.lines()
            .enumerate()
            .filter(|(_, l)| l.trim() == line)
            .nth(nth)
            .unwrap_or_else(|| panic!("line {line:?} #{nth} not in text"))
            .0
            + 1
    }

    fn edge_err(text: &str) -> ConfigError {
        parse_edge(text, Path::new("edge.toml")).expect_err("expected an error")
    }

    fn relay_err(text: &str) -> ConfigError {
        parse_relay(text, Path::new("relay.toml")).expect_err("expected an error")
    }

    fn example(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(name)
    }

    #[test]
    fn example_edge_parses() {
        let c = load_edge(&example("edge.toml")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.device.id, "cam1");
        assert_eq!(c.device.cert, PathBuf::from("/etc/braid/device.crt"));
        assert_eq!(c.relay.address.to_string(), "127.0.0.1:7000");
        assert_eq!(c.relay.server_name, "braid-relay");
        assert_eq!(
            c.relay.trust,
            RelayTrust::Pinned(parse_fingerprint(FP_A).unwrap())
        );
        assert_eq!(c.relay.latency, Duration::from_millis(500));
        assert_eq!(
            c.input,
            InputConfig::Udp {
                listen: "127.0.0.1:5000".parse().unwrap()
            }
        );
        let names: Vec<&str> = c.links.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["modem0", "modem1", "lo-test"]);
        assert_eq!(c.links[0].bind, LinkBind::Interface("wwan0".into()));
        assert_eq!(
            c.links[2].bind,
            LinkBind::Address("127.0.0.11".parse().unwrap())
        );
        assert!(c.links[0].enabled && c.links[1].enabled && !c.links[2].enabled);
        assert_eq!(c.stats_listen, Some("127.0.0.1:8081".parse().unwrap()));
        assert_eq!(c.scheduler.duplicate_budget, 0.02);
        // The example spells out the defaults.
        assert_eq!(c.video, VideoConfig::default());
        assert_eq!(c.audio, AudioConfig::default());
        let web = c.web.expect("the example has a [web] table");
        assert_eq!(web.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(
            web.password_file,
            PathBuf::from("/var/lib/braid/web-password")
        );
        assert_eq!(web.tls, None);
        assert_eq!(web.session_idle, Duration::from_secs(720 * 60));
        assert_eq!(web.reboot_command, DEFAULT_REBOOT_COMMAND);
        assert_eq!(web.log_unit, DEFAULT_LOG_UNIT);
    }

    #[test]
    fn example_relay_parses() {
        let c = load_relay(&example("relay.toml")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.listen, "0.0.0.0:7000".parse().unwrap());
        assert_eq!(c.cert, PathBuf::from("/etc/braid/relay.crt"));
        assert_eq!(c.latency, Duration::from_millis(500));
        assert_eq!(c.stats_listen, "127.0.0.1:9091".parse().unwrap());
        assert_eq!(c.devices.len(), 2);
        assert_eq!(c.devices[0].id, "cam1");
        assert_eq!(c.devices[0].fingerprint, parse_fingerprint(FP_B).unwrap());
        assert_eq!(c.devices[0].latency, Duration::from_millis(800));
        assert_eq!(
            c.devices[0].outputs[..2],
            [
                OutputConfig::Udp {
                    address: "127.0.0.1:6000".parse().unwrap()
                },
                OutputConfig::Udp {
                    address: "127.0.0.1:6002".parse().unwrap()
                }
            ]
        );
        let kinds: Vec<&str> = c.devices[0].outputs.iter().map(|o| o.kind()).collect();
        assert_eq!(kinds, ["udp", "udp", "srt", "rtmp", "file"]);
        assert_eq!(c.devices[1].latency, Duration::from_millis(500));
        assert_eq!(c.devices[1].outputs.len(), 1);
    }

    #[test]
    fn base_texts_parse_with_defaults_and_resolved_paths() {
        let c = parse_edge(EDGE, Path::new("/etc/braid/edge.toml")).unwrap();
        assert_eq!(c.device.cert, PathBuf::from("/etc/braid/device.crt"));
        assert_eq!(c.device.key, PathBuf::from("/abs/device.key"));
        assert_eq!(
            c.relay.address,
            RelayAddress {
                host: "relay.example.net".into(),
                port: 7000
            }
        );
        assert_eq!(c.relay.server_name, DEFAULT_SERVER_NAME);
        assert_eq!(
            c.input,
            InputConfig::Udp {
                listen: DEFAULT_INPUT_LISTEN
            }
        );
        assert_eq!(c.stats_listen, Some(DEFAULT_EDGE_STATS_LISTEN));
        assert_eq!(c.scheduler.duplicate_budget, DEFAULT_DUPLICATE_BUDGET);
        assert!(c.links.iter().all(|l| l.enabled));

        let r = parse_relay(RELAY, Path::new("conf/relay.toml")).unwrap();
        assert_eq!(r.cert, PathBuf::from("conf/relay.crt"));
        assert_eq!(r.latency, DEFAULT_LATENCY);
        assert_eq!(r.stats_listen, DEFAULT_RELAY_STATS_LISTEN);
        assert_eq!(r.devices[0].latency, DEFAULT_LATENCY);
        assert_eq!(r.devices[1].latency, Duration::from_millis(900));
        let fp = parse_fingerprint(FP_B).unwrap();
        assert_eq!(
            r.device_by_fingerprint(&fp).map(|d| d.id.as_str()),
            Some("cam2")
        );
    }

    #[test]
    fn minimal_edge_uses_defaults() {
        let text = edit(EDGE, "[input]\nkind = \"udp\"\n", "");
        let text = edit(&text, "latency_ms = 500\n", "");
        let c = parse_edge(&text, Path::new("edge.toml")).unwrap();
        assert_eq!(
            c.input,
            InputConfig::Test {
                rate_bps: 5_000_000
            }
        );
        assert_eq!(c.relay.latency, Duration::from_millis(500));

        let text = edit(EDGE, "kind = \"udp\"", "kind = \"test\"\nrate_kbps = 100");
        let c = parse_edge(&text, Path::new("edge.toml")).unwrap();
        assert_eq!(c.input, InputConfig::Test { rate_bps: 100_000 });

        let text = format!("{EDGE}\n[scheduler]\nduplicate_budget = 0\n");
        let c = parse_edge(&text, Path::new("edge.toml")).unwrap();
        assert_eq!(c.scheduler.duplicate_budget, 0.0);

        let text = format!("{EDGE}\n[stats]\nenabled = false\n");
        assert_eq!(
            parse_edge(&text, Path::new("edge.toml"))
                .unwrap()
                .stats_listen,
            None
        );
        let text = format!("{EDGE}\n[stats]\nlisten = \"[::1]:9000\"\n");
        assert_eq!(
            parse_edge(&text, Path::new("edge.toml"))
                .unwrap()
                .stats_listen,
            Some("[::1]:9000".parse().unwrap())
        );
    }

    #[test]
    fn unknown_key_points_at_its_line() {
        let text = edit(EDGE, "id = \"cam1\"\n", "id = \"cam1\"\nbnid = \"x\"\n");
        let e = edge_err(&text);
        assert!(matches!(e, ConfigError::Syntax { .. }), "{e:?}");
        assert_eq!(e.line(), Some(3));
        assert_eq!(e.line(), Some(line_no(&text, "bnid = \"x\"", 0)));
        assert!(
            e.to_string().starts_with(
                "edge.toml:3: unknown field `bnid`, expected one of `id`, `cert`, `key`"
            ),
            "{e}"
        );
    }

    #[test]
    fn unknown_table_points_at_its_line() {
        let text = format!("{EDGE}\n[schedular]\nduplicate_budget = 0.1\n");
        let e = edge_err(&text);
        assert_eq!(e.line(), Some(line_no(&text, "[schedular]", 0)));
        assert!(e.reason().contains("unknown field `schedular`"), "{e}");
    }

    #[test]
    fn bad_latency_gives_line_and_reason() {
        let text = edit(EDGE, "latency_ms = 500", "latency_ms = 20");
        let e = edge_err(&text);
        assert!(matches!(e, ConfigError::Invalid { .. }), "{e:?}");
        assert_eq!(e.line(), Some(9));
        assert_eq!(
            e.to_string(),
            "edge.toml:9: relay.latency_ms: must be between 50 and 10000, got 20"
        );

        let text = edit(RELAY, "latency_ms = 900", "latency_ms = 10001");
        let e = relay_err(&text);
        assert_eq!(e.line(), Some(line_no(&text, "latency_ms = 10001", 0)));
        assert_eq!(
            e.reason(),
            "device.latency_ms: must be between 50 and 10000, got 10001"
        );
    }

    #[test]
    fn wrong_type_gives_line() {
        let text = edit(EDGE, "latency_ms = 500", "latency_ms = \"fast\"");
        let e = edge_err(&text);
        assert_eq!(e.line(), Some(9));
        assert!(e.reason().contains("invalid type: string \"fast\""), "{e}");

        let text = edit(RELAY, "cert = \"relay.crt\"", "cert = 5");
        let e = relay_err(&text);
        assert_eq!(e.line(), Some(3));
        assert!(e.reason().contains("invalid type: integer `5`"), "{e}");
    }

    #[test]
    fn syntax_error_gives_line() {
        let text = edit(EDGE, "name = \"modem1\"", "name = modem1");
        let e = edge_err(&text);
        assert_eq!(e.line(), Some(line_no(&text, "name = modem1", 0)));
    }

    #[test]
    fn missing_required_field_points_at_table() {
        let text = edit(EDGE, "key = \"/abs/device.key\"\n", "");
        let e = edge_err(&text);
        assert_eq!(e.line(), Some(1));
        assert_eq!(
            e.to_string(),
            "edge.toml:1: missing field `key` in [device]"
        );

        let text = edit(RELAY, "address = \"127.0.0.1:6010\"\n", "");
        let e = relay_err(&text);
        assert_eq!(e.line(), Some(line_no(&text, "[[device.output]]", 1)));
        assert!(e.reason().starts_with("missing field `address`"), "{e}");
    }

    #[test]
    fn missing_required_table() {
        let start = EDGE.find("[relay]").unwrap();
        let end = EDGE.find("[input]").unwrap();
        let text = format!("{}{}", &EDGE[..start], &EDGE[end..]);
        let e = edge_err(&text);
        assert_eq!(e.line(), None, "{e}");
        assert_eq!(e.to_string(), "edge.toml: missing field `relay`");
    }

    #[test]
    fn interface_and_bind_is_an_error_at_that_link() {
        let text = edit(
            EDGE,
            "name = \"modem1\"\n",
            "name = \"modem1\"\ninterface = \"wwan1\"\n",
        );
        let e = edge_err(&text);
        assert_eq!(e.line(), Some(line_no(&text, "bind = \"192.0.2.10\"", 0)));
        assert_eq!(
            e.reason(),
            "link \"modem1\": give exactly one of interface / bind, not both"
        );
    }

    #[test]
    fn neither_interface_nor_bind_points_at_link_header() {
        let text = edit(EDGE, "bind = \"192.0.2.10\"\n", "");
        let e = edge_err(&text);
        assert_eq!(e.line(), Some(line_no(&text, "[[link]]", 1)));
        assert!(
            e.reason().contains("one of interface / bind is required"),
            "{e}"
        );
    }

    #[test]
    fn duplicate_link_names() {
        let text = edit(EDGE, "name = \"modem1\"", "name = \"modem0\"");
        let e = edge_err(&text);
        assert_eq!(e.line(), Some(line_no(&text, "name = \"modem0\"", 1)));
        assert_eq!(
            e.reason(),
            format!(
                "link.name: duplicate link name \"modem0\" (first defined on line {})",
                line_no(&text, "name = \"modem0\"", 0)
            )
        );
    }

    #[test]
    fn duplicate_link_path() {
        let text = edit(EDGE, "bind = \"192.0.2.10\"", "interface = \"wwan0\"");
        let e = edge_err(&text);
        assert_eq!(e.line(), Some(line_no(&text, "interface = \"wwan0\"", 1)));
        assert!(
            e.reason()
                .starts_with("link.interface: interface \"wwan0\" is already used"),
            "{e}"
        );
    }

    #[test]
    fn link_count_limits() {
        let start = EDGE.find("[[link]]").unwrap();
        let e = edge_err(&EDGE[..start]);
        assert_eq!(e.line(), None);
        assert_eq!(
            e.to_string(),
            "edge.toml: link: at least one [[link]] is required"
        );

        let mut text = EDGE[..start].to_string();
        for i in 0..=MAX_LINKS {
            text.push_str(&format!(
                "[[link]]\nname = \"l{i}\"\nbind = \"127.0.0.{}\"\n",
                i + 1
            ));
        }
        let e = edge_err(&text);
        assert_eq!(e.line(), Some(line_no(&text, "[[link]]", MAX_LINKS)));
        assert!(e.reason().contains("at most 8"), "{e}");
        text.truncate(text.rfind("[[link]]").unwrap());
        assert_eq!(
            parse_edge(&text, Path::new("e")).unwrap().links.len(),
            MAX_LINKS
        );
    }

    #[test]
    fn bad_values_point_at_their_line() {
        let cases: &[(&str, &str, &str)] = &[
            ("id = \"cam1\"", "id = \"cam 1\"", "device.id: must be 1 to 64 characters"),
            ("cert = \"device.crt\"", "cert = \"\"", "device.cert: must not be empty"),
            ("address = \"relay.example.net:7000\"", "address = \"relay.example.net\"", "relay.address: expected HOST:PORT"),
            ("address = \"relay.example.net:7000\"", "address = \"bad_host:7000\"", "relay.address: host must be"),
            ("address = \"relay.example.net:7000\"", "address = \"::1:7000\"", "relay.address: expected HOST:PORT with IPv6"),
            ("fingerprint = \"sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"", "fingerprint = \"sha256:9f86\"", "relay.fingerprint: expected sha256:"),
            ("kind = \"udp\"", "kind = \"udp\"\nlisten = \"localhost:5000\"", "input.listen: expected IP:PORT"),
            ("kind = \"udp\"", "kind = \"udp\"\nrate_kbps = 1000", "input.rate_kbps: only applies to kind = \"test\""),
            ("kind = \"udp\"", "kind = \"test\"\nrate_kbps = 99", "input.rate_kbps: must be between 100 and 100000, got 99"),
            ("kind = \"udp\"", "kind = \"tcp\"", "unknown variant `tcp`, expected one of `udp`, `test`, `v4l2`, `pattern`, `srt`"),
            ("kind = \"udp\"", "kind = \"v4l2\"\nlisten = \"127.0.0.1:5000\"", "input.listen: only applies to kind = \"udp\" or \"srt\""),
            ("kind = \"udp\"", "kind = \"udp\"\ndevice = \"/dev/video1\"", "input.device: only applies to kind = \"v4l2\""),
            ("kind = \"udp\"", "kind = \"srt\"\npattern = \"snow\"", "input.pattern: only applies to kind = \"pattern\""),
            ("kind = \"udp\"", "kind = \"pattern\"\npattern = \"plasma\"", "unknown variant `plasma`, expected one of `smpte`, `ball`, `snow`"),
            ("kind = \"udp\"", "kind = \"pattern\"\npassphrase = \"0123456789\"", "input.passphrase: only applies to kind = \"srt\""),
            ("kind = \"udp\"", "kind = \"srt\"\npassphrase = \"short\"", "input.passphrase: must be 10 to 79 characters, got 5"),
            ("kind = \"udp\"", "kind = \"v4l2\"\ndevice = \"\"", "input.device: must not be empty"),
            ("interface = \"wwan0\"", "interface = \"wwan0/x\"", "link.interface: not a valid interface name"),
            ("bind = \"192.0.2.10\"", "bind = \"192.0.2.10:5000\"", "link.bind: expected a local IP address"),
            ("bind = \"192.0.2.10\"", "bind = \"0.0.0.0\"", "link.bind: must be a local unicast address"),
        ];
        for (from, to, reason) in cases {
            let text = edit(EDGE, from, to);
            let e = edge_err(&text);
            let bad_line = to.lines().last().unwrap();
            assert_eq!(e.line(), Some(line_no(&text, bad_line, 0)), "{to}: {e}");
            assert!(e.reason().starts_with(reason), "{to}: got {e}");
        }
        let text = format!("{EDGE}[scheduler]\nduplicate_budget = 0.6\n");
        let e = edge_err(&text);
        assert_eq!(e.line(), Some(line_no(&text, "duplicate_budget = 0.6", 0)));
        assert_eq!(
            e.reason(),
            "scheduler.duplicate_budget: must be between 0 and 0.5, got 0.6"
        );
    }

    #[test]
    fn media_inputs_parse_with_defaults() {
        let input = |kind: &str| {
            parse_edge(
                &edit(EDGE, "kind = \"udp\"", kind),
                Path::new("/etc/braid/edge.toml"),
            )
            .unwrap_or_else(|e| panic!("{e}"))
            .input
        };
        assert_eq!(
            input("kind = \"v4l2\""),
            InputConfig::V4l2 {
                device: PathBuf::from("/dev/video0")
            }
        );
        assert_eq!(
            input("kind = \"v4l2\"\ndevice = \"/dev/video2\""),
            InputConfig::V4l2 {
                device: PathBuf::from("/dev/video2")
            }
        );
        assert_eq!(
            input("kind = \"pattern\""),
            InputConfig::Pattern {
                pattern: TestPattern::Smpte
            }
        );
        assert_eq!(
            input("kind = \"pattern\"\npattern = \"snow\""),
            InputConfig::Pattern {
                pattern: TestPattern::Snow
            }
        );
        assert_eq!(
            input("kind = \"srt\""),
            InputConfig::Srt {
                listen: DEFAULT_SRT_LISTEN,
                passphrase: None
            }
        );
        assert_eq!(
            input("kind = \"srt\"\nlisten = \"[::]:9001\"\npassphrase = \"0123456789\""),
            InputConfig::Srt {
                listen: "[::]:9001".parse().unwrap(),
                passphrase: Some("0123456789".into())
            }
        );
    }

    #[test]
    fn video_and_audio_defaults() {
        let c = parse_edge(EDGE, Path::new("edge.toml")).unwrap();
        assert_eq!(c.video, VideoConfig::default());
        assert_eq!(c.audio, AudioConfig::default());
        let v = &c.video;
        assert_eq!(v.encoder, EncoderChoice::Auto);
        assert_eq!((v.size.width, v.size.height, v.fps), (1280, 720, 30));
        assert_eq!(v.keyframe_interval, Duration::from_secs(1));
        assert_eq!((v.min_bps, v.max_bps), (500_000, 12_000_000));
        let ladder: Vec<String> = v.ladder.iter().map(|s| s.to_string()).collect();
        assert_eq!(ladder, ["1280x720", "960x540", "640x360"]);
        let a = &c.audio;
        assert!(a.enabled && a.noise_suppression && a.gain_control && a.limiter);
        assert_eq!(a.source, AudioSourceKind::Test);
        assert!(a.devices.is_empty());
        assert_eq!((a.codec, a.bitrate_bps), (AudioCodec::Aac, 128_000));

        let text = format!(
            "{EDGE}[video]\nencoder = \"x264enc\"\nwidth = 1920\nheight = 1080\nfps = 25\n\
             keyframe_interval_ms = 2000\nmin_kbps = 800\nmax_kbps = 8000\n\
             ladder = [\"1920x1080\", \"1280x720\", \"640x360\"]\n\
             [audio]\nsource = \"alsa\"\ndevices = [\"hw:1\", \"hw:2\"]\nnoise_suppression = false\n\
             gain_control = false\nlimiter = false\ncodec = \"opus\"\nbitrate_kbps = 64\n"
        );
        let c = parse_edge(&text, Path::new("edge.toml")).unwrap_or_else(|e| panic!("{e}"));
        let v = &c.video;
        assert_eq!(v.encoder, EncoderChoice::Named("x264enc".into()));
        assert_eq!(v.size.to_string(), "1920x1080");
        assert_eq!(v.fps, 25);
        assert_eq!(v.keyframe_interval, Duration::from_secs(2));
        assert_eq!((v.min_bps, v.max_bps), (800_000, 8_000_000));
        assert_eq!(v.ladder.len(), 3);
        assert_eq!(v.ladder[1].to_string(), "1280x720");
        let a = &c.audio;
        assert_eq!(a.source, AudioSourceKind::Alsa);
        assert_eq!(a.devices, ["hw:1", "hw:2"]);
        assert!(!a.noise_suppression && !a.gain_control && !a.limiter);
        assert_eq!((a.codec, a.bitrate_bps), (AudioCodec::Opus, 64_000));

        let text =
            format!("{EDGE}[audio]\nsource = \"alsa\"\n[video]\nwidth = 1920\nheight = 1080\n");
        let c = parse_edge(&text, Path::new("edge.toml")).unwrap();
        assert_eq!(c.audio.devices, [DEFAULT_ALSA_DEVICE]);
        let ladder: Vec<String> = c.video.ladder.iter().map(|s| s.to_string()).collect();
        assert_eq!(ladder, ["1920x1080", "1440x810", "960x540"]);
    }

    #[test]
    fn video_and_audio_errors_point_at_their_line() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "[video]\nwidth = 1281",
                "width = 1281",
                "video.width: must be even, got 1281",
            ),
            (
                "[video]\nheight = 32",
                "height = 32",
                "video.height: must be between 64 and 4320, got 32",
            ),
            (
                "[video]\nfps = 0",
                "fps = 0",
                "video.fps: must be between 1 and 120, got 0",
            ),
            (
                "[video]\nkeyframe_interval_ms = 50",
                "keyframe_interval_ms = 50",
                "video.keyframe_interval_ms: must be between 100 and 10000",
            ),
            (
                "[video]\nencoder = \"X 264\"",
                "encoder = \"X 264\"",
                "video.encoder: expected \"auto\" or a GStreamer element name",
            ),
            (
                "[video]\nmin_kbps = 3000\nmax_kbps = 2000",
                "max_kbps = 2000",
                "video.max_kbps: must not be below min_kbps (3000), got 2000",
            ),
            (
                "[video]\nmin_kbps = 20000",
                "min_kbps = 20000",
                "video.max_kbps: must not be below min_kbps (20000), got 12000",
            ),
            (
                "[video]\nladder = [\n\"1280x720\",\n\"1280x720p\",\n]",
                "\"1280x720p\",",
                "video.ladder: expected WIDTHxHEIGHT",
            ),
            (
                "[video]\nladder = [\n\"1920x1080\",\n]",
                "\"1920x1080\",",
                "video.ladder: 1920x1080 is larger than the video size 1280x720",
            ),
            (
                "[video]\nladder = [\n\"640x360\",\n\"960x540\",\n]",
                "\"960x540\",",
                "video.ladder: sizes must go from largest to smallest, 960x540 follows 640x360",
            ),
            (
                "[video]\nladder = [\n\"641x360\",\n]",
                "\"641x360\",",
                "video.ladder: width and height must be even",
            ),
            (
                "[video]\nladder = []",
                "ladder = []",
                "video.ladder: must list 1 to 8 picture sizes, got 0",
            ),
            (
                "[video]\nbitrate = 1",
                "bitrate = 1",
                "unknown field `bitrate`",
            ),
            (
                "[audio]\ndevices = [\"hw:1\"]",
                "devices = [\"hw:1\"]",
                "audio.devices: only applies to source = \"alsa\"",
            ),
            (
                "[audio]\nsource = \"alsa\"\ndevices = [\"a\", \"b\", \"c\"]",
                "devices = [\"a\", \"b\", \"c\"]",
                "audio.devices: must list 1 to 2 ALSA devices, got 3",
            ),
            (
                "[audio]\nsource = \"alsa\"\ndevices = [\n\"hw:1\",\n\"hw:1\",\n]",
                "\"hw:1\",",
                "audio.devices: device \"hw:1\" is listed twice",
            ),
            (
                "[audio]\nsource = \"pulse\"",
                "source = \"pulse\"",
                "unknown variant `pulse`, expected `test` or `alsa`",
            ),
            (
                "[audio]\ncodec = \"mp3\"",
                "codec = \"mp3\"",
                "unknown variant `mp3`, expected `aac` or `opus`",
            ),
            (
                "[audio]\nbitrate_kbps = 8",
                "bitrate_kbps = 8",
                "audio.bitrate_kbps: must be between 16 and 512, got 8",
            ),
            (
                "[audio]\nlimiter = \"yes\"",
                "limiter = \"yes\"",
                "invalid type: string \"yes\", expected a boolean",
            ),
        ];
        for (table, bad_line, reason) in cases {
            let text = format!("{EDGE}{table}\n");
            let e = edge_err(&text);
            // The duplicate-device case points at the second occurrence.
            let nth = usize::from(reason.contains("listed twice"));
            assert_eq!(
                e.line(),
                Some(line_no(&text, bad_line, nth)),
                "{table}: {e}"
            );
            assert!(e.reason().starts_with(reason), "{table}: got {e}");
        }
    }

    #[test]
    fn stream_modem_and_gpio_tables() {
        let ok = |t: &str| parse_edge(t, Path::new("edge.toml")).expect("valid");
        let c = ok(EDGE);
        assert!(c.autostart);
        assert_eq!(c.modem, crate::device::modem::ModemConfig::default());
        assert_eq!(c.gpio, crate::device::gpio::GpioConfig::default());
        let text = format!(
            "{EDGE}[stream]\nautostart = false\n[modem]\napn = \"internet\"\npoll_interval_ms = 2000\n\
             [gpio]\nled_green = 17\nbutton = 27\n"
        );
        let c = ok(&text);
        assert!(!c.autostart);
        assert_eq!(c.modem.apn.as_deref(), Some("internet"));
        assert_eq!(c.modem.poll_interval, Duration::from_secs(2));
        assert_eq!((c.gpio.led_green, c.gpio.button), (Some(17), Some(27)));
        let cases: &[(&str, &str, &str)] = &[
            (
                "[modem]\npoll_interval_ms = 0",
                "poll_interval_ms = 0",
                "must be 1..=3600000 ms",
            ),
            ("[modem]\nband = 3", "band = 3", "unknown field `band`"),
            ("[stream]\nautostart = 1", "autostart = 1", "invalid type"),
            (
                "[gpio]\nled_red = 17\nbutton = 17",
                "[gpio]",
                "gpio.button = 17: already used by gpio.led_red",
            ),
        ];
        for (table, bad_line, reason) in cases {
            let text = format!("{EDGE}{table}\n");
            let e = edge_err(&text);
            assert_eq!(e.line(), Some(line_no(&text, bad_line, 0)), "{table}: {e}");
            assert!(e.reason().contains(reason), "{table}: got {e}");
        }
    }

    #[test]
    fn trust_needs_exactly_one_of_fingerprint_and_ca() {
        let text = edit(EDGE, "latency_ms = 500", "ca = \"ca.pem\"");
        let e = edge_err(&text);
        assert_eq!(e.line(), Some(line_no(&text, "ca = \"ca.pem\"", 0)));
        assert!(
            e.reason().contains("exactly one of fingerprint / ca"),
            "{e}"
        );

        let text = edit(
            EDGE,
            &format!("fingerprint = \"{FP_A}\"\n"),
            "ca = \"ca.pem\"\n",
        );
        let c = parse_edge(&text, Path::new("/x/edge.toml")).unwrap();
        assert_eq!(c.relay.trust, RelayTrust::Ca(PathBuf::from("/x/ca.pem")));

        let text = edit(EDGE, &format!("fingerprint = \"{FP_A}\"\n"), "");
        let e = edge_err(&text);
        assert_eq!(e.line(), Some(line_no(&text, "[relay]", 0)));
        assert!(e.reason().contains("one of fingerprint"), "{e}");
    }

    #[test]
    fn duplicate_device_fingerprint() {
        // Same fingerprint, written differently: compared as bytes.
        let upper_colons = parse_fingerprint(FP_A)
            .unwrap()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        let text = edit(RELAY, FP_B, &upper_colons);
        let e = relay_err(&text);
        assert_eq!(
            e.line(),
            Some(line_no(
                &text,
                &format!("fingerprint = \"{upper_colons}\""),
                0
            ))
        );
        assert_eq!(
            e.reason(),
            "device.fingerprint: device \"cam2\" has the same fingerprint as device \"cam1\" (line 8)"
        );
    }

    #[test]
    fn duplicate_device_id() {
        let text = edit(RELAY, "id = \"cam2\"", "id = \"cam1\"");
        let e = relay_err(&text);
        assert_eq!(e.line(), Some(line_no(&text, "id = \"cam1\"", 1)));
        assert!(
            e.reason()
                .starts_with("device.id: duplicate device id \"cam1\""),
            "{e}"
        );
    }

    #[test]
    fn relay_bad_values() {
        let text = edit(
            RELAY,
            "kind = \"udp\"\naddress = \"127.0.0.1:6010\"",
            "kind = \"hls\"\naddress = \"127.0.0.1:6010\"",
        );
        let e = relay_err(&text);
        assert_eq!(e.line(), Some(line_no(&text, "kind = \"hls\"", 0)));
        assert!(e.reason().contains("unknown variant `hls`"), "{e}");

        let text = edit(RELAY, "listen = \"0.0.0.0:7000\"", "listen = \"0.0.0.0\"");
        let e = relay_err(&text);
        assert_eq!(e.line(), Some(2));
        assert!(
            e.reason().starts_with("relay.listen: expected IP:PORT"),
            "{e}"
        );

        let text = edit(
            RELAY,
            "[[device.output]]\nkind = \"udp\"\naddress = \"127.0.0.1:6010\"\n",
            "",
        );
        let e = relay_err(&text);
        assert_eq!(e.line(), Some(line_no(&text, "[[device]]", 1)));
        assert_eq!(
            e.reason(),
            "device \"cam2\": at least one [[device.output]] is required"
        );

        let text = format!("{RELAY}\n[stats]\nport = 1\n");
        let e = relay_err(&text);
        assert_eq!(e.line(), Some(line_no(&text, "port = 1", 0)));
    }

    /// `RELAY` with cam2's UDP output replaced by `output` (the lines after
    /// `[[device.output]]`).
    fn relay_with_output(output: &str) -> String {
        edit(
            RELAY,
            "[[device.output]]\nkind = \"udp\"\naddress = \"127.0.0.1:6010\"\n",
            &format!("[[device.output]]\n{output}"),
        )
    }

    #[test]
    fn srt_rtmp_file_outputs_parse() {
        let text = relay_with_output(
            "kind = \"srt\"\nmode = \"listener\"\naddress = \"0.0.0.0:9000\"\n\
             passphrase = \"0123456789\"\npbkeylen = 32\nlatency_ms = 200\nstreamid = \"cam2\"\n\
             [[device.output]]\nkind = \"srt\"\nmode = \"caller\"\naddress = \"srt.example.net:9001\"\n\
             [[device.output]]\nkind = \"rtmp\"\nurl = \"rtmps://live.example.net:443/app/secret-key\"\n\
             [[device.output]]\nkind = \"file\"\ndir = \"rec\"\n\
             [[device.output]]\nkind = \"file\"\ndir = \"/abs\"\nsegment_seconds = 5\nkeep = 3\n",
        );
        let c = parse_relay(&text, Path::new("/etc/braid/relay.toml"))
            .unwrap_or_else(|e| panic!("{e}"));
        let o = &c.devices[1].outputs;
        assert_eq!(o.len(), 5);
        let OutputConfig::Srt(s) = &o[0] else {
            panic!("{o:?}")
        };
        assert_eq!(s.mode, SrtMode::Listener);
        assert_eq!(s.address.to_string(), "0.0.0.0:9000");
        assert_eq!(s.passphrase.as_deref(), Some("0123456789"));
        assert_eq!(s.pbkeylen, Some(32));
        assert_eq!(s.latency, Duration::from_millis(200));
        assert_eq!(s.streamid.as_deref(), Some("cam2"));
        let OutputConfig::Srt(s) = &o[1] else {
            panic!("{o:?}")
        };
        assert_eq!(s.mode, SrtMode::Caller);
        assert_eq!(
            (s.address.host.as_str(), s.address.port),
            ("srt.example.net", 9001)
        );
        assert_eq!((s.passphrase.as_ref(), s.pbkeylen), (None, None));
        assert_eq!(s.latency, DEFAULT_SRT_LATENCY);
        let OutputConfig::Rtmp(r) = &o[2] else {
            panic!("{o:?}")
        };
        assert_eq!(r.url, "rtmps://live.example.net:443/app/secret-key");
        assert_eq!(
            o[3],
            OutputConfig::File(FileOutputConfig {
                dir: PathBuf::from("/etc/braid/rec"),
                segment: Duration::from_secs(600),
                keep: 24,
            })
        );
        assert_eq!(
            o[4],
            OutputConfig::File(FileOutputConfig {
                dir: PathBuf::from("/abs"),
                segment: Duration::from_secs(5),
                keep: 3,
            })
        );
        // Secrets stay out of logs.
        let shown = format!("{o:?} {} {}", o[0].describe(), o[2].describe());
        assert!(!shown.contains("0123456789"), "{shown}");
        assert!(!shown.contains("secret-key"), "{shown}");
        assert_eq!(o[2].describe(), "rtmps://live.example.net:443/app/***");
        assert_eq!(
            o[0].describe(),
            "srt://0.0.0.0:9000?mode=listener (encrypted)"
        );
    }

    #[test]
    fn bad_outputs_point_at_their_line() {
        let srt = "kind = \"srt\"\nmode = \"listener\"\naddress = \"127.0.0.1:9000\"\n";
        let cases: &[(String, &str, &str)] = &[
            (format!("{srt}passphrase = \"short\"\n"), "passphrase = \"short\"", "device.output.passphrase: SRT needs 10 to 79 characters, got 5"),
            (format!("{srt}passphrase = \"{}\"\n", "x".repeat(80)), &format!("passphrase = \"{}\"", "x".repeat(80)), "device.output.passphrase: SRT needs 10 to 79 characters, got 80"),
            (format!("{srt}passphrase = \"0123456789\"\npbkeylen = 20\n"), "pbkeylen = 20", "device.output.pbkeylen: must be 16, 24 or 32, got 20"),
            (format!("{srt}pbkeylen = 16\n"), "pbkeylen = 16", "device.output.pbkeylen: only applies with a passphrase"),
            (format!("{srt}latency_ms = 5\n"), "latency_ms = 5", "device.output.latency_ms: must be between 20 and 8000, got 5"),
            ("kind = \"srt\"\nmode = \"rendezvous\"\naddress = \"127.0.0.1:9000\"\n".into(), "mode = \"rendezvous\"", "unknown variant `rendezvous`, expected `listener` or `caller`"),
            ("kind = \"srt\"\nmode = \"listener\"\naddress = \"srt.example.net:9000\"\n".into(), "address = \"srt.example.net:9000\"", "device.output.address: expected IP:PORT"),
            ("kind = \"srt\"\nmode = \"caller\"\naddress = \"srt.example.net\"\n".into(), "address = \"srt.example.net\"", "device.output.address: expected HOST:PORT"),
            ("kind = \"rtmp\"\nurl = \"http://example.net/app/key\"\n".into(), "url = \"http://example.net/app/key\"", "device.output.url: scheme must be rtmp or rtmps"),
            ("kind = \"rtmp\"\nurl = \"rtmp://example.net/app\"\n".into(), "url = \"rtmp://example.net/app\"", "device.output.url: expected rtmp://HOST[:PORT]/APP/STREAM: the path needs"),
            ("kind = \"rtmp\"\nurl = \"rtmp://bad_host:1935/app/key\"\n".into(), "url = \"rtmp://bad_host:1935/app/key\"", "device.output.url: expected rtmp://HOST[:PORT]/APP/STREAM, the host part"),
            ("kind = \"rtmp\"\nurl = \"rtmp://example.net:0/app/key\"\n".into(), "url = \"rtmp://example.net:0/app/key\"", "device.output.url: expected rtmp://"),
            ("kind = \"rtmp\"\nurl = \"rtmp://example.net/app/key\"\naddress = \"127.0.0.1:1\"\n".into(), "address = \"127.0.0.1:1\"", "device.output.address: only applies to kind = \"udp\" / \"srt\""),
            ("kind = \"udp\"\naddress = \"127.0.0.1:1\"\npassphrase = \"0123456789\"\n".into(), "passphrase = \"0123456789\"", "device.output.passphrase: only applies to kind = \"srt\""),
            ("kind = \"file\"\ndir = \"\"\n".into(), "dir = \"\"", "device.output.dir: must not be empty"),
            ("kind = \"file\"\ndir = \"rec\"\nsegment_seconds = 0\n".into(), "segment_seconds = 0", "device.output.segment_seconds: must be between 1 and 86400, got 0"),
            ("kind = \"file\"\ndir = \"rec\"\nkeep = 0\n".into(), "keep = 0", "device.output.keep: must be between 1 and 100000, got 0"),
        ];
        for (output, bad_line, reason) in cases {
            let text = relay_with_output(output);
            let e = relay_err(&text);
            assert_eq!(e.line(), Some(line_no(&text, bad_line, 0)), "{output}: {e}");
            assert!(e.reason().starts_with(reason), "{output}: got {e}");
            assert!(
                !e.to_string().contains("0123456789"),
                "passphrase leaked: {e}"
            );
            assert!(!e.reason().contains("/key"), "stream key leaked: {e}");
        }
        // A missing key of the kind points at the table header.
        for (output, key) in [
            ("kind = \"srt\"\naddress = \"127.0.0.1:9000\"\n", "mode"),
            ("kind = \"srt\"\nmode = \"caller\"\n", "address"),
            ("kind = \"rtmp\"\n", "url"),
            ("kind = \"file\"\n", "dir"),
        ] {
            let text = relay_with_output(output);
            let e = relay_err(&text);
            assert_eq!(
                e.line(),
                Some(line_no(&text, "[[device.output]]", 1)),
                "{output}: {e}"
            );
            assert!(
                e.reason().starts_with(&format!("missing field `{key}`")),
                "{e}"
            );
        }
    }

    #[test]
    fn clashing_srt_listeners_and_recording_dirs() {
        let text = edit(
            RELAY,
            "kind = \"udp\"\naddress = \"127.0.0.1:6000\"",
            "kind = \"srt\"\nmode = \"listener\"\naddress = \"0.0.0.0:9000\"",
        );
        let two = relay_with_output(
            "kind = \"srt\"\nmode = \"listener\"\naddress = \"127.0.0.1:9000\"\n",
        );
        let text = format!(
            "{}{}",
            &text[..text.find("[[device]]\nid = \"cam2\"").unwrap()],
            &two[two.find("[[device]]\nid = \"cam2\"").unwrap()..]
        );
        let e = relay_err(&text);
        assert_eq!(
            e.line(),
            Some(line_no(&text, "address = \"127.0.0.1:9000\"", 0)),
            "{e}"
        );
        assert_eq!(
            e.reason(),
            format!(
                "device.output.address: SRT listener 127.0.0.1:9000 clashes with the SRT listener of the output on line {}",
                line_no(&text, "[[device.output]]", 0)
            )
        );
        // Another port, or a caller to the same port, is fine.
        let ok = text.replace(
            "address = \"127.0.0.1:9000\"",
            "address = \"127.0.0.1:9001\"",
        );
        assert!(parse_relay(&ok, Path::new("r")).is_ok());

        let text = relay_with_output(
            "kind = \"file\"\ndir = \"rec\"\n[[device.output]]\nkind = \"file\"\ndir = \"./rec/../rec\"\n[[device.output]]\nkind = \"file\"\ndir = \"rec\"\n",
        );
        let e = relay_err(&text);
        assert_eq!(e.line(), Some(line_no(&text, "dir = \"rec\"", 1)), "{e}");
        assert!(
            e.reason().starts_with(
                "device.output.dir: device \"cam2\" already records into this directory"
            ),
            "{e}"
        );
    }

    #[test]
    fn rtmp_url_redaction() {
        for (url, shown) in [
            ("rtmp://a.example/live/key123", "rtmp://a.example/live/***"),
            (
                "rtmps://a.example:443/live/key123?x=1",
                "rtmps://a.example:443/live/***",
            ),
            (
                "rtmp://user:pw@a.example/live/k",
                "rtmp://a.example/live/***",
            ),
            ("rtmp://a.example", "rtmp://a.example/***"),
            ("garbage", "***"),
        ] {
            assert_eq!(redact_rtmp_url(url), shown);
        }
    }

    #[test]
    fn missing_file_mentions_path() {
        let path = Path::new("/nonexistent-braid-dir/edge.toml");
        let e = load_edge(path).expect_err("no such file");
        assert!(matches!(e, ConfigError::Read { .. }), "{e:?}");
        assert_eq!(e.line(), None);
        assert_eq!(e.path(), path);
        assert_eq!(
            e.to_string(),
            "/nonexistent-braid-dir/edge.toml: cannot read: No such file or directory"
        );
        let e = load_relay(Path::new("/nonexistent-braid-dir/relay.toml")).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("/nonexistent-braid-dir/relay.toml: cannot read"));
    }

    #[test]
    fn relay_address_forms() {
        for (s, host, port, shown) in [
            (
                "relay.example.net:7000",
                "relay.example.net",
                7000,
                "relay.example.net:7000",
            ),
            ("10.0.0.1:443", "10.0.0.1", 443, "10.0.0.1:443"),
            (
                "[2001:db8::1]:7000",
                "2001:db8::1",
                7000,
                "[2001:db8::1]:7000",
            ),
            ("localhost:1", "localhost", 1, "localhost:1"),
        ] {
            let a: RelayAddress = s.parse().unwrap();
            assert_eq!((a.host.as_str(), a.port), (host, port));
            assert_eq!(a.to_string(), shown);
            assert_eq!(a.to_string().parse::<RelayAddress>().unwrap(), a);
        }
        assert_eq!(
            "[::1]:7".parse::<RelayAddress>().unwrap().ip(),
            Some("::1".parse().unwrap())
        );
        assert_eq!("a.b:7".parse::<RelayAddress>().unwrap().ip(), None);
        for bad in [
            "",
            "host",
            "host:0",
            "host:65536",
            ":7000",
            "a..b:1",
            "-a:1",
            "[::1:7000",
            "a b:1",
        ] {
            assert!(bad.parse::<RelayAddress>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn fingerprint_forms() {
        let fp = parse_fingerprint(FP_A).unwrap();
        assert_eq!(fp[0], 0x9f);
        assert_eq!(fp[31], 0x08);
        assert_eq!(format_fingerprint(&fp), FP_A);
        assert_eq!(parse_fingerprint(&FP_A.to_uppercase()).unwrap(), fp);
        assert_eq!(parse_fingerprint(&FP_A[7..]).unwrap(), fp);
        let colons = fp
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(parse_fingerprint(&colons).unwrap(), fp);
        assert_eq!(parse_fingerprint(&format!("SHA256:{colons}")).unwrap(), fp);
        for bad in [
            "",
            "sha256:",
            &FP_A[..FP_A.len() - 1],
            &format!("{FP_A}0"),
            &FP_A.replace('9', "g"),
            &format!("sha1:{}", &FP_A[7..]),
            &format!("{}:{}", &FP_A[7..9], &FP_A[9..]),
            &colons.replacen(':', "", 1),
            &format!("{colons}:"),
        ] {
            assert!(parse_fingerprint(bad).is_err(), "{bad:?} accepted");
        }
    }

    proptest! {
        #[test]
        fn fingerprint_round_trip(bytes in proptest::array::uniform32(any::<u8>())) {
            let s = format_fingerprint(&bytes);
            prop_assert!(s.starts_with("sha256:"));
            prop_assert_eq!(s.len(), 7 + 64);
            prop_assert_eq!(&s, &s.to_lowercase());
            prop_assert_eq!(parse_fingerprint(&s).unwrap(), bytes);
            let colons = bytes.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":");
            prop_assert_eq!(parse_fingerprint(&colons).unwrap(), bytes);
        }

        #[test]
        fn fingerprint_parse_never_panics(s in "\\PC{0,100}") {
            let _ = parse_fingerprint(&s);
        }
    }

    #[test]
    fn web_table_defaults_and_paths() {
        let dir = Path::new("/etc/braid/edge.toml");
        let c = parse_edge(EDGE, dir).unwrap();
        assert_eq!(c.web, None, "no [web] table: no page");

        let text = format!("{EDGE}\n[web]\nlisten = \"127.0.0.1:8080\"\n");
        let w = parse_edge(&text, dir).unwrap().web.unwrap();
        assert_eq!(w.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(w.password_file, PathBuf::from("/etc/braid/web-password"));
        assert_eq!(w.initial_password_file, None);
        assert_eq!(w.tls, None);
        assert_eq!(w.session_idle, Duration::from_secs(720 * 60));
        assert_eq!(w.reboot_command, ["systemctl", "reboot"]);
        assert_eq!(w.log_unit, "braid-edge");

        let text = format!(
            "{EDGE}\n[web]\nlisten = \"[::]:443\"\npassword_file = \"state/pw\"\n\
             initial_password_file = \"/boot/pw.txt\"\ntls = true\n\
             session_idle_minutes = 5\nreboot_command = [\"/sbin/reboot\", \"-f\"]\n\
             log_unit = \"braid-edge@cam1.service\"\n"
        );
        let w = parse_edge(&text, dir).unwrap().web.unwrap();
        assert_eq!(w.listen.port(), 443);
        assert_eq!(w.password_file, PathBuf::from("/etc/braid/state/pw"));
        assert_eq!(w.initial_password_file, Some(PathBuf::from("/boot/pw.txt")));
        assert_eq!(w.tls, Some(WebTls::SelfSigned));
        assert_eq!(w.session_idle, Duration::from_secs(300));
        assert_eq!(w.reboot_command, ["/sbin/reboot", "-f"]);
        assert_eq!(w.log_unit, "braid-edge@cam1.service");

        let text = format!(
            "{EDGE}\n[web]\nlisten = \"0.0.0.0:443\"\ntls = true\ncert = \"web.crt\"\nkey = \"web.key\"\n"
        );
        let w = parse_edge(&text, dir).unwrap().web.unwrap();
        assert_eq!(
            w.tls,
            Some(WebTls::Files {
                cert: "/etc/braid/web.crt".into(),
                key: "/etc/braid/web.key".into()
            })
        );

        // Disabled: no listen needed, nothing served.
        let text = format!("{EDGE}\n[web]\nenabled = false\n");
        assert_eq!(parse_edge(&text, dir).unwrap().web, None);
    }

    #[test]
    fn web_errors_point_at_their_line() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "listen = \"localhost:80\"",
                "listen = \"localhost:80\"",
                "web.listen: expected IP:PORT",
            ),
            ("enabled = true", "[web]", "web.listen: required"),
            (
                "listen = \"0.0.0.0:80\"\nsession_idle_minutes = 4",
                "session_idle_minutes = 4",
                "web.session_idle_minutes: must be between 5 and 10080, got 4",
            ),
            (
                "listen = \"0.0.0.0:80\"\nsession_idle_minutes = 10081",
                "session_idle_minutes = 10081",
                "web.session_idle_minutes: must be between 5 and 10080, got 10081",
            ),
            (
                "listen = \"0.0.0.0:80\"\npassword_file = \" \"",
                "password_file = \" \"",
                "web.password_file: must not be empty",
            ),
            (
                "listen = \"0.0.0.0:80\"\ninitial_password_file = \"web-password\"",
                "initial_password_file = \"web-password\"",
                "web.initial_password_file: must not be the same",
            ),
            (
                "listen = \"0.0.0.0:80\"\ncert = \"a.pem\"\nkey = \"b.pem\"",
                "cert = \"a.pem\"",
                "web.cert: cert and key are used only with tls = true",
            ),
            (
                "listen = \"0.0.0.0:80\"\ntls = true\nkey = \"b.pem\"",
                "key = \"b.pem\"",
                "web.key: give both",
            ),
            (
                "listen = \"0.0.0.0:80\"\ntls = true\ncert = \"a.pem\"",
                "cert = \"a.pem\"",
                "web.cert: give both",
            ),
            (
                "listen = \"0.0.0.0:80\"\nreboot_command = []",
                "reboot_command = []",
                "web.reboot_command: must name a program",
            ),
            (
                "listen = \"0.0.0.0:80\"\nreboot_command = [\"reboot\", \"\"]",
                "reboot_command = [\"reboot\", \"\"]",
                "web.reboot_command: arguments must be non-empty",
            ),
            (
                "listen = \"0.0.0.0:80\"\nlog_unit = \"braid edge\"",
                "log_unit = \"braid edge\"",
                "web.log_unit: expected a systemd unit name",
            ),
            (
                "listen = \"0.0.0.0:80\"\nlog_unit = \"--all\"",
                "log_unit = \"--all\"",
                "web.log_unit: expected a systemd unit name",
            ),
        ];
        for (body, line, reason) in cases {
            let text = format!("{EDGE}\n[web]\n{body}\n");
            let e = edge_err(&text);
            assert_eq!(e.line(), Some(line_no(&text, line, 0)), "{body}: {e}");
            assert!(e.reason().starts_with(reason), "{body}: {e}");
        }
        let e = edge_err(&format!(
            "{EDGE}\n[web]\nlisten = \"0.0.0.0:80\"\ntls = \"yes\"\n"
        ));
        assert!(e.to_string().contains("invalid type"), "{e}");
    }

    const OTA: &str = "[ota]\nbackend = \"dir\"\nslots_dir = \"slots\"\npublic_keys = [\"release.pub\"]\ncompatible = \"braid-rpi4\"\n";

    #[test]
    fn ota_table_defaults_and_paths() {
        let dir = Path::new("/etc/braid/edge.toml");
        assert_eq!(parse_edge(EDGE, dir).unwrap().ota, None);
        let o = parse_edge(&format!("{EDGE}\n{OTA}"), dir)
            .unwrap()
            .ota
            .unwrap();
        assert_eq!(
            o.backend,
            OtaBackend::Dir {
                slots_dir: "/etc/braid/slots".into()
            }
        );
        assert_eq!(o.public_keys, [PathBuf::from("/etc/braid/release.pub")]);
        assert_eq!(o.compatible, "braid-rpi4");
        assert!(!o.allow_downgrade);
        assert_eq!(o.max_payload, 2048 * 1024 * 1024);
        assert_eq!(o.health_timeout, Duration::from_secs(120));
        assert_eq!(o.max_boot_attempts, 3);
        assert_eq!(o.reboot, RebootPolicy::Idle);
        assert_eq!(o.reboot_command, DEFAULT_REBOOT_COMMAND);
        assert_eq!(o.state_dir, PathBuf::from(DEFAULT_OTA_STATE_DIR));
        assert_eq!(o.hawkbit, None);

        let text = format!(
            "{EDGE}\n[ota]\nbackend = \"rauc\"\npublic_keys = [\"a.pub\", \"/k/b.pub\"]\n\
             compatible = \"braid-cm4.v2\"\nallow_downgrade = true\nmax_payload_mb = 16\n\
             health_timeout_s = 10\nmax_boot_attempts = 1\nreboot = \"03:30\"\n\
             reboot_command = [\"/sbin/reboot\", \"-f\"]\nstate_dir = \"state\"\n\
             [ota.hawkbit]\nserver = \"https://hb.example.com/\"\ntenant = \"DEFAULT\"\n\
             token = \"s3cret\"\n"
        );
        let o = parse_edge(&text, dir).unwrap().ota.unwrap();
        assert_eq!(o.backend, OtaBackend::Rauc);
        assert_eq!(o.public_keys[1], PathBuf::from("/k/b.pub"));
        assert!(o.allow_downgrade);
        assert_eq!(o.max_payload, 16 << 20);
        assert_eq!(o.health_timeout, Duration::from_secs(10));
        assert_eq!(o.max_boot_attempts, 1);
        assert_eq!(
            o.reboot,
            RebootPolicy::At {
                hour: 3,
                minute: 30
            }
        );
        assert_eq!(o.reboot.to_string(), "03:30");
        assert_eq!(o.reboot_command, ["/sbin/reboot", "-f"]);
        assert_eq!(o.state_dir, PathBuf::from("/etc/braid/state"));
        let h = o.hawkbit.unwrap();
        assert_eq!(h.client.server, "https://hb.example.com");
        assert_eq!(h.client.tenant, "DEFAULT");
        assert_eq!(h.client.controller_id, "cam1", "defaults to the device id");
        assert_eq!(h.client.token.as_deref(), Some("s3cret"));
        assert_eq!(h.download_dir, PathBuf::from("/etc/braid/state/download"));
        assert_eq!(h.poll, Duration::from_secs(300));
        for (r, want) in [("idle", RebootPolicy::Idle), ("never", RebootPolicy::Never)] {
            let t = format!("{EDGE}\n{OTA}reboot = \"{r}\"\n");
            assert_eq!(parse_edge(&t, dir).unwrap().ota.unwrap().reboot, want);
        }
    }

    /// The example's commented `[ota]` block, uncommented, is a valid table.
    #[test]
    fn ota_example_block_parses() {
        let example = read_repo_file("examples/edge.toml");
        let start = example
            .find("# [ota]\n")
            .expect("examples/edge.toml shows [ota]");
        let block: String = example[start..]
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| {
                l.starts_with('[')
                    || l.split_once(" = ").is_some_and(|(k, _)| {
                        k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    })
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let o = parse_edge(&format!("{EDGE}\n{block}"), Path::new("edge.toml"))
            .unwrap_or_else(|e| panic!("{e}\n{block}"))
            .ota
            .unwrap();
        assert!(o.hawkbit.is_some(), "{block}");
    }

    #[test]
    fn ota_errors_point_at_their_line() {
        let base = "public_keys = [\"k.pub\"]\ncompatible = \"braid-rpi4\"\n";
        let cases: &[(&str, &str, &str)] = &[
            ("backend = \"zip\"", "backend = \"zip\"", "ota.backend: expected \"dir\" or \"rauc\""),
            ("backend = \"dir\"", "backend = \"dir\"", "ota.slots_dir: required with backend"),
            (
                "backend = \"rauc\"\nslots_dir = \"s\"",
                "slots_dir = \"s\"",
                "ota.slots_dir: only used with backend",
            ),
            (
                "backend = \"rauc\"\nreboot = \"3:30\"",
                "reboot = \"3:30\"",
                "ota.reboot: expected \"idle\", \"never\" or a local time",
            ),
            (
                "backend = \"rauc\"\nreboot = \"24:00\"",
                "reboot = \"24:00\"",
                "ota.reboot: expected",
            ),
            (
                "backend = \"rauc\"\nhealth_timeout_s = 9",
                "health_timeout_s = 9",
                "ota.health_timeout_s: must be between 10 and 3600, got 9",
            ),
            (
                "backend = \"rauc\"\nmax_boot_attempts = 0",
                "max_boot_attempts = 0",
                "ota.max_boot_attempts: must be between 1 and 20",
            ),
            (
                "backend = \"rauc\"\nmax_payload_mb = 0",
                "max_payload_mb = 0",
                "ota.max_payload_mb: must be between",
            ),
            (
                "backend = \"rauc\"\nreboot_command = []",
                "reboot_command = []",
                "ota.reboot_command: must name a program",
            ),
            (
                "backend = \"rauc\"\nstate_dir = \"\"",
                "state_dir = \"\"",
                "ota.state_dir: must not be empty",
            ),
            (
                "backend = \"rauc\"\n[ota.hawkbit]\nserver = \"ftp://x\"\ntenant = \"t\"",
                "server = \"ftp://x\"",
                "ota.hawkbit.server: expected an http:// or https:// URL",
            ),
            (
                "backend = \"rauc\"\n[ota.hawkbit]\nserver = \"http://x\"\ntenant = \"a b\"",
                "tenant = \"a b\"",
                "ota.hawkbit.tenant: must be",
            ),
            (
                "backend = \"rauc\"\n[ota.hawkbit]\nserver = \"http://x\"\ntenant = \"t\"\ntoken = \"\"",
                "token = \"\"",
                "ota.hawkbit.token: must not be empty",
            ),
            (
                "backend = \"rauc\"\n[ota.hawkbit]\nserver = \"http://x\"\ntenant = \"t\"\npoll_s = 5",
                "poll_s = 5",
                "ota.hawkbit.poll_s: must be between 10 and 86400",
            ),
        ];
        for (body, line, reason) in cases {
            // Keys of [ota] go before a [ota.hawkbit] header in the body.
            let (ota, hawkbit) = body.split_once("\n[ota.hawkbit]").unwrap_or((body, ""));
            let text = if hawkbit.is_empty() {
                format!("{EDGE}\n[ota]\n{base}{ota}\n")
            } else {
                format!("{EDGE}\n[ota]\n{base}{ota}\n[ota.hawkbit]{hawkbit}\n")
            };
            let e = edge_err(&text);
            assert_eq!(e.line(), Some(line_no(&text, line, 0)), "{body}: {e}");
            assert!(e.reason().starts_with(reason), "{body}: {e}");
        }
        let e = edge_err(&format!(
            "{EDGE}\n[ota]\nbackend = \"rauc\"\npublic_keys = []\ncompatible = \"x\"\n"
        ));
        assert!(
            e.reason().starts_with("ota.public_keys: list at least one"),
            "{e}"
        );
        let e = edge_err(&format!(
            "{EDGE}\n[ota]\nbackend = \"rauc\"\npublic_keys = [\"k\"]\n"
        ));
        assert!(e.to_string().contains("missing field `compatible`"), "{e}");
        let e = edge_err(&format!(
            "{EDGE}\n[ota]\nbackend = \"rauc\"\npublic_keys = [\"k\"]\ncompatible = \"x y\"\n"
        ));
        assert!(e.reason().starts_with("ota.compatible: must be"), "{e}");
    }

    /// Every key of both schemas, as `table.key` paths (`[[device.output]]`
    /// keys as `device.output.key`). Keep in sync with the raw structs; the
    /// tests below check docs/config.md and the examples against it.
    const EDGE_KEYS: &[&str] = &[
        "device.id",
        "device.cert",
        "device.key",
        "relay.address",
        "relay.server_name",
        "relay.fingerprint",
        "relay.ca",
        "relay.latency_ms",
        "input.kind",
        "input.listen",
        "input.rate_kbps",
        "link.name",
        "link.interface",
        "link.bind",
        "link.enabled",
        "link.data_cap_mb",
        "usage.file",
        "usage.billing_day",
        "stats.enabled",
        "stats.listen",
        "scheduler.duplicate_budget",
        "input.device",
        "input.pattern",
        "input.passphrase",
        "video.encoder",
        "video.width",
        "video.height",
        "video.fps",
        "video.keyframe_interval_ms",
        "video.min_kbps",
        "video.max_kbps",
        "video.ladder",
        "audio.enabled",
        "audio.source",
        "audio.devices",
        "audio.noise_suppression",
        "audio.gain_control",
        "audio.limiter",
        "audio.codec",
        "audio.bitrate_kbps",
        "stream.autostart",
        "modem.apn",
        "modem.poll_interval_ms",
        "modem.command_timeout_ms",
        "gpio.backend",
        "gpio.led_red",
        "gpio.led_green",
        "gpio.led_blue",
        "gpio.leds_active_low",
        "gpio.button",
        "gpio.button_active_low",
        "gpio.button_debounce_ms",
        "gpio.button_long_press_ms",
        "gpio.tally",
        "gpio.tally_active_low",
        "gpio.poll_interval_ms",
        "web.enabled",
        "web.listen",
        "web.password_file",
        "web.initial_password_file",
        "web.tls",
        "web.cert",
        "web.key",
        "web.session_idle_minutes",
        "web.reboot_command",
        "web.log_unit",
        "ota.backend",
        "ota.slots_dir",
        "ota.public_keys",
        "ota.compatible",
        "ota.allow_downgrade",
        "ota.max_payload_mb",
        "ota.health_timeout_s",
        "ota.max_boot_attempts",
        "ota.reboot",
        "ota.reboot_command",
        "ota.state_dir",
        "ota.hawkbit.server",
        "ota.hawkbit.tenant",
        "ota.hawkbit.controller_id",
        "ota.hawkbit.token",
        "ota.hawkbit.download_dir",
        "ota.hawkbit.poll_s",
    ];
    const RELAY_KEYS: &[&str] = &[
        "relay.listen",
        "relay.cert",
        "relay.key",
        "relay.latency_ms",
        "stats.listen",
        "device.id",
        "device.fingerprint",
        "device.latency_ms",
        "device.output.kind",
        "device.output.address",
        "device.output.mode",
        "device.output.passphrase",
        "device.output.pbkeylen",
        "device.output.latency_ms",
        "device.output.streamid",
        "device.output.url",
        "device.output.dir",
        "device.output.segment_seconds",
        "device.output.keep",
    ];

    fn read_repo_file(rel: &str) -> String {
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel))
            .unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    /// Section of docs/config.md from `## heading` to the next `## `.
    fn doc_section<'a>(doc: &'a str, heading: &str) -> &'a str {
        let start = doc
            .find(&format!("\n## {heading}\n"))
            .unwrap_or_else(|| panic!("docs/config.md has no '## {heading}'"));
        let rest = &doc[start + 1..];
        let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
        &rest[..end]
    }

    #[test]
    fn docs_document_every_key() {
        let doc = read_repo_file("docs/config.md");
        for (heading, keys) in [("edge.toml", EDGE_KEYS), ("relay.toml", RELAY_KEYS)] {
            let section = doc_section(&doc, heading);
            for key in keys {
                assert!(
                    section.contains(&format!("| `{key}` |")),
                    "docs/config.md section {heading} has no table row for `{key}`"
                );
            }
        }
        assert!(
            doc.contains("FILE:LINE: reason"),
            "error format not documented"
        );
    }

    /// Collects `a.b` key paths of a parsed TOML document (arrays of tables
    /// contribute their element keys under the array's name).
    fn key_paths(prefix: &str, table: &toml::Table, out: &mut Vec<String>) {
        for (k, v) in table {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Table(t) => key_paths(&path, t, out),
                toml::Value::Array(items)
                    if items.iter().all(|i| i.is_table()) && !items.is_empty() =>
                {
                    for i in items {
                        key_paths(&path, i.as_table().unwrap(), out);
                    }
                }
                _ => out.push(path),
            }
        }
    }

    #[test]
    fn key_list_matches_examples() {
        for (file, keys) in [
            ("examples/edge.toml", EDGE_KEYS),
            ("examples/relay.toml", RELAY_KEYS),
        ] {
            let text = read_repo_file(file);
            let table: toml::Table = text.parse().unwrap();
            let mut used = Vec::new();
            key_paths("", &table, &mut used);
            // Keys set in the example are in the list (so the list is not stale) ...
            for k in &used {
                assert!(
                    keys.contains(&k.as_str()),
                    "{file}: key {k} missing from key list"
                );
            }
            // ... and every key of the list is at least mentioned in the example.
            for k in keys.iter() {
                let leaf = k.rsplit('.').next().unwrap();
                assert!(
                    text.contains(&format!("{leaf} = ")),
                    "{file} does not mention {k}"
                );
            }
        }
    }

    /// Field names the parser expects in the table whose header line is
    /// `header` (first occurrence), read from its "unknown field" error.
    fn expected_fields(text: &str, header: &str, parse: fn(&str) -> ConfigError) -> Vec<String> {
        let probe = if header.is_empty() {
            format!("zz_unknown = 1\n{text}")
        } else {
            let h = format!("{header}\n");
            assert!(text.contains(&h), "{header} not in text");
            text.replacen(&h, &format!("{h}zz_unknown = 1\n"), 1)
        };
        let reason = parse(&probe).reason();
        let list = reason
            .strip_prefix("unknown field `zz_unknown`, expected ")
            .unwrap_or_else(|| panic!("{header}: unexpected error {reason}"));
        list.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn key_list_matches_parser() {
        let edge = format!(
            "{EDGE}[stats]\nenabled = true\n[scheduler]\n[video]\n[audio]\n[stream]\n[modem]\n[gpio]\n[usage]\n[web]\n[ota]\n[ota.hawkbit]\n"
        );
        let mut tables = expected_fields(&edge, "", edge_err);
        tables.sort();
        assert_eq!(
            tables,
            [
                "audio",
                "device",
                "gpio",
                "input",
                "link",
                "modem",
                "ota",
                "relay",
                "scheduler",
                "stats",
                "stream",
                "usage",
                "video",
                "web"
            ]
        );
        let mut from_parser: Vec<String> = [
            "[device]",
            "[relay]",
            "[input]",
            "[[link]]",
            "[stats]",
            "[scheduler]",
            "[video]",
            "[audio]",
            "[stream]",
            "[modem]",
            "[gpio]",
            "[usage]",
            "[web]",
            "[ota]",
            "[ota.hawkbit]",
        ]
        .iter()
        .flat_map(|h| {
            let t = h.trim_matches(['[', ']']);
            expected_fields(&edge, h, edge_err)
                .into_iter()
                .filter(move |f| !(t == "ota" && f == "hawkbit"))
                .map(move |f| format!("{t}.{f}"))
        })
        .collect();
        from_parser.sort();
        let mut listed: Vec<String> = EDGE_KEYS.iter().map(|k| k.to_string()).collect();
        listed.sort();
        assert_eq!(from_parser, listed);

        let relay = format!("{RELAY}[stats]\n");
        let mut tables = expected_fields(&relay, "", relay_err);
        tables.sort();
        assert_eq!(tables, ["device", "relay", "stats"]);
        let mut from_parser: Vec<String> =
            ["[relay]", "[stats]", "[[device]]", "[[device.output]]"]
                .iter()
                .flat_map(|h| {
                    let t = h.trim_matches(['[', ']']);
                    expected_fields(&relay, h, relay_err)
                        .into_iter()
                        .filter(|f| f != "output")
                        .map(move |f| format!("{t}.{f}"))
                })
                .collect();
        from_parser.sort();
        let mut listed: Vec<String> = RELAY_KEYS.iter().map(|k| k.to_string()).collect();
        listed.sort();
        assert_eq!(from_parser, listed);
    }
}
