//! Publishing: the payloads of a series (`POST /_broadcast` bodies) and a
//! [`Series`] of broadcasts sent at a fixed interval.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use keayl_bench::client::{HttpBroadcaster, Target};
use keayl_bench::stats::now_ns;

/// The `POST /_broadcast` body of one payload of `series` on `stream`.
pub(crate) fn body(stream: &str, series: usize, seq: u64, pad: &str) -> String {
    format!(
        r#"{{"stream":"{stream}","data":"{{\"k\":{series},\"t\":{t},\"seq\":{seq},\"pad\":\"{pad}\"}}"}}"#,
        t = now_ns()
    )
}

pub(crate) fn pad_for(payload_bytes: usize) -> String {
    // `{"k":1,"t":1700000000000000000,"seq":123,"pad":""}` is about 52 bytes.
    "x".repeat(payload_bytes.saturating_sub(52))
}

/// Broadcasts of `series` on `stream` every `interval` (back to back when
/// zero): at least `min` of them, and until `until` is set when given.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Series<'a> {
    /// The stream published on.
    pub(crate) stream: &'a str,
    /// The series (the payloads' `k`).
    pub(crate) series: usize,
    /// Once the flag is set, move to the other series (a sequence of its
    /// own).
    pub(crate) switch: Option<(&'a AtomicBool, usize)>,
    /// Broadcasts to send at least.
    pub(crate) min: u64,
    /// Go on until this is set.
    pub(crate) until: Option<&'a AtomicBool>,
    /// Between two broadcasts.
    pub(crate) interval: Duration,
    /// The payload's padding ([`pad_for`]).
    pub(crate) pad: &'a str,
}

impl Series<'_> {
    /// Send them on one keep-alive connection. Returns how many went to
    /// `series`, and to the series switched to.
    pub(crate) async fn send(&self, target: &Target) -> Result<[u64; 2]> {
        let Series {
            stream,
            series,
            switch,
            min,
            until,
            interval,
            pad,
        } = *self;
        let series = [series, switch.map_or(series, |(_, other)| other)];
        let switch = switch.map(|(flag, _)| flag);
        let mut http = HttpBroadcaster::connect(target).await?;
        let mut tick = (!interval.is_zero()).then(|| {
            let mut t = tokio::time::interval(interval);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        let mut seq = [0u64; 2];
        while seq[0] + seq[1] < min || until.is_some_and(|u| !u.load(Ordering::Relaxed)) {
            if let Some(t) = &mut tick {
                t.tick().await;
            }
            let i = usize::from(switch.is_some_and(|s| s.load(Ordering::Relaxed)));
            http.post(&body(stream, series[i], seq[i], pad))
                .await
                .with_context(|| format!("broadcast on {stream}"))?;
            seq[i] += 1;
        }
        Ok(seq)
    }
}
