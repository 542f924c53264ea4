//! Recording: the released MPEG-TS appended to segment files in plain Rust, on
//! a [`super::worker`] thread.
//!
//! - Segments are `DEVICE-YYYYMMDDTHHMMSS.mmmZ.ts` (UTC start time), so names
//!   sort by time. The directory is created when missing.
//! - A segment older than `segment_seconds` ends right before the next video
//!   keyframe (a packet starting a PES with `random_access_indicator` set), or at
//!   the next TS packet boundary once [`FORCE_ROTATE_AFTER`] more has passed
//!   without one. The new segment starts with copies of the latest PAT and PMT,
//!   so every segment plays on its own from its first frame.
//! - After a new segment is opened, this device's segments beyond `keep`
//!   (the new one included) are deleted, oldest first.
//! - A disk error (directory not creatable, write failed, disk full) fails the
//!   output; the worker restarts it after backoff with a fresh segment.

use super::worker::{Chunk, Connection, Connector};
use crate::config::FileOutputConfig;
use crate::core::wire::TS_PACKET;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A segment that is due rotates at any packet boundary after this much more
/// time without a keyframe (an audio-only stream still gets rotated).
pub const FORCE_ROTATE_AFTER: Duration = Duration::from_secs(2);
/// Buffered bytes are written out at least this often.
const FLUSH_INTERVAL: Duration = Duration::from_millis(500);
const WRITE_BUFFER: usize = 256 * 1024;

/// Opens the recording directory and the first segment.
pub(super) struct FileConnector {
    cfg: FileOutputConfig,
    device: String,
}

impl FileConnector {
    pub fn new(cfg: FileOutputConfig, device: &str) -> Self {
        Self {
            cfg,
            device: device.to_string(),
        }
    }
}

impl Connector for FileConnector {
    type Conn = Recording;

    fn connect(&mut self) -> Result<Recording, String> {
        fs::create_dir_all(&self.cfg.dir)
            .map_err(|e| format!("creating {}: {e}", self.cfg.dir.display()))?;
        let mut r = Recording {
            cfg: self.cfg.clone(),
            device: self.device.clone(),
            file: None,
            started: Instant::now(),
            last_flush: Instant::now(),
            last_name: String::new(),
            psi: Psi::default(),
        };
        r.open_segment(Instant::now())?;
        Ok(r)
    }
}

/// The open segment.
pub(super) struct Recording {
    cfg: FileOutputConfig,
    device: String,
    file: Option<(PathBuf, BufWriter<File>)>,
    /// When the current segment was opened.
    started: Instant,
    last_flush: Instant,
    last_name: String,
    psi: Psi,
}

/// The latest PAT and PMT packets, repeated at the start of each new segment.
#[derive(Default)]
struct Psi {
    pat: Option<Vec<u8>>,
    /// PMT PIDs from the PAT, each with its latest first PMT packet.
    pmts: Vec<(u16, Option<Vec<u8>>)>,
}

impl Psi {
    fn observe(&mut self, p: &[u8]) {
        if p.len() != TS_PACKET || p[0] != 0x47 || p[1] & 0x40 == 0 {
            return; // not the start of a section
        }
        let pid = pid_of(p);
        if pid == 0 {
            let pids = pat_pmt_pids(p);
            if !pids.is_empty() {
                self.pmts.retain(|(q, _)| pids.contains(q));
                for q in pids {
                    if !self.pmts.iter().any(|(x, _)| *x == q) {
                        self.pmts.push((q, None));
                    }
                }
            }
            self.pat = Some(p.to_vec());
        } else if let Some((_, slot)) = self.pmts.iter_mut().find(|(q, _)| *q == pid) {
            *slot = Some(p.to_vec());
        }
    }

    /// PAT then PMTs, if a PAT has been seen.
    fn header(&self) -> Vec<u8> {
        let mut v = Vec::new();
        if let Some(pat) = &self.pat {
            v.extend_from_slice(pat);
            for pmt in self.pmts.iter().filter_map(|(_, p)| p.as_ref()) {
                v.extend_from_slice(pmt);
            }
        }
        v
    }
}

fn pid_of(p: &[u8]) -> u16 {
    (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2])
}

/// PMT PIDs listed in a single-packet PAT (the usual case; longer PATs are
/// ignored and only the copy of the PAT itself is repeated).
fn pat_pmt_pids(p: &[u8]) -> Vec<u16> {
    let afc = (p[3] >> 4) & 0x3;
    let mut i = 4;
    if afc & 0x2 != 0 {
        i += 1 + usize::from(p[4]);
    }
    if afc & 0x1 == 0 || i >= TS_PACKET {
        return Vec::new();
    }
    i += 1 + usize::from(p[i]); // pointer field
    let Some(s) = p.get(i..) else {
        return Vec::new();
    };
    if s.len() < 12 || s[0] != 0x00 {
        return Vec::new();
    }
    let len = (usize::from(s[1] & 0x0f) << 8) | usize::from(s[2]);
    let Some(body) = s
        .get(8..3 + len)
        .and_then(|b| b.get(..b.len().saturating_sub(4)))
    else {
        return Vec::new();
    };
    body.chunks_exact(4)
        .filter(|e| u16::from_be_bytes([e[0], e[1]]) != 0)
        .map(|e| (u16::from(e[2] & 0x1f) << 8) | u16::from(e[3]))
        .collect()
}

/// A packet that starts a PES with `random_access_indicator` set: a keyframe.
fn is_keyframe_start(p: &[u8]) -> bool {
    let afc = (p[3] >> 4) & 0x3;
    p[1] & 0x40 != 0 && afc & 0x2 != 0 && p[4] > 0 && p[5] & 0x40 != 0
}

impl Recording {
    fn open_segment(&mut self, now: Instant) -> Result<(), String> {
        self.close_segment()?;
        let mut name = segment_name(&self.device, SystemTime::now());
        // Two rotations within one millisecond (only possible with a clock step).
        if name <= self.last_name {
            name = format!("{}~.ts", self.last_name.trim_end_matches(".ts"));
        }
        let path = self.cfg.dir.join(&name);
        let f = File::create(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        tracing::info!(file = %path.display(), "recording segment started");
        self.file = Some((path, BufWriter::with_capacity(WRITE_BUFFER, f)));
        self.last_name = name;
        self.started = now;
        prune(&self.cfg.dir, &self.device, self.cfg.keep);
        Ok(())
    }

    fn close_segment(&mut self) -> Result<(), String> {
        if let Some((path, mut w)) = self.file.take() {
            w.flush()
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
        }
        Ok(())
    }

    fn append(&mut self, data: &[u8]) -> Result<(), String> {
        let Some((path, w)) = &mut self.file else {
            return Err("no segment open".into());
        };
        w.write_all(data)
            .map_err(|e| format!("writing {}: {e}", path.display()))
    }
}

impl Connection for Recording {
    fn write(&mut self, chunk: Chunk) -> Result<(), String> {
        let data = &chunk.data[..];
        let mut from = 0;
        for (i, p) in data.chunks(TS_PACKET).enumerate() {
            let due = self.started + self.cfg.segment;
            if chunk.at >= due
                && p.len() == TS_PACKET
                && (is_keyframe_start(p) || chunk.at >= due + FORCE_ROTATE_AFTER)
            {
                let at = i * TS_PACKET;
                self.append(&data[from..at])?;
                from = at;
                self.open_segment(chunk.at)?;
                let header = self.psi.header();
                self.append(&header)?;
            }
            self.psi.observe(p);
        }
        self.append(&data[from..])
    }

    fn poll(&mut self, now: Instant) -> Result<(), String> {
        if now >= self.last_flush + FLUSH_INTERVAL {
            self.last_flush = now;
            if let Some((path, w)) = &mut self.file {
                w.flush()
                    .map_err(|e| format!("writing {}: {e}", path.display()))?;
            }
        }
        Ok(())
    }

    fn finish(mut self) {
        if let Err(e) = self.close_segment() {
            tracing::warn!(error = %e, "recording: last segment not fully written");
        }
    }
}

/// `DEVICE-YYYYMMDDTHHMMSS.mmmZ.ts` for `t` in UTC.
pub fn segment_name(device: &str, t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!(
        "{device}-{y:04}{m:02}{day:02}T{:02}{:02}{:02}.{:03}Z.ts",
        s / 3600,
        s / 60 % 60,
        s % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`, public domain algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Whether `name` is a segment of `device` (`DEVICE-` + 8 digits + `T`... + `.ts`).
fn is_segment_of(name: &str, device: &str) -> bool {
    let Some(rest) = name.strip_prefix(device).and_then(|r| r.strip_prefix('-')) else {
        return false;
    };
    let b = rest.as_bytes();
    rest.ends_with(".ts")
        && b.len() >= 23
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'.'
}

/// Deletes `device`'s oldest segments in `dir` until `keep` remain. Failures
/// are logged, not fatal (a read-only old file must not stop the recording).
fn prune(dir: &Path, device: &str, keep: usize) {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "recording: cannot list segments");
            return;
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| is_segment_of(n, device))
        .collect();
    if names.len() <= keep {
        return;
    }
    names.sort();
    for n in &names[..names.len() - keep] {
        let p = dir.join(n);
        match fs::remove_file(&p) {
            Ok(()) => {
                tracing::info!(file = %p.display(), "recording segment deleted (keep = {keep})")
            }
            Err(e) => {
                tracing::warn!(file = %p.display(), error = %e, "recording: cannot delete old segment")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::TempDir;

    #[test]
    fn names_are_utc_and_sort_by_time() {
        let t = UNIX_EPOCH + Duration::from_millis(1_764_085_512_345); // 2025-11-25 15:45:12.345
        assert_eq!(segment_name("cam1", t), "cam1-20251125T154512.345Z.ts");
        assert_eq!(segment_name("c", UNIX_EPOCH), "c-19700101T000000.000Z.ts");
        // 2000-02-29 (leap day), 2100-03-01 (no leap day in 2100).
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(47_541), (2100, 3, 1));
        let a = segment_name("cam1", t);
        let b = segment_name("cam1", t + Duration::from_secs(86_400 * 40));
        assert!(a < b);
        assert!(is_segment_of(&a, "cam1"));
        assert!(!is_segment_of(&a, "cam"));
        assert!(!is_segment_of("cam1-notes.ts", "cam1"));
    }

    fn packet(pid: u16) -> Vec<u8> {
        let mut p = vec![0xffu8; TS_PACKET];
        p[0] = 0x47;
        p[1] = (pid >> 8) as u8 & 0x1f;
        p[2] = pid as u8;
        p[3] = 0x10; // payload only
        p
    }

    /// PAT listing one program with its PMT on `pmt_pid`.
    fn pat(pmt_pid: u16) -> Vec<u8> {
        let mut p = packet(0);
        p[1] |= 0x40;
        let section = [
            0x00, // pointer field
            0x00,
            0xb0,
            13, // table_id, section_length = 13
            0x00,
            0x01,
            0xc1,
            0x00,
            0x00, // tsid, version, section numbers
            0x00,
            0x01,
            0xe0 | (pmt_pid >> 8) as u8,
            pmt_pid as u8, // program 1
            0,
            0,
            0,
            0, // CRC (not checked)
        ];
        p[4..4 + section.len()].copy_from_slice(&section);
        p
    }

    fn pmt(pid: u16) -> Vec<u8> {
        let mut p = packet(pid);
        p[1] |= 0x40;
        p[4] = 0;
        p[5] = 0x02;
        p
    }

    /// The first packet of a keyframe's PES (adaptation field with RAI).
    fn keyframe(pid: u16) -> Vec<u8> {
        let mut p = packet(pid);
        p[1] |= 0x40;
        p[3] = 0x30;
        p[4] = 1;
        p[5] = 0x40;
        p
    }

    fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn parses_pat_and_recognises_keyframes() {
        assert_eq!(pat_pmt_pids(&pat(0x1000)), [0x1000]);
        assert!(pat_pmt_pids(&packet(0)).is_empty());
        assert!(is_keyframe_start(&keyframe(0x100)));
        assert!(!is_keyframe_start(&packet(0x100)));
        let mut no_pusi = keyframe(0x100);
        no_pusi[1] &= !0x40;
        assert!(!is_keyframe_start(&no_pusi));
    }

    #[test]
    fn rotates_at_a_keyframe_with_psi_and_prunes_to_keep() {
        let dir = TempDir::new("rec-unit").unwrap();
        // Another device's segment and a foreign file stay.
        fs::write(dir.path().join("other-20000101T000000.000Z.ts"), b"x").unwrap();
        fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        let cfg = FileOutputConfig {
            dir: dir.path().join("sub"),
            segment: Duration::from_secs(1),
            keep: 2,
        };
        let mut r = FileConnector::new(cfg.clone(), "cam").connect().unwrap();
        let t0 = r.started;
        let write =
            |r: &mut Recording, at: Instant, d: Vec<u8>| r.write(Chunk { at, data: d }).unwrap();
        let v = || packet(0x100);
        write(
            &mut r,
            t0,
            cat(&[pat(0x1000), pmt(0x1000), keyframe(0x100), v()]),
        );
        // Due, but no keyframe in this chunk: stays in the segment.
        write(&mut r, t0 + Duration::from_millis(1100), cat(&[v(), v()]));
        assert_eq!(r.started, t0);
        std::thread::sleep(Duration::from_millis(5));
        write(
            &mut r,
            t0 + Duration::from_millis(1200),
            cat(&[v(), keyframe(0x100), v()]),
        );
        let t1 = r.started;
        assert_eq!(t1, t0 + Duration::from_millis(1200));
        // Overdue by FORCE_ROTATE_AFTER without a keyframe: rotates anyway.
        std::thread::sleep(Duration::from_millis(5));
        write(
            &mut r,
            t1 + Duration::from_secs(1) + FORCE_ROTATE_AFTER,
            cat(&[v(), v()]),
        );
        r.finish();
        let mut names: Vec<String> = fs::read_dir(&cfg.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names.len(), 2, "kept 2 of 3: {names:?}");
        let second = fs::read(cfg.dir.join(&names[0])).unwrap();
        let third = fs::read(cfg.dir.join(&names[1])).unwrap();
        // PAT + PMT copies, then the keyframe and the packet after it.
        assert_eq!(
            second,
            cat(&[pat(0x1000), pmt(0x1000), keyframe(0x100), v()])
        );
        assert_eq!(third, cat(&[pat(0x1000), pmt(0x1000), v(), v()]));
        assert!(dir.path().join("other-20000101T000000.000Z.ts").exists());
        assert!(dir.path().join("notes.txt").exists());
    }

    #[test]
    fn unwritable_directory_fails_the_connect() {
        let dir = TempDir::new("rec-unit-bad").unwrap();
        let file = dir.path().join("a-file");
        fs::write(&file, b"x").unwrap();
        let cfg = FileOutputConfig {
            dir: file.join("sub"),
            segment: Duration::from_secs(1),
            keep: 2,
        };
        let e = FileConnector::new(cfg, "cam").connect().err().unwrap();
        assert!(e.starts_with("creating "), "{e}");
    }
}
