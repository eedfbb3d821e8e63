//! [`LogLimit`]: a rate limit for log lines clients can trigger at will.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Allows a fixed number of log lines per second, counting the rest; logs
/// one summary line for each second that suppressed some.
#[derive(Debug)]
pub struct LogLimit {
    per_second: u32,
    window: Mutex<(u64, u32)>,
}

impl LogLimit {
    /// At most `per_second` lines a second.
    pub fn new(per_second: u32) -> Self {
        LogLimit {
            per_second,
            window: Mutex::new((0, 0)),
        }
    }

    /// Whether one more line may be logged now (counted in `suppressed`
    /// when not).
    pub fn allow(&self, suppressed: &AtomicU64) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if w.0 != now {
            let over = w.1.saturating_sub(self.per_second);
            if over > 0 {
                tracing::warn!(
                    suppressed = over,
                    "log lines suppressed by the rate limit in the last second"
                );
            }
            *w = (now, 0);
        }
        w.1 = w.1.saturating_add(1);
        if w.1 <= self.per_second {
            true
        } else {
            suppressed.fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}
