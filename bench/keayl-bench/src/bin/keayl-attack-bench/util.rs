//! Small helpers shared by every attack: locking, rounding and formatting
//! figures, notes on stderr, and the open-file limit.

use std::process::Stdio;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn ms(d: Duration) -> f64 {
    r1(d.as_secs_f64() * 1e3)
}

/// Rounded to one decimal.
pub(crate) fn r1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

pub(crate) fn mib(kib: Option<u64>) -> String {
    kib.map_or("n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

pub(crate) fn growth_mib(before: Option<u64>, after: Option<u64>) -> Option<f64> {
    Some(r1((after? as f64 - before? as f64) / 1024.0))
}

pub(crate) fn opt(v: Option<f64>, unit: &str) -> String {
    v.map_or("n/a".into(), |v| format!("{v}{unit}"))
}

pub(crate) fn short(e: &anyhow::Error) -> String {
    let s = format!("{e:#}");
    match s.char_indices().nth(160) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// ` (first failure: …)`, or nothing.
pub(crate) fn first_of(error: Option<&str>) -> String {
    error.map_or(String::new(), |e| format!(" (first failure: {e})"))
}

pub(crate) fn note(msg: impl AsRef<str>) {
    eprintln!("[attack-bench] {}", msg.as_ref());
}

/// `Max open files` soft and hard limits of this process.
fn nofile_limits() -> Option<(u64, u64)> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut it = line["Max open files".len()..].split_whitespace();
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// Raise the soft open-file limit to the hard one (`prlimit` on this
/// process: no libc here, and unsafe code is forbidden).
pub(crate) fn raise_nofile() {
    let Some((soft, hard)) = nofile_limits() else {
        return;
    };
    if soft < hard {
        let _ = std::process::Command::new("prlimit")
            .arg(format!("--pid={}", std::process::id()))
            .arg(format!("--nofile={hard}:{hard}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    if let Some((soft, hard)) = nofile_limits() {
        note(format!("open-file limit: soft {soft}, hard {hard}"));
    }
}
