//! The daemon's recent log lines in memory, for the web page's log view and the
//! diagnostics bundle when journald does not have them (not under systemd).
//!
//! [`layer`] is a `tracing_subscriber` fmt layer (no colours) whose writer appends
//! each formatted event to [`memory`], a ring of the last [`MEMORY_LINES`] lines.
//! `main` installs it beside the stderr layer, so both show the same lines.

use std::collections::VecDeque;
use std::io;
use std::sync::{Mutex, OnceLock};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// How many lines [`memory`] keeps.
pub const MEMORY_LINES: usize = 2000;
/// Longest line kept (longer ones are cut, on a character boundary).
pub const MAX_LINE_BYTES: usize = 4096;

/// A ring of the last lines written.
#[derive(Debug)]
pub struct LogRing {
    lines: Mutex<VecDeque<String>>,
    cap: usize,
}

impl LogRing {
    /// A ring keeping `cap` lines (at least one).
    pub fn new(cap: usize) -> Self {
        LogRing {
            lines: Mutex::new(VecDeque::new()),
            cap: cap.max(1),
        }
    }

    /// Appends every line of `text` (empty lines are skipped).
    pub fn push_text(&self, text: &str) {
        let mut lines = match self.lines.lock() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        };
        for line in text.lines() {
            let line = line.trim_end();
            if line.is_empty() {
                continue;
            }
            let mut end = line.len().min(MAX_LINE_BYTES);
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            if lines.len() == self.cap {
                lines.pop_front();
            }
            lines.push_back(line[..end].to_string());
        }
    }

    /// The last `n` lines, oldest first.
    pub fn last(&self, n: usize) -> Vec<String> {
        let lines = match self.lines.lock() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        };
        let skip = lines.len().saturating_sub(n);
        lines.iter().skip(skip).cloned().collect()
    }
}

/// The process's ring, filled by [`layer`].
pub fn memory() -> &'static LogRing {
    static RING: OnceLock<LogRing> = OnceLock::new();
    RING.get_or_init(|| LogRing::new(MEMORY_LINES))
}

/// `MakeWriter` into a [`LogRing`]: one writer per event, flushed into the ring
/// when dropped.
#[derive(Debug, Clone, Copy)]
pub struct RingWriter(&'static LogRing);

/// The bytes of one event on their way into the ring.
#[derive(Debug)]
pub struct EventWriter {
    ring: &'static LogRing,
    buf: Vec<u8>,
}

impl io::Write for EventWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.ring.push_text(&String::from_utf8_lossy(&self.buf));
        }
    }
}

impl<'a> MakeWriter<'a> for RingWriter {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> EventWriter {
        EventWriter {
            ring: self.0,
            buf: Vec::new(),
        }
    }
}

/// A fmt layer writing plain lines (timestamp, level, target, message, fields)
/// into [`memory`].
pub fn layer<S>() -> impl Layer<S> + Send + Sync + 'static
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(RingWriter(memory()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_last_lines() {
        let r = LogRing::new(3);
        r.push_text("a\nb\n\n");
        r.push_text("c\r\nd");
        assert_eq!(r.last(10), ["b", "c", "d"]);
        assert_eq!(r.last(1), ["d"]);
        assert!(r.last(0).is_empty());
        let long = "é".repeat(MAX_LINE_BYTES);
        r.push_text(&long);
        let last = r.last(1);
        assert!(last[0].len() <= MAX_LINE_BYTES && last[0].starts_with('é'));
    }

    #[test]
    fn layer_formats_events_into_the_ring() {
        use tracing_subscriber::layer::SubscriberExt;
        let sub = tracing_subscriber::registry().with(layer());
        tracing::subscriber::with_default(sub, || {
            tracing::warn!(link = "modem0", "logs-layer-test link down");
        });
        let lines = memory().last(MEMORY_LINES);
        let line = lines
            .iter()
            .find(|l| l.contains("logs-layer-test"))
            .expect("the event is in the ring");
        assert!(line.contains("WARN"), "{line}");
        assert!(line.contains("link=\"modem0\""), "{line}");
        assert!(!line.contains('\u{1b}'), "no colours: {line}");
    }
}
