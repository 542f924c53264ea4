//! `POST /api/update`: an update bundle uploaded from the page, streamed into the
//! box's [`Updater`] as it arrives (nothing is buffered whole: a root filesystem may
//! be larger than the memory), with its progress at `GET /api/update`.

use super::Updater;
use axum::body::{Body, Bytes};
use futures_util::StreamExt;
use serde::Serialize;
use std::io::{self, Read};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Where an upload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    #[default]
    Idle,
    /// Receiving and verifying/writing as it arrives.
    Receiving,
    /// All received; the installer is finishing (final hash, activating the slot).
    Finishing,
    Done,
    Failed,
}

/// `GET /api/update`.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Progress {
    pub stage: Stage,
    pub received_bytes: u64,
    /// From Content-Length, when the client sent one.
    pub total_bytes: Option<u64>,
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
}

/// Why an upload was refused (mapped to HTTP by the router).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadError {
    /// No `[ota]` on this box (404).
    NotConfigured,
    /// Another upload is in progress (409).
    Busy,
    /// Over the size limit (413).
    TooLarge { max: u64 },
    /// The bundle was refused by the installer (422), with its reason.
    Refused(String),
    /// The upload broke off (400).
    Broken(String),
}

/// One upload at a time, and its progress for polling.
#[derive(Default)]
pub struct Uploads {
    progress: Mutex<Progress>,
}

/// The blocking side of the bridge: reads what the HTTP body delivers.
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.current = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

impl Uploads {
    pub fn progress(&self) -> Progress {
        self.progress.lock().map(|p| p.clone()).unwrap_or_default()
    }

    fn set(&self, f: impl FnOnce(&mut Progress)) {
        if let Ok(mut p) = self.progress.lock() {
            f(&mut p);
        }
    }

    /// Streams `body` into `updater`. The installer reads on a blocking thread while
    /// this task feeds it; if the installer stops early (a bad signature is known
    /// from the first kilobytes), the rest of the body is not read.
    pub async fn run(
        self: &Arc<Self>,
        updater: Option<Arc<dyn Updater>>,
        body: Body,
        content_length: Option<u64>,
        force: bool,
    ) -> Result<serde_json::Value, UploadError> {
        let updater = updater.ok_or(UploadError::NotConfigured)?;
        let max = updater.max_bytes();
        {
            let mut p = self.progress.lock().map_err(|_| UploadError::Busy)?;
            if matches!(p.stage, Stage::Receiving | Stage::Finishing) {
                return Err(UploadError::Busy);
            }
            if content_length.is_some_and(|n| n > max) {
                return Err(UploadError::TooLarge { max });
            }
            *p = Progress {
                stage: Stage::Receiving,
                total_bytes: content_length,
                ..Default::default()
            };
        }
        let (tx, rx) = mpsc::channel::<Bytes>(16);
        let install = tokio::task::spawn_blocking(move || {
            let mut reader = ChannelReader {
                rx,
                current: Bytes::new(),
            };
            // Returning drops the reader, which tells the feeder to stop.
            updater.install(&mut reader, force)
        });
        let mut stream = body.into_data_stream();
        let mut received = 0u64;
        let mut feed_error = None;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(b) => {
                    received += b.len() as u64;
                    if received > max {
                        feed_error = Some(UploadError::TooLarge { max });
                        break;
                    }
                    self.set(|p| p.received_bytes = received);
                    if tx.send(b).await.is_err() {
                        // The installer has stopped (refused or finished early).
                        break;
                    }
                }
                Err(e) => {
                    feed_error = Some(UploadError::Broken(format!("upload broke off: {e}")));
                    break;
                }
            }
        }
        // End of input for the installer (a cut-short upload reads as truncated).
        drop(tx);
        self.set(|p| p.stage = Stage::Finishing);
        let result = install
            .await
            .map_err(|e| UploadError::Refused(format!("installer task: {e}")))?;
        let outcome = match (result, feed_error) {
            (_, Some(UploadError::TooLarge { max })) => Err(UploadError::TooLarge { max }),
            (Ok(v), None) => Ok(v),
            (Ok(_), Some(e)) => Err(e),
            (Err(reason), _) => Err(UploadError::Refused(reason)),
        };
        self.set(|p| match &outcome {
            Ok(v) => {
                p.stage = Stage::Done;
                p.result = Some(v.clone());
            }
            Err(e) => {
                p.stage = Stage::Failed;
                p.error = Some(match e {
                    UploadError::Refused(r) | UploadError::Broken(r) => r.clone(),
                    UploadError::TooLarge { max } => format!("over the limit of {max} bytes"),
                    UploadError::Busy => "another upload is in progress".into(),
                    UploadError::NotConfigured => "no [ota] on this box".into(),
                });
            }
        });
        outcome
    }
}
