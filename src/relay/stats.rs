//! The relay's stats snapshot (served as JSON on `/api/stats` and rendered as
//! Prometheus text on `/metrics` by [`crate::system::http`]).

use super::output::OutputStats;
use crate::core::receiver::ReceiverStats;
use crate::core::sender::LinkId;
use serde::Serialize;

/// Everything the relay knows, at one instant.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RelayStats {
    /// TLS handshakes refused because the device certificate is not in the config.
    pub rejected_devices: u64,
    /// Authenticated connections accepted since start (each link is one).
    pub connections_total: u64,
    /// Authenticated connections currently open.
    pub connections_active: u64,
    /// Connections whose first control frame was refused (bad frame, wrong
    /// version, superseded session).
    pub rejected_joins: u64,
    pub uptime_s: f64,
    /// Live sessions, sorted by device then session.
    pub sessions: Vec<SessionStats>,
}

/// One session: a (device, session tag) pair and its receiver.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SessionStats {
    pub device: String,
    pub session: u32,
    /// Release latency in force (from the relay config).
    pub latency_ms: u32,
    /// Links currently connected, sorted by id.
    pub links: Vec<LinkStats>,
    pub receiver: ReceiverStats,
    /// Each configured output, in configuration order.
    pub outputs: Vec<OutputStatus>,
    /// Sum over the session's outputs.
    pub output_datagrams: u64,
    pub output_bytes: u64,
    pub output_errors: u64,
    pub uptime_s: f64,
    /// Camera capture to relay output over the last [`LatencyWindow::CAPACITY`]
    /// released datagrams (glass-to-glass minus the player's own buffer), ms.
    pub capture_to_output_ms: Option<Percentiles>,
    /// Edge ingest to relay output over the same datagrams (the transport's part), ms.
    pub ingest_to_output_ms: Option<Percentiles>,
}

/// p50 / p95 / max of a [`LatencyWindow`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub max: f64,
}

/// The most recent latency samples of a session (ms), for percentiles on demand.
#[derive(Debug, Clone, Default)]
pub struct LatencyWindow {
    samples: std::collections::VecDeque<f32>,
}

impl LatencyWindow {
    /// Samples kept: about 10 s of a 5 Mbit/s stream.
    pub const CAPACITY: usize = 4096;

    pub fn record(&mut self, d: std::time::Duration) {
        if self.samples.len() == Self::CAPACITY {
            self.samples.pop_front();
        }
        self.samples.push_back((d.as_secs_f64() * 1e3) as f32);
    }

    pub fn percentiles(&self) -> Option<Percentiles> {
        if self.samples.is_empty() {
            return None;
        }
        let mut v: Vec<f32> = self.samples.iter().copied().collect();
        v.sort_by(f32::total_cmp);
        let at = |q: f64| f64::from(v[((v.len() - 1) as f64 * q).round() as usize]);
        Some(Percentiles {
            p50: at(0.5),
            p95: at(0.95),
            max: at(1.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn latency_window_percentiles_and_capacity() {
        let mut w = LatencyWindow::default();
        assert_eq!(w.percentiles(), None);
        for ms in 1..=100u64 {
            w.record(Duration::from_millis(ms));
        }
        let p = w.percentiles().unwrap();
        assert_eq!((p.p50, p.p95, p.max), (51.0, 95.0, 100.0));
        for _ in 0..LatencyWindow::CAPACITY {
            w.record(Duration::from_millis(7));
        }
        assert_eq!(w.percentiles().unwrap().max, 7.0, "old samples age out");
    }
}

/// One connected link of a session.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LinkStats {
    pub id: LinkId,
    /// Name the edge gave the link in its `Join`.
    pub name: String,
    pub remote: String,
    /// quinn's current RTT estimate.
    pub rtt_ms: f64,
    /// Smallest RTT seen on this link (what the receiver uses).
    pub min_rtt_ms: f64,
    /// Datagrams and bytes received on this link (from the receiver).
    pub datagrams: u64,
    pub bytes: u64,
    pub connected_s: f64,
}

/// One output of a session.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OutputStatus {
    /// Position in the device's `[[device.output]]` list, from 0.
    pub index: usize,
    /// `udp`, `srt`, `rtmp` or `file`.
    pub kind: String,
    /// Destination without secrets (`srt://0.0.0.0:9000?mode=listener (encrypted)`,
    /// `rtmp://host/app/***`).
    pub target: String,
    #[serde(flatten)]
    pub stats: OutputStats,
}
