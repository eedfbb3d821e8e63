//! A rate limit for panic reports.
//!
//! Keayl catches a panic in a channel (the subscription is rejected or the
//! action fails; the connection lives on), but Rust's panic hook still
//! prints every one, with a backtrace when `RUST_BACKTRACE` is set: a client
//! that triggers a panic in a loop can write megabytes of log a second.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

static WINDOW: Mutex<(u64, u32)> = Mutex::new((0, 0));
static SUPPRESSED: AtomicU64 = AtomicU64::new(0);

/// Let at most `per_second` panic reports a second through to the panic
/// hook installed before (Rust's default one, or the app's); count the rest
/// and log one summary line for each second that dropped some. Call once,
/// at startup (the demo binaries do).
pub fn limit_panic_reports(per_second: u32) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let allow = {
            let mut w = WINDOW.lock().unwrap_or_else(|e| e.into_inner());
            if w.0 != now {
                let over = w.1.saturating_sub(per_second);
                if over > 0 {
                    tracing::warn!(
                        suppressed = over,
                        "panic reports suppressed in the last second"
                    );
                }
                *w = (now, 0);
            }
            w.1 = w.1.saturating_add(1);
            w.1 <= per_second
        };
        if allow {
            previous(info);
        } else {
            SUPPRESSED.fetch_add(1, Ordering::Relaxed);
        }
    }));
}

/// Panic reports dropped by [`limit_panic_reports`] since start.
pub fn suppressed_panic_reports() -> u64 {
    SUPPRESSED.load(Ordering::Relaxed)
}
