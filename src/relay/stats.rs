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
