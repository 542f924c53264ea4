//! Mahimahi delivery traces.
//!
//! A trace file has one line per delivery opportunity: a millisecond offset from the
//! start of the trace at which one 1500-byte packet may cross the link. Repeated
//! numbers mean several opportunities in that millisecond. As in mahimahi the trace
//! loops, with period = the last timestamp: opportunity `i` of loop `k` happens at
//! `opportunities_ms[i] + k * period_ms`.
//!
//! Opportunities are addressed by a *global index* `g` (loop `g / n`, entry `g % n`);
//! opportunity times are non-decreasing in `g`, which gives a cheap cursor API:
//! [`Trace::index_at_or_after`] and [`Trace::opportunity_time_ms`].

use std::path::{Path, PathBuf};

/// Bytes that may cross the link per delivery opportunity (mahimahi's `PACKET_SIZE`).
pub const OPPORTUNITY_BYTES: usize = 1500;

/// Errors from loading or parsing a trace.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("cannot read trace {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("trace {name}, line {line}: not a millisecond offset: {text:?}")]
    Parse {
        name: String,
        line: usize,
        text: String,
    },
    #[error("trace {name}, line {line}: timestamps must be non-decreasing")]
    NotSorted { name: String, line: usize },
    #[error("trace {name} has no delivery opportunities")]
    Empty { name: String },
    #[error("trace {name} must last a nonzero time (last timestamp is 0)")]
    ZeroPeriod { name: String },
}

/// A looping delivery-opportunity trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    name: String,
    opportunities_ms: Vec<u32>,
    period_ms: u64,
}

impl Trace {
    /// Load a mahimahi trace file; the name is the file name.
    pub fn load(path: impl AsRef<Path>) -> Result<Trace, TraceError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| TraceError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        Trace::parse(&name, &text)
    }

    /// Parse trace text. Blank lines and surrounding whitespace are ignored; anything
    /// else that is not a non-negative integer is an error naming the (1-based) line.
    pub fn parse(name: &str, text: &str) -> Result<Trace, TraceError> {
        let mut opportunities_ms = Vec::new();
        let mut last = 0u32;
        for (i, line) in text.lines().enumerate() {
            let t = line.trim();
            if t.is_empty() {
                continue;
            }
            let v: u32 = t.parse().map_err(|_| TraceError::Parse {
                name: name.to_string(),
                line: i + 1,
                text: t.to_string(),
            })?;
            if v < last {
                return Err(TraceError::NotSorted {
                    name: name.to_string(),
                    line: i + 1,
                });
            }
            last = v;
            opportunities_ms.push(v);
        }
        Trace::from_opportunities(name, opportunities_ms)
    }

    /// Build a trace from sorted opportunity times (period = last timestamp).
    pub fn from_opportunities(name: &str, opportunities_ms: Vec<u32>) -> Result<Trace, TraceError> {
        let Some(&last) = opportunities_ms.last() else {
            return Err(TraceError::Empty {
                name: name.to_string(),
            });
        };
        if let Some(i) = opportunities_ms.windows(2).position(|w| w[1] < w[0]) {
            return Err(TraceError::NotSorted {
                name: name.to_string(),
                line: i + 2,
            });
        }
        if last == 0 {
            return Err(TraceError::ZeroPeriod {
                name: name.to_string(),
            });
        }
        Ok(Trace {
            name: name.to_string(),
            opportunities_ms,
            period_ms: u64::from(last),
        })
    }

    /// `before` bit/s until `at_ms`, then `after` bit/s, for `total_ms` (then it loops).
    pub fn step(before: f64, after: f64, at_ms: u32, total_ms: u32) -> Trace {
        let mut v = Vec::new();
        let mut t = 0.0f64;
        while t < f64::from(total_ms) {
            v.push(t as u32);
            let rate = if t < f64::from(at_ms) { before } else { after };
            t += OPPORTUNITY_BYTES as f64 * 8.0 * 1000.0 / rate;
        }
        v.push(total_ms);
        let name = format!("step-{}m-{}m", before / 1e6, after / 1e6);
        Trace::from_opportunities(&name, v).expect("sorted, non-empty, positive period")
    }

    /// A constant-rate trace: 1500-byte opportunities spaced evenly at `bits_per_sec`.
    ///
    /// The period is the smallest one (up to 100 s) in which the rate is a whole number
    /// of opportunities, so the long-run rate is exact for any rate that is a rational
    /// number of opportunities per millisecond with a small denominator (e.g. 4 Mbit/s
    /// = 1 opportunity every 3 ms). Otherwise the closest such approximation is used.
    ///
    /// Panics if `bits_per_sec` is not finite and positive.
    pub fn constant(bits_per_sec: f64) -> Trace {
        assert!(
            bits_per_sec.is_finite() && bits_per_sec > 0.0,
            "constant trace rate must be positive, got {bits_per_sec}"
        );
        let per_ms = bits_per_sec / (OPPORTUNITY_BYTES as f64 * 8.0 * 1000.0);
        let mut best = (f64::INFINITY, 1u64, 1u64);
        for period in 1..=100_000u64 {
            let n = (per_ms * period as f64).round();
            if n < 1.0 {
                continue;
            }
            let err = ((n / period as f64) - per_ms).abs() / per_ms;
            if err < best.0 {
                best = (err, period, n as u64);
            }
            if err < 1e-9 {
                break;
            }
        }
        let (_, period, n) = best;
        // Opportunity i (0-based) at ceil((i + 1) * period / n): evenly spread over
        // (0, period], last one exactly at `period` so that the loop is seamless.
        let opportunities_ms = (0..n)
            .map(|i| ((i + 1) * period).div_ceil(n) as u32)
            .collect();
        Trace {
            name: format!("constant-{}bps", bits_per_sec),
            opportunities_ms,
            period_ms: period,
        }
    }

    /// The trace repeated (as it loops) until it lasts at least `min_duration_ms`.
    /// The result has the same long-run schedule as `self`.
    pub fn repeated(&self, min_duration_ms: u64) -> Trace {
        let loops = min_duration_ms.div_ceil(self.period_ms).max(1);
        let mut opportunities_ms = Vec::with_capacity(self.opportunities_ms.len() * loops as usize);
        for k in 0..loops {
            let base = k * self.period_ms;
            opportunities_ms.extend(
                self.opportunities_ms
                    .iter()
                    .map(|&t| u32::try_from(base + u64::from(t)).expect("trace too long")),
            );
        }
        Trace {
            name: self.name.clone(),
            opportunities_ms,
            period_ms: loops * self.period_ms,
        }
    }

    /// The trace in mahimahi's file format (one period).
    pub fn to_text(&self) -> String {
        let mut s = String::with_capacity(self.opportunities_ms.len() * 7);
        for t in &self.opportunities_ms {
            s.push_str(&t.to_string());
            s.push('\n');
        }
        s
    }

    /// Write a mahimahi trace file for a constant `bits_per_sec` link lasting at least
    /// `duration` (whole periods of [`Trace::constant`], so looping stays exact).
    pub fn write_constant(
        path: impl AsRef<Path>,
        bits_per_sec: f64,
        duration: std::time::Duration,
    ) -> std::io::Result<Trace> {
        let t = Trace::constant(bits_per_sec).repeated(duration.as_millis() as u64);
        std::fs::write(path, t.to_text())?;
        Ok(t)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Opportunity times of one period, sorted.
    pub fn opportunities_ms(&self) -> &[u32] {
        &self.opportunities_ms
    }

    /// Loop period in ms (the last timestamp).
    pub fn period_ms(&self) -> u64 {
        self.period_ms
    }

    /// Opportunities per period.
    pub fn len(&self) -> usize {
        self.opportunities_ms.len()
    }

    /// Always false (a trace has at least one opportunity); for clippy.
    pub fn is_empty(&self) -> bool {
        self.opportunities_ms.is_empty()
    }

    /// Long-run mean capacity in bit/s.
    pub fn mean_bps(&self) -> f64 {
        self.len() as f64 * OPPORTUNITY_BYTES as f64 * 8.0 * 1000.0 / self.period_ms as f64
    }

    /// Global index of the first opportunity at time `>= t_ms` (= number of
    /// opportunities strictly before `t_ms`), looping.
    pub fn index_at_or_after(&self, t_ms: u64) -> u64 {
        let n = self.opportunities_ms.len() as u64;
        // Loop k covers times in [k*P + first, (k+1)*P]; the one at (k+1)*P belongs to
        // loop k, so a multiple of P is treated as the end of the previous loop.
        let (q, r) = if t_ms > 0 && t_ms % self.period_ms == 0 {
            (t_ms / self.period_ms - 1, self.period_ms)
        } else {
            (t_ms / self.period_ms, t_ms % self.period_ms)
        };
        let within = self.opportunities_ms.partition_point(|&o| u64::from(o) < r) as u64;
        q * n + within
    }

    /// Time in ms of the opportunity with global index `index`.
    pub fn opportunity_time_ms(&self, index: u64) -> u64 {
        let n = self.opportunities_ms.len() as u64;
        (index / n) * self.period_ms + u64::from(self.opportunities_ms[(index % n) as usize])
    }

    /// Time of the first opportunity at or after `t_ms`.
    pub fn next_opportunity_ms(&self, t_ms: u64) -> u64 {
        self.opportunity_time_ms(self.index_at_or_after(t_ms))
    }

    /// Number of opportunities with time in `[start_ms, end_ms)`, looping.
    pub fn opportunities_between(&self, start_ms: u64, end_ms: u64) -> u64 {
        if end_ms <= start_ms {
            return 0;
        }
        self.index_at_or_after(end_ms) - self.index_at_or_after(start_ms)
    }

    /// Capacity in bit/s over `[start_ms, start_ms + dur_ms)`.
    pub fn capacity_bps(&self, start_ms: u64, dur_ms: u64) -> f64 {
        if dur_ms == 0 {
            return 0.0;
        }
        self.opportunities_between(start_ms, start_ms + dur_ms) as f64
            * OPPORTUNITY_BYTES as f64
            * 8.0
            * 1000.0
            / dur_ms as f64
    }

    /// Iterator over opportunity times (ms) from `t_ms` on, forever (looping).
    pub fn opportunities_from(&self, t_ms: u64) -> Opportunities<'_> {
        Opportunities {
            trace: self,
            index: self.index_at_or_after(t_ms),
        }
    }
}

/// Endless iterator over opportunity times in ms, see [`Trace::opportunities_from`].
#[derive(Debug, Clone)]
pub struct Opportunities<'a> {
    trace: &'a Trace,
    index: u64,
}

impl Opportunities<'_> {
    /// Global index of the next opportunity the iterator will yield.
    pub fn index(&self) -> u64 {
        self.index
    }
}

impl Iterator for Opportunities<'_> {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        let t = self.trace.opportunity_time_ms(self.index);
        self.index += 1;
        Some(t)
    }
}

/// Directory of the mahimahi traces for tests and tools: `$BRAID_TRACES` if set,
/// else `CARGO_MANIFEST_DIR/../shared/traces/mahimahi`.
pub fn traces_dir() -> PathBuf {
    match std::env::var_os("BRAID_TRACES") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/traces/mahimahi"
        )),
    }
}

/// Load a named trace from [`traces_dir`], panicking with a clear message if missing.
/// Meant for tests.
pub fn load_test_trace(name: &str) -> Trace {
    let path = traces_dir().join(name);
    match Trace::load(&path) {
        Ok(t) => t,
        Err(e) => panic!(
            "mahimahi trace {name} not available ({e}); set BRAID_TRACES to the directory \
             holding the traces (e.g. BRAID_TRACES=/work/shared/traces/mahimahi) or clone \
             the repo with ../shared beside it"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute_count(t: &Trace, start: u64, end: u64) -> u64 {
        let mut c = 0;
        let mut k = 0;
        loop {
            let base = k * t.period_ms;
            if base > end {
                break;
            }
            for &o in &t.opportunities_ms {
                let x = base + u64::from(o);
                if x >= start && x < end {
                    c += 1;
                }
            }
            k += 1;
        }
        c
    }

    #[test]
    fn parse_and_errors() {
        let t = Trace::parse("x", "0\n3\n3\n\n 7 \n10\n").unwrap();
        assert_eq!(t.opportunities_ms(), &[0, 3, 3, 7, 10]);
        assert_eq!(t.period_ms(), 10);
        match Trace::parse("x", "1\n2\nabc\n") {
            Err(TraceError::Parse { line, .. }) => assert_eq!(line, 3),
            other => panic!("expected parse error, got {other:?}"),
        }
        match Trace::parse("x", "1\n5\n4\n") {
            Err(TraceError::NotSorted { line, .. }) => assert_eq!(line, 3),
            other => panic!("expected not-sorted error, got {other:?}"),
        }
        assert!(matches!(
            Trace::parse("x", "\n"),
            Err(TraceError::Empty { .. })
        ));
        assert!(matches!(
            Trace::parse("x", "0\n0\n"),
            Err(TraceError::ZeroPeriod { .. })
        ));
        assert!(matches!(
            Trace::load("/nonexistent/trace"),
            Err(TraceError::Io { .. })
        ));
    }

    #[test]
    fn looping_counts_match_brute_force() {
        for text in ["0\n3\n3\n7\n10\n", "5\n5\n5\n", "1\n2\n3\n4\n", "10\n"] {
            let t = Trace::parse("x", text).unwrap();
            for start in 0..40 {
                for end in start..45 {
                    assert_eq!(
                        t.opportunities_between(start, end),
                        brute_count(&t, start, end),
                        "{text:?} [{start},{end})"
                    );
                }
                // Cursor: next opportunity time >= start, and the iterator is sorted.
                let next = t.next_opportunity_ms(start);
                assert!(next >= start);
                assert_eq!(brute_count(&t, start, next), 0);
                let v: Vec<u64> = t.opportunities_from(start).take(20).collect();
                assert!(v.windows(2).all(|w| w[0] <= w[1]));
                assert_eq!(v[0], next);
            }
        }
    }

    #[test]
    fn constant_is_exact() {
        for bps in [4e6, 1e6, 12e6, 5.5e6, 250e3, 100e6, 1234567.0] {
            let t = Trace::constant(bps);
            let measured = t.capacity_bps(1, t.period_ms() * 1000);
            assert!(
                (measured - bps).abs() / bps < 1e-6,
                "{bps}: {measured} (period {})",
                t.period_ms()
            );
            assert!((t.mean_bps() - bps).abs() / bps < 1e-6);
            // Evenly spread: gaps differ by at most 1 ms.
            let v: Vec<u64> = t.opportunities_from(0).take(1000).collect();
            let gaps: Vec<u64> = v.windows(2).map(|w| w[1] - w[0]).collect();
            let (mn, mx) = (gaps.iter().min().unwrap(), gaps.iter().max().unwrap());
            assert!(mx - mn <= 1, "{bps}: gaps {mn}..{mx}");
        }
        let t = Trace::constant(4e6);
        assert_eq!(t.capacity_bps(1, 3000), 4e6);
        assert_eq!(t.capacity_bps(17, 120_000), 4e6);
    }

    #[test]
    fn text_roundtrip_and_write_constant() {
        let t = Trace::constant(4e6).repeated(1000);
        assert!(t.period_ms() >= 1000);
        let back = Trace::parse(t.name(), &t.to_text()).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.capacity_bps(1, 120_000), 4e6);

        let dir = std::env::temp_dir().join(format!("braid-trace-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("const-4M.up");
        Trace::write_constant(&path, 4e6, std::time::Duration::from_secs(2)).unwrap();
        let loaded = Trace::load(&path).unwrap();
        assert_eq!(loaded.name(), "const-4M.up");
        assert!(loaded.period_ms() >= 2000);
        assert_eq!(loaded.capacity_bps(1, 600_000), 4e6);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn real_trace_means() {
        let t = load_test_trace("Verizon-LTE-short.up");
        assert_eq!(t.period_ms(), 140_000);
        let mbps = t.capacity_bps(0, 140_000) / 1e6;
        assert!((mbps - 5.95).abs() < 0.01, "{mbps}");
        // Looping: every lap has the same capacity ([1, P] holds one whole period).
        assert_eq!(t.opportunities_between(1, 140_001), t.len() as u64);
        assert_eq!(t.opportunities_between(140_001, 280_001), t.len() as u64);
        let at_end = t
            .opportunities_ms()
            .iter()
            .filter(|&&o| o == 140_000)
            .count() as u64;
        assert_eq!(
            t.opportunities_between(0, 280_000),
            2 * t.len() as u64 - at_end
        );
        let t = load_test_trace("TMobile-LTE-short.up");
        let mbps = t.mean_bps() / 1e6;
        assert!((mbps - 13.32).abs() < 0.01, "{mbps}");
    }
}
