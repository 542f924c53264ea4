//! Data usage per link, for metered SIM cards: bytes counted per link for the
//! current UTC day and the current billing month, the previous day's and month's
//! totals, and a monthly cap per link for the stats page.
//!
//! [`Usage`] is sans-IO: it is given the time (unix seconds) and byte counts, and
//! knows nothing of files or clocks. [`UsageFile`] is the thin IO helper the edge
//! drives: it turns each link's cumulative bytes-sent counter into deltas and saves
//! the store with [`crate::system::atomic::write_atomic`] at most once a minute.
//!
//! # Periods
//!
//! The day is the UTC calendar day. The billing month starts at 00:00 UTC on
//! `billing_day` (1..=28, so every month has it) and runs to the same day of the
//! next month: with `billing_day = 15`, 2026-11-20 belongs to the period that
//! started 2026-11-15 and 2026-11-14 to the one that started 2026-10-15. When a
//! count arrives in a later day (month), the finished period's total becomes
//! `prev_day_bytes` (`prev_month_bytes`) if it was the period just before, or 0 if
//! whole periods went by with nothing counted.
//!
//! # Clock rules
//!
//! Periods only ever move forward; bytes are never dropped and never counted twice.
//! - **Clock stepped backwards** (an NTP step on a box that ran on a wrong clock,
//!   a stale RTC): counts keep going into the latest period seen, until the clock
//!   passes its end again. A clock that was *ahead* pins the periods there until
//!   real time catches up; the totals stay right, only the day/month split is late.
//! - **No time yet**: a reading before 2025-01-01 ([`MIN_VALID_UNIX`]) means the box
//!   booted without RTC or NTP. Such bytes are held per link as `pending_bytes`
//!   (shown in the day and month totals, and toward the cap) and added to the
//!   day and month of the first valid reading.
//! - A change of `billing_day` never loses counts: if it makes the current period
//!   older than the one in the store, counting goes on in the stored one.
//!
//! # Persistence and loss bound
//!
//! The store is a small JSON file ([`Usage::to_json`], format `version` 1).
//! [`UsageFile::tick`] saves when a minute has passed since the last save and
//! [`UsageFile::flush`] saves at once (call it at shutdown), so a power cut loses
//! at most the last minute of counts. A missing file is an empty store; an
//! unreadable one is reported, moved aside to `NAME.corrupt` by
//! [`UsageFile::open`], and counting starts again from zero.
//!
//! # Wiring in the edge (not done here)
//!
//! - at start: [`UsageFile::open`] with the configured file and billing day, log the
//!   error it may return, [`Usage::set_cap`] each link from its config;
//! - in the core task, once a second: [`UsageFile::tick`] with the wall clock and,
//!   for each joined link, its name and the connection's cumulative counter
//!   (`quinn::Connection::stats().udp_tx.bytes`; what the carrier bills is closer to
//!   `udp_tx.bytes + udp_rx.bytes` plus 28 bytes of IPv4/UDP header per datagram);
//!   log a save error, don't stop;
//! - when a link's connection goes away, tick once more with its last counter before
//!   dropping it, so that nothing it sent since the last tick is lost;
//! - at shutdown: [`UsageFile::flush`];
//! - for the stats page: [`Usage::view`] (or [`Usage::status`] per link).

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};

/// Version of the JSON format written by [`Usage::to_json`].
pub const FORMAT_VERSION: u32 = 1;
/// Earliest plausible clock reading (2025-01-01T00:00:00Z): before it the box has
/// no time yet and bytes wait in `pending_bytes`.
pub const MIN_VALID_UNIX: i64 = 1_735_689_600;
/// Seconds between saves in [`UsageFile::tick`]: the most a power cut loses.
pub const SAVE_EVERY_S: i64 = 60;
/// Highest billing day: every month has a 28th.
pub const BILLING_DAY_MAX: u8 = 28;

const SECS_PER_DAY: i64 = 86_400;

/// Days since 1970-01-01 of a proleptic Gregorian date (`month` 1..=12,
/// `day` 1..=31), after Howard Hinnant's `days_from_civil`.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let (m, d) = (i64::from(month), i64::from(day));
    let y = if m <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // 0..=399
    let mp = (m + 9) % 12; // March = 0 .. February = 11
    let doy = (153 * mp + 2) / 5 + d - 1; // 0..=365
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // 0..=146096
    era * 146_097 + doe - 719_468
}

/// The date (year, month 1..=12, day 1..=31) of a day number since 1970-01-01:
/// the inverse of [`days_from_civil`].
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097; // 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // 0..=365
    let mp = (5 * doy + 2) / 153; // 0..=11
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The UTC day number (days since 1970-01-01) of a unix time.
pub fn utc_day(unix_secs: i64) -> i64 {
    unix_secs.div_euclid(SECS_PER_DAY)
}

/// The billing period a UTC day belongs to, as `year * 12 + month - 1` of the
/// month the period starts in.
fn billing_month(day: i64, billing_day: u8) -> i64 {
    let (y, m, d) = civil_from_days(day);
    let idx = y * 12 + i64::from(m) - 1;
    if d >= u32::from(billing_day) {
        idx
    } else {
        idx - 1
    }
}

fn month_year(idx: i64) -> (i64, u32) {
    (idx.div_euclid(12), idx.rem_euclid(12) as u32 + 1)
}

fn format_day(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

fn parse_day(s: &str) -> Option<i64> {
    let mut it = s.split('-');
    let (y, m, d) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let (y, m, d): (i64, u32, u32) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    let day = days_from_civil(y, m, d);
    // Rejects 2026-02-30 and the like: the date must come back unchanged.
    (civil_from_days(day) == (y, m, d)).then_some(day)
}

fn parse_month(s: &str) -> Option<i64> {
    let (y, m) = s.split_once('-')?;
    if y.len() != 4 || m.len() != 2 {
        return None;
    }
    let (y, m): (i64, u32) = (y.parse().ok()?, m.parse().ok()?);
    (1..=12).contains(&m).then(|| y * 12 + i64::from(m) - 1)
}

/// A link's monthly allowance (from the config; not stored in the usage file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cap {
    /// Bytes per billing month; `None` is unmetered.
    pub monthly_bytes: Option<u64>,
}

/// One link's usage for the stats page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LinkUsage {
    pub link: String,
    /// Today (UTC), including bytes counted before the clock was set.
    pub day_bytes: u64,
    pub prev_day_bytes: u64,
    /// This billing month, including bytes counted before the clock was set.
    pub month_bytes: u64,
    pub prev_month_bytes: u64,
    pub month_cap_bytes: Option<u64>,
    /// `month_bytes >= month_cap_bytes` (a cap of 0 is always reached).
    pub cap_reached: bool,
    /// `month_bytes / month_cap_bytes` (1.0 and more at the cap; a cap of 0 gives
    /// 1.0); `None` without a cap.
    pub share_of_cap: Option<f64>,
}

/// The whole store for the stats page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageView {
    /// The current UTC day, `YYYY-MM-DD` (`None` until the clock was valid once).
    pub day: Option<String>,
    /// First day of the current billing month, `YYYY-MM-DD`.
    pub month_start: Option<String>,
    pub billing_day: u8,
    /// By link name.
    pub links: Vec<LinkUsage>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Counters {
    #[serde(default)]
    day_bytes: u64,
    #[serde(default)]
    prev_day_bytes: u64,
    #[serde(default)]
    month_bytes: u64,
    #[serde(default)]
    prev_month_bytes: u64,
    /// Counted while the clock was not valid yet (see the module docs).
    #[serde(default)]
    pending_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Periods {
    /// UTC day number.
    day: i64,
    /// Billing month index (see [`billing_month`]).
    month: i64,
}

/// Per-link byte counters by day and billing month (sans-IO; see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct Usage {
    billing_day: u8,
    current: Option<Periods>,
    links: BTreeMap<String, Counters>,
    caps: HashMap<String, Cap>,
}

impl Default for Usage {
    fn default() -> Usage {
        Usage::new(1)
    }
}

/// The file format (version 1).
#[derive(Serialize, Deserialize)]
struct FileV1 {
    version: u32,
    billing_day: u8,
    /// The current day, `YYYY-MM-DD`, or null before the clock was ever valid.
    day: Option<String>,
    /// The month the current billing period starts in, `YYYY-MM`.
    month: Option<String>,
    links: BTreeMap<String, Counters>,
}

impl Usage {
    /// An empty store. `billing_day` outside 1..=28 is clamped into it (the config
    /// should reject such values).
    pub fn new(billing_day: u8) -> Usage {
        Usage {
            billing_day: billing_day.clamp(1, BILLING_DAY_MAX),
            current: None,
            links: BTreeMap::new(),
            caps: HashMap::new(),
        }
    }

    pub fn billing_day(&self) -> u8 {
        self.billing_day
    }

    /// Changes the first day of the billing month (clamped into 1..=28); it takes
    /// effect at the next count and never loses bytes (see the module docs).
    pub fn set_billing_day(&mut self, billing_day: u8) {
        self.billing_day = billing_day.clamp(1, BILLING_DAY_MAX);
    }

    /// Sets a link's monthly cap (caps come from the config and are not saved).
    pub fn set_cap(&mut self, link: &str, cap: Cap) {
        self.caps.insert(link.to_string(), cap);
    }

    pub fn cap(&self, link: &str) -> Cap {
        self.caps.get(link).copied().unwrap_or_default()
    }

    /// Moves the day and month forward to `now_unix_secs` if it is later than the
    /// current ones (earlier or invalid times change nothing), and files the bytes
    /// held while the clock was invalid into the current periods once there are
    /// some. [`Usage::add`] does this itself; call it to roll over links that
    /// carried nothing.
    pub fn roll(&mut self, now_unix_secs: i64) {
        if now_unix_secs < MIN_VALID_UNIX {
            return;
        }
        let day = utc_day(now_unix_secs);
        let month = billing_month(day, self.billing_day);
        let cur = match self.current {
            None => {
                self.current = Some(Periods { day, month });
                Periods { day, month }
            }
            Some(cur) => cur,
        };
        if day > cur.day {
            for c in self.links.values_mut() {
                c.prev_day_bytes = if day == cur.day + 1 { c.day_bytes } else { 0 };
                c.day_bytes = 0;
            }
        }
        if month > cur.month {
            for c in self.links.values_mut() {
                c.prev_month_bytes = if month == cur.month + 1 {
                    c.month_bytes
                } else {
                    0
                };
                c.month_bytes = 0;
            }
        }
        self.current = Some(Periods {
            day: day.max(cur.day),
            month: month.max(cur.month),
        });
        for c in self.links.values_mut() {
            let p = std::mem::take(&mut c.pending_bytes);
            c.day_bytes = c.day_bytes.saturating_add(p);
            c.month_bytes = c.month_bytes.saturating_add(p);
        }
    }

    /// Counts `bytes` for `link` at `now_unix_secs`, rolling the day and month over
    /// first when the date moved forward.
    pub fn add(&mut self, now_unix_secs: i64, link: &str, bytes: u64) {
        self.roll(now_unix_secs);
        let valid = now_unix_secs >= MIN_VALID_UNIX;
        let c = match self.links.get_mut(link) {
            Some(c) => c,
            None => self.links.entry(link.to_string()).or_default(),
        };
        if valid {
            c.day_bytes = c.day_bytes.saturating_add(bytes);
            c.month_bytes = c.month_bytes.saturating_add(bytes);
        } else {
            c.pending_bytes = c.pending_bytes.saturating_add(bytes);
        }
    }

    /// A link's usage now (zeros for a link never counted).
    pub fn status(&self, link: &str) -> LinkUsage {
        let c = self.links.get(link).copied().unwrap_or_default();
        let day_bytes = c.day_bytes.saturating_add(c.pending_bytes);
        let month_bytes = c.month_bytes.saturating_add(c.pending_bytes);
        let cap = self.cap(link).monthly_bytes;
        LinkUsage {
            link: link.to_string(),
            day_bytes,
            prev_day_bytes: c.prev_day_bytes,
            month_bytes,
            prev_month_bytes: c.prev_month_bytes,
            month_cap_bytes: cap,
            cap_reached: cap.is_some_and(|cap| month_bytes >= cap),
            share_of_cap: cap.map(|cap| {
                if cap == 0 {
                    1.0
                } else {
                    month_bytes as f64 / cap as f64
                }
            }),
        }
    }

    /// Every link counted or capped, by name.
    pub fn view(&self) -> UsageView {
        let mut names: Vec<&String> = self.links.keys().chain(self.caps.keys()).collect();
        names.sort();
        names.dedup();
        UsageView {
            day: self.current.map(|p| format_day(p.day)),
            month_start: self.current.map(|p| {
                let (y, m) = month_year(p.month);
                format!("{y:04}-{m:02}-{:02}", self.billing_day)
            }),
            billing_day: self.billing_day,
            links: names.into_iter().map(|n| self.status(n)).collect(),
        }
    }

    /// The store as JSON (caps are not included: they come from the config).
    pub fn to_json(&self) -> String {
        let f = FileV1 {
            version: FORMAT_VERSION,
            billing_day: self.billing_day,
            day: self.current.map(|p| format_day(p.day)),
            month: self.current.map(|p| {
                let (y, m) = month_year(p.month);
                format!("{y:04}-{m:02}")
            }),
            links: self.links.clone(),
        };
        // Strings, integers and maps with string keys: cannot fail.
        serde_json::to_string_pretty(&f).expect("usage JSON") + "\n"
    }

    /// Reads [`Usage::to_json`]'s output; the error is the reason, for the log.
    pub fn from_json(text: &str) -> Result<Usage, String> {
        // The version first, so a newer file is named as such rather than by its
        // first unknown field.
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let Some(obj) = v.as_object() else {
            return Err("not a JSON object".into());
        };
        match obj.get("version").map(|v| v.as_u64()) {
            Some(Some(n)) if n == u64::from(FORMAT_VERSION) => {}
            Some(Some(n)) => {
                return Err(format!(
                    "version {n} (this build reads version {FORMAT_VERSION})"
                ))
            }
            Some(None) => return Err("version is not a number".into()),
            None => return Err("no version field".into()),
        }
        let f: FileV1 = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if !(1..=BILLING_DAY_MAX).contains(&f.billing_day) {
            return Err(format!("billing_day {} is not 1..=28", f.billing_day));
        }
        let current = match (f.day, f.month) {
            (None, None) => None,
            (Some(d), Some(m)) => Some(Periods {
                day: parse_day(&d).ok_or_else(|| format!("day {d:?} is not YYYY-MM-DD"))?,
                month: parse_month(&m).ok_or_else(|| format!("month {m:?} is not YYYY-MM"))?,
            }),
            _ => return Err("day and month must both be set or both null".into()),
        };
        Ok(Usage {
            billing_day: f.billing_day,
            current,
            links: f.links,
            caps: HashMap::new(),
        })
    }

    /// Reads the store from `path`: a missing file is an empty store (billing day
    /// 1; set the configured one after loading).
    pub fn load(path: &Path) -> Result<Usage, UsageError> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let text = String::from_utf8(bytes).map_err(|_| UsageError::Corrupt {
                    path: path.to_path_buf(),
                    reason: "not UTF-8".into(),
                })?;
                Usage::from_json(&text).map_err(|reason| UsageError::Corrupt {
                    path: path.to_path_buf(),
                    reason,
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Usage::default()),
            Err(source) => Err(UsageError::Io {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Writes the store to `path` atomically (temporary file, fsync, rename, fsync
    /// of the directory), creating the directory if needed.
    pub fn save(&self, path: &Path) -> Result<(), UsageError> {
        let io_err = |source| UsageError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io_err)?;
        }
        crate::system::atomic::write_atomic(path, self.to_json().as_bytes()).map_err(io_err)
    }
}

/// Why the usage file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("usage file {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("usage file {} is unreadable: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
}

/// The edge's usage bookkeeping: the store, its file, and the last cumulative
/// counter seen per link.
///
/// Call [`UsageFile::tick`] about once a second with every link's cumulative
/// bytes-sent counter, and [`UsageFile::flush`] at shutdown.
#[derive(Debug)]
pub struct UsageFile {
    pub path: PathBuf,
    pub store: Usage,
    /// Unix time of the last save attempt (`None`: not saved yet).
    last_save: Option<i64>,
    last_seen: HashMap<String, u64>,
}

impl UsageFile {
    /// Loads `path` and sets the configured billing day. The store is always
    /// usable: on a read error it is empty and the error is returned for the log;
    /// an unreadable (corrupt) file is first renamed to `NAME.corrupt` (best
    /// effort), so that the next save does not destroy what a human could recover.
    pub fn open(path: &Path, billing_day: u8) -> (UsageFile, Option<UsageError>) {
        let (mut store, err) = match Usage::load(path) {
            Ok(s) => (s, None),
            Err(e) => {
                if matches!(e, UsageError::Corrupt { .. }) {
                    let mut aside = path.as_os_str().to_owned();
                    aside.push(".corrupt");
                    let _ = std::fs::rename(path, PathBuf::from(aside));
                }
                (Usage::default(), Some(e))
            }
        };
        store.set_billing_day(billing_day);
        let f = UsageFile {
            path: path.to_path_buf(),
            store,
            last_save: None,
            last_seen: HashMap::new(),
        };
        (f, err)
    }

    /// Counts what each link sent since the last tick and saves when due.
    ///
    /// `per_link_total_bytes_sent` holds each link's cumulative counter, which
    /// starts from 0 with each new connection (and each process). The delta is the
    /// increase since the last value seen; a counter lower than that was reset, and
    /// all of it is new. The first value seen for a link (0 before it) counts in
    /// full. Bytes a dying connection sent after the last tick are lost if the new
    /// connection's counter is already past the old value at the next tick: tick
    /// at least once a second to keep that small.
    ///
    /// Saves on the first tick, then when [`SAVE_EVERY_S`] have passed since the
    /// last save, or at once when the clock went backwards. Returns whether it
    /// tried to save; a failed save is retried a minute later, not every tick.
    pub fn tick(
        &mut self,
        now_unix: i64,
        per_link_total_bytes_sent: &[(String, u64)],
    ) -> Result<bool, UsageError> {
        self.store.roll(now_unix);
        for (link, total) in per_link_total_bytes_sent {
            let last = self.last_seen.insert(link.clone(), *total).unwrap_or(0);
            let delta = if *total >= last { total - last } else { *total };
            if delta > 0 {
                self.store.add(now_unix, link, delta);
            }
        }
        let due = match self.last_save {
            None => true,
            Some(t) => now_unix >= t.saturating_add(SAVE_EVERY_S) || now_unix < t,
        };
        if !due {
            return Ok(false);
        }
        self.last_save = Some(now_unix);
        self.store.save(&self.path).map(|()| true)
    }

    /// Saves now (at shutdown).
    pub fn flush(&mut self) -> Result<(), UsageError> {
        self.store.save(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::TempDir;

    /// Unix seconds of a UTC date and time.
    fn at(y: i64, m: u32, d: u32, hh: i64, mm: i64) -> i64 {
        days_from_civil(y, m, d) * SECS_PER_DAY + hh * 3600 + mm * 60
    }

    #[test]
    fn civil_dates_known_values() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        // Values from `date -u -d DATE +%s`.
        assert_eq!(at(2026, 11, 25, 0, 0), 1_795_564_800);
        assert_eq!(at(2028, 2, 29, 0, 0), 1_835_395_200);
        assert_eq!(at(2027, 1, 1, 0, 0), 1_798_761_600);
        assert_eq!(at(2100, 3, 1, 0, 0), 4_107_542_400);
        assert_eq!(at(2025, 1, 1, 0, 0), MIN_VALID_UNIX);
        assert_eq!(utc_day(1_795_564_800 - 1), days_from_civil(2026, 11, 24));
        assert_eq!(utc_day(-1), -1);
    }

    #[test]
    fn civil_dates_leap_years_and_month_ends() {
        let next = |y, m, d| civil_from_days(days_from_civil(y, m, d) + 1);
        assert_eq!(next(2028, 2, 28), (2028, 2, 29));
        assert_eq!(next(2028, 2, 29), (2028, 3, 1));
        assert_eq!(next(2027, 2, 28), (2027, 3, 1));
        assert_eq!(next(2000, 2, 28), (2000, 2, 29)); // divisible by 400: leap
        assert_eq!(next(2100, 2, 28), (2100, 3, 1)); // by 100 only: not leap
        assert_eq!(next(1900, 2, 28), (1900, 3, 1));
        assert_eq!(next(2026, 12, 31), (2027, 1, 1));
        assert_eq!(next(2026, 4, 30), (2026, 5, 1));
        assert_eq!(next(2026, 1, 31), (2026, 2, 1));
        // Year lengths.
        for (y, len) in [
            (2024, 366),
            (2025, 365),
            (2000, 366),
            (2100, 365),
            (1600, 366),
        ] {
            assert_eq!(days_from_civil(y + 1, 1, 1) - days_from_civil(y, 1, 1), len);
        }
    }

    #[test]
    fn civil_dates_round_trip_and_step_by_one() {
        let mut prev = civil_from_days(-800_000);
        for z in -799_999..800_000 {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
            assert!((1..=12).contains(&m) && (1..=31).contains(&d));
            // Each day is the day after the previous one.
            let ok = (y, m, d) == (prev.0, prev.1, prev.2 + 1)
                || (d == 1 && ((y, m) == (prev.0, prev.1 + 1) || (y, m) == (prev.0 + 1, 1)));
            assert!(ok, "{prev:?} -> {:?}", (y, m, d));
            prev = (y, m, d);
        }
    }

    #[test]
    fn date_strings() {
        assert_eq!(format_day(days_from_civil(2028, 2, 29)), "2028-02-29");
        assert_eq!(parse_day("2028-02-29"), Some(days_from_civil(2028, 2, 29)));
        assert_eq!(parse_day("2027-02-29"), None);
        assert_eq!(parse_day("2026-13-01"), None);
        assert_eq!(parse_day("2026-1-01"), None);
        assert_eq!(parse_day("2026-01-01-"), None);
        assert_eq!(parse_month("2026-12"), Some(2026 * 12 + 11));
        assert_eq!(parse_month("2026-00"), None);
        assert_eq!(month_year(2026 * 12 + 11), (2026, 12));
    }

    #[test]
    fn rollover_at_midnight_utc() {
        let mut u = Usage::new(1);
        u.add(at(2026, 11, 25, 23, 59), "a", 100);
        u.add(at(2026, 11, 25, 23, 59) + 59, "a", 10);
        assert_eq!(u.status("a").day_bytes, 110);
        u.add(at(2026, 11, 26, 0, 0), "a", 5);
        let s = u.status("a");
        assert_eq!((s.day_bytes, s.prev_day_bytes), (5, 110));
        assert_eq!((s.month_bytes, s.prev_month_bytes), (115, 0));
        // Two days later: yesterday carried nothing.
        u.add(at(2026, 11, 28, 12, 0), "a", 1);
        let s = u.status("a");
        assert_eq!((s.day_bytes, s.prev_day_bytes, s.month_bytes), (1, 0, 116));
        assert_eq!(u.view().day.as_deref(), Some("2026-11-28"));
    }

    #[test]
    fn idle_links_roll_over_too() {
        let mut u = Usage::new(1);
        u.add(at(2026, 11, 25, 10, 0), "a", 100);
        u.add(at(2026, 11, 26, 10, 0), "b", 7);
        let a = u.status("a");
        assert_eq!(
            (a.day_bytes, a.prev_day_bytes, a.month_bytes),
            (0, 100, 100)
        );
        u.roll(at(2026, 12, 1, 0, 0));
        let a = u.status("a");
        assert_eq!(
            (a.month_bytes, a.prev_month_bytes, a.prev_day_bytes),
            (0, 100, 0)
        );
        assert_eq!(u.status("b").prev_month_bytes, 7);
    }

    #[test]
    fn rollover_at_month_ends() {
        let mut u = Usage::new(1);
        u.add(at(2028, 2, 28, 12, 0), "a", 1);
        u.add(at(2028, 2, 29, 23, 59), "a", 2);
        let s = u.status("a");
        assert_eq!((s.day_bytes, s.prev_day_bytes, s.month_bytes), (2, 1, 3));
        u.add(at(2028, 3, 1, 0, 0), "a", 4);
        let s = u.status("a");
        assert_eq!((s.day_bytes, s.prev_day_bytes), (4, 2));
        assert_eq!((s.month_bytes, s.prev_month_bytes), (4, 3));
        assert_eq!(u.view().month_start.as_deref(), Some("2028-03-01"));

        let mut u = Usage::new(1);
        u.add(at(2026, 12, 31, 23, 0), "a", 10);
        u.add(at(2027, 1, 1, 0, 0) + 1, "a", 20);
        let s = u.status("a");
        assert_eq!((s.day_bytes, s.prev_day_bytes), (20, 10));
        assert_eq!((s.month_bytes, s.prev_month_bytes), (20, 10));
        assert_eq!(u.view().day.as_deref(), Some("2027-01-01"));
        assert_eq!(u.view().month_start.as_deref(), Some("2027-01-01"));
        // A month with nothing counted: the previous month is 0.
        u.add(at(2027, 3, 5, 0, 0), "a", 1);
        assert_eq!(u.status("a").prev_month_bytes, 0);
    }

    #[test]
    fn billing_day_15() {
        let mut u = Usage::new(15);
        u.add(at(2026, 11, 14, 23, 59), "a", 100);
        assert_eq!(u.view().month_start.as_deref(), Some("2026-10-15"));
        u.add(at(2026, 11, 15, 0, 0), "a", 1);
        let s = u.status("a");
        assert_eq!((s.month_bytes, s.prev_month_bytes), (1, 100));
        assert_eq!(u.view().month_start.as_deref(), Some("2026-11-15"));
        // Calendar month end is not a billing boundary.
        u.add(at(2026, 12, 1, 0, 0), "a", 2);
        assert_eq!(u.status("a").month_bytes, 3);
        // Across the year end.
        u.add(at(2027, 1, 14, 12, 0), "a", 4);
        assert_eq!(u.status("a").month_bytes, 4);
        assert_eq!(u.view().month_start.as_deref(), Some("2026-12-15"));
        u.add(at(2027, 1, 15, 0, 0), "a", 8);
        let s = u.status("a");
        assert_eq!((s.month_bytes, s.prev_month_bytes), (8, 4));
        assert_eq!(Usage::new(0).billing_day(), 1);
        assert_eq!(Usage::new(31).billing_day(), 28);
    }

    #[test]
    fn clock_step_backwards_keeps_counting_in_the_current_period() {
        let mut u = Usage::new(1);
        u.add(at(2026, 11, 25, 12, 0), "a", 100);
        // NTP steps the clock back five days: no rollover, nothing lost.
        u.add(at(2026, 11, 20, 12, 0), "a", 10);
        u.add(at(2026, 10, 31, 12, 0), "a", 1);
        let s = u.status("a");
        assert_eq!(
            (s.day_bytes, s.month_bytes, s.prev_day_bytes),
            (111, 111, 0)
        );
        assert_eq!(u.view().day.as_deref(), Some("2026-11-25"));
        // Back to the current day: still the same period.
        u.add(at(2026, 11, 25, 13, 0), "a", 1);
        assert_eq!(u.status("a").day_bytes, 112);
        // The next day rolls over as usual, once.
        u.add(at(2026, 11, 26, 0, 0), "a", 2);
        let s = u.status("a");
        assert_eq!(
            (s.day_bytes, s.prev_day_bytes, s.month_bytes),
            (2, 112, 114)
        );
    }

    #[test]
    fn no_clock_yet_holds_bytes_until_the_first_valid_time() {
        let mut u = Usage::new(1);
        // Booted without RTC: 1970.
        u.add(60, "a", 500);
        let s = u.status("a");
        assert_eq!((s.day_bytes, s.month_bytes), (500, 500));
        assert_eq!(u.view().day, None);
        u.add(at(2026, 11, 25, 8, 0), "a", 5);
        let s = u.status("a");
        assert_eq!((s.day_bytes, s.month_bytes), (505, 505));
        // A store with periods, then a reboot without time: held, then filed into
        // the day of the first valid reading, after its rollover.
        u.add(120, "a", 50);
        assert_eq!(u.status("a").day_bytes, 555);
        u.add(at(2026, 11, 26, 8, 0), "a", 1);
        let s = u.status("a");
        assert_eq!(
            (s.day_bytes, s.prev_day_bytes, s.month_bytes),
            (51, 505, 556)
        );
        // Survives a save before the clock is set.
        u.add(180, "a", 9);
        let back = Usage::from_json(&u.to_json()).unwrap();
        assert_eq!(back.status("a"), u.status("a"));
    }

    #[test]
    fn cap_reached_exactly_at_the_cap() {
        let mut u = Usage::new(1);
        u.set_cap(
            "a",
            Cap {
                monthly_bytes: Some(1000),
            },
        );
        u.add(at(2026, 11, 25, 0, 0), "a", 999);
        let s = u.status("a");
        assert!(!s.cap_reached);
        assert_eq!(s.month_cap_bytes, Some(1000));
        assert_eq!(s.share_of_cap, Some(0.999));
        u.add(at(2026, 11, 25, 0, 1), "a", 1);
        let s = u.status("a");
        assert!(s.cap_reached);
        assert_eq!(s.share_of_cap, Some(1.0));
        u.add(at(2026, 11, 25, 0, 2), "a", 500);
        assert_eq!(u.status("a").share_of_cap, Some(1.5));
        // A new month starts under the cap again.
        u.add(at(2026, 12, 1, 0, 0), "a", 1);
        assert!(!u.status("a").cap_reached);
        // No cap; a cap of 0.
        let b = u.status("b");
        assert_eq!(
            (b.cap_reached, b.share_of_cap, b.month_cap_bytes),
            (false, None, None)
        );
        u.set_cap(
            "z",
            Cap {
                monthly_bytes: Some(0),
            },
        );
        let z = u.status("z");
        assert_eq!((z.cap_reached, z.share_of_cap), (true, Some(1.0)));
        // Capped links show in the view before they carried anything.
        let names: Vec<String> = u.view().links.into_iter().map(|l| l.link).collect();
        assert_eq!(names, ["a", "z"]);
    }

    #[test]
    fn json_round_trip() {
        let mut u = Usage::new(15);
        u.add(at(2026, 11, 24, 9, 0), "lte-a", 1234);
        u.add(at(2026, 11, 25, 9, 0), "lte-a", 5678);
        u.add(at(2026, 11, 25, 9, 0), "wifi \"x\"", 9);
        let text = u.to_json();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["billing_day"], 15);
        assert_eq!(v["day"], "2026-11-25");
        assert_eq!(v["month"], "2026-11");
        assert_eq!(v["links"]["lte-a"]["day_bytes"], 5678);
        assert_eq!(v["links"]["lte-a"]["prev_day_bytes"], 1234);
        assert_eq!(v["links"]["lte-a"]["month_bytes"], 6912);
        let back = Usage::from_json(&text).unwrap();
        assert_eq!(back, u);
        assert_eq!(back.to_json(), text);
        // Caps are config, not saved.
        u.set_cap(
            "lte-a",
            Cap {
                monthly_bytes: Some(1),
            },
        );
        assert_eq!(
            Usage::from_json(&u.to_json()).unwrap().cap("lte-a"),
            Cap::default()
        );
        // An empty store.
        let e = Usage::default();
        assert_eq!(Usage::from_json(&e.to_json()).unwrap(), e);
        // Missing counters default to 0.
        let t = r#"{"version":1,"billing_day":1,"day":"2026-11-25","month":"2026-11",
                    "links":{"a":{"month_bytes":5}}}"#;
        let s = Usage::from_json(t).unwrap().status("a");
        assert_eq!((s.day_bytes, s.month_bytes), (0, 5));
    }

    #[test]
    fn corrupt_json_reported_with_the_reason() {
        let cases = [
            ("", "EOF"),
            ("{\"version\":1,", "EOF"),
            ("[1,2]", "not a JSON object"),
            ("{\"links\":{}}", "no version field"),
            ("{\"version\":\"1\"}", "version is not a number"),
            ("{\"version\":1}", "missing field `billing_day`"),
            ("{\"version\":2,\"whatever\":true}", "version 2"),
            (
                r#"{"version":1,"billing_day":1,"day":null,"month":null,"links":{"a":{"day_bytes":-1}}}"#,
                "invalid value",
            ),
            (
                r#"{"version":1,"billing_day":29,"day":null,"month":null,"links":{}}"#,
                "billing_day 29",
            ),
            (
                r#"{"version":1,"billing_day":1,"day":"2026-02-30","month":"2026-02","links":{}}"#,
                "day \"2026-02-30\"",
            ),
            (
                r#"{"version":1,"billing_day":1,"day":"2026-02-03","month":"2026-2","links":{}}"#,
                "month \"2026-2\"",
            ),
            (
                r#"{"version":1,"billing_day":1,"day":"2026-02-03","month":null,"links":{}}"#,
                "both",
            ),
        ];
        for (text, want) in cases {
            let e = Usage::from_json(text).expect_err(text);
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn save_and_load_through_a_directory() {
        let dir = TempDir::new("usage").unwrap();
        let path = dir.path().join("state").join("usage.json");
        // Missing: empty store.
        assert_eq!(Usage::load(&path).unwrap(), Usage::default());
        let mut u = Usage::new(3);
        u.add(at(2026, 11, 25, 9, 0), "a", 42);
        u.save(&path).unwrap();
        assert_eq!(Usage::load(&path).unwrap(), u);
        u.add(at(2026, 11, 25, 9, 1), "a", 1);
        u.save(&path).unwrap();
        assert_eq!(Usage::load(&path).unwrap().status("a").day_bytes, 43);
        assert!(crate::system::atomic::list_temps(path.parent().unwrap())
            .unwrap()
            .is_empty());
        // Corrupt.
        std::fs::write(&path, b"{\"version\":1,\"links\":").unwrap();
        let e = Usage::load(&path).unwrap_err();
        assert!(matches!(e, UsageError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("usage.json is unreadable"), "{e}");
        std::fs::write(&path, [0xff, 0xfe]).unwrap();
        assert!(Usage::load(&path)
            .unwrap_err()
            .to_string()
            .contains("UTF-8"));
        // A directory where the file should be: an IO error.
        let e = Usage::load(dir.path()).unwrap_err();
        assert!(matches!(e, UsageError::Io { .. }), "{e}");
    }

    #[test]
    fn usage_file_counter_deltas_and_resets() {
        let dir = TempDir::new("usage").unwrap();
        let path = dir.path().join("usage.json");
        let (mut f, err) = UsageFile::open(&path, 1);
        assert!(err.is_none());
        let t0 = at(2026, 11, 25, 9, 0);
        let l = |a: u64, b: u64| vec![("a".to_string(), a), ("b".to_string(), b)];
        // First sight counts in full.
        f.tick(t0, &l(1000, 0)).unwrap();
        f.tick(t0 + 1, &l(1500, 300)).unwrap();
        assert_eq!(f.store.status("a").day_bytes, 1500);
        assert_eq!(f.store.status("b").day_bytes, 300);
        // Reconnect: the counter went down, all of it is new.
        f.tick(t0 + 2, &l(200, 300)).unwrap();
        assert_eq!(f.store.status("a").day_bytes, 1700);
        // Unchanged: nothing added; a link missing from the list is left alone.
        f.tick(t0 + 3, &[("a".to_string(), 200)]).unwrap();
        assert_eq!(f.store.status("a").day_bytes, 1700);
        f.tick(t0 + 4, &l(250, 310)).unwrap();
        assert_eq!(f.store.status("a").day_bytes, 1750);
        assert_eq!(f.store.status("b").day_bytes, 310);
        // Reset to exactly 0 adds nothing, then counts from there.
        f.tick(t0 + 5, &l(0, 310)).unwrap();
        f.tick(t0 + 6, &l(40, 310)).unwrap();
        assert_eq!(f.store.status("a").day_bytes, 1790);
    }

    #[test]
    fn usage_file_saves_once_a_minute_and_on_flush() {
        let dir = TempDir::new("usage").unwrap();
        let path = dir.path().join("usage.json");
        let (mut f, _) = UsageFile::open(&path, 1);
        let t0 = at(2026, 11, 25, 9, 0);
        let a = |n: u64| vec![("a".to_string(), n)];
        let on_disk = |p: &Path| Usage::load(p).unwrap().status("a").day_bytes;
        assert!(f.tick(t0, &a(10)).unwrap(), "first tick saves");
        assert_eq!(on_disk(&path), 10);
        for s in 1..SAVE_EVERY_S {
            assert!(!f.tick(t0 + s, &a(10 + s as u64)).unwrap());
        }
        assert_eq!(on_disk(&path), 10);
        assert!(f.tick(t0 + SAVE_EVERY_S, &a(100)).unwrap());
        assert_eq!(on_disk(&path), 100);
        // The clock steps back: save at once rather than wait for it to catch up.
        assert!(f.tick(t0 - 3600, &a(110)).unwrap());
        assert_eq!(on_disk(&path), 110);
        assert!(!f.tick(t0 - 3599, &a(120)).unwrap());
        f.flush().unwrap();
        assert_eq!(on_disk(&path), 120);
        // Reopened after a restart: the counts are back, counters start over.
        drop(f);
        let (mut f, err) = UsageFile::open(&path, 15);
        assert!(err.is_none());
        assert_eq!(f.store.billing_day(), 15);
        f.tick(t0 + 7200, &a(5)).unwrap();
        assert_eq!(f.store.status("a").day_bytes, 125);
    }

    #[test]
    fn power_cut_loses_at_most_a_minute() {
        // 1000 bytes a second on one link; the box dies (no flush) at every second
        // of a ten-minute run that crosses midnight, and comes back.
        let dir = TempDir::new("usage").unwrap();
        let path = dir.path().join("usage.json");
        let t0 = at(2026, 11, 30, 23, 55);
        let (mut f, _) = UsageFile::open(&path, 1);
        for s in 0..600 {
            let now = t0 + s;
            f.tick(now, &[("a".to_string(), 1000 * (s as u64 + 1))])
                .unwrap();
            let saved = Usage::load(&path).unwrap().status("a");
            let counted = f.store.status("a");
            let total = |u: &LinkUsage| u.month_bytes + u.prev_month_bytes;
            assert_eq!(total(&counted), 1000 * (s as u64 + 1));
            let lost = total(&counted) - total(&saved);
            assert!(lost < 1000 * SAVE_EVERY_S as u64, "{s}: {lost}");
        }
    }

    #[test]
    fn usage_file_corrupt_file_is_reported_and_moved_aside() {
        let dir = TempDir::new("usage").unwrap();
        let path = dir.path().join("usage.json");
        std::fs::write(&path, b"garbage").unwrap();
        let (mut f, err) = UsageFile::open(&path, 1);
        let err = err.expect("reported");
        assert!(err.to_string().contains("unreadable"), "{err}");
        assert_eq!(f.store.view().links, vec![]);
        let aside = dir.path().join("usage.json.corrupt");
        assert_eq!(std::fs::read(&aside).unwrap(), b"garbage");
        // Counting goes on and the next save writes a good file.
        f.tick(at(2026, 11, 25, 9, 0), &[("a".to_string(), 7)])
            .unwrap();
        assert_eq!(Usage::load(&path).unwrap().status("a").month_bytes, 7);
    }

    #[test]
    fn link_usage_serializes_for_the_stats_page() {
        let mut u = Usage::new(1);
        u.set_cap(
            "a",
            Cap {
                monthly_bytes: Some(200),
            },
        );
        u.add(at(2026, 11, 25, 9, 0), "a", 50);
        let v = serde_json::to_value(u.view()).unwrap();
        assert_eq!(v["day"], "2026-11-25");
        assert_eq!(v["month_start"], "2026-11-01");
        assert_eq!(v["links"][0]["link"], "a");
        assert_eq!(v["links"][0]["month_cap_bytes"], 200);
        assert_eq!(v["links"][0]["share_of_cap"], 0.25);
        assert_eq!(v["links"][0]["cap_reached"], false);
    }
}
