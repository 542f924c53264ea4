//! Outputs that may block (SRT, RTMP, files) run on a thread of their own; the
//! session drives a [`WorkerOutput`] through the non-blocking [`Output`] trait.
//!
//! - The session's `write` copies the TS into a bounded queue ([`QUEUE_CHUNKS`]);
//!   when the queue is full the data is dropped and counted (`dropped_bytes`),
//!   never waited for.
//! - The thread owns the connection: it opens it ([`Connector::connect`]), feeds
//!   it from the queue and polls it for asynchronous failures. When it fails the
//!   connection is torn down and opened again after a [`Backoff`] delay; queued
//!   data is discarded (and counted) meanwhile, so a restarted output starts with
//!   live data rather than a stale backlog.
//! - Dropping the output (session end) closes the queue; the thread finishes the
//!   connection (EOS, file closed) and exits on its own.

use super::backoff::Backoff;
use super::output::{Output, OutputState, OutputStats};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Writes (one released datagram's TS each, ~1.3 kB) queued per output:
/// about 3 s of a 4 Mbit/s stream.
pub const QUEUE_CHUNKS: usize = 1024;
/// How often the thread polls an idle connection for failures.
const POLL: Duration = Duration::from_millis(100);

/// One write of the session: TS packets and when the session released them.
pub(super) struct Chunk {
    /// Release time; outputs that measure their own delay read it here.
    pub at: Instant,
    pub data: Vec<u8>,
}

/// Opens the output's connection (pipeline, socket, file). Runs on the worker thread.
pub(super) trait Connector: Send + 'static {
    type Conn: Connection;
    fn connect(&mut self) -> Result<Self::Conn, String>;
}

/// One live connection. Any `Err` tears it down and schedules a restart.
pub(super) trait Connection {
    fn write(&mut self, chunk: Chunk) -> Result<(), String>;
    /// Called at least every [`POLL`]: reports failures that happened meanwhile
    /// (a pipeline error on the bus, a lost connection).
    fn poll(&mut self, now: Instant) -> Result<(), String>;
    /// Whether data is reaching the destination (an SRT caller still
    /// handshaking is not). Checked after every poll; drives `connecting` /
    /// `running` in the stats.
    fn is_up(&self) -> bool {
        true
    }
    /// The session ended: finish cleanly (flush, EOS), best effort.
    fn finish(self);
}

/// The [`Output`] the session holds; the connection lives on the thread.
pub struct WorkerOutput {
    describe: String,
    tx: Option<SyncSender<Chunk>>,
    shared: Arc<Mutex<OutputStats>>,
    /// Counted on the session side (queue full).
    dropped_bytes: u64,
    dropped_writes: u64,
}

impl WorkerOutput {
    /// Starts the thread `name` running `connector`; `describe` must be free of secrets.
    pub(super) fn spawn<C: Connector>(
        name: String,
        describe: String,
        connector: C,
        seed: u64,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(QUEUE_CHUNKS);
        let shared = Arc::new(Mutex::new(OutputStats {
            state: OutputState::Connecting,
            ..Default::default()
        }));
        let worker = Worker {
            describe: describe.clone(),
            rx,
            shared: shared.clone(),
            backoff: Backoff::new(seed),
        };
        let on_panic = shared.clone();
        std::thread::Builder::new().name(name).spawn(move || {
            let describe = worker.describe.clone();
            let run = std::panic::AssertUnwindSafe(|| worker.run(connector));
            if std::panic::catch_unwind(run).is_err() {
                // Stays visible in the stats; the session's other outputs go on.
                tracing::error!(output = %describe, "output thread panicked; output stopped");
                let mut s = lock(&on_panic);
                s.state = OutputState::Stopped;
                s.errors += 1;
                s.last_error = Some("output thread panicked".into());
            }
        })?;
        Ok(Self {
            describe,
            tx: Some(tx),
            shared,
            dropped_bytes: 0,
            dropped_writes: 0,
        })
    }
}

impl Output for WorkerOutput {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn write(&mut self, now: Instant, ts: &[u8]) {
        let Some(tx) = &self.tx else { return };
        let chunk = Chunk {
            at: now,
            data: ts.to_vec(),
        };
        match tx.try_send(chunk) {
            Ok(()) => {}
            Err(TrySendError::Full(c) | TrySendError::Disconnected(c)) => {
                self.dropped_bytes += c.data.len() as u64;
                self.dropped_writes += 1;
            }
        }
    }

    fn flush(&mut self) {
        // Closing the queue tells the thread to finish; it is not waited for.
        self.tx = None;
    }

    fn stats(&self) -> OutputStats {
        let mut s = lock(&self.shared).clone();
        s.dropped_bytes += self.dropped_bytes;
        s.dropped_writes += self.dropped_writes;
        s
    }
}

fn lock(m: &Mutex<OutputStats>) -> std::sync::MutexGuard<'_, OutputStats> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Worker {
    describe: String,
    rx: mpsc::Receiver<Chunk>,
    shared: Arc<Mutex<OutputStats>>,
    backoff: Backoff,
}

/// Why a connection ended.
enum Ended {
    /// The session closed the queue.
    Closed,
    Failed(String),
}

impl Worker {
    fn run<C: Connector>(mut self, mut connector: C) {
        loop {
            self.set_state(OutputState::Connecting);
            let started = Instant::now();
            let ended = match connector.connect() {
                Ok(conn) => self.pump(conn),
                Err(e) => Ended::Failed(e),
            };
            let why = match ended {
                Ended::Closed => break,
                Ended::Failed(why) => why,
            };
            let ran_for = started.elapsed();
            let delay = self.backoff.failed(ran_for);
            tracing::warn!(output = %self.describe, error = %why, ran_s = ran_for.as_secs_f64(), retry_in_s = delay.as_secs_f64(), "output failed; restarting after backoff");
            {
                let mut s = lock(&self.shared);
                s.errors += 1;
                s.last_error = Some(why);
                s.backoff_ms = delay.as_millis() as u64;
            }
            self.set_state(OutputState::Backoff);
            if !self.discard_for(delay) {
                break;
            }
            lock(&self.shared).restarts += 1;
        }
        self.set_state(OutputState::Stopped);
        tracing::debug!(output = %self.describe, "output thread done");
    }

    fn set_state(&self, state: OutputState) {
        lock(&self.shared).state = state;
    }

    /// Feeds `conn` until it fails or the queue closes.
    fn pump<K: Connection>(&mut self, mut conn: K) -> Ended {
        let mut next_poll = Instant::now() + POLL;
        let mut up = false;
        loop {
            if !up && conn.is_up() {
                up = true;
                self.set_state(OutputState::Running);
                tracing::info!(output = %self.describe, "output running");
            }
            let wait = next_poll.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(wait) {
                Ok(chunk) => {
                    let n = chunk.data.len() as u64;
                    if let Err(e) = conn.write(chunk) {
                        return Ended::Failed(e);
                    }
                    let mut s = lock(&self.shared);
                    s.datagrams += 1;
                    s.bytes += n;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    conn.finish();
                    return Ended::Closed;
                }
            }
            let now = Instant::now();
            if now >= next_poll {
                if let Err(e) = conn.poll(now) {
                    return Ended::Failed(e);
                }
                next_poll = now + POLL;
            }
        }
    }

    /// Waits `delay`, discarding (and counting) whatever is queued. False when
    /// the queue closed meanwhile.
    fn discard_for(&mut self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            match self.rx.recv_timeout(left) {
                Ok(c) => {
                    let mut s = lock(&self.shared);
                    s.dropped_bytes += c.data.len() as u64;
                    s.dropped_writes += 1;
                }
                Err(RecvTimeoutError::Timeout) => return true,
                Err(RecvTimeoutError::Disconnected) => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Fails its first `fail_first` connects, then accepts and records bytes.
    struct Flaky {
        fail_first: u64,
        attempts: Arc<AtomicU64>,
        got: Arc<AtomicU64>,
        block: Arc<Mutex<()>>,
    }

    struct FlakyConn {
        got: Arc<AtomicU64>,
        block: Arc<Mutex<()>>,
    }

    impl Connector for Flaky {
        type Conn = FlakyConn;
        fn connect(&mut self) -> Result<FlakyConn, String> {
            let n = self.attempts.fetch_add(1, Ordering::SeqCst);
            if n < self.fail_first {
                return Err(format!("refused #{n}"));
            }
            Ok(FlakyConn {
                got: self.got.clone(),
                block: self.block.clone(),
            })
        }
    }

    impl Connection for FlakyConn {
        fn write(&mut self, chunk: Chunk) -> Result<(), String> {
            let _g = self.block.lock().unwrap();
            self.got
                .fetch_add(chunk.data.len() as u64, Ordering::SeqCst);
            Ok(())
        }
        fn poll(&mut self, _now: Instant) -> Result<(), String> {
            Ok(())
        }
        fn finish(self) {}
    }

    fn wait_until(what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn failing_connect_backs_off_then_runs() {
        let attempts = Arc::new(AtomicU64::new(0));
        let got = Arc::new(AtomicU64::new(0));
        let c = Flaky {
            fail_first: 2,
            attempts: attempts.clone(),
            got: got.clone(),
            block: Arc::new(Mutex::new(())),
        };
        let mut out = WorkerOutput::spawn("t".into(), "test://".into(), c, 3).unwrap();
        wait_until("first failure", || out.stats().errors >= 1);
        let s = out.stats();
        assert_eq!(s.state, OutputState::Backoff, "{s:?}");
        assert_eq!(s.last_error.as_deref(), Some("refused #0"));
        // Written during backoff: discarded and counted, not queued for later.
        out.write(Instant::now(), &[0x47; 188]);
        wait_until("running", || out.stats().state == OutputState::Running);
        let s = out.stats();
        assert_eq!((s.errors, s.restarts), (2, 2), "{s:?}");
        assert_eq!(s.dropped_bytes, 188, "{s:?}");
        assert!(s.backoff_ms >= 800, "second delay ~1 s: {s:?}");
        out.write(Instant::now(), &[0x47; 376]);
        wait_until("data", || got.load(Ordering::SeqCst) == 376);
        assert_eq!(out.stats().bytes, 376);
        out.flush();
        wait_until("stopped", || out.stats().state == OutputState::Stopped);
    }

    #[test]
    fn full_queue_drops_and_counts_without_blocking() {
        let block = Arc::new(Mutex::new(()));
        let got = Arc::new(AtomicU64::new(0));
        let c = Flaky {
            fail_first: 0,
            attempts: Arc::new(AtomicU64::new(0)),
            got: got.clone(),
            block: block.clone(),
        };
        let mut out = WorkerOutput::spawn("t".into(), "test://".into(), c, 3).unwrap();
        wait_until("running", || out.stats().state == OutputState::Running);
        let stall = block.lock().unwrap();
        let t0 = Instant::now();
        let n = QUEUE_CHUNKS as u64 + 500;
        for _ in 0..n {
            out.write(Instant::now(), &[0x47; 188]);
        }
        assert!(t0.elapsed() < Duration::from_millis(500), "write blocked");
        let s = out.stats();
        // The thread holds at most one chunk outside the queue.
        assert!(s.dropped_writes >= n - QUEUE_CHUNKS as u64 - 1, "{s:?}");
        assert_eq!(s.dropped_bytes, s.dropped_writes * 188);
        drop(stall);
        let kept = (n - s.dropped_writes) * 188;
        wait_until("drained", || got.load(Ordering::SeqCst) == kept);
    }
}
