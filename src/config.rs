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
//! Relative paths (`cert`, `key`, `ca`) are resolved against the directory of
//! the configuration file. See `docs/config.md` for the user-facing reference.

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
/// Allowed length of `input.passphrase` (libsrt's limits).
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

/// One `[[device.output]]` of `relay.toml`. Only `udp` exists today; srt,
/// rtmp and file outputs are expected later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputConfig {
    /// MPEG-TS in 7x188-byte UDP datagrams to `address`.
    Udp { address: SocketAddr },
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
    output: Vec<RawOutput>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum RawOutputKind {
    Udp,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    kind: RawOutputKind,
    address: Spanned<String>,
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

    Ok(EdgeConfig {
        device,
        relay,
        input,
        links,
        stats_listen,
        scheduler,
        video,
        audio,
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
        links.push(LinkConfig {
            name,
            bind,
            enabled: l.enabled.unwrap_or(true),
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
        for o in &d.output {
            outputs.push(match o.kind {
                RawOutputKind::Udp => OutputConfig::Udp {
                    address: ctx.socket_addr("device.output.address", &o.address)?,
                },
            });
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
            c.devices[0].outputs,
            [
                OutputConfig::Udp {
                    address: "127.0.0.1:6000".parse().unwrap()
                },
                OutputConfig::Udp {
                    address: "127.0.0.1:6002".parse().unwrap()
                }
            ]
        );
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
            "kind = \"srt\"\naddress = \"127.0.0.1:6010\"",
        );
        let e = relay_err(&text);
        assert_eq!(e.line(), Some(line_no(&text, "kind = \"srt\"", 0)));
        assert!(e.reason().contains("unknown variant `srt`"), "{e}");

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
        let edge = format!("{EDGE}[stats]\nenabled = true\n[scheduler]\n[video]\n[audio]\n");
        let mut tables = expected_fields(&edge, "", edge_err);
        tables.sort();
        assert_eq!(
            tables,
            [
                "audio",
                "device",
                "input",
                "link",
                "relay",
                "scheduler",
                "stats",
                "video"
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
        ]
        .iter()
        .flat_map(|h| {
            let t = h.trim_matches(['[', ']']);
            expected_fields(&edge, h, edge_err)
                .into_iter()
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
