//! Formatting figures for the tables: MiB, optional numbers, changes in
//! per cent, targets met or not, durations, short error messages.

use std::time::Duration;

pub(crate) fn mib(kib: Option<u64>) -> String {
    kib.map_or("n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

pub(crate) fn num(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v}"))
}

pub(crate) fn pct_change(before: Option<u64>, after: Option<u64>) -> Option<f64> {
    let (b, a) = (before? as f64, after? as f64);
    (b > 0.0).then(|| 100.0 * (a - b) / b)
}

pub(crate) fn yes_no(ok: bool) -> &'static str {
    if ok { "MET" } else { "NOT MET" }
}

pub(crate) fn short_error(e: &anyhow::Error) -> String {
    let mut s = format!("{e:#}");
    if s.len() > 140 {
        let mut cut = 140;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

pub(crate) fn secs(d: Option<Duration>) -> String {
    d.map_or("—".into(), |d| format!("{:.1} s", d.as_secs_f64()))
}
