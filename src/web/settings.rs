//! edge.toml as the web page's settings form.
//!
//! - [`Settings::view`]: the file as JSON `values` (secrets replaced by
//!   `"<redacted>"`), its `revision` (SHA-256 of the text) and the form's `fields`.
//! - [`Settings::save`]: changes by dotted key applied to the file's text with
//!   `toml_edit` (comments and layout kept), checked by [`crate::config::parse_edge`]
//!   (errors mapped to the field they concern), written atomically.
//! - [`fields`]: the one table describing every key edge.toml can hold (label, type,
//!   range, default, help, and what a change takes: [`Apply`]).
//!
//! Keys are dotted; an array of tables is indexed by number (`link.1.enabled`).
//! Field patterns write the index as `*` (`link.*.name`).

/// What a change of a key takes to reach the running box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Apply {
    /// Applied to the running stream at once.
    Live,
    /// Needs a stream restart (about a second; the page offers it).
    Stream,
    /// Needs braid itself restarted (`[web]`, `[device]`).
    Service,
}

use crate::config::{ConfigError, EdgeConfig};
use serde_json::{Map, Value as Json};
use std::collections::BTreeSet;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use toml_edit::{ArrayOfTables, DocumentMut, ImDocument, Item, Table, TableLike};

/// One problem with a submitted change, shown next to its field.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    /// Dotted key as in the request (`relay.latency_ms`, `link.1.name`).
    pub field: String,
    pub message: String,
}

/// Why a save was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingsError {
    /// The file changed since `revision` was read (HTTP 409).
    Stale { revision: String },
    /// The result would not be a valid edge.toml (HTTP 422).
    Invalid(Vec<FieldError>),
    /// The request itself is malformed: a key that cannot be placed, a value of no
    /// TOML type (HTTP 400).
    BadRequest(String),
    /// Reading or writing the file failed (HTTP 500).
    Io(String),
}

/// A successful save.
#[derive(Debug, Clone)]
pub struct Saved {
    /// SHA-256 of the new text.
    pub revision: String,
    /// The configuration as `parse_edge` read the new text.
    pub config: EdgeConfig,
    /// Each dotted key whose value changed, with what it takes to apply.
    pub changed: Vec<(String, Apply)>,
    /// The new `values` (as in [`Settings::view`]).
    pub values: serde_json::Value,
}

/// What a secret's value is shown as, and sent back as to leave it unchanged.
pub const REDACTED: &str = "<redacted>";

// ---------------------------------------------------------------------------
// The field table
// ---------------------------------------------------------------------------

/// How the form shows and checks a key (`type` in docs/web-api.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    String,
    Int,
    Float,
    Bool,
    /// One of `options`.
    Enum,
    /// A list of strings.
    Strings,
    /// Write-only: shown as `"<redacted>"`.
    Secret,
}

/// One key of edge.toml as the form sees it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Field {
    /// Dotted key; `*` stands for an index of `[[link]]` (`link.*.name`).
    pub key: &'static str,
    /// The table it is in (`relay`, `link`, ...).
    pub section: &'static str,
    pub label: &'static str,
    #[serde(rename = "type")]
    pub ty: FieldType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<Json>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<Json>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<&'static str>,
    /// The value used when the key is absent; `None` when there is none (required,
    /// or "not set" means something of its own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<Json>,
    pub help: &'static str,
    pub apply: Apply,
}

impl Field {
    fn new(key: &'static str, ty: FieldType, label: &'static str, help: &'static str) -> Field {
        Field {
            key,
            section: key.split('.').next().unwrap_or(key),
            label,
            ty,
            min: None,
            max: None,
            unit: None,
            options: Vec::new(),
            default: None,
            help,
            apply: apply_of(key),
        }
    }

    fn range(mut self, r: RangeInclusive<i64>) -> Field {
        self.min = Some(Json::from(*r.start()));
        self.max = Some(Json::from(*r.end()));
        self
    }

    fn min(mut self, min: i64) -> Field {
        self.min = Some(Json::from(min));
        self
    }

    fn float_range(mut self, r: RangeInclusive<f64>) -> Field {
        self.min = Some(Json::from(*r.start()));
        self.max = Some(Json::from(*r.end()));
        self
    }

    fn unit(mut self, unit: &'static str) -> Field {
        self.unit = Some(unit);
        self
    }

    fn options(mut self, options: &[&'static str]) -> Field {
        self.options = options.to_vec();
        self
    }

    fn default(mut self, v: impl Into<Json>) -> Field {
        self.default = Some(v.into());
        self
    }
}

/// Keys a running edge takes without a restart ([`Apply::Live`]).
const LIVE_KEYS: &[&str] = &[
    "link.*.data_cap_mb",
    "video.min_kbps",
    "video.max_kbps",
    "scheduler.duplicate_budget",
    "stream.autostart",
];

/// Tables whose keys need braid restarted ([`Apply::Service`]).
const SERVICE_SECTIONS: &[&str] = &["device", "web", "stats", "gpio", "modem", "ota"];

/// What changing `key` (dotted, indices as numbers or `*`) takes. Anything not
/// live or service restarts the stream, as does adding or removing a link
/// (`link`, `link.N`).
pub fn apply_of(key: &str) -> Apply {
    let pattern = pattern_of(key);
    if LIVE_KEYS.contains(&pattern.as_str()) {
        return Apply::Live;
    }
    let section = pattern.split('.').next().unwrap_or("");
    if SERVICE_SECTIONS.contains(&section) {
        Apply::Service
    } else {
        Apply::Stream
    }
}

/// `key` with its index segments written as `*` (`link.1.name` -> `link.*.name`).
fn pattern_of(key: &str) -> String {
    key.split('.')
        .map(|s| if is_index(s) { "*" } else { s })
        .collect::<Vec<_>>()
        .join(".")
}

fn is_index(segment: &str) -> bool {
    !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit())
}

/// Every key edge.toml can hold, in the order the form shows them. This is the one
/// place the form's knowledge of the file lives; the tests check it against
/// `examples/edge.toml`, `docs/config.md` and `docs/web-api.md`.
pub fn fields() -> &'static [Field] {
    static FIELDS: OnceLock<Vec<Field>> = OnceLock::new();
    FIELDS.get_or_init(build_fields)
}

/// The field of a dotted key (indices as numbers or `*`).
pub fn field(key: &str) -> Option<&'static Field> {
    let pattern = pattern_of(key);
    fields().iter().find(|f| f.key == pattern)
}

fn build_fields() -> Vec<Field> {
    use crate::config as c;
    use FieldType::*;
    let encoders: Vec<&'static str> = std::iter::once("auto")
        .chain(crate::media::encoder::ENCODERS.iter().map(|e| e.factory))
        .collect();
    let bcm = 0..=53;
    vec![
        // [device]
        Field::new("device.id", String, "Device id",
            "Name of this box; must match a [[device]] id in the relay's relay.toml. 1 to 64 characters from A-Z a-z 0-9 _ -. Required."),
        Field::new("device.cert", String, "Device certificate",
            "PEM certificate of this box (braid keygen makes one); the relay pins its fingerprint. Relative paths start at edge.toml's directory. Required."),
        Field::new("device.key", String, "Device key",
            "PEM private key belonging to the device certificate. Required."),
        // [relay]
        Field::new("relay.address", String, "Relay address",
            "HOST:PORT of the relay (DNS name or IP; IPv6 in brackets). Required."),
        Field::new("relay.server_name", String, "Relay TLS name",
            "Name checked against the relay certificate.")
            .default(c::DEFAULT_SERVER_NAME),
        Field::new("relay.fingerprint", String, "Relay fingerprint",
            "SHA-256 of the relay certificate, sha256:<64 hex>. Give this or a CA, not both."),
        Field::new("relay.ca", String, "Relay CA",
            "PEM CA certificate the relay certificate must chain to. Give this or a fingerprint, not both."),
        Field::new("relay.latency_ms", Int, "Latency budget", "End-to-end latency budget")
            .range(c::LATENCY_MS_RANGE)
            .unit("ms")
            .default(c::DEFAULT_LATENCY.as_millis() as i64),
        // [input]
        Field::new("input.kind", Enum, "Input",
            "udp: MPEG-TS from an external encoder; test: synthetic test stream; v4l2: camera or HDMI capture, encoded here; pattern: test picture and tone, encoded here; srt: SRT listener for an external encoder.")
            .options(&["udp", "test", "v4l2", "pattern", "srt"])
            .default("test"),
        Field::new("input.listen", String, "Input listen address",
            "IP:PORT to receive on (udp: default 127.0.0.1:5000; srt: default 0.0.0.0:9000). Only for udp and srt."),
        Field::new("input.rate_kbps", Int, "Test rate", "Rate of the test stream. Only for test.")
            .range(c::TEST_RATE_KBPS_RANGE)
            .unit("kbit/s")
            .default(c::DEFAULT_TEST_RATE_KBPS),
        Field::new("input.device", String, "Capture device", "V4L2 device. Only for v4l2.")
            .default(c::DEFAULT_V4L2_DEVICE),
        Field::new("input.pattern", Enum, "Test picture",
            "smpte: colour bars; ball: motion; snow: noise (uses every bit, for rate tests). Only for pattern.")
            .options(&["smpte", "ball", "snow"])
            .default("smpte"),
        Field::new("input.passphrase", Secret, "SRT passphrase",
            "Encryption passphrase the encoder must use too, 10 to 79 characters; unset: no encryption. Only for srt."),
        // [video]
        Field::new("video.encoder", Enum, "Video encoder",
            "auto takes the first installed hardware encoder, else x264enc.")
            .options(&encoders)
            .default("auto"),
        Field::new("video.width", Int, "Width", "Picture width asked of the camera (even).")
            .range(c::WIDTH_RANGE)
            .unit("px")
            .default(c::DEFAULT_VIDEO_SIZE.width),
        Field::new("video.height", Int, "Height", "Picture height (even).")
            .range(c::HEIGHT_RANGE)
            .unit("px")
            .default(c::DEFAULT_VIDEO_SIZE.height),
        Field::new("video.fps", Int, "Frame rate", "Frames per second.")
            .range(c::FPS_RANGE)
            .unit("fps")
            .default(c::DEFAULT_FPS),
        Field::new("video.keyframe_interval_ms", Int, "Keyframe interval", "Time between keyframes.")
            .range(c::KEYFRAME_INTERVAL_MS_RANGE)
            .unit("ms")
            .default(c::DEFAULT_KEYFRAME_INTERVAL_MS),
        Field::new("video.min_kbps", Int, "Minimum video bitrate",
            "Floor of the encoder bitrate; also the rate of the NO SIGNAL slate.")
            .range(c::VIDEO_KBPS_RANGE)
            .unit("kbit/s")
            .default(c::DEFAULT_MIN_KBPS),
        Field::new("video.max_kbps", Int, "Maximum video bitrate",
            "Ceiling of the encoder bitrate; not below the minimum.")
            .range(c::VIDEO_KBPS_RANGE)
            .unit("kbit/s")
            .default(c::DEFAULT_MAX_KBPS),
        Field::new("video.ladder", Strings, "Picture sizes",
            "WIDTHxHEIGHT sizes the bitrate controller may step through, largest first, none larger than width x height, at most 8. Unset: full, 3/4 and 1/2 size."),
        // [audio]
        Field::new("audio.enabled", Bool, "Audio", "Send audio at all.").default(true),
        Field::new("audio.source", Enum, "Audio source", "test: a tone; alsa: capture devices.")
            .options(&["test", "alsa"])
            .default("test"),
        Field::new("audio.devices", Strings, "ALSA devices",
            "One device, or two to mix (e.g. hw:1). Only for source alsa.")
            .default(vec![c::DEFAULT_ALSA_DEVICE]),
        Field::new("audio.noise_suppression", Bool, "Noise suppression", "WebRTC noise suppression.")
            .default(true),
        Field::new("audio.gain_control", Bool, "Gain control", "WebRTC automatic gain control.")
            .default(true),
        Field::new("audio.limiter", Bool, "Limiter", "Hard limiter before the encoder.").default(true),
        Field::new("audio.codec", Enum, "Audio codec", "Codec in the transport stream.")
            .options(&["aac", "opus"])
            .default("aac"),
        Field::new("audio.bitrate_kbps", Int, "Audio bitrate", "Audio encoder bitrate.")
            .range(c::AUDIO_KBPS_RANGE)
            .unit("kbit/s")
            .default(c::DEFAULT_AUDIO_KBPS),
        // [[link]]
        Field::new("link.*.name", String, "Link name",
            "Unique name in logs and stats, 1 to 64 characters from A-Z a-z 0-9 _ -. Required."),
        Field::new("link.*.interface", String, "Interface",
            "Network interface the link uses (e.g. wwan0). Give this or a bind address, not both."),
        Field::new("link.*.bind", String, "Bind address",
            "Local source IP address the link uses. Give this or an interface, not both."),
        Field::new("link.*.enabled", Bool, "Enabled", "Disabled links stay configured but idle.")
            .default(true),
        Field::new("link.*.data_cap_mb", Int, "Monthly data cap",
            "MB sent per billing month; at the cap the link carries only what the others cannot. Unset: no cap.")
            .range(1..=100_000_000)
            .unit("MB"),
        // [usage]
        Field::new("usage.file", String, "Usage file",
            "JSON file the per-link data counters are kept in. Unset: counted in memory only."),
        Field::new("usage.billing_day", Int, "Billing day", "Day of the month the SIMs' billing month starts.")
            .range(1..=28)
            .default(1),
        // [stats]
        Field::new("stats.enabled", Bool, "Stats endpoint", "Serve the local stats endpoint.")
            .default(true),
        Field::new("stats.listen", String, "Stats listen address", "IP:PORT of the stats endpoint.")
            .default(c::DEFAULT_EDGE_STATS_LISTEN.to_string()),
        // [scheduler]
        Field::new("scheduler.duplicate_budget", Float, "Duplicate budget",
            "Fraction of media bytes that may be spent on duplicates of important packets; 0 disables.")
            .float_range(c::DUPLICATE_BUDGET_RANGE)
            .default(c::DEFAULT_DUPLICATE_BUDGET),
        // [stream]
        Field::new("stream.autostart", Bool, "Autostart",
            "Go live by itself once the source and a link are up; off: wait for the button.")
            .default(true),
        // [modem]
        Field::new("modem.apn", String, "APN", "APN set on every modem. Unset: the modem's own."),
        Field::new("modem.poll_interval_ms", Int, "Modem poll interval", "Time between polls of each modem.")
            .range(1..=3_600_000)
            .unit("ms")
            .default(5000),
        Field::new("modem.command_timeout_ms", Int, "AT command timeout",
            "How long one AT command may take before the modem counts as unresponsive.")
            .range(1..=3_600_000)
            .unit("ms")
            .default(3000),
        // [gpio]
        Field::new("gpio.backend", Enum, "GPIO backend",
            "auto: the Pi's GPIO when there is one; record: drive nothing; none: no panel.")
            .options(&["auto", "rppal", "record", "none"])
            .default("auto"),
        Field::new("gpio.led_red", Int, "Red LED pin", "BCM pin of the status LED's red channel.")
            .range(bcm.clone()),
        Field::new("gpio.led_green", Int, "Green LED pin", "BCM pin of the green channel.")
            .range(bcm.clone()),
        Field::new("gpio.led_blue", Int, "Blue LED pin", "BCM pin of the blue channel.")
            .range(bcm.clone()),
        Field::new("gpio.leds_active_low", Bool, "LEDs active low", "LEDs light when driven low (common anode).")
            .default(false),
        Field::new("gpio.button", Int, "Button pin",
            "BCM pin of the start/stop button (short press toggles, long press stops and holds).")
            .range(bcm.clone()),
        Field::new("gpio.button_active_low", Bool, "Button active low",
            "The button pulls the pin low (internal pull-up).")
            .default(true),
        Field::new("gpio.button_debounce_ms", Int, "Button debounce", "A level change must last this long.")
            .min(1)
            .unit("ms")
            .default(30),
        Field::new("gpio.button_long_press_ms", Int, "Long press", "Longer than the debounce.")
            .min(1)
            .unit("ms")
            .default(2000),
        Field::new("gpio.tally", Int, "Tally pin", "BCM pin of the tally lamp, on while live.")
            .range(bcm),
        Field::new("gpio.tally_active_low", Bool, "Tally active low", "The tally is on when the pin is low.")
            .default(false),
        Field::new("gpio.poll_interval_ms", Int, "Button poll interval",
            "Polling period when the GPIO gives no edge events.")
            .min(1)
            .unit("ms")
            .default(5),
        // [web] (docs/web-api.md)
        Field::new("web.enabled", Bool, "Web page", "Serve this page at all.").default(true),
        Field::new("web.listen", String, "Web listen address", "IP:PORT the page is served on. Required."),
        Field::new("web.password_file", String, "Password file",
            "File with the admin password's hash, relative to edge.toml's directory.")
            .default("web-password"),
        Field::new("web.initial_password_file", String, "Initial password file",
            "First-boot file with a plaintext password, hashed into the password file and deleted."),
        Field::new("web.tls", Bool, "HTTPS", "Serve over HTTPS (a self-signed certificate when none is given).")
            .default(false),
        Field::new("web.cert", String, "HTTPS certificate", "PEM certificate for HTTPS."),
        Field::new("web.key", String, "HTTPS key", "PEM key for HTTPS."),
        Field::new("web.session_idle_minutes", Int, "Session idle timeout",
            "A session unused for this long is logged out.")
            .range(5..=10080)
            .unit("min")
            .default(720),
        Field::new("web.reboot_command", Strings, "Reboot command", "What reboot runs.")
            .default(vec!["systemctl", "reboot"]),
        Field::new("web.log_unit", String, "Log unit", "systemd unit whose journal the log view shows.")
            .default("braid-edge"),
        // [ota] (docs/ota.md)
        Field::new("ota.backend", Enum, "Update slots",
            "rauc: RAUC on the box; dir: directory slots (development, tests). Required with [ota].")
            .options(&["dir", "rauc"]),
        Field::new("ota.slots_dir", String, "Slots directory", "Where directory slots live. Only for dir."),
        Field::new("ota.public_keys", Strings, "Update signing keys",
            "minisign public key files allowed to sign bundles; at least one. Required."),
        Field::new("ota.compatible", String, "Hardware id",
            "A bundle must be built for this hardware id. Required."),
        Field::new("ota.allow_downgrade", Bool, "Allow downgrade",
            "Accept bundles not newer than the running version.")
            .default(false),
        Field::new("ota.max_payload_mb", Int, "Largest update", "Largest bundle payload accepted.")
            .range(c::OTA_MAX_PAYLOAD_MB_RANGE)
            .unit("MB")
            .default(c::DEFAULT_OTA_MAX_PAYLOAD_MB),
        Field::new("ota.health_timeout_s", Int, "Health check time",
            "A new slot must show a link up or the stream live this soon, or the box returns to the old slot.")
            .range(c::OTA_HEALTH_TIMEOUT_S_RANGE)
            .unit("s")
            .default(c::DEFAULT_OTA_HEALTH_TIMEOUT_S),
        Field::new("ota.max_boot_attempts", Int, "Boot attempts",
            "Starts (crashes, watchdog restarts) of an unconfirmed slot before it is given up.")
            .range(c::OTA_MAX_BOOT_ATTEMPTS_RANGE)
            .default(c::DEFAULT_OTA_MAX_BOOT_ATTEMPTS),
        Field::new("ota.reboot", String, "Reboot after update",
            "idle: when the stream is not live; never: the admin reboots; HH:MM: from that local time on, once not live.")
            .default("idle"),
        Field::new("ota.reboot_command", Strings, "Update reboot command", "What reboots the box into a new slot.")
            .default(vec!["systemctl", "reboot"]),
        Field::new("ota.state_dir", String, "Update state directory",
            "Boot-attempt counter, pending reboot and downloads.")
            .default(c::DEFAULT_OTA_STATE_DIR),
        Field::new("ota.hawkbit.server", String, "hawkBit server",
            "http(s) URL of the Eclipse hawkBit server. Required with [ota.hawkbit]."),
        Field::new("ota.hawkbit.tenant", String, "hawkBit tenant", "Tenant on the server. Required with [ota.hawkbit]."),
        Field::new("ota.hawkbit.controller_id", String, "hawkBit controller id",
            "This box on the server. Unset: the device id."),
        Field::new("ota.hawkbit.token", Secret, "hawkBit token", "Target security token. Unset: none."),
        Field::new("ota.hawkbit.download_dir", String, "Download directory",
            "Where artifacts are downloaded. Unset: download/ in the state directory."),
        Field::new("ota.hawkbit.poll_s", Int, "hawkBit poll interval",
            "Time between polls, until the server asks for another.")
            .range(c::HAWKBIT_POLL_S_RANGE)
            .unit("s")
            .default(c::DEFAULT_HAWKBIT_POLL_S),
    ]
}

/// Whether `key` (dotted, indices as numbers or `*`) holds a secret.
fn is_secret(key: &str) -> bool {
    field(key).is_some_and(|f| f.ty == FieldType::Secret)
}

/// Position of a key in the field table (new keys are written in this order).
fn field_rank(key: &str) -> usize {
    let pattern = pattern_of(key);
    fields()
        .iter()
        .position(|f| f.key == pattern)
        .unwrap_or(usize::MAX)
}

// ---------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------

/// edge.toml behind the settings page.
#[derive(Debug, Clone)]
pub struct Settings {
    path: PathBuf,
}

/// One save at a time (read, check revision, write), across every `Settings`.
static SAVE_LOCK: Mutex<()> = Mutex::new(());

impl Settings {
    pub fn new(path: PathBuf) -> Self {
        Settings { path }
    }

    /// The file the settings live in.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    fn read(&self) -> Result<String, SettingsError> {
        std::fs::read_to_string(&self.path)
            .map_err(|e| SettingsError::Io(format!("{}: cannot read: {e}", self.path.display())))
    }

    /// `{"revision", "values", "fields"}` for `GET /api/settings`.
    pub fn view(&self) -> Result<serde_json::Value, SettingsError> {
        let text = self.read()?;
        let values = values_of(&text).map_err(|e| {
            SettingsError::Io(format!("{}: not valid TOML: {e}", self.path.display()))
        })?;
        Ok(serde_json::json!({
            "revision": revision_of(&text),
            "values": redacted_values(values),
            "fields": fields(),
        }))
    }

    /// Applies `changes` (dotted key -> JSON value, see docs/web-api.md) to the file
    /// read at `revision`, checks the result with `parse_edge` and saves it atomically.
    pub fn save(
        &self,
        revision: &str,
        changes: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Saved, SettingsError> {
        let _guard = SAVE_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let old_text = self.read()?;
        let current = revision_of(&old_text);
        if current != revision {
            return Err(SettingsError::Stale { revision: current });
        }
        let mut doc: DocumentMut = old_text.parse().map_err(|e| {
            SettingsError::Io(format!("{}: not valid TOML: {e}", self.path.display()))
        })?;
        // Parents before children ("link" before "link.1.enabled").
        let mut keys: Vec<&String> = changes.keys().collect();
        keys.sort();
        for key in &keys {
            apply_change(&mut doc, key, &changes[key.as_str()])
                .map_err(SettingsError::BadRequest)?;
        }
        let new_text = doc.to_string();
        let config = crate::config::parse_edge(&new_text, self.path())
            .map_err(|e| SettingsError::Invalid(vec![field_error(&e, &new_text, &keys)]))?;
        let old_values = values_of(&old_text).map_err(SettingsError::Io)?;
        let new_values = values_of(&new_text).map_err(SettingsError::Io)?;
        let mut changed_keys = Vec::new();
        diff("", Some(&old_values), Some(&new_values), &mut changed_keys);
        let changed: Vec<(String, Apply)> = changed_keys
            .into_iter()
            .map(|k| {
                let apply = apply_of(&k);
                (k, apply)
            })
            .collect();
        let revision = if changed.is_empty() {
            current
        } else {
            crate::system::atomic::write_atomic_str(&self.path, &new_text).map_err(|e| {
                SettingsError::Io(format!("{}: cannot write: {e}", self.path.display()))
            })?;
            revision_of(&new_text)
        };
        Ok(Saved {
            revision,
            config,
            changed,
            values: redacted_values(new_values),
        })
    }
}

/// SHA-256 of the text, lowercase hex.
fn revision_of(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

// ---------------------------------------------------------------------------
// Values: the TOML as JSON
// ---------------------------------------------------------------------------

/// The document as JSON (tables -> objects, arrays of tables -> arrays of objects).
fn values_of(text: &str) -> Result<Json, String> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| e.message().trim_end().to_string())?;
    Ok(toml_to_json(toml::Value::Table(table)))
}

fn toml_to_json(v: toml::Value) -> Json {
    match v {
        toml::Value::String(s) => Json::String(s),
        toml::Value::Integer(i) => Json::from(i),
        // NaN and infinities have no JSON form.
        toml::Value::Float(f) => serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number),
        toml::Value::Boolean(b) => Json::Bool(b),
        toml::Value::Datetime(d) => Json::String(d.to_string()),
        toml::Value::Array(a) => Json::Array(a.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => {
            Json::Object(t.into_iter().map(|(k, v)| (k, toml_to_json(v))).collect())
        }
    }
}

/// `values` with every secret replaced by `"<redacted>"`.
fn redacted_values(mut values: Json) -> Json {
    fn walk(v: &mut Json, path: &str) {
        match v {
            _ if is_secret(path) => *v = Json::String(REDACTED.into()),
            Json::Object(m) => {
                for (k, child) in m.iter_mut() {
                    walk(child, &join(path, k));
                }
            }
            Json::Array(items) if is_table_array(items) => {
                for (i, child) in items.iter_mut().enumerate() {
                    walk(child, &join(path, &i.to_string()));
                }
            }
            _ => {}
        }
    }
    walk(&mut values, "");
    values
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// An array of tables as JSON: non-empty, every element an object.
fn is_table_array(items: &[Json]) -> bool {
    !items.is_empty() && items.iter().all(Json::is_object)
}

/// Dotted keys whose value differs between `old` and `new`, leaf by leaf. An array
/// of tables whose length changed is one key (the array's).
fn diff(path: &str, old: Option<&Json>, new: Option<&Json>, out: &mut Vec<String>) {
    match (old, new) {
        (Some(Json::Object(a)), Some(Json::Object(b))) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                diff(&join(path, k), a.get(k), b.get(k), out);
            }
        }
        (Some(Json::Object(a)), None) => {
            for (k, v) in a {
                diff(&join(path, k), Some(v), None, out);
            }
        }
        (None, Some(Json::Object(b))) => {
            for (k, v) in b {
                diff(&join(path, k), None, Some(v), out);
            }
        }
        (Some(Json::Array(a)), Some(Json::Array(b)))
            if a.len() == b.len() && is_table_array(a) && is_table_array(b) =>
        {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff(&join(path, &i.to_string()), Some(x), Some(y), out);
            }
        }
        (a, b) => {
            let same = match (a, b) {
                (Some(x), Some(y)) => json_eq(x, y),
                (None, None) => true,
                _ => false,
            };
            if !same {
                out.push(path.to_string());
            }
        }
    }
}

/// JSON equality with numbers compared by value (`0` equals `0.0`).
fn json_eq(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (Json::Array(x), Json::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y))
        }
        (Json::Object(x), Json::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

// ---------------------------------------------------------------------------
// Applying changes to the text
// ---------------------------------------------------------------------------

/// Applies one change (`key` -> `value`) to the document.
fn apply_change(doc: &mut DocumentMut, key: &str, value: &Json) -> Result<(), String> {
    let segments: Vec<&str> = key.split('.').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err(format!("{key:?}: not a dotted key"));
    }
    set_in_table(doc.as_table_mut(), false, "", &segments, key, value)
}

/// Sets (with `null`: removes) `path` below `table`, which is at `prefix` and is an
/// inline table when `inline`. `key` is the whole key, for messages.
fn set_in_table(
    table: &mut dyn TableLike,
    inline: bool,
    prefix: &str,
    path: &[&str],
    key: &str,
    value: &Json,
) -> Result<(), String> {
    let Some((first, rest)) = path.split_first() else {
        return Err(format!("{key:?}: not a dotted key"));
    };
    let here = join(prefix, first);
    if rest.is_empty() {
        return set_entry(table, inline, &here, first, value);
    }
    if table.get(first).is_none_or(Item::is_none) {
        if value.is_null() {
            return Ok(());
        }
        if is_index(rest[0]) {
            return Err(format!("{key}: there is no {here} to index"));
        }
        let mut t = Table::new();
        t.set_implicit(true);
        let item = if inline {
            Item::Value(toml_edit::Value::InlineTable(t.into_inline_table()))
        } else {
            Item::Table(t)
        };
        table.insert(first, item);
    }
    let item = table.get_mut(first).expect("present or just inserted");
    set_in_item(item, &here, rest, key, value)
}

/// Sets `path` below `item` (at `here`): a table, or an array indexed by `path[0]`.
fn set_in_item(
    item: &mut Item,
    here: &str,
    path: &[&str],
    key: &str,
    value: &Json,
) -> Result<(), String> {
    match item {
        Item::Table(t) => set_in_table(t, false, here, path, key, value),
        Item::Value(toml_edit::Value::InlineTable(t)) => {
            set_in_table(t, true, here, path, key, value)
        }
        Item::ArrayOfTables(a) => {
            let i = index(path[0], a.len(), here, key)?;
            let at = join(here, &i.to_string());
            let table = a.get_mut(i).expect("index checked");
            match (&path[1..], value) {
                ([], Json::Null) => {
                    a.remove(i);
                    Ok(())
                }
                ([], Json::Object(m)) => merge_table(table, false, &at, m),
                ([], _) => Err(format!("{key}: an entry of {here} must be an object")),
                (rest, _) => set_in_table(table, false, &at, rest, key, value),
            }
        }
        Item::Value(toml_edit::Value::Array(arr)) => {
            let i = index(path[0], arr.len(), here, key)?;
            let at = join(here, &i.to_string());
            if path.len() == 1 {
                if value.is_null() {
                    arr.remove(i);
                    return Ok(());
                }
                if is_secret(&at) && value == REDACTED {
                    return Ok(());
                }
                return replace_value(arr.get_mut(i).expect("index checked"), &at, value);
            }
            match arr.get_mut(i) {
                Some(toml_edit::Value::InlineTable(t)) => {
                    set_in_table(t, true, &at, &path[1..], key, value)
                }
                _ => Err(format!("{key}: {at} is not a table")),
            }
        }
        _ => Err(format!("{key}: {here} is not a table")),
    }
}

/// `segment` as an index into an array of `len` at `here`.
fn index(segment: &str, len: usize, here: &str, key: &str) -> Result<usize, String> {
    if !is_index(segment) {
        return Err(format!(
            "{key}: {here} is an array, expected an index, got {segment:?}"
        ));
    }
    match segment.parse::<usize>() {
        Ok(i) if i < len => Ok(i),
        _ => Err(format!(
            "{key}: index {segment} out of range, {here} has {len} entries"
        )),
    }
}

/// Sets (or removes) the entry `name` of `table`; `here` is its dotted key.
fn set_entry(
    table: &mut dyn TableLike,
    inline: bool,
    here: &str,
    name: &str,
    value: &Json,
) -> Result<(), String> {
    if is_secret(here) && value == REDACTED {
        // The page got "<redacted>" and sent it back: leave the secret as it is.
        return Ok(());
    }
    if value.is_null() {
        remove_entry(table, inline, name);
        return Ok(());
    }
    match table.get_mut(name) {
        Some(item) if !item.is_none() => replace_item(item, inline, here, value),
        _ => {
            let item = new_item(here, value, inline)?;
            table.insert(name, item);
            Ok(())
        }
    }
}

/// Removes the entry `name`. The comment lines above a key-value (which often
/// describe other keys too, or carry commented-out alternatives) move to the next
/// key-value of the table, or below the previous one when it was the last.
fn remove_entry(table: &mut dyn TableLike, inline: bool, name: &str) {
    let comment = match (inline, table.get(name), table.key(name)) {
        (false, Some(Item::Value(_)), Some(key)) => key
            .leaf_decor()
            .prefix()
            .and_then(|p| p.as_str())
            .filter(|p| p.contains('#'))
            .map(str::to_string),
        _ => None,
    };
    let values: Vec<String> = table
        .iter()
        .filter(|(_, item)| item.is_value())
        .map(|(k, _)| k.to_string())
        .collect();
    table.remove(name);
    let Some(comment) = comment else {
        return;
    };
    let at = values.iter().position(|k| k == name);
    let next = at.and_then(|i| values.get(i + 1));
    let prev = at
        .and_then(|i| i.checked_sub(1))
        .and_then(|i| values.get(i));
    if let Some(mut key) = next.and_then(|k| table.key_mut(k)) {
        let decor = key.leaf_decor_mut();
        let old = decor.prefix().and_then(|p| p.as_str()).unwrap_or("");
        let prefix = format!("{comment}{old}");
        decor.set_prefix(prefix);
    } else if let Some(v) = prev
        .and_then(|k| table.get_mut(k))
        .and_then(Item::as_value_mut)
    {
        let decor = v.decor_mut();
        let old = decor.suffix().and_then(|s| s.as_str()).unwrap_or("");
        let lines = comment.trim_end_matches(['\n', '\r']);
        let suffix = format!("{old}\n{}", lines.trim_start_matches(['\n', '\r']));
        decor.set_suffix(suffix);
    }
}

/// Replaces an existing item, keeping what can be kept: its comments, and for a
/// table (array of tables) replaced by an object (array of objects) the entries'
/// comments too (the table is updated key by key).
fn replace_item(item: &mut Item, inline: bool, here: &str, value: &Json) -> Result<(), String> {
    match (item, value) {
        (Item::Table(t), Json::Object(m)) => merge_table(t, false, here, m),
        (Item::Value(toml_edit::Value::InlineTable(t)), Json::Object(m)) => {
            merge_table(t, true, here, m)
        }
        (Item::ArrayOfTables(a), Json::Array(items)) if is_table_array(items) => {
            merge_array(a, here, items)
        }
        (Item::Value(v), value) if inline || !is_container(value) => replace_value(v, here, value),
        (item, value) => {
            *item = new_item(here, value, inline)?;
            Ok(())
        }
    }
}

/// Whether a JSON value becomes a standard table or an array of tables.
fn is_container(value: &Json) -> bool {
    match value {
        Json::Object(_) => true,
        Json::Array(items) => is_table_array(items),
        _ => false,
    }
}

/// Makes `table` hold exactly the entries of `m` (secrets sent as `"<redacted>"`
/// kept), updating entries in place.
fn merge_table(
    table: &mut dyn TableLike,
    inline: bool,
    here: &str,
    m: &Map<String, Json>,
) -> Result<(), String> {
    let existing: Vec<String> = table.iter().map(|(k, _)| k.to_string()).collect();
    for k in existing {
        if m.get(&k).is_none_or(Json::is_null) {
            remove_entry(table, inline, &k);
        }
    }
    let mut entries: Vec<(&String, &Json)> = m.iter().filter(|(_, v)| !v.is_null()).collect();
    entries.sort_by_key(|(k, _)| field_rank(&join(here, k)));
    for (k, v) in entries {
        set_entry(table, inline, &join(here, k), k, v)?;
    }
    Ok(())
}

/// Makes the array of tables hold the objects of `items`, entry by entry.
fn merge_array(a: &mut ArrayOfTables, here: &str, items: &[Json]) -> Result<(), String> {
    while a.len() > items.len() {
        a.remove(a.len() - 1);
    }
    for (i, item) in items.iter().enumerate() {
        let at = join(here, &i.to_string());
        let Json::Object(m) = item else {
            return Err(format!("{at}: must be an object"));
        };
        match a.get_mut(i) {
            Some(t) => merge_table(t, false, &at, m)?,
            None => {
                let mut t = Table::new();
                merge_table(&mut t, false, &at, m)?;
                a.push(t);
            }
        }
    }
    Ok(())
}

/// A new item for `value` at `here`: objects become tables and arrays of objects
/// arrays of tables, unless inside an inline table.
fn new_item(here: &str, value: &Json, inline: bool) -> Result<Item, String> {
    match value {
        Json::Object(m) if !inline => {
            let mut t = Table::new();
            merge_table(&mut t, false, here, m)?;
            Ok(Item::Table(t))
        }
        Json::Array(items) if !inline && is_table_array(items) => {
            let mut a = ArrayOfTables::new();
            merge_array(&mut a, here, items)?;
            Ok(Item::ArrayOfTables(a))
        }
        _ => Ok(Item::Value(json_to_value(here, value)?)),
    }
}

/// Replaces a value, keeping its decoration (spaces, a trailing comment).
fn replace_value(v: &mut toml_edit::Value, here: &str, value: &Json) -> Result<(), String> {
    let decor = v.decor().clone();
    *v = json_to_value(here, value)?;
    *v.decor_mut() = decor;
    Ok(())
}

/// A JSON value as a TOML value: integral numbers as integers (floats for a float
/// field), objects as inline tables.
fn json_to_value(here: &str, value: &Json) -> Result<toml_edit::Value, String> {
    Ok(match value {
        Json::Null => {
            return Err(format!(
                "{here}: null only removes a whole key, it cannot be part of a value"
            ))
        }
        Json::Bool(b) => (*b).into(),
        Json::String(s) => s.as_str().into(),
        Json::Number(n) => {
            let float = field(here).is_some_and(|f| f.ty == FieldType::Float);
            if let Some(i) = n.as_i64() {
                if float {
                    (i as f64).into()
                } else {
                    i.into()
                }
            } else if n.is_u64() {
                return Err(format!("{here}: {n} is too large for TOML"));
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if !float && f.fract() == 0.0 && f.abs() < 9.0e15 {
                    (f as i64).into()
                } else {
                    f.into()
                }
            }
        }
        Json::Array(items) => {
            let mut arr = toml_edit::Array::new();
            for (i, item) in items.iter().enumerate() {
                arr.push(json_to_value(&join(here, &i.to_string()), item)?);
            }
            toml_edit::Value::Array(arr)
        }
        Json::Object(m) => {
            let mut t = toml_edit::InlineTable::new();
            merge_table(&mut t, true, here, m)?;
            toml_edit::Value::InlineTable(t)
        }
    })
}

// ---------------------------------------------------------------------------
// Errors back to fields
// ---------------------------------------------------------------------------

/// What is on a line of the text: a key's value, or a table header.
#[derive(Debug, PartialEq, Eq)]
enum Loc {
    Leaf(String),
    Table(String),
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    1 + text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

/// The key (dotted, with indices) whose key or value is on `line`, else the table
/// whose header is there.
fn locate(text: &str, line: usize) -> Option<Loc> {
    let doc = ImDocument::parse(text).ok()?;
    let mut header = None;
    find_line(doc.as_table(), "", text, line, &mut header)
        .map(Loc::Leaf)
        .or(header.map(Loc::Table))
}

fn find_line(
    table: &Table,
    prefix: &str,
    text: &str,
    line: usize,
    header: &mut Option<String>,
) -> Option<String> {
    if !prefix.is_empty() && !table.is_dotted() && header.is_none() {
        if let Some(span) = table.span() {
            if line_of(text, span.start) == line {
                *header = Some(prefix.to_string());
            }
        }
    }
    for (k, item) in table.iter() {
        let here = join(prefix, k);
        let found = match item {
            Item::Table(t) => find_line(t, &here, text, line, header),
            Item::ArrayOfTables(a) => a
                .iter()
                .enumerate()
                .find_map(|(i, t)| find_line(t, &join(&here, &i.to_string()), text, line, header)),
            Item::Value(v) => {
                let start = table.key(k).and_then(|k| k.span()).or(v.span());
                match (start, v.span()) {
                    (Some(s), Some(e)) => {
                        let first = line_of(text, s.start);
                        let last = line_of(text, e.end.saturating_sub(1).max(s.start));
                        (first..=last).contains(&line).then(|| here.clone())
                    }
                    _ => None,
                }
            }
            Item::None => None,
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

/// `a` is `b` or below it.
fn under(a: &str, b: &str) -> bool {
    a == b || (a.starts_with(b) && a.as_bytes().get(b.len()) == Some(&b'.'))
}

/// The index of array `section` that `path` is in (`link.2.name` -> 2).
fn index_in(path: &str, section: &str) -> Option<usize> {
    let rest = path.strip_prefix(section)?.strip_prefix('.')?;
    rest.split('.').next()?.parse().ok()
}

/// A `parse_edge` error as an error on one field of the request: the key its
/// message starts with, else the key on its line, else the first changed key in the
/// table it concerns, else the first changed key.
fn field_error(err: &ConfigError, new_text: &str, keys: &[&String]) -> FieldError {
    let message = err.reason();
    let loc = err.line().and_then(|l| locate(new_text, l));
    FieldError {
        field: error_field(&message, loc, keys),
        message,
    }
}

fn error_field(message: &str, loc: Option<Loc>, keys: &[&String]) -> String {
    let token: String = message
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
        .collect();
    let first_under = |p: &str| keys.iter().find(|k| under(k, p)).map(|k| k.to_string());
    let loc_path = match &loc {
        Some(Loc::Leaf(p) | Loc::Table(p)) => Some(p.as_str()),
        None => None,
    };
    // The message names the key (`relay.latency_ms: ...`; `link.name: ...` for
    // the array, whose index comes from the line or the request).
    if token.contains('.') {
        if field(&token).is_some() {
            return token;
        }
        if let Some((section, rest)) = token.split_once('.') {
            if field(&format!("{section}.*.{rest}")).is_some() {
                let i = loc_path
                    .and_then(|p| index_in(p, section))
                    .or_else(|| keys.iter().find_map(|k| index_in(k, section)));
                if let Some(i) = i {
                    return format!("{section}.{i}.{rest}");
                }
            }
        }
    }
    match loc {
        Some(Loc::Leaf(p)) => return p,
        Some(Loc::Table(p)) => {
            if let Some(name) = message
                .strip_prefix("missing field `")
                .and_then(|m| m.split('`').next())
            {
                return join(&p, name);
            }
            if let Some(k) = first_under(&p) {
                return k;
            }
            if let Some(k) = keys.iter().find(|k| under(&p, k)) {
                return k.to_string();
            }
        }
        None => {
            if !token.is_empty() {
                if let Some(k) = first_under(&token) {
                    return k;
                }
            }
        }
    }
    keys.first().map_or(token, |k| k.to_string())
}

// ---------------------------------------------------------------------------
// Redaction
// ---------------------------------------------------------------------------

/// edge.toml text with its secrets replaced by `"<redacted>"` (diagnostics bundle).
pub fn redacted_toml(text: &str) -> String {
    match text.parse::<DocumentMut>() {
        Ok(mut doc) => {
            redact_table(doc.as_table_mut(), "");
            doc.to_string()
        }
        // Not TOML: hide every line that sets a key named like a secret.
        Err(_) => redact_lines(text),
    }
}

fn redact_table(table: &mut dyn TableLike, prefix: &str) {
    for (k, item) in table.iter_mut() {
        let here = join(prefix, k.get());
        match item {
            Item::Table(t) => redact_table(t, &here),
            Item::ArrayOfTables(a) => {
                for (i, t) in a.iter_mut().enumerate() {
                    redact_table(t, &join(&here, &i.to_string()));
                }
            }
            Item::Value(v) if is_secret(&here) => {
                let _ = replace_value(v, &here, &Json::String(REDACTED.into()));
            }
            Item::Value(toml_edit::Value::InlineTable(t)) => redact_table(t, &here),
            Item::Value(toml_edit::Value::Array(arr)) => {
                for (i, v) in arr.iter_mut().enumerate() {
                    if let toml_edit::Value::InlineTable(t) = v {
                        redact_table(t, &join(&here, &i.to_string()));
                    }
                }
            }
            _ => {}
        }
    }
}

fn redact_lines(text: &str) -> String {
    let leaves: Vec<&str> = fields()
        .iter()
        .filter(|f| f.ty == FieldType::Secret)
        .filter_map(|f| f.key.rsplit('.').next())
        .collect();
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let secret = line.split_once('=').and_then(|(k, _)| {
            let k = k.trim().trim_matches(['"', '\'']);
            let leaf = k.rsplit('.').next()?.trim().trim_matches(['"', '\'']);
            leaves.contains(&leaf).then_some(k)
        });
        match secret {
            Some(k) if !line.trim_start().starts_with('#') => {
                let indent = &line[..line.len() - line.trim_start().len()];
                out.push_str(&format!("{indent}{k} = \"{REDACTED}\""));
                if line.ends_with('\n') {
                    out.push('\n');
                }
            }
            _ => out.push_str(line),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::TempDir;
    use serde_json::json;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    const EXAMPLE: &str = include_str!("../../examples/edge.toml");

    /// The example with an SRT input and its passphrase.
    fn srt_example() -> String {
        let t = EXAMPLE.replace("kind = \"udp\"", "kind = \"srt\"").replace(
            "# passphrase = \"change-me-please\"",
            "passphrase = \"change-me-please\"",
        );
        assert!(t.contains("\npassphrase = \"change-me-please\""));
        t
    }

    const MINIMAL: &str = "\
# A small edge.toml.
[device]
id = \"cam1\"
cert = \"c.pem\"
key = \"k.pem\"

[relay]
address = \"127.0.0.1:7000\"
fingerprint = \"sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"
latency_ms = 500 # budget

[[link]]
name = \"a\"
interface = \"wwan0\"
";

    fn setup(text: &str) -> (TempDir, Settings) {
        let d = TempDir::new("settings").unwrap();
        let p = d.path().join("edge.toml");
        std::fs::write(&p, text).unwrap();
        (d, Settings::new(p))
    }

    fn map(v: Json) -> Map<String, Json> {
        v.as_object().unwrap().clone()
    }

    fn file(s: &Settings) -> String {
        std::fs::read_to_string(s.path()).unwrap()
    }

    fn save(s: &Settings, changes: Json) -> Result<Saved, SettingsError> {
        s.save(&revision_of(&file(s)), &map(changes))
    }

    /// The save fails validation with exactly one error, and the file is untouched.
    fn invalid(s: &Settings, changes: Json) -> FieldError {
        let before = file(s);
        match save(s, changes) {
            Err(SettingsError::Invalid(mut errors)) => {
                assert_eq!(errors.len(), 1, "{errors:?}");
                assert_eq!(file(s), before, "a refused save changed the file");
                errors.remove(0)
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn changed(saved: &Saved) -> Vec<(&str, Apply)> {
        saved
            .changed
            .iter()
            .map(|(k, a)| (k.as_str(), *a))
            .collect()
    }

    /// Every comment line of `before` is still in `after`.
    fn assert_comments_kept(before: &str, after: &str) {
        for line in before.lines().filter(|l| l.trim_start().starts_with('#')) {
            assert!(after.contains(line), "comment lost: {line}\n{after}");
        }
    }

    #[test]
    fn view_of_the_example() {
        let text = srt_example();
        let (_d, s) = setup(&text);
        let v = s.view().unwrap();
        assert_eq!(v["revision"], revision_of(&text));
        assert_eq!(v["revision"].as_str().unwrap().len(), 64);
        let values = &v["values"];
        assert_eq!(values["relay"]["latency_ms"], 500);
        assert_eq!(values["input"]["kind"], "srt");
        assert_eq!(values["input"]["passphrase"], REDACTED);
        assert_eq!(values["scheduler"]["duplicate_budget"], 0.02);
        assert_eq!(values["video"]["ladder"][1], "960x540");
        let links = values["link"].as_array().unwrap();
        assert_eq!(links.len(), 3);
        assert_eq!(links[2]["bind"], "127.0.0.11");
        assert_eq!(links[2]["enabled"], false);
        assert!(!v.to_string().contains("change-me-please"));

        let fields = v["fields"].as_array().unwrap();
        assert_eq!(fields.len(), super::fields().len());
        // The contract's example field, as is.
        let latency = fields
            .iter()
            .find(|f| f["key"] == "relay.latency_ms")
            .unwrap();
        assert_eq!(
            *latency,
            json!({"key": "relay.latency_ms", "section": "relay", "label": "Latency budget",
                   "type": "int", "min": 50, "max": 10000, "unit": "ms", "default": 500,
                   "help": "End-to-end latency budget", "apply": "stream"})
        );
        let kind = fields.iter().find(|f| f["key"] == "input.kind").unwrap();
        assert_eq!(kind["type"], "enum");
        assert_eq!(
            kind["options"],
            json!(["udp", "test", "v4l2", "pattern", "srt"])
        );
        let pass = fields
            .iter()
            .find(|f| f["key"] == "input.passphrase")
            .unwrap();
        assert_eq!(pass["type"], "secret");
        assert!(pass.get("default").is_none());
        let cap = fields
            .iter()
            .find(|f| f["key"] == "link.*.data_cap_mb")
            .unwrap();
        assert_eq!(
            (cap["section"].as_str(), cap["apply"].as_str()),
            (Some("link"), Some("live"))
        );
        let budget = fields
            .iter()
            .find(|f| f["key"] == "scheduler.duplicate_budget")
            .unwrap();
        assert_eq!(
            (budget["min"].as_f64(), budget["max"].as_f64()),
            (Some(0.0), Some(0.5))
        );
    }

    #[test]
    fn view_errors() {
        let d = TempDir::new("settings").unwrap();
        let s = Settings::new(d.path().join("missing.toml"));
        assert!(matches!(s.view(), Err(SettingsError::Io(_))));
        let (_d, s) = setup("[device\nid = 1\n");
        assert!(matches!(s.view(), Err(SettingsError::Io(m)) if m.contains("not valid TOML")));
    }

    #[test]
    fn valid_change_is_saved_with_comments() {
        let (_d, s) = setup(EXAMPLE);
        std::fs::set_permissions(s.path(), std::fs::Permissions::from_mode(0o640)).unwrap();
        let saved = save(
            &s,
            json!({"relay.latency_ms": 800, "video.max_kbps": 8000, "link.1.enabled": false}),
        )
        .unwrap();
        let text = file(&s);
        assert_eq!(saved.revision, revision_of(&text));
        assert_comments_kept(EXAMPLE, &text);
        assert!(text.contains("\nlatency_ms = 800\n"), "{text}");
        assert!(text.contains("\nmax_kbps = 8000\n"), "{text}");
        assert!(
            text.contains("name = \"modem1\"\ninterface = \"wwan1\"\nenabled = false\n"),
            "{text}"
        );
        // Nothing else differs.
        let expected = EXAMPLE
            .replace("\nlatency_ms = 500\n", "\nlatency_ms = 800\n")
            .replace("\nmax_kbps = 12000\n", "\nmax_kbps = 8000\n")
            .replace(
                "name = \"modem1\"\ninterface = \"wwan1\"\n",
                "name = \"modem1\"\ninterface = \"wwan1\"\nenabled = false\n",
            );
        assert_eq!(text, expected);
        assert_eq!(saved.config.relay.latency, Duration::from_millis(800));
        assert_eq!(saved.config.video.max_bps, 8_000_000);
        assert!(!saved.config.links[1].enabled);
        assert_eq!(saved.values["relay"]["latency_ms"], 800);
        assert_eq!(
            changed(&saved),
            [
                ("link.1.enabled", Apply::Stream),
                ("relay.latency_ms", Apply::Stream),
                ("video.max_kbps", Apply::Live)
            ]
        );
        let mode = std::fs::metadata(s.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert_eq!(
            crate::system::atomic::list_temps(_d.path()).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn trailing_comment_and_new_table() {
        let (_d, s) = setup(MINIMAL);
        let saved = save(
            &s,
            json!({"relay.latency_ms": 900.0, "video.max_kbps": 9000,
                   "scheduler.duplicate_budget": 0, "link.0.data_cap_mb": 2000}),
        )
        .unwrap();
        let text = file(&s);
        assert!(text.contains("latency_ms = 900 # budget\n"), "{text}");
        assert!(text.contains("\n[video]\nmax_kbps = 9000\n"), "{text}");
        assert!(
            text.contains("\n[scheduler]\nduplicate_budget = 0.0\n"),
            "{text}"
        );
        assert!(
            text.contains("interface = \"wwan0\"\ndata_cap_mb = 2000\n"),
            "{text}"
        );
        assert!(text.starts_with("# A small edge.toml.\n[device]\n"));
        assert_eq!(saved.config.scheduler.duplicate_budget, 0.0);
        assert_eq!(saved.config.links[0].data_cap_bytes, Some(2_000_000_000));
        assert_eq!(
            changed(&saved),
            [
                ("link.0.data_cap_mb", Apply::Live),
                ("relay.latency_ms", Apply::Stream),
                ("scheduler.duplicate_budget", Apply::Live),
                ("video.max_kbps", Apply::Live)
            ]
        );
    }

    #[test]
    fn out_of_range_value() {
        let (_d, s) = setup(EXAMPLE);
        let e = invalid(&s, json!({"relay.latency_ms": 20}));
        assert_eq!(
            e,
            FieldError {
                field: "relay.latency_ms".into(),
                message: "relay.latency_ms: must be between 50 and 10000, got 20".into()
            }
        );
        let e = invalid(&s, json!({"video.min_kbps": 20000}));
        assert_eq!(e.field, "video.max_kbps");
        assert!(
            e.message.starts_with("video.max_kbps: must not be below"),
            "{e:?}"
        );
        let e = invalid(&s, json!({"modem.poll_interval_ms": 0}));
        assert_eq!(e.field, "modem.poll_interval_ms", "{e:?}");
        let e = invalid(&s, json!({"gpio.led_red": 17, "gpio.button": 17}));
        assert_eq!(e.field, "gpio.button", "{e:?}");
        assert_eq!(e.message, "gpio.button = 17: already used by gpio.led_red");
        let e = invalid(&s, json!({"gpio.button_long_press_ms": 10}));
        assert_eq!(e.field, "gpio.button_long_press_ms", "{e:?}");
    }

    #[test]
    fn wrong_type() {
        let (_d, s) = setup(EXAMPLE);
        let e = invalid(&s, json!({"video.width": "wide"}));
        assert_eq!(e.field, "video.width");
        assert!(
            e.message.starts_with("invalid type: string \"wide\""),
            "{e:?}"
        );
        let e = invalid(&s, json!({"link.2.enabled": "no"}));
        assert_eq!(e.field, "link.2.enabled", "{e:?}");
        let e = invalid(&s, json!({"video.ladder": ["1280x720", 5]}));
        assert_eq!(e.field, "video.ladder", "{e:?}");
        let e = invalid(&s, json!({"relay.bogus": 1}));
        assert_eq!(e.field, "relay.bogus");
        assert!(e.message.starts_with("unknown field `bogus`"), "{e:?}");
        let e = invalid(&s, json!({"gpio.button": 300}));
        assert_eq!(e.field, "gpio.button", "{e:?}");
        let e = invalid(&s, json!({"relay.latency_ms": 1.5}));
        assert_eq!(e.field, "relay.latency_ms", "{e:?}");
        let e = invalid(&s, json!({"audio.codec": "mp3"}));
        assert_eq!(e.field, "audio.codec", "{e:?}");
    }

    #[test]
    fn missing_and_table_level_errors() {
        let (_d, s) = setup(EXAMPLE);
        let e = invalid(&s, json!({"device.key": null}));
        assert_eq!(e.field, "device.key", "{e:?}");
        assert!(e.message.starts_with("missing field `key`"), "{e:?}");
        let e = invalid(&s, json!({"relay.fingerprint": null}));
        assert_eq!(e.field, "relay.fingerprint", "{e:?}");
        assert!(e.message.starts_with("relay: one of fingerprint"), "{e:?}");
        let e = invalid(&s, json!({"relay.ca": "ca.pem"}));
        assert_eq!(e.field, "relay.ca", "{e:?}");
        let e = invalid(&s, json!({"link.1.interface": null}));
        assert_eq!(e.field, "link.1.interface", "{e:?}");
        assert_eq!(
            e.message,
            "link \"modem1\": one of interface / bind is required"
        );
        let e = invalid(&s, json!({"link": []}));
        assert_eq!(e.field, "link", "{e:?}");
        let e = invalid(&s, json!({"input.rate_kbps": 900}));
        assert_eq!(e.field, "input.rate_kbps", "{e:?}");
        assert_eq!(
            e.message,
            "input.rate_kbps: only applies to kind = \"test\""
        );
    }

    #[test]
    fn link_errors_point_at_the_link() {
        let (_d, s) = setup(EXAMPLE);
        let e = invalid(&s, json!({"link.2.name": "modem0"}));
        assert_eq!(e.field, "link.2.name");
        assert!(
            e.message
                .starts_with("link.name: duplicate link name \"modem0\""),
            "{e:?}"
        );
        let e = invalid(&s, json!({"link.1.interface": "wwan0"}));
        assert_eq!(e.field, "link.1.interface", "{e:?}");
        let e = invalid(&s, json!({"link.1.name": "bad name"}));
        assert_eq!(e.field, "link.1.name", "{e:?}");
        let e = invalid(&s, json!({"link.0.data_cap_mb": 0}));
        assert_eq!(e.field, "link.0.data_cap_mb", "{e:?}");
        // A whole-array change: the index comes from the line.
        let e = invalid(
            &s,
            json!({"link": [{"name": "a", "interface": "wwan0"}, {"name": "a", "interface": "wwan1"}]}),
        );
        assert_eq!(e.field, "link.1.name", "{e:?}");
    }

    #[test]
    fn stale_revision() {
        let (_d, s) = setup(EXAMPLE);
        let old = revision_of(EXAMPLE);
        let edited = EXAMPLE.replace("latency_ms = 500", "latency_ms = 600");
        std::fs::write(s.path(), &edited).unwrap();
        match s.save(&old, &map(json!({"relay.latency_ms": 700}))) {
            Err(SettingsError::Stale { revision }) => assert_eq!(revision, revision_of(&edited)),
            other => panic!("{other:?}"),
        }
        assert_eq!(file(&s), edited);
    }

    #[test]
    fn add_and_remove_links() {
        let (_d, s) = setup(EXAMPLE);
        let mut links = s.view().unwrap()["values"]["link"].clone();
        links
            .as_array_mut()
            .unwrap()
            .push(json!({"interface": "eth0", "name": "eth0", "data_cap_mb": 500}));
        let saved = save(&s, json!({"link": links})).unwrap();
        assert_eq!(changed(&saved), [("link", Apply::Stream)]);
        assert_eq!(saved.config.links.len(), 4);
        let text = file(&s);
        assert_comments_kept(EXAMPLE, &text);
        assert!(
            text.contains("\n[[link]]\nname = \"eth0\"\ninterface = \"eth0\"\ndata_cap_mb = 500\n"),
            "{text}"
        );

        // Remove the second link: the rest keep their comments.
        let saved = save(&s, json!({"link.1": null})).unwrap();
        assert_eq!(changed(&saved), [("link", Apply::Stream)]);
        let names: Vec<_> = saved.config.links.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["modem0", "lo-test", "eth0"]);
        let text = file(&s);
        assert!(!text.contains("modem1"));
        assert!(text.contains("# Link name used in logs and stats"));

        // Replace the whole array with one link: the first table is updated in place.
        let saved = save(&s, json!({"link": [{"name": "only", "bind": "10.0.0.2"}]})).unwrap();
        assert_eq!(changed(&saved), [("link", Apply::Stream)]);
        let text = file(&s);
        assert!(
            text.contains("# Link name used in logs and stats"),
            "{text}"
        );
        assert_eq!(text.matches("\n[[link]]\n").count(), 1);
        assert!(!text.contains("interface = \"wwan0\""));
        assert_eq!(
            saved.values["link"],
            json!([{"name": "only", "bind": "10.0.0.2"}])
        );
    }

    #[test]
    fn null_goes_back_to_default() {
        let (_d, s) = setup(EXAMPLE);
        let saved = save(
            &s,
            json!({"relay.latency_ms": null, "link.2.enabled": null}),
        )
        .unwrap();
        assert_eq!(saved.config.relay.latency, crate::config::DEFAULT_LATENCY);
        assert!(saved.config.links[2].enabled);
        assert!(saved.values["relay"].get("latency_ms").is_none());
        assert_eq!(
            changed(&saved),
            [
                ("link.2.enabled", Apply::Stream),
                ("relay.latency_ms", Apply::Stream)
            ]
        );
        let text = file(&s);
        assert!(!text.contains("\nlatency_ms ="));
        // The comment lines above a removed key stay (here: below the key before it).
        assert_comments_kept(EXAMPLE, &text);
        assert!(
            text.contains("\n# ca = \"/etc/braid/relay-ca.pem\"\n"),
            "{text}"
        );
        let saved = save(
            &s,
            json!({"video.width": null, "gpio.leds_active_low": null}),
        )
        .unwrap();
        assert_eq!(saved.changed.len(), 2);
        let text = file(&s);
        assert_comments_kept(EXAMPLE, &text);
        assert!(text.contains("frame rate.\nheight = 720\n"), "{text}");
        // Removing what is not there changes nothing.
        let saved = save(
            &s,
            json!({"relay.latency_ms": null, "input.passphrase": null}),
        )
        .unwrap();
        assert!(saved.changed.is_empty());
        assert_eq!(file(&s), text);
    }

    #[test]
    fn secrets_sent_back_redacted_are_kept() {
        let text = srt_example();
        let (_d, s) = setup(&text);
        let saved = save(
            &s,
            json!({"input.passphrase": REDACTED, "relay.latency_ms": 600}),
        )
        .unwrap();
        assert_eq!(changed(&saved), [("relay.latency_ms", Apply::Stream)]);
        assert_eq!(saved.values["input"]["passphrase"], REDACTED);
        assert!(file(&s).contains("\npassphrase = \"change-me-please\""));
        match &saved.config.input {
            crate::config::InputConfig::Srt { passphrase, .. } => {
                assert_eq!(passphrase.as_deref(), Some("change-me-please"))
            }
            other => panic!("{other:?}"),
        }
        // The whole table sent back as the page shows it.
        let input = s.view().unwrap()["values"]["input"].clone();
        let saved = save(&s, json!({ "input": input })).unwrap();
        assert!(saved.changed.is_empty(), "{:?}", saved.changed);
        assert!(file(&s).contains("\npassphrase = \"change-me-please\""));
        // A new one is written.
        let saved = save(&s, json!({"input.passphrase": "another-secret"})).unwrap();
        assert_eq!(changed(&saved), [("input.passphrase", Apply::Stream)]);
        assert!(file(&s).contains("\npassphrase = \"another-secret\""));
        // A secret too short: the error does not need the value to be shown.
        let e = invalid(&s, json!({"input.passphrase": "short"}));
        assert_eq!(e.field, "input.passphrase");
        assert!(!e.message.contains("short"), "{e:?}");
    }

    #[test]
    fn apply_classification() {
        let (_d, s) = setup(EXAMPLE);
        let saved = save(
            &s,
            json!({
                "link.0.data_cap_mb": 100, "video.min_kbps": 400, "scheduler.duplicate_budget": 0.1,
                "stream.autostart": false, "device.id": "cam9", "stats.listen": "127.0.0.1:9999",
                "gpio.button_debounce_ms": 40, "modem.apn": "internet", "input.listen": "127.0.0.1:5001",
                "usage.billing_day": 15, "audio.codec": "opus"
            }),
        )
        .unwrap();
        assert_eq!(
            changed(&saved),
            [
                ("audio.codec", Apply::Stream),
                ("device.id", Apply::Service),
                ("gpio.button_debounce_ms", Apply::Service),
                ("input.listen", Apply::Stream),
                ("link.0.data_cap_mb", Apply::Live),
                ("modem.apn", Apply::Service),
                ("scheduler.duplicate_budget", Apply::Live),
                ("stats.listen", Apply::Service),
                ("stream.autostart", Apply::Live),
                ("usage.billing_day", Apply::Stream),
                ("video.min_kbps", Apply::Live),
            ]
        );
        for (key, apply) in [
            ("web.listen", Apply::Service),
            ("web.tls", Apply::Service),
            ("link", Apply::Stream),
            ("link.3", Apply::Stream),
            ("link.7.data_cap_mb", Apply::Live),
            ("link.7.name", Apply::Stream),
            ("relay.address", Apply::Stream),
            ("something.unknown", Apply::Stream),
        ] {
            assert_eq!(apply_of(key), apply, "{key}");
        }
    }

    #[test]
    fn unchanged_submission_is_not_written() {
        let (_d, s) = setup(EXAMPLE);
        let before = std::fs::metadata(s.path()).unwrap().modified().unwrap();
        let saved = save(
            &s,
            json!({"relay.latency_ms": 500, "scheduler.duplicate_budget": 0.02,
                   "video.ladder": ["1280x720", "960x540", "640x360"], "link.0.name": "modem0"}),
        )
        .unwrap();
        assert!(saved.changed.is_empty());
        assert_eq!(saved.revision, revision_of(EXAMPLE));
        assert_eq!(file(&s), EXAMPLE);
        assert_eq!(
            std::fs::metadata(s.path()).unwrap().modified().unwrap(),
            before
        );
        let saved = save(&s, json!({})).unwrap();
        assert!(saved.changed.is_empty());
    }

    #[test]
    fn keys_that_cannot_be_placed() {
        let (_d, s) = setup(EXAMPLE);
        for changes in [
            json!({"link.3.enabled": true}),
            json!({"link.x.enabled": true}),
            json!({"relay.latency_ms.x": 1}),
            json!({"relay..latency_ms": 1}),
            json!({"": 1}),
            json!({"video.ladder.5": "640x360"}),
            json!({"relay.latency_ms": 18446744073709551615u64}),
            json!({"video.ladder": ["1280x720", null]}),
            json!({"usage.nothing.0": 1}),
        ] {
            match save(&s, changes.clone()) {
                Err(SettingsError::BadRequest(_)) => {}
                other => panic!("{changes}: {other:?}"),
            }
        }
        assert_eq!(file(&s), EXAMPLE);
        // Indices into a plain array work.
        let saved = save(&s, json!({"video.ladder.2": "320x180"})).unwrap();
        assert_eq!(changed(&saved), [("video.ladder", Apply::Stream)]);
        assert!(file(&s).contains("ladder = [\"1280x720\", \"960x540\", \"320x180\"]"));
    }

    #[test]
    fn redacted_toml_hides_secrets() {
        let text = srt_example();
        let red = redacted_toml(&text);
        assert!(!red.contains("change-me-please"));
        assert!(red.contains("\npassphrase = \"<redacted>\"\n"), "{red}");
        assert_eq!(red.lines().count(), text.lines().count());
        assert_comments_kept(&text, &red);
        assert_eq!(redacted_toml(EXAMPLE), EXAMPLE);
        // Inline tables, and text that is not TOML at all.
        let red = redacted_toml("input = { kind = \"srt\", passphrase = \"0123456789\" }\n");
        assert!(!red.contains("0123456789"), "{red}");
        let red =
            redacted_toml("[input\n  passphrase = \"0123456789\" # x\n# passphrase = \"keep\"\n");
        assert_eq!(
            red,
            "[input\n  passphrase = \"<redacted>\"\n# passphrase = \"keep\"\n"
        );
    }

    /// `a.b` paths of a TOML table, array-of-tables entries as `a.*.b`.
    fn key_paths(prefix: &str, table: &toml::Table, out: &mut BTreeSet<String>) {
        for (k, v) in table {
            let path = join(prefix, k);
            match v {
                toml::Value::Table(t) => key_paths(&path, t, out),
                toml::Value::Array(items)
                    if items.iter().all(|i| i.is_table()) && !items.is_empty() =>
                {
                    for i in items {
                        key_paths(&format!("{path}.*"), i.as_table().unwrap(), out);
                    }
                }
                _ => {
                    out.insert(path);
                }
            }
        }
    }

    #[test]
    fn field_table_covers_the_config() {
        // Every key of the example, commented-out ones included, has a field ...
        let uncommented: String = EXAMPLE
            .lines()
            .map(|l| {
                let rest = l.strip_prefix("# ").unwrap_or(l);
                let is_key = rest.split_once(" = ").is_some_and(|(k, _)| {
                    !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                });
                // Commented table headers too (the example's [ota] is commented out).
                let is_header = rest
                    .strip_prefix('[')
                    .and_then(|r| r.strip_suffix(']'))
                    .is_some_and(|t| {
                        !t.is_empty()
                            && t.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
                    });
                let is_key = is_key || is_header;
                if is_key {
                    format!("{rest}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        let table: toml::Table = uncommented.parse().unwrap();
        let mut keys = BTreeSet::new();
        key_paths("", &table, &mut keys);
        assert!(keys.len() >= 50, "{keys:?}");
        assert!(keys.contains("input.passphrase") && keys.contains("link.*.data_cap_mb"));
        for k in &keys {
            assert!(
                field(k).is_some(),
                "examples/edge.toml key {k} has no field"
            );
        }
        // ... and every field is documented.
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let config_md = std::fs::read_to_string(root.join("docs/config.md")).unwrap();
        let web_md = std::fs::read_to_string(root.join("docs/web-api.md")).unwrap();
        let web_table = &web_md[web_md.find("## `[web]` in edge.toml").unwrap()..];
        let web_table = &web_table[..web_table.find("\n## ").unwrap()];
        let mut seen = BTreeSet::new();
        for f in fields() {
            assert!(seen.insert(f.key), "{} listed twice", f.key);
            assert_eq!(f.apply, apply_of(f.key));
            assert_eq!(Some(f.section), f.key.split('.').next());
            if let Some(leaf) = f.key.strip_prefix("web.") {
                assert!(
                    web_table.contains(&format!("`{leaf}`")),
                    "{} not in docs/web-api.md",
                    f.key
                );
            } else {
                let doc_key = f.key.replace(".*.", ".");
                assert!(
                    config_md.contains(&format!("| `{doc_key}` |")),
                    "{} not in docs/config.md",
                    f.key
                );
            }
            assert_eq!(f.ty == FieldType::Enum, !f.options.is_empty(), "{}", f.key);
            if let Some(d) = &f.default {
                if f.ty == FieldType::Enum {
                    assert!(f.options.contains(&d.as_str().unwrap()), "{}", f.key);
                }
            }
        }
        // The config's own key count: 56 edge keys plus [web].
        assert!(keys.contains("ota.hawkbit.token"), "{keys:?}");
        // The config's own key count: 56 edge keys plus [web] and [ota].
        assert_eq!(fields().len(), 56 + 10 + 17);
    }

    /// Field names `parse_edge` expects where `zz_unknown = 1` is put after `header`
    /// (read from its "unknown field" error).
    fn parser_fields(text: &str, header: &str) -> Vec<String> {
        let probe = if header.is_empty() {
            format!("zz_unknown = 1\n{text}")
        } else {
            text.replacen(
                &format!("{header}\n"),
                &format!("{header}\nzz_unknown = 1\n"),
                1,
            )
        };
        let e = crate::config::parse_edge(&probe, std::path::Path::new("edge.toml")).unwrap_err();
        let reason = e.reason();
        let list = reason
            .strip_prefix("unknown field `zz_unknown`, expected ")
            .unwrap_or_else(|| panic!("{header}: {reason}"));
        list.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn field_table_covers_the_parser() {
        let text = format!(
            "{MINIMAL}[input]\n[stats]\n[scheduler]\n[video]\n[audio]\n[stream]\n[modem]\n[gpio]\n[usage]\n[web]\n[ota]\n[ota.hawkbit]\n"
        );
        let tables = parser_fields(&text, "");
        assert!(tables.len() >= 12, "{tables:?}");
        let subtables = ["ota.hawkbit"];
        for table in tables.into_iter().chain(subtables.map(String::from)) {
            let header = if table == "link" {
                "[[link]]".to_string()
            } else {
                format!("[{table}]")
            };
            let section = if table == "link" {
                "link.*".to_string()
            } else {
                table.clone()
            };
            for name in parser_fields(&text, &header) {
                let key = format!("{section}.{name}");
                if subtables.contains(&key.as_str()) {
                    continue;
                }
                assert!(
                    field(&key).is_some(),
                    "config.rs reads {key}, the field table lacks it"
                );
            }
        }
    }

    #[test]
    fn ota_hawkbit_token_is_a_secret() {
        let text = format!(
            "{MINIMAL}\n[ota]\nbackend = \"rauc\"\npublic_keys = [\"k.pub\"]\ncompatible = \"hw\"\n\
             [ota.hawkbit]\nserver = \"https://hb.example.com\"\ntenant = \"t\"\ntoken = \"tok-123\"\n"
        );
        let (_d, s) = setup(&text);
        let v = s.view().unwrap();
        assert_eq!(v["values"]["ota"]["hawkbit"]["token"], REDACTED);
        assert_eq!(v["values"]["ota"]["compatible"], "hw");
        assert!(!redacted_toml(&text).contains("tok-123"));
        assert!(!redact_lines(&text).contains("tok-123"));
        // Sent back redacted, the token stays; a change of [ota] takes a restart.
        let rev = v["revision"].as_str().unwrap().to_string();
        let saved = s
            .save(
                &rev,
                &map(json!({"ota.hawkbit.token": REDACTED, "ota.health_timeout_s": 60})),
            )
            .unwrap();
        assert_eq!(changed(&saved), [("ota.health_timeout_s", Apply::Service)]);
        assert!(file(&s).contains("token = \"tok-123\""));
        assert_eq!(
            saved.config.ota.unwrap().health_timeout,
            Duration::from_secs(60)
        );
    }

    #[test]
    fn locate_lines() {
        let text = "[a]\nx = 1\ny = [\n  1,\n  2,\n]\n\n[[l]]\nn = 1\n[[l]]\nn = 2\n";
        assert_eq!(locate(text, 1), Some(Loc::Table("a".into())));
        assert_eq!(locate(text, 2), Some(Loc::Leaf("a.x".into())));
        assert_eq!(locate(text, 4), Some(Loc::Leaf("a.y".into())));
        assert_eq!(locate(text, 6), Some(Loc::Leaf("a.y".into())));
        assert_eq!(locate(text, 7), None);
        assert_eq!(locate(text, 10), Some(Loc::Table("l.1".into())));
        assert_eq!(locate(text, 11), Some(Loc::Leaf("l.1.n".into())));
    }
}

#[cfg(test)]
mod ota_table_tests {
    use super::*;
    use crate::system::TempDir;
    use serde_json::json;

    #[test]
    fn a_change_elsewhere_keeps_the_ota_table() {
        let text = "[device]\nid = \"cam\"\ncert = \"c.pem\"\nkey = \"k.pem\"\n\
            [relay]\naddress = \"127.0.0.1:7000\"\nfingerprint = \"sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"\n\
            [ota]\nbackend = \"dir\"\nslots_dir = \"slots\"\npublic_keys = [\"admin.pub\"]\n\
            compatible = \"braid-test\"\nreboot_command = [\"true\"]\nstate_dir = \"ota\"\n\n\
            [[link]]\nname = \"a\"\nbind = \"127.0.0.11\"\n";
        let d = TempDir::new("settings-ota").unwrap();
        let p = d.path().join("edge.toml");
        std::fs::write(&p, text).unwrap();
        let s = Settings::new(p.clone());
        let view = s.view().unwrap();
        let rev = view["revision"].as_str().unwrap().to_string();
        let changes = json!({"link.0.data_cap_mb": 4321});
        let r = s.save(&rev, changes.as_object().unwrap());
        assert!(r.is_ok(), "{r:?}\n{}", std::fs::read_to_string(&p).unwrap());
    }
}
