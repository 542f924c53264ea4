//! Braid wire format: QUIC DATAGRAM payloads and control-stream messages.
//!
//! Written down for humans in `docs/protocol.md`; this file is the reference.
//! All integers are big-endian. Every decoder returns [`WireError`] on junk and
//! never panics (property-tested below).
//!
//! Datagrams (first byte = `version << 4 | kind`):
//!
//! | kind | direction | layout after the first byte |
//! |---|---|---|
//! | 0 media | edge -> relay | flags u8, session u32, link_seq u32, seq u64, send_time_us u64, capture_age u16 (units of 100 µs), payload (whole 188-byte TS packets) |
//! | 1 probe | edge -> relay | flags u8, session u32, link_seq u32, zero padding |
//! | 2 report | relay -> edge | 0 u8, session u32, largest u32, hold_us u32, bitmap [u8; 32], received_bytes u64 |
//! | 3 nack | relay -> edge | 0 u8, session u32, count u8, count × (first seq u64, len u16) |
//!
//! Control stream (one bidirectional QUIC stream per link): frames of
//! `len u16 | type u8 | body`, see [`Control`].

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Protocol version carried in every datagram and in `Join`.
pub const VERSION: u8 = 2;
/// Size of one MPEG-TS packet.
pub const TS_PACKET: usize = 188;
/// TS packets per datagram on a 1500-byte path (the UDP/MPEG-TS convention).
pub const TS_PER_DATAGRAM: usize = 7;
/// Bytes of the media header in front of the TS payload.
pub const MEDIA_HEADER: usize = 28;
/// Bytes of a probe datagram (header only, no padding requested by default).
pub const PROBE_LEN: usize = 10;
/// Link sequence numbers covered by a report's bitmap, below `largest`.
pub const REPORT_BITMAP_BITS: u32 = 256;
/// Length of an encoded report datagram.
pub const REPORT_LEN: usize = 1 + 1 + 4 + 4 + 4 + 32 + 8;
/// At most this many ranges in one NACK datagram (keeps it far below any MTU).
pub const MAX_NACK_RANGES: usize = 64;
/// Largest control frame body accepted.
pub const MAX_CONTROL_FRAME: usize = 4096;

const KIND_MEDIA: u8 = 0;
const KIND_PROBE: u8 = 1;
const KIND_REPORT: u8 = 2;
const KIND_NACK: u8 = 3;

/// Why a datagram or control frame was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("empty datagram")]
    Empty,
    #[error("unsupported protocol version {0}")]
    Version(u8),
    #[error("unknown datagram kind {0}")]
    Kind(u8),
    #[error("truncated: need {need} bytes, have {have}")]
    Truncated { need: usize, have: usize },
    #[error("payload of {0} bytes is not whole 188-byte TS packets")]
    Payload(usize),
    #[error("bad TS sync byte in payload")]
    Sync,
    #[error("too many NACK ranges: {0}")]
    TooManyRanges(usize),
    #[error("unknown control frame type {0}")]
    ControlType(u8),
    #[error("control frame too large: {0} bytes")]
    ControlSize(usize),
    #[error("invalid UTF-8 in control frame")]
    Utf8,
}

/// Per-datagram flags (media and probe).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Flags(pub u8);

impl Flags {
    /// This copy is a retransmission of a packet already sent.
    pub const RETRANSMIT: u8 = 1 << 0;
    /// This copy is a proactive duplicate on spare capacity.
    pub const DUPLICATE: u8 = 1 << 1;
    /// Carries PAT or PMT.
    pub const PSI: u8 = 1 << 2;
    /// Carries the start of a keyframe (random access point).
    pub const KEYFRAME: u8 = 1 << 3;
    /// Carries audio.
    pub const AUDIO: u8 = 1 << 4;

    pub fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
    pub fn with(self, bit: u8) -> Flags {
        Flags(self.0 | bit)
    }
    /// Packets whose loss is visible at once: worth a duplicate on spare capacity.
    pub fn important(self) -> bool {
        self.has(Self::PSI) || self.has(Self::KEYFRAME) || self.has(Self::AUDIO)
    }
}

/// Header of a media datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaHeader {
    pub flags: Flags,
    /// Session tag chosen by the edge at start; every link of the session carries it.
    pub session: u32,
    /// Per-link transmission counter, +1 for every datagram sent on that link
    /// (media or probe, first copy or not). Acknowledged by reports.
    pub link_seq: u32,
    /// Session sequence number of the media packet (same for every copy).
    pub seq: u64,
    /// Edge ingest time of the media, microseconds since the edge's session epoch.
    pub send_time_us: u64,
    /// How long before ingest the media was captured (camera to sender: capture,
    /// encode, mux), in units of 100 µs, saturating at 6.5535 s. The relay adds it to
    /// its own output delay to report glass-to-glass latency.
    pub capture_age: u16,
}

/// [`MediaHeader::capture_age`] from a duration, saturating.
pub fn capture_age_units(age: std::time::Duration) -> u16 {
    (age.as_micros() / 100).min(u128::from(u16::MAX)) as u16
}

/// A decoded datagram; media payload is a zero-copy slice of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datagram {
    Media {
        header: MediaHeader,
        payload: Bytes,
    },
    Probe {
        flags: Flags,
        session: u32,
        link_seq: u32,
    },
    Report(Report),
    Nack(Nack),
}

/// Receiver report about one link, relay -> edge on that link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub session: u32,
    /// Largest link_seq received on this link so far.
    pub largest: u32,
    /// Microseconds between the arrival of `largest` and this report leaving.
    pub hold_us: u32,
    /// Bit i set = link_seq `largest - 1 - i` was received.
    pub bitmap: [u8; 32],
    /// Total bytes of datagrams received on this link (wraps never in practice).
    pub received_bytes: u64,
}

impl Report {
    /// Whether `link_seq` is acknowledged by this report.
    pub fn acks(&self, link_seq: u32) -> bool {
        if link_seq == self.largest {
            return true;
        }
        let back = self.largest.wrapping_sub(link_seq);
        if back == 0 || back > REPORT_BITMAP_BITS {
            return false;
        }
        let i = (back - 1) as usize;
        self.bitmap[i / 8] & (1 << (i % 8)) != 0
    }
}

/// Sequence ranges the relay is missing, relay -> edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nack {
    pub session: u32,
    /// (first seq, number of consecutive seqs)
    pub ranges: Vec<(u64, u16)>,
}

fn first_byte(kind: u8) -> u8 {
    (VERSION << 4) | kind
}

/// Encode a media datagram. `payload` must be whole TS packets.
pub fn encode_media(h: &MediaHeader, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(MEDIA_HEADER + payload.len());
    b.put_u8(first_byte(KIND_MEDIA));
    b.put_u8(h.flags.0);
    b.put_u32(h.session);
    b.put_u32(h.link_seq);
    b.put_u64(h.seq);
    b.put_u64(h.send_time_us);
    b.put_u16(h.capture_age);
    b.put_slice(payload);
    b.freeze()
}

/// Rewrite the per-copy fields of an encoded media datagram in place (a resend
/// or duplicate differs from the first copy only in flags and link_seq).
pub fn restamp_media(encoded: &Bytes, flags: Flags, link_seq: u32) -> Bytes {
    let mut b = BytesMut::from(&encoded[..]);
    b[1] = flags.0;
    b[6..10].copy_from_slice(&link_seq.to_be_bytes());
    b.freeze()
}

/// Encode a probe datagram padded to `len` bytes (at least [`PROBE_LEN`]).
pub fn encode_probe(flags: Flags, session: u32, link_seq: u32, len: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(len.max(PROBE_LEN));
    b.put_u8(first_byte(KIND_PROBE));
    b.put_u8(flags.0);
    b.put_u32(session);
    b.put_u32(link_seq);
    b.resize(len.max(PROBE_LEN), 0);
    b.freeze()
}

pub fn encode_report(r: &Report) -> Bytes {
    let mut b = BytesMut::with_capacity(REPORT_LEN);
    b.put_u8(first_byte(KIND_REPORT));
    b.put_u8(0);
    b.put_u32(r.session);
    b.put_u32(r.largest);
    b.put_u32(r.hold_us);
    b.put_slice(&r.bitmap);
    b.put_u64(r.received_bytes);
    b.freeze()
}

pub fn encode_nack(n: &Nack) -> Bytes {
    let count = n.ranges.len().min(MAX_NACK_RANGES);
    let mut b = BytesMut::with_capacity(7 + count * 10);
    b.put_u8(first_byte(KIND_NACK));
    b.put_u8(0);
    b.put_u32(n.session);
    b.put_u8(count as u8);
    for &(first, len) in &n.ranges[..count] {
        b.put_u64(first);
        b.put_u16(len);
    }
    b.freeze()
}

fn need(have: usize, need: usize) -> Result<(), WireError> {
    if have < need {
        Err(WireError::Truncated { need, have })
    } else {
        Ok(())
    }
}

/// Decode any datagram. Media payloads are checked to be whole TS packets with
/// the 0x47 sync byte.
pub fn decode(d: &Bytes) -> Result<Datagram, WireError> {
    let first = *d.first().ok_or(WireError::Empty)?;
    if first >> 4 != VERSION {
        return Err(WireError::Version(first >> 4));
    }
    let mut r = &d[1..];
    match first & 0x0f {
        KIND_MEDIA => {
            need(d.len(), MEDIA_HEADER)?;
            let flags = Flags(r.get_u8());
            let session = r.get_u32();
            let link_seq = r.get_u32();
            let seq = r.get_u64();
            let send_time_us = r.get_u64();
            let capture_age = r.get_u16();
            let payload = d.slice(MEDIA_HEADER..);
            if payload.is_empty() || payload.len() % TS_PACKET != 0 {
                return Err(WireError::Payload(payload.len()));
            }
            if payload.chunks(TS_PACKET).any(|p| p[0] != 0x47) {
                return Err(WireError::Sync);
            }
            Ok(Datagram::Media {
                header: MediaHeader {
                    flags,
                    session,
                    link_seq,
                    seq,
                    send_time_us,
                    capture_age,
                },
                payload,
            })
        }
        KIND_PROBE => {
            need(d.len(), PROBE_LEN)?;
            let flags = Flags(r.get_u8());
            let session = r.get_u32();
            let link_seq = r.get_u32();
            Ok(Datagram::Probe {
                flags,
                session,
                link_seq,
            })
        }
        KIND_REPORT => {
            need(d.len(), REPORT_LEN)?;
            r.get_u8();
            let session = r.get_u32();
            let largest = r.get_u32();
            let hold_us = r.get_u32();
            let mut bitmap = [0u8; 32];
            r.copy_to_slice(&mut bitmap);
            let received_bytes = r.get_u64();
            Ok(Datagram::Report(Report {
                session,
                largest,
                hold_us,
                bitmap,
                received_bytes,
            }))
        }
        KIND_NACK => {
            need(d.len(), 7)?;
            r.get_u8();
            let session = r.get_u32();
            let count = r.get_u8() as usize;
            if count > MAX_NACK_RANGES {
                return Err(WireError::TooManyRanges(count));
            }
            need(d.len(), 7 + count * 10)?;
            let ranges = (0..count).map(|_| (r.get_u64(), r.get_u16())).collect();
            Ok(Datagram::Nack(Nack { session, ranges }))
        }
        k => Err(WireError::Kind(k)),
    }
}

/// Messages on the per-link control stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Edge -> relay, first frame on every link: join this link to a session.
    Join {
        version: u8,
        session: u32,
        link_id: u8,
        latency_ms: u32,
        link_name: String,
    },
    /// Relay -> edge: the link is part of the session.
    Accept { session: u32, latency_ms: u32 },
    /// Relay -> edge: refused, with a reason; the relay closes the connection.
    Reject { reason: String },
    /// Relay -> edge, about every 100 ms: session-level receiver report.
    Summary(SessionSummary),
}

/// Session counters as seen by the relay, carried in [`Control::Summary`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionSummary {
    /// Media packets handed to the outputs.
    pub released: u64,
    /// Sequence numbers skipped because they never arrived in time.
    pub lost: u64,
    /// Packets that arrived after their release time.
    pub late: u64,
    /// Copies of packets already held or released.
    pub duplicates: u64,
    /// Release latency in force for the session (edge ingest to relay output), ms.
    pub latency_ms: u32,
    /// Camera capture to relay output, median and 95th percentile over the relay's
    /// recent window, ms (None until media was released). Appended to the frame;
    /// a frame without them (older relay) decodes with None.
    #[serde(default)]
    pub capture_to_output_p50_ms: Option<u32>,
    #[serde(default)]
    pub capture_to_output_p95_ms: Option<u32>,
}

/// `u32::MAX` stands for "none" in optional u32 fields.
const NONE_U32: u32 = u32::MAX;

fn put_opt_u32(b: &mut BytesMut, v: Option<u32>) {
    b.put_u32(v.map_or(NONE_U32, |v| v.min(NONE_U32 - 1)));
}

fn get_opt_u32(r: &mut &[u8]) -> Option<u32> {
    if r.len() < 4 {
        return None;
    }
    Some(r.get_u32()).filter(|v| *v != NONE_U32)
}

const CT_JOIN: u8 = 1;
const CT_ACCEPT: u8 = 2;
const CT_REJECT: u8 = 3;
const CT_SUMMARY: u8 = 4;

fn put_str(b: &mut BytesMut, s: &str) {
    let s = &s.as_bytes()[..s.len().min(255)];
    b.put_u8(s.len() as u8);
    b.put_slice(s);
}

fn get_str(r: &mut &[u8]) -> Result<String, WireError> {
    need(r.len(), 1)?;
    let n = r.get_u8() as usize;
    need(r.len(), n)?;
    let s = std::str::from_utf8(&r[..n]).map_err(|_| WireError::Utf8)?;
    let s = s.to_owned();
    r.advance(n);
    Ok(s)
}

/// Encode a control message as one frame (`len u16 | type u8 | body`).
pub fn encode_control(c: &Control) -> Bytes {
    let mut body = BytesMut::new();
    let ty = match c {
        Control::Join {
            version,
            session,
            link_id,
            latency_ms,
            link_name,
        } => {
            body.put_u8(*version);
            body.put_u32(*session);
            body.put_u8(*link_id);
            body.put_u32(*latency_ms);
            put_str(&mut body, link_name);
            CT_JOIN
        }
        Control::Accept {
            session,
            latency_ms,
        } => {
            body.put_u32(*session);
            body.put_u32(*latency_ms);
            CT_ACCEPT
        }
        Control::Reject { reason } => {
            put_str(&mut body, reason);
            CT_REJECT
        }
        Control::Summary(s) => {
            body.put_u64(s.released);
            body.put_u64(s.lost);
            body.put_u64(s.late);
            body.put_u64(s.duplicates);
            body.put_u32(s.latency_ms);
            put_opt_u32(&mut body, s.capture_to_output_p50_ms);
            put_opt_u32(&mut body, s.capture_to_output_p95_ms);
            CT_SUMMARY
        }
    };
    let mut b = BytesMut::with_capacity(3 + body.len());
    b.put_u16((1 + body.len()) as u16);
    b.put_u8(ty);
    b.put_slice(&body);
    b.freeze()
}

/// Decode one control frame body (after the `len u16` prefix: `type u8 | body`).
pub fn decode_control(frame: &[u8]) -> Result<Control, WireError> {
    if frame.len() > MAX_CONTROL_FRAME {
        return Err(WireError::ControlSize(frame.len()));
    }
    need(frame.len(), 1)?;
    let mut r = &frame[1..];
    let c = match frame[0] {
        CT_JOIN => {
            need(r.len(), 10)?;
            let version = r.get_u8();
            let session = r.get_u32();
            let link_id = r.get_u8();
            let latency_ms = r.get_u32();
            let link_name = get_str(&mut r)?;
            Control::Join {
                version,
                session,
                link_id,
                latency_ms,
                link_name,
            }
        }
        CT_ACCEPT => {
            need(r.len(), 8)?;
            Control::Accept {
                session: r.get_u32(),
                latency_ms: r.get_u32(),
            }
        }
        CT_REJECT => Control::Reject {
            reason: get_str(&mut r)?,
        },
        CT_SUMMARY => {
            need(r.len(), 36)?;
            Control::Summary(SessionSummary {
                released: r.get_u64(),
                lost: r.get_u64(),
                late: r.get_u64(),
                duplicates: r.get_u64(),
                latency_ms: r.get_u32(),
                capture_to_output_p50_ms: get_opt_u32(&mut r),
                capture_to_output_p95_ms: get_opt_u32(&mut r),
            })
        }
        t => return Err(WireError::ControlType(t)),
    };
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ts_payload(n: usize, fill: u8) -> Vec<u8> {
        let mut v = vec![fill; n * TS_PACKET];
        for i in 0..n {
            v[i * TS_PACKET] = 0x47;
        }
        v
    }

    #[test]
    fn media_layout_is_28_bytes_and_restamp_changes_only_copy_fields() {
        let h = MediaHeader {
            flags: Flags(Flags::KEYFRAME),
            session: 0xdead_beef,
            link_seq: 7,
            seq: 1 << 40,
            send_time_us: 123_456_789,
            capture_age: 42,
        };
        let d = encode_media(&h, &ts_payload(7, 1));
        assert_eq!(d.len(), MEDIA_HEADER + 7 * TS_PACKET);
        let r = restamp_media(&d, Flags(Flags::RETRANSMIT), 99);
        match decode(&r).unwrap() {
            Datagram::Media { header, payload } => {
                assert_eq!(header.seq, h.seq);
                assert_eq!(header.send_time_us, h.send_time_us);
                assert_eq!(header.session, h.session);
                assert_eq!(header.link_seq, 99);
                assert_eq!(header.flags, Flags(Flags::RETRANSMIT));
                assert_eq!(payload.len(), 7 * TS_PACKET);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn junk_is_refused() {
        assert_eq!(decode(&Bytes::new()), Err(WireError::Empty));
        assert_eq!(
            decode(&Bytes::from_static(&[0x30])),
            Err(WireError::Version(3))
        );
        assert_eq!(
            decode(&Bytes::from_static(&[0x2f])),
            Err(WireError::Kind(15))
        );
        assert!(matches!(
            decode(&Bytes::from_static(&[0x20, 0, 0, 0])),
            Err(WireError::Truncated { .. })
        ));
        let h = MediaHeader {
            flags: Flags(0),
            session: 1,
            link_seq: 1,
            seq: 1,
            send_time_us: 1,
            capture_age: 0,
        };
        let mut bad = ts_payload(2, 0);
        bad[TS_PACKET] = 0x00;
        assert_eq!(decode(&encode_media(&h, &bad)), Err(WireError::Sync));
        assert_eq!(
            decode(&encode_media(&h, &[0x47; 100])),
            Err(WireError::Payload(100))
        );
    }

    #[test]
    fn report_bitmap_acks() {
        let mut r = Report {
            session: 1,
            largest: 5,
            hold_us: 0,
            bitmap: [0; 32],
            received_bytes: 0,
        };
        r.bitmap[0] = 0b101; // 4 and 2
        assert!(r.acks(5));
        assert!(r.acks(4));
        assert!(!r.acks(3));
        assert!(r.acks(2));
        assert!(!r.acks(6));
        assert!(!r.acks(5u32.wrapping_sub(300)));
    }

    proptest! {
        #[test]
        fn media_roundtrip(flags: u8, session: u32, link_seq: u32, seq: u64, t: u64, age: u16, n in 1usize..8, fill: u8) {
            let h = MediaHeader { flags: Flags(flags), session, link_seq, seq, send_time_us: t, capture_age: age };
            let p = ts_payload(n, fill);
            let d = encode_media(&h, &p);
            prop_assert_eq!(decode(&d).unwrap(), Datagram::Media { header: h, payload: Bytes::from(p) });
        }

        #[test]
        fn report_roundtrip(session: u32, largest: u32, hold_us: u32, bm: [u8; 32], rb: u64) {
            let r = Report { session, largest, hold_us, bitmap: bm, received_bytes: rb };
            prop_assert_eq!(decode(&encode_report(&r)).unwrap(), Datagram::Report(r));
        }

        #[test]
        fn summary_without_latency_fields_decodes_with_none(a: u64, latency_ms: u32) {
            let m = SessionSummary { released: a, latency_ms, capture_to_output_p50_ms: Some(1), capture_to_output_p95_ms: Some(2), ..Default::default() };
            let f = encode_control(&Control::Summary(m));
            // The frame an older relay sends: the 36 bytes before the latency fields.
            let old = &f[2..f.len() - 8];
            let want = SessionSummary { capture_to_output_p50_ms: None, capture_to_output_p95_ms: None, ..m };
            prop_assert_eq!(decode_control(old).unwrap(), Control::Summary(want));
        }

        #[test]
        fn nack_roundtrip(session: u32, ranges in proptest::collection::vec((any::<u64>(), any::<u16>()), 0..MAX_NACK_RANGES)) {
            let n = Nack { session, ranges };
            prop_assert_eq!(decode(&encode_nack(&n)).unwrap(), Datagram::Nack(n));
        }

        #[test]
        fn control_roundtrip(session: u32, link_id: u8, latency_ms: u32, name in "[a-z0-9]{0,40}", a: u64, b: u64, c: u64, d: u64, p50 in proptest::option::of(0u32..1_000_000), p95 in proptest::option::of(0u32..1_000_000)) {
            for m in [
                Control::Join { version: VERSION, session, link_id, latency_ms, link_name: name.clone() },
                Control::Accept { session, latency_ms },
                Control::Reject { reason: name.clone() },
                Control::Summary(SessionSummary { released: a, lost: b, late: c, duplicates: d, latency_ms, capture_to_output_p50_ms: p50, capture_to_output_p95_ms: p95 }),
            ] {
                let f = encode_control(&m);
                let len = u16::from_be_bytes([f[0], f[1]]) as usize;
                prop_assert_eq!(len, f.len() - 2);
                prop_assert_eq!(decode_control(&f[2..]).unwrap(), m);
            }
        }

        #[test]
        fn decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode(&Bytes::from(data.clone()));
            let _ = decode_control(&data);
        }
    }
}
