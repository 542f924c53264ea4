//! Relay outputs: where a session's released MPEG-TS goes.
//!
//! The [`Output`] trait is synchronous and non-blocking so the session task can
//! drive every output from its own loop. UDP sends directly from it; SRT, RTMP
//! and file outputs, which may block, are [`WorkerOutput`]s: a thread of their
//! own behind a bounded queue, restarted with backoff when they fail
//! (see [`super::worker`]).

use super::worker::WorkerOutput;
use super::{output_file, output_gst};
use crate::config::OutputConfig;
use crate::core::wire::{TS_PACKET, TS_PER_DATAGRAM};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// Bytes of one output UDP datagram: 7 TS packets.
pub const UDP_GROUP: usize = TS_PACKET * TS_PER_DATAGRAM;
/// A partial group is sent once nothing more has been written for this long.
pub const PARTIAL_FLUSH: Duration = Duration::from_millis(10);
/// At most one error log line per output this often.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// Where an output is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputState {
    /// Opening its pipeline, connection or file (an SRT caller may still be
    /// handshaking for up to 3 s after this turns to `running`).
    Connecting,
    /// Taking data.
    #[default]
    Running,
    /// Failed; waiting `backoff_ms` before the next attempt (data is dropped).
    Backoff,
    /// The session ended.
    Stopped,
}

/// Counters of one output.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct OutputStats {
    pub state: OutputState,
    /// Datagrams (UDP) or writes (others) handed over successfully: to the
    /// socket (UDP), the file, or the pipeline's appsrc (SRT, RTMP; appsrc
    /// keeps only the newest 500 ms while its sink is not connected yet).
    pub datagrams: u64,
    pub bytes: u64,
    /// UDP: failed sends (the data is dropped, the output carries on).
    /// Others: failures that tore the output down.
    pub errors: u64,
    /// Times the output was started again after a failure.
    pub restarts: u64,
    /// Bytes (and writes) dropped because the output's queue was full or the
    /// output was in backoff.
    pub dropped_bytes: u64,
    pub dropped_writes: u64,
    /// Delay chosen after the last failure.
    pub backoff_ms: u64,
    /// The last failure, free of secrets.
    pub last_error: Option<String>,
}

/// A sink for released media (whole 188-byte TS packets, in order).
///
/// Implementations never block and never fail the session: errors are counted
/// in [`Output::stats`] and logged at a bounded rate.
pub trait Output: Send {
    /// Human-readable description for logs and stats (`udp://1.2.3.4:5000`);
    /// never contains a passphrase or a stream key.
    fn describe(&self) -> String;
    /// Append whole TS packets released at `now`.
    ///
    /// `now` is the session's release time of this data: the place to measure
    /// "output time minus capture time" (the session calls every output with
    /// the same `now` right after the receiver released the packet).
    fn write(&mut self, now: Instant, ts: &[u8]);
    /// When [`Output::handle_timeout`] has work (a partial group to flush).
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    fn handle_timeout(&mut self, _now: Instant) {}
    /// Send anything buffered now (session end).
    fn flush(&mut self);
    fn stats(&self) -> OutputStats;
}

/// Builds the output for one `[[device.output]]` of `device`. `seed` seeds the
/// restart jitter.
pub fn open(cfg: &OutputConfig, device: &str, seed: u64) -> io::Result<Box<dyn Output>> {
    let thread = |kind: &str| format!("out-{kind}-{device}");
    match cfg {
        OutputConfig::Udp { address } => Ok(Box::new(UdpOutput::new(*address)?)),
        OutputConfig::Srt(c) => Ok(Box::new(WorkerOutput::spawn(
            thread("srt"),
            cfg.describe(),
            output_gst::SrtConnector::new(c.clone()).map_err(io::Error::other)?,
            seed,
        )?)),
        OutputConfig::Rtmp(c) => Ok(Box::new(WorkerOutput::spawn(
            thread("rtmp"),
            cfg.describe(),
            output_gst::RtmpConnector::new(c.clone()).map_err(io::Error::other)?,
            seed,
        )?)),
        OutputConfig::File(c) => Ok(Box::new(WorkerOutput::spawn(
            thread("file"),
            cfg.describe(),
            output_file::FileConnector::new(c.clone(), device),
            seed,
        )?)),
    }
}

/// MPEG-TS over UDP in datagrams of exactly 7 x 188 bytes.
#[derive(Debug)]
pub struct UdpOutput {
    sock: UdpSocket,
    dest: SocketAddr,
    /// Pending partial group (always fewer than [`UDP_GROUP`] bytes).
    buf: Vec<u8>,
    last_write: Instant,
    stats: OutputStats,
    last_error_log: Option<Instant>,
    errors_since_log: u64,
}

impl UdpOutput {
    /// A non-blocking socket on an ephemeral port of `dest`'s address family.
    pub fn new(dest: SocketAddr) -> io::Result<Self> {
        let bind: SocketAddr = if dest.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let sock = UdpSocket::bind(bind)?;
        sock.set_nonblocking(true)?;
        Ok(Self {
            sock,
            dest,
            buf: Vec::with_capacity(UDP_GROUP),
            last_write: Instant::now(),
            stats: OutputStats::default(),
            last_error_log: None,
            errors_since_log: 0,
        })
    }

    fn send(&mut self, data: &[u8]) {
        match self.sock.send_to(data, self.dest) {
            Ok(_) => {
                self.stats.datagrams += 1;
                self.stats.bytes += data.len() as u64;
            }
            Err(e) => {
                self.stats.errors += 1;
                self.errors_since_log += 1;
                let now = Instant::now();
                let due = match self.last_error_log {
                    None => true,
                    Some(t) => now >= t + ERROR_LOG_INTERVAL,
                };
                if due {
                    tracing::warn!(dest = %self.dest, error = %e, errors = self.errors_since_log, "UDP output send failed; dropping");
                    self.last_error_log = Some(now);
                    self.errors_since_log = 0;
                }
            }
        }
    }

    fn send_buffered(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let buf = std::mem::take(&mut self.buf);
        self.send(&buf);
        self.buf = buf;
        self.buf.clear();
    }
}

impl Output for UdpOutput {
    fn describe(&self) -> String {
        format!("udp://{}", self.dest)
    }

    fn write(&mut self, now: Instant, mut ts: &[u8]) {
        if !self.buf.is_empty() {
            let take = (UDP_GROUP - self.buf.len()).min(ts.len());
            self.buf.extend_from_slice(&ts[..take]);
            ts = &ts[take..];
            if self.buf.len() == UDP_GROUP {
                self.send_buffered();
            }
        }
        while ts.len() >= UDP_GROUP {
            self.send(&ts[..UDP_GROUP]);
            ts = &ts[UDP_GROUP..];
        }
        self.buf.extend_from_slice(ts);
        self.last_write = now;
    }

    fn poll_timeout(&self) -> Option<Instant> {
        (!self.buf.is_empty()).then_some(self.last_write + PARTIAL_FLUSH)
    }

    fn handle_timeout(&mut self, now: Instant) {
        if !self.buf.is_empty() && now >= self.last_write + PARTIAL_FLUSH {
            self.send_buffered();
        }
    }

    fn flush(&mut self) {
        self.send_buffered();
    }

    fn stats(&self) -> OutputStats {
        self.stats.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packets(n: usize, tag: u8) -> Vec<u8> {
        let mut v = vec![tag; n * TS_PACKET];
        for i in 0..n {
            v[i * TS_PACKET] = 0x47;
        }
        v
    }

    #[test]
    fn rechunks_into_groups_of_seven_and_flushes_partial_after_10ms() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut out = UdpOutput::new(rx.local_addr().unwrap()).unwrap();
        let t0 = Instant::now();
        // 3 + 5 + 9 = 17 packets = 2 groups + 3 pending.
        out.write(t0, &packets(3, 1));
        assert!(out.poll_timeout().is_some());
        out.write(t0, &packets(5, 2));
        out.write(t0, &packets(9, 3));
        assert_eq!(out.stats().datagrams, 2);
        out.handle_timeout(t0 + Duration::from_millis(9));
        assert_eq!(out.stats().datagrams, 2);
        assert_eq!(out.poll_timeout(), Some(t0 + PARTIAL_FLUSH));
        out.handle_timeout(t0 + PARTIAL_FLUSH);
        assert_eq!(out.stats().datagrams, 3);
        assert!(out.poll_timeout().is_none());
        let mut buf = [0u8; 2048];
        let sizes: Vec<usize> = (0..3).map(|_| rx.recv(&mut buf).unwrap()).collect();
        assert_eq!(sizes, vec![UDP_GROUP, UDP_GROUP, 3 * TS_PACKET]);
        assert_eq!(out.stats().errors, 0);
    }
}
