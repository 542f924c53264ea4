//! Local stats HTTP endpoints (axum): a generic [`serve`] used by the edge and
//! the relay, the relay's router (`/api/stats`, `/metrics`) and a small
//! Prometheus text-format writer.

use crate::relay::{OutputState, RelayStats, StatsSource};
use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use tokio::net::TcpListener;

/// Binds the stats listener (separately from [`serve_on`] so a caller can learn
/// the port when binding port 0).
pub async fn bind(listen: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding stats HTTP listener {listen}"))
}

/// Serves `router` on `listen` until `shutdown` completes.
pub async fn serve(
    listen: SocketAddr,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    serve_on(bind(listen).await?, router, shutdown).await
}

/// Serves `router` on an already bound listener until `shutdown` completes
/// (then waits for open requests to finish).
pub async fn serve_on(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let addr = listener.local_addr().ok();
    tracing::info!(listen = ?addr, "stats HTTP listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .with_context(|| format!("stats HTTP server on {addr:?}"))
}

/// Content type of the Prometheus text exposition format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /api/stats` (JSON [`RelayStats`]) and `GET /metrics` (Prometheus).
pub fn relay_router(source: StatsSource) -> Router {
    Router::new()
        .route("/api/stats", get(relay_stats_json))
        .route("/metrics", get(relay_metrics))
        .with_state(source)
}

async fn relay_stats_json(State(src): State<StatsSource>) -> Json<RelayStats> {
    Json(src.snapshot().await)
}

async fn relay_metrics(State(src): State<StatsSource>) -> impl IntoResponse {
    let body = render_relay_metrics(&src.snapshot().await);
    ([(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)], body)
}

/// Builder for the Prometheus text exposition format (version 0.0.4).
#[derive(Debug, Default)]
pub struct Metrics {
    out: String,
}

/// Prometheus metric type.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a metric family: `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Self {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        self
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                for c in v.chars() {
                    match c {
                        '\\' => self.out.push_str("\\\\"),
                        '"' => self.out.push_str("\\\""),
                        '\n' => self.out.push_str("\\n"),
                        c => self.out.push(c),
                    }
                }
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = if value.is_finite() {
            writeln!(self.out, " {value}")
        } else if value.is_nan() {
            writeln!(self.out, " NaN")
        } else if value > 0.0 {
            writeln!(self.out, " +Inf")
        } else {
            writeln!(self.out, " -Inf")
        };
        self
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// `/metrics` of the relay.
pub fn render_relay_metrics(s: &RelayStats) -> String {
    let mut m = Metrics::new();
    m.family(
        "braid_relay_rejected_devices_total",
        Kind::Counter,
        "TLS handshakes refused because the device certificate is not configured.",
    )
    .sample(
        "braid_relay_rejected_devices_total",
        &[],
        s.rejected_devices as f64,
    );
    m.family(
        "braid_relay_rejected_joins_total",
        Kind::Counter,
        "Connections whose Join was refused.",
    )
    .sample(
        "braid_relay_rejected_joins_total",
        &[],
        s.rejected_joins as f64,
    );
    m.family(
        "braid_relay_connections_total",
        Kind::Counter,
        "Authenticated link connections accepted.",
    )
    .sample(
        "braid_relay_connections_total",
        &[],
        s.connections_total as f64,
    );
    m.family(
        "braid_relay_connections",
        Kind::Gauge,
        "Authenticated link connections open.",
    )
    .sample("braid_relay_connections", &[], s.connections_active as f64);
    m.family("braid_relay_sessions", Kind::Gauge, "Live sessions.")
        .sample("braid_relay_sessions", &[], s.sessions.len() as f64);
    m.family(
        "braid_relay_uptime_seconds",
        Kind::Gauge,
        "Seconds since the relay started.",
    )
    .sample("braid_relay_uptime_seconds", &[], s.uptime_s);

    let tags: Vec<String> = s.sessions.iter().map(|x| x.session.to_string()).collect();
    type Get = fn(&crate::relay::SessionStats) -> f64;
    let per_session: &[(&str, Kind, &str, Get)] = &[
        (
            "braid_relay_released_total",
            Kind::Counter,
            "Media packets released to the outputs.",
            |x| x.receiver.released as f64,
        ),
        (
            "braid_relay_released_bytes_total",
            Kind::Counter,
            "TS bytes released to the outputs.",
            |x| x.receiver.released_bytes as f64,
        ),
        (
            "braid_relay_lost_total",
            Kind::Counter,
            "Sequence numbers skipped because they never arrived in time.",
            |x| x.receiver.lost as f64,
        ),
        (
            "braid_relay_late_total",
            Kind::Counter,
            "Media packets that arrived after their release time.",
            |x| x.receiver.late as f64,
        ),
        (
            "braid_relay_duplicates_total",
            Kind::Counter,
            "Copies of packets already held or released.",
            |x| x.receiver.duplicates as f64,
        ),
        (
            "braid_relay_junk_total",
            Kind::Counter,
            "Datagrams refused as malformed.",
            |x| x.receiver.junk as f64,
        ),
        (
            "braid_relay_wrong_session_total",
            Kind::Counter,
            "Datagrams refused for carrying another session tag.",
            |x| x.receiver.wrong_session as f64,
        ),
        (
            "braid_relay_datagrams_total",
            Kind::Counter,
            "Datagrams received.",
            |x| x.receiver.datagrams_in as f64,
        ),
        (
            "braid_relay_received_bytes_total",
            Kind::Counter,
            "Datagram bytes received.",
            |x| x.receiver.bytes_in as f64,
        ),
        (
            "braid_relay_nacked_seqs_total",
            Kind::Counter,
            "Sequence numbers NACKed (including repeats).",
            |x| x.receiver.nacked_seqs as f64,
        ),
        (
            "braid_relay_output_datagrams_total",
            Kind::Counter,
            "Datagrams sent by the session's outputs.",
            |x| x.output_datagrams as f64,
        ),
        (
            "braid_relay_output_errors_total",
            Kind::Counter,
            "Failed output sends (data dropped).",
            |x| x.output_errors as f64,
        ),
        (
            "braid_relay_buffered_packets",
            Kind::Gauge,
            "Media packets waiting for their release time.",
            |x| x.receiver.buffered as f64,
        ),
        (
            "braid_relay_latency_seconds",
            Kind::Gauge,
            "Configured release latency.",
            |x| f64::from(x.latency_ms) / 1e3,
        ),
        (
            "braid_relay_links",
            Kind::Gauge,
            "Links connected to the session.",
            |x| x.links.len() as f64,
        ),
        (
            "braid_relay_session_uptime_seconds",
            Kind::Gauge,
            "Seconds since the session started.",
            |x| x.uptime_s,
        ),
    ];
    for (name, kind, help, get) in per_session {
        m.family(name, *kind, help);
        for (x, tag) in s.sessions.iter().zip(&tags) {
            m.sample(name, &[("device", &x.device), ("session", tag)], get(x));
        }
    }

    type GetOutput = fn(&crate::relay::OutputStatus) -> f64;
    let per_output: &[(&str, Kind, &str, GetOutput)] = &[
        (
            "braid_relay_output_bytes_total",
            Kind::Counter,
            "TS bytes an output handed to its sink.",
            |o| o.stats.bytes as f64,
        ),
        (
            "braid_relay_output_failures_total",
            Kind::Counter,
            "Output errors (UDP: failed sends; others: failures that tore the output down).",
            |o| o.stats.errors as f64,
        ),
        (
            "braid_relay_output_restarts_total",
            Kind::Counter,
            "Times an output was started again after a failure.",
            |o| o.stats.restarts as f64,
        ),
        (
            "braid_relay_output_dropped_bytes_total",
            Kind::Counter,
            "TS bytes dropped because the output's queue was full or it was backing off.",
            |o| o.stats.dropped_bytes as f64,
        ),
        (
            "braid_relay_output_up",
            Kind::Gauge,
            "1 while the output is running, 0 while connecting, backing off or stopped.",
            |o| f64::from(u8::from(o.stats.state == OutputState::Running)),
        ),
        (
            "braid_relay_output_backoff_seconds",
            Kind::Gauge,
            "Delay chosen after the output's last failure.",
            |o| o.stats.backoff_ms as f64 / 1e3,
        ),
    ];
    for (name, kind, help, get) in per_output {
        m.family(name, *kind, help);
        for (x, tag) in s.sessions.iter().zip(&tags) {
            for o in &x.outputs {
                let idx = o.index.to_string();
                m.sample(
                    name,
                    &[
                        ("device", &x.device),
                        ("session", tag),
                        ("output", &idx),
                        ("kind", &o.kind),
                        ("target", &o.target),
                    ],
                    get(o),
                );
            }
        }
    }

    type GetLink = fn(&crate::relay::LinkStats) -> f64;
    let per_link: &[(&str, Kind, &str, GetLink)] = &[
        (
            "braid_relay_link_rtt_seconds",
            Kind::Gauge,
            "Current QUIC RTT estimate of the link.",
            |l| l.rtt_ms / 1e3,
        ),
        (
            "braid_relay_link_min_rtt_seconds",
            Kind::Gauge,
            "Smallest RTT seen on the link.",
            |l| l.min_rtt_ms / 1e3,
        ),
        (
            "braid_relay_link_bytes_total",
            Kind::Counter,
            "Datagram bytes received on the link.",
            |l| l.bytes as f64,
        ),
        (
            "braid_relay_link_datagrams_total",
            Kind::Counter,
            "Datagrams received on the link.",
            |l| l.datagrams as f64,
        ),
    ];
    for (name, kind, help, get) in per_link {
        m.family(name, *kind, help);
        for (x, tag) in s.sessions.iter().zip(&tags) {
            for l in &x.links {
                let id = l.id.to_string();
                m.sample(
                    name,
                    &[
                        ("device", &x.device),
                        ("session", tag),
                        ("link", &id),
                        ("link_name", &l.name),
                    ],
                    get(l),
                );
            }
        }
    }
    m.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::{LinkStats, SessionStats};

    #[test]
    fn prometheus_text_has_help_type_and_escaped_labels() {
        let mut s = RelayStats {
            rejected_devices: 2,
            ..Default::default()
        };
        let mut sess = SessionStats {
            device: "cam1".into(),
            session: 7,
            latency_ms: 500,
            ..Default::default()
        };
        sess.receiver.released = 42;
        sess.links.push(LinkStats {
            id: 1,
            name: "we\"ird\\name\n".into(),
            rtt_ms: 25.0,
            ..Default::default()
        });
        sess.outputs.push(crate::relay::OutputStatus {
            index: 1,
            kind: "srt".into(),
            target: "srt://127.0.0.1:9000?mode=caller".into(),
            stats: crate::relay::OutputStats {
                state: OutputState::Backoff,
                restarts: 3,
                backoff_ms: 2000,
                ..Default::default()
            },
        });
        s.sessions.push(sess);
        let text = render_relay_metrics(&s);
        let labels = "device=\"cam1\",session=\"7\",output=\"1\",kind=\"srt\",target=\"srt://127.0.0.1:9000?mode=caller\"";
        assert!(
            text.contains(&format!(
                "braid_relay_output_restarts_total{{{labels}}} 3\n"
            )),
            "{text}"
        );
        assert!(text.contains(&format!("braid_relay_output_up{{{labels}}} 0\n")));
        assert!(text.contains(&format!(
            "braid_relay_output_backoff_seconds{{{labels}}} 2\n"
        )));
        assert!(text.contains("# HELP braid_relay_released_total "));
        assert!(text.contains("# TYPE braid_relay_released_total counter\n"));
        assert!(text.contains("braid_relay_released_total{device=\"cam1\",session=\"7\"} 42\n"));
        assert!(text.contains("braid_relay_rejected_devices_total 2\n"));
        assert!(text.contains("# TYPE braid_relay_buffered_packets gauge\n"));
        assert!(text.contains(
            "braid_relay_link_rtt_seconds{device=\"cam1\",session=\"7\",link=\"1\",link_name=\"we\\\"ird\\\\name\\n\"} 0.025\n"
        ));
        assert!(text.contains("braid_relay_sessions 1\n"));
        // Every sample line belongs to a family announced before it.
        let mut announced = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                announced.insert(rest.split(' ').next().unwrap().to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(announced.contains(name), "{line}");
            }
        }
    }
}
