//! Latency recording: a lock-free log-linear histogram and its summary.
//!
//! Values are microseconds. Buckets keep 6 significant bits (relative error
//! under 1.6 %), which is plenty for p50/p95/p99 of network latencies; the
//! exact maximum is tracked separately.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Nanoseconds since the Unix epoch: the shared clock embedded in payloads
/// (comparable across the processes of one machine).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

const LINEAR: u64 = 128;
const SUB: usize = 64;
const BUCKETS: usize = 64 * SUB;

fn index(v: u64) -> usize {
    if v < LINEAR {
        v as usize
    } else {
        let msb = 63 - v.leading_zeros();
        let shift = msb - 6;
        let sub = (v >> shift) as usize;
        (shift as usize) * SUB + sub
    }
}

/// The range `[low, high)` of values that fall into bucket `i`.
fn bucket_range(i: usize) -> (u64, u64) {
    if (i as u64) < LINEAR {
        (i as u64, i as u64 + 1)
    } else {
        let shift = (i / SUB - 1) as u32;
        let sub = (i % SUB + SUB) as u64;
        (sub << shift, (sub + 1) << shift)
    }
}

/// A concurrent histogram of microsecond values.
#[derive(Debug)]
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum: AtomicU64,
    max: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }

    /// Record one value (microseconds).
    pub fn record(&self, us: u64) {
        let i = index(us).min(BUCKETS - 1);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(us, Ordering::Relaxed);
        self.max.fetch_max(us, Ordering::Relaxed);
    }

    /// Forget everything recorded.
    pub fn reset(&self) {
        for b in self.buckets.iter() {
            b.store(0, Ordering::Relaxed);
        }
        self.count.store(0, Ordering::Relaxed);
        self.sum.store(0, Ordering::Relaxed);
        self.max.store(0, Ordering::Relaxed);
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The value below which a fraction `q` (0..=1) of the values lie
    /// (microseconds, bucket midpoint, capped by the exact maximum).
    pub fn quantile(&self, q: f64) -> u64 {
        let count = self.count();
        if count == 0 {
            return 0;
        }
        let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= rank {
                let (lo, hi) = bucket_range(i);
                let mid = lo + (hi - lo - 1) / 2;
                return mid.min(self.max.load(Ordering::Relaxed));
            }
        }
        self.max.load(Ordering::Relaxed)
    }

    /// p50/p95/p99/max/mean in milliseconds.
    pub fn summary(&self) -> Summary {
        let count = self.count();
        let ms = |us: u64| us as f64 / 1000.0;
        Summary {
            count,
            p50_ms: ms(self.quantile(0.50)),
            p95_ms: ms(self.quantile(0.95)),
            p99_ms: ms(self.quantile(0.99)),
            max_ms: ms(self.max.load(Ordering::Relaxed)),
            mean_ms: if count == 0 {
                0.0
            } else {
                ms(self.sum.load(Ordering::Relaxed)) / count as f64
            },
        }
    }
}

/// Latency figures of one measurement, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Summary {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

/// The median of `values` (NaN-free input assumed); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous() {
        let mut expected_low = 0;
        for i in 0..BUCKETS - 1 {
            let (lo, hi) = bucket_range(i);
            assert_eq!(lo, expected_low, "bucket {i}");
            assert_eq!(index(lo), i);
            assert_eq!(index(hi - 1), i);
            expected_low = hi;
            if hi > 1 << 40 {
                break;
            }
        }
    }

    #[test]
    fn quantiles_are_close() {
        let h = Histogram::new();
        for v in 1..=10_000u64 {
            h.record(v);
        }
        let p95 = h.quantile(0.95) as f64;
        assert!((p95 - 9500.0).abs() / 9500.0 < 0.02, "{p95}");
        assert_eq!(h.quantile(1.0), 10_000);
        assert_eq!(h.quantile(0.0001), 1);
        let s = h.summary();
        assert_eq!(s.count, 10_000);
        assert!((s.mean_ms - 5.0005).abs() < 1e-6);
        h.reset();
        assert_eq!(h.count(), 0);
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }
}
