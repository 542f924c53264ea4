//! MPEG-TS helpers: grouping input into whole 188-byte packets and classifying
//! packets so the scheduler knows what matters most (PAT/PMT, keyframe starts, audio).
//!
//! References: ISO/IEC 13818-1 §2.4.3 (transport packet, adaptation field),
//! §2.4.4 (PAT/PMT sections), stream_type table 2-34.

use super::wire::{Flags, TS_PACKET, TS_PER_DATAGRAM};
use std::collections::HashSet;

const SYNC: u8 = 0x47;

/// Learns PMT and audio PIDs from the PAT/PMT it sees and classifies packets.
#[derive(Debug, Default, Clone)]
pub struct Classifier {
    pmt_pids: HashSet<u16>,
    audio_pids: HashSet<u16>,
}

fn pid(p: &[u8]) -> u16 {
    (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2])
}

/// Offset of the payload in a TS packet, or None if it has none.
fn payload_offset(p: &[u8]) -> Option<usize> {
    let afc = (p[3] >> 4) & 0x3;
    match afc {
        1 => Some(4),
        3 => {
            let off = 5 + p[4] as usize;
            (off < TS_PACKET).then_some(off)
        }
        _ => None,
    }
}

/// A PSI section starting in this packet (payload_unit_start with pointer field).
fn section(p: &[u8]) -> Option<&[u8]> {
    if p[1] & 0x40 == 0 {
        return None;
    }
    let off = payload_offset(p)?;
    let start = off + 1 + p[off] as usize;
    if start + 3 > TS_PACKET {
        return None;
    }
    let s = &p[start..];
    let len = ((usize::from(s[1] & 0x0f)) << 8) | usize::from(s[2]);
    Some(&s[..(3 + len).min(s.len())])
}

fn is_audio_stream_type(t: u8) -> bool {
    // MPEG-1/2 audio, AAC ADTS, AAC LATM, AC-3 (ATSC), E-AC-3 (ATSC)
    matches!(t, 0x03 | 0x04 | 0x0f | 0x11 | 0x81 | 0x87)
}

impl Classifier {
    pub fn new() -> Self {
        Self::default()
    }

    /// Flags for a group of whole TS packets; learns PSI as a side effect.
    pub fn classify(&mut self, packets: &[u8]) -> Flags {
        let mut f = Flags::default();
        for p in packets.chunks_exact(TS_PACKET) {
            if p[0] != SYNC {
                continue;
            }
            let pid = pid(p);
            if pid == 0 {
                f = f.with(Flags::PSI);
                self.learn_pat(p);
            } else if self.pmt_pids.contains(&pid) {
                f = f.with(Flags::PSI);
                self.learn_pmt(p);
            } else if self.audio_pids.contains(&pid) {
                f = f.with(Flags::AUDIO);
            }
            // random_access_indicator on a packet that starts a PES: keyframe start.
            let afc = (p[3] >> 4) & 0x3;
            if afc & 0x2 != 0 && p[4] > 0 && p[5] & 0x40 != 0 && p[1] & 0x40 != 0 {
                f = f.with(Flags::KEYFRAME);
            }
        }
        f
    }

    fn learn_pat(&mut self, p: &[u8]) {
        let Some(s) = section(p) else { return };
        if s.len() < 12 || s[0] != 0x00 {
            return;
        }
        // 8 bytes of header after table_id..section_length, 4 bytes CRC at the end.
        let body = &s[8..s.len() - 4];
        for e in body.chunks_exact(4) {
            let program = u16::from_be_bytes([e[0], e[1]]);
            if program != 0 {
                self.pmt_pids
                    .insert((u16::from(e[2] & 0x1f) << 8) | u16::from(e[3]));
            }
        }
    }

    fn learn_pmt(&mut self, p: &[u8]) {
        for (st, pid) in pmt_streams(p) {
            if is_audio_stream_type(st) {
                self.audio_pids.insert(pid);
            }
        }
    }
}

/// (stream_type, elementary PID) of each stream a PMT section starting in `p` lists.
fn pmt_streams(p: &[u8]) -> Vec<(u8, u16)> {
    let mut out = Vec::new();
    let Some(s) = section(p) else { return out };
    if s.len() < 16 || s[0] != 0x02 {
        return out;
    }
    let info_len = (usize::from(s[10] & 0x0f) << 8) | usize::from(s[11]);
    let mut i = 12 + info_len;
    let end = s.len() - 4;
    while i + 5 <= end {
        let pid = (u16::from(s[i + 1] & 0x1f) << 8) | u16::from(s[i + 2]);
        out.push((s[i], pid));
        let es_info = (usize::from(s[i + 3] & 0x0f) << 8) | usize::from(s[i + 4]);
        i += 5 + es_info;
    }
    out
}

fn is_video_stream_type(t: u8) -> bool {
    // MPEG-2 video, MPEG-4 part 2, H.264, H.265
    matches!(t, 0x02 | 0x10 | 0x1b | 0x24)
}

/// Cuts a muxed TS stream into one slice per video frame: everything the muxer put
/// out (video, audio, PSI) from the start of one video PES to the start of the next.
/// The muxer leaves in bursts that have nothing to do with frames (audio and video
/// interleave), so a rate judged per slice, over a few frames, says what the encoder
/// produced per frame interval without the burst noise of a wall-clock window.
/// `T` is the caller's timestamp for a group of packets.
#[derive(Debug)]
pub struct FrameSlicer<T> {
    pmt_pids: HashSet<u16>,
    video_pid: Option<u16>,
    /// TS bytes since the current video PES started and when its last packet came
    /// (None: none started yet).
    current: Option<(usize, T)>,
}

impl<T: Copy> Default for FrameSlicer<T> {
    fn default() -> Self {
        Self {
            pmt_pids: HashSet::new(),
            video_pid: None,
            current: None,
        }
    }
}

impl<T: Copy> FrameSlicer<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds whole TS packets that left the muxer at `at`; returns every frame slice
    /// they complete (a slice completes when the next video PES starts) as (when its
    /// last packet left, TS bytes).
    pub fn push(&mut self, at: T, packets: &[u8]) -> Vec<(T, usize)> {
        let mut done = Vec::new();
        for p in packets.chunks_exact(TS_PACKET) {
            if p[0] != SYNC {
                continue;
            }
            let pid = pid(p);
            if pid == 0 {
                self.learn_pat(p);
            } else if self.pmt_pids.contains(&pid) {
                self.learn_pmt(p);
            } else if Some(pid) == self.video_pid && p[1] & 0x40 != 0 {
                if let Some((bytes, last)) = self.current.replace((0, at)) {
                    done.push((last, bytes));
                }
            }
            if let Some(c) = &mut self.current {
                c.0 += TS_PACKET;
                c.1 = at;
            }
        }
        done
    }

    fn learn_pat(&mut self, p: &[u8]) {
        let mut c = Classifier::new();
        c.learn_pat(p);
        self.pmt_pids.extend(c.pmt_pids);
    }

    fn learn_pmt(&mut self, p: &[u8]) {
        if self.video_pid.is_none() {
            self.video_pid = pmt_streams(p)
                .into_iter()
                .find(|(st, _)| is_video_stream_type(*st))
                .map(|(_, pid)| pid);
        }
    }
}

/// Groups an input byte stream into runs of up to `per_group` whole TS packets,
/// resynchronising on the 0x47 sync byte after junk. Counts bytes skipped.
#[derive(Debug)]
pub struct Packetizer {
    per_group: usize,
    pending: Vec<u8>,
    partial: Vec<u8>,
    /// Bytes thrown away while looking for sync.
    pub skipped: u64,
}

impl Default for Packetizer {
    fn default() -> Self {
        Self::new(TS_PER_DATAGRAM)
    }
}

impl Packetizer {
    pub fn new(per_group: usize) -> Self {
        Self {
            per_group: per_group.max(1),
            pending: Vec::new(),
            partial: Vec::new(),
            skipped: 0,
        }
    }

    /// Feed bytes; full groups are pushed to `out`.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<Vec<u8>>) {
        while !data.is_empty() {
            if self.partial.is_empty() {
                match data.iter().position(|&b| b == SYNC) {
                    Some(0) => {}
                    Some(n) => {
                        self.skipped += n as u64;
                        data = &data[n..];
                    }
                    None => {
                        self.skipped += data.len() as u64;
                        return;
                    }
                }
            }
            let take = (TS_PACKET - self.partial.len()).min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.partial.len() == TS_PACKET {
                self.pending.append(&mut self.partial);
                if self.pending.len() == self.per_group * TS_PACKET {
                    out.push(std::mem::take(&mut self.pending));
                }
            }
        }
    }

    /// Emit whatever whole packets are pending (call on a short timer so a slow
    /// stream is not held back waiting for a full group).
    pub fn flush(&mut self) -> Option<Vec<u8>> {
        (!self.pending.is_empty()).then(|| std::mem::take(&mut self.pending))
    }
}

/// Builds a synthetic but well-formed TS stream (PAT, PMT with one H.264 video and
/// one AAC audio PID, a keyframe marker once a second): the built-in test source.
#[derive(Debug, Default)]
pub struct TestStream {
    packets: u64,
    cc: [u8; 4],
}

pub const TEST_PMT_PID: u16 = 0x1000;
pub const TEST_VIDEO_PID: u16 = 0x100;
pub const TEST_AUDIO_PID: u16 = 0x101;

fn crc32_mpeg(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04c1_1db7
            } else {
                crc << 1
            };
        }
    }
    crc
}

impl TestStream {
    pub fn new() -> Self {
        Self::default()
    }

    fn header(&mut self, p: &mut [u8], pid: u16, start: bool, idx: usize) {
        p[0] = SYNC;
        p[1] = (if start { 0x40 } else { 0 }) | ((pid >> 8) as u8 & 0x1f);
        p[2] = pid as u8;
        p[3] = 0x10 | (self.cc[idx] & 0x0f);
        self.cc[idx] = self.cc[idx].wrapping_add(1);
    }

    fn psi(&mut self, pid: u16, idx: usize, section: &[u8]) -> [u8; TS_PACKET] {
        let mut p = [0xffu8; TS_PACKET];
        self.header(&mut p, pid, true, idx);
        p[4] = 0; // pointer field
        p[5..5 + section.len()].copy_from_slice(section);
        p
    }

    fn with_crc(mut s: Vec<u8>) -> Vec<u8> {
        let crc = crc32_mpeg(&s);
        s.extend_from_slice(&crc.to_be_bytes());
        s
    }

    /// The next `n` TS packets, concatenated (one media datagram's worth).
    pub fn next_group(&mut self, n: usize, packets_per_second: u64) -> Vec<u8> {
        let mut g = Vec::with_capacity(n * TS_PACKET);
        for _ in 0..n {
            g.extend_from_slice(&self.next_packet(packets_per_second));
        }
        g
    }

    /// Next TS packet. `packets_per_second` sets the PSI/keyframe cadence.
    pub fn next_packet(&mut self, packets_per_second: u64) -> [u8; TS_PACKET] {
        let n = self.packets;
        self.packets += 1;
        let pps = packets_per_second.max(50);
        let in_second = n % pps;
        if in_second == 0 {
            let pat = Self::with_crc(vec![
                0x00,
                0xb0,
                13,
                0x00,
                0x01,
                0xc1,
                0x00,
                0x00,
                0x00,
                0x01,
                0xe0 | (TEST_PMT_PID >> 8) as u8,
                TEST_PMT_PID as u8,
            ]);
            return self.psi(0, 0, &pat);
        }
        if in_second == 1 {
            let pmt = Self::with_crc(vec![
                0x02,
                0xb0,
                23,
                0x00,
                0x01,
                0xc1,
                0x00,
                0x00,
                0xe0 | (TEST_VIDEO_PID >> 8) as u8,
                TEST_VIDEO_PID as u8,
                0xf0,
                0x00,
                0x1b,
                0xe0 | (TEST_VIDEO_PID >> 8) as u8,
                TEST_VIDEO_PID as u8,
                0xf0,
                0x00,
                0x0f,
                0xe0 | (TEST_AUDIO_PID >> 8) as u8,
                TEST_AUDIO_PID as u8,
                0xf0,
                0x00,
            ]);
            return self.psi(TEST_PMT_PID, 1, &pmt);
        }
        let mut p = [0u8; TS_PACKET];
        if n % 40 == 7 {
            // about 2.5 % audio
            self.header(&mut p, TEST_AUDIO_PID, false, 3);
            p[4..].fill(0xaa);
            return p;
        }
        if in_second == 2 {
            // keyframe start: adaptation field with random_access_indicator
            self.header(&mut p, TEST_VIDEO_PID, true, 2);
            p[3] = 0x30 | (p[3] & 0x0f);
            p[4] = 1;
            p[5] = 0x40;
            p[6..].fill(0x55);
            return p;
        }
        self.header(&mut p, TEST_VIDEO_PID, false, 2);
        // Payload carries the packet counter so receivers can check order and gaps.
        p[4..12].copy_from_slice(&n.to_be_bytes());
        p[12..].fill(0x11);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_stream_is_classified() {
        let mut s = TestStream::new();
        let mut c = Classifier::new();
        let mut flags = Vec::new();
        for _ in 0..400 {
            flags.push(c.classify(&s.next_packet(400)));
        }
        assert!(flags[0].has(Flags::PSI), "PAT");
        assert!(flags[1].has(Flags::PSI), "PMT learnt from PAT");
        assert!(flags[2].has(Flags::KEYFRAME));
        assert!(flags[7].has(Flags::AUDIO), "audio PID learnt from PMT");
        assert!(!flags[3].important());
        let audio = flags.iter().filter(|f| f.has(Flags::AUDIO)).count();
        assert_eq!(audio, 10);
    }

    #[test]
    fn packetizer_resyncs_and_groups() {
        let mut s = TestStream::new();
        let mut data = vec![1, 2, 3];
        for _ in 0..15 {
            data.extend_from_slice(&s.next_packet(1000));
        }
        let mut p = Packetizer::new(7);
        let mut out = Vec::new();
        // feed in awkward pieces
        for chunk in data.chunks(100) {
            p.push(chunk, &mut out);
        }
        assert_eq!(p.skipped, 3);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|g| g.len() == 7 * TS_PACKET));
        assert_eq!(p.flush().map(|v| v.len()), Some(TS_PACKET));
        assert_eq!(p.flush(), None);
    }

    #[test]
    fn frame_slicer_cuts_at_video_pes_starts() {
        // The test stream starts one video PES a second (its keyframe marker): with
        // 400 packets a second, every slice is 400 packets, PAT/PMT/audio included
        // (PES starts at packets 2, 402, 802 and 1202: three slices complete).
        let mut s = TestStream::new();
        let mut f = FrameSlicer::new();
        let mut slices = Vec::new();
        for i in 0..1203 {
            slices.extend(f.push(i, &s.next_packet(400)));
        }
        // Each slice is timed by its last packet (the one before the next PES start).
        assert_eq!(
            slices,
            vec![
                (401, 400 * TS_PACKET),
                (801, 400 * TS_PACKET),
                (1201, 400 * TS_PACKET)
            ]
        );
        // Junk between packets is skipped, not counted.
        assert!(f.push(0, &[0u8; TS_PACKET]).is_empty());
    }

    #[test]
    fn pat_crc_is_valid() {
        // CRC over a section including its CRC is zero.
        let mut s = TestStream::new();
        let p = s.next_packet(100);
        let sec = section(&p).unwrap();
        assert_eq!(crc32_mpeg(sec), 0);
    }
}
