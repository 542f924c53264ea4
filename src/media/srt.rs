//! [`SrtSource`]: MPEG-TS from an external encoder that connects to this box over
//! SRT (`srtsrc` in listener mode), passed through without re-encoding.
//!
//! The bitrate controller's wishes are ignored: the external encoder sets its own
//! rate. When the caller goes away the listener is rebuilt (with backoff) so the next
//! connection is accepted. Capture time is ingest time.

use super::capture::{add_chain, make};
use super::{MediaControl, MediaError, TsForwarder};
use crate::edge::MediaSource;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app::{AppSink, AppSinkCallbacks};
use std::net::SocketAddr;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// SRT listener input.
pub struct SrtSource {
    listen: SocketAddr,
    passphrase: Option<String>,
}

/// The `srtsrc` URI for a listener on `listen`.
pub fn listener_uri(listen: SocketAddr) -> String {
    let host = match listen.ip() {
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        std::net::IpAddr::V4(ip) => ip.to_string(),
    };
    format!("srt://{host}:{}?mode=listener", listen.port())
}

impl SrtSource {
    /// Checks that GStreamer has `srtsrc` (the socket is bound when the pipeline starts).
    pub fn new(listen: SocketAddr, passphrase: Option<String>) -> Result<SrtSource, MediaError> {
        super::init()?;
        make("srtsrc", &[])?;
        Ok(SrtSource { listen, passphrase })
    }

    fn build(
        &self,
        out: &mpsc::Sender<(Instant, Vec<u8>)>,
        events: &std_mpsc::Sender<String>,
    ) -> Result<gst::Pipeline, MediaError> {
        let p = gst::Pipeline::with_name("braid-srt");
        let uri = listener_uri(self.listen);
        let src = make("srtsrc", &[("uri", &uri)])?;
        if let Some(pass) = &self.passphrase {
            src.set_property("passphrase", pass);
        }
        let sink = AppSink::builder().sync(false).build();
        add_chain(&p, &[src, sink.clone().upcast()])?;
        let mut forward = TsForwarder::new(out.clone());
        sink.set_callbacks(
            AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
                    if let Some(buf) = sample.buffer() {
                        let map = buf.map_readable().map_err(|_| gst::FlowError::Error)?;
                        let (_, dropped) = forward.forward(map.as_slice(), Instant::now());
                        if dropped > 0 {
                            tracing::warn!("srt input: output full, {dropped} groups dropped");
                        }
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        let tx = events.clone();
        p.bus()
            .ok_or_else(|| MediaError::Gst("pipeline without a bus".into()))?
            .set_sync_handler(move |_, m| {
                use gst::MessageView;
                let why = match m.view() {
                    MessageView::Error(e) => Some(format!("{} ({:?})", e.error(), e.debug())),
                    MessageView::Eos(_) => Some("caller disconnected".to_string()),
                    _ => None,
                };
                if let Some(why) = why {
                    let _ = tx.send(why);
                }
                gst::BusSyncReply::Drop
            });
        p.set_state(gst::State::Playing)?;
        Ok(p)
    }

    /// Runs listeners until `stop` says so; rebuilds after an error or end of stream.
    fn run(self, out: mpsc::Sender<(Instant, Vec<u8>)>, stop: std_mpsc::Receiver<()>) {
        let (tx, rx) = std_mpsc::channel::<String>();
        let mut backoff = Duration::from_millis(200);
        loop {
            let started = Instant::now();
            let pipeline = match self.build(&out, &tx) {
                Ok(p) => {
                    tracing::info!(listen = %self.listen, "srt input listening");
                    Some(p)
                }
                Err(e) => {
                    tracing::error!("srt input: {e}");
                    None
                }
            };
            // Wait for a failure of this pipeline (or stop).
            let failed = loop {
                if stop.try_recv().is_ok() {
                    break false;
                }
                match rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(why) => {
                        tracing::warn!("srt input: {why}; listening again");
                        break true;
                    }
                    Err(std_mpsc::RecvTimeoutError::Timeout) if pipeline.is_some() => {}
                    Err(_) => break true,
                }
            };
            if let Some(p) = pipeline {
                let _ = p.set_state(gst::State::Null);
            }
            while rx.try_recv().is_ok() {}
            if !failed {
                return;
            }
            if started.elapsed() > Duration::from_secs(10) {
                backoff = Duration::from_millis(200);
            }
            if stop.recv_timeout(backoff).is_ok() {
                return;
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

impl MediaSource for SrtSource {
    fn spawn(
        self: Box<Self>,
        out: mpsc::Sender<(Instant, Vec<u8>)>,
        _control: watch::Receiver<MediaControl>,
        mut shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let (stop_tx, stop_rx) = std_mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("braid-srt".into())
            .spawn(move || self.run(out, stop_rx));
        tokio::spawn(async move {
            let _ = shutdown.changed().await;
            let _ = stop_tx.send(());
            if let Ok(t) = thread {
                let _ = tokio::task::spawn_blocking(move || t.join()).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_uris() {
        assert_eq!(
            listener_uri("0.0.0.0:9000".parse().unwrap()),
            "srt://0.0.0.0:9000?mode=listener"
        );
        assert_eq!(
            listener_uri("[::1]:7001".parse().unwrap()),
            "srt://[::1]:7001?mode=listener"
        );
    }
}
