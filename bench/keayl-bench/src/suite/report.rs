//! The suite's report: medians over runs, Keayl/baseline ratios, the
//! judged targets, the table and the final JSON line.

use serde::Serialize;
use serde_json::json;

use super::{Metrics, SuiteConfig};
use crate::stats::median;

pub(super) fn medians(runs: &[Metrics]) -> Metrics {
    let mut keys: Vec<&String> = runs.iter().flat_map(|m| m.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|k| {
            let vals: Vec<f64> = runs.iter().filter_map(|m| m.get(k).copied()).collect();
            median(&vals).map(|v| (k.clone(), v))
        })
        .collect()
}

/// Keys whose Keayl/baseline ratio is reported.
pub(super) fn ratio_keys(m: &Metrics) -> Vec<String> {
    m.keys()
        .filter(|k| !k.contains("noise") && !k.contains("machine"))
        .filter(|k| {
            k.ends_with("_ms")
                || k.ends_with("_secs")
                || k.ends_with("_kib")
                || k.ends_with("_cpu_pct")
                || k.ends_with("_per_s")
                || k.ends_with("_per_delivery")
        })
        .cloned()
        .collect()
}

/// One judged target.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// What is judged.
    pub name: String,
    /// The measured value (median over runs).
    pub value: Option<f64>,
    /// `<=` or `>=`.
    pub op: &'static str,
    /// The limit.
    pub limit: f64,
    /// Whether it is met (`None` when not measured).
    pub met: Option<bool>,
}

fn verdict(name: impl Into<String>, value: Option<f64>, op: &'static str, limit: f64) -> Verdict {
    let met = value.map(|v| if op == "<=" { v <= limit } else { v >= limit });
    Verdict {
        name: name.into(),
        value,
        op,
        limit,
        met,
    }
}

pub(super) fn targets(keayl: &Metrics, ratio: &Metrics, keayl_runs: &[Metrics]) -> Vec<Verdict> {
    let mut v = Vec::new();
    for (n, abs) in [(1_000, 12.0), (5_000, 55.0), (10_000, 115.0)] {
        v.push(verdict(
            format!("broadcast p95 ratio to baseline @{n}"),
            ratio.get(&format!("bcast_{n}_p95_ms")).copied(),
            "<=",
            1.25,
        ));
        v.push(verdict(
            format!("broadcast p95 @{n} (ms)"),
            keayl.get(&format!("bcast_{n}_p95_ms")).copied(),
            "<=",
            abs,
        ));
    }
    let lost: f64 = keayl_runs
        .iter()
        .map(|m| {
            m.get("bcast_lost_total").copied().unwrap_or(0.0)
                + m.get("sse_lost").copied().unwrap_or(0.0)
        })
        .sum();
    v.push(verdict("lost deliveries (all runs)", Some(lost), "<=", 0.0));
    v.push(verdict(
        "largest N with p95 <= 500 ms",
        keayl.get("bcast_largest_n_within_limit").copied(),
        ">=",
        18_000.0,
    ));
    v.push(verdict(
        "idle memory per connection @10k (KiB)",
        keayl.get("rss_per_conn_kib").copied(),
        "<=",
        8.0,
    ));
    v.push(verdict(
        "connect+subscribe 10k (s)",
        keayl.get("connect_secs").copied(),
        "<=",
        1.5,
    ));
    v.push(verdict(
        "connect failures @10k",
        keayl.get("connect_failed").copied(),
        "<=",
        0.0,
    ));
    v.push(verdict(
        "SSE p95 / WS p95 @10k",
        keayl.get("sse_to_ws_p95_ratio").copied(),
        "<=",
        1.25,
    ));
    v.push(verdict(
        "idle CPU @10k (% of one core)",
        keayl.get("idle_cpu_pct").copied(),
        "<=",
        5.0,
    ));
    v
}

fn fmt(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(x) if x.abs() >= 1000.0 => format!("{x:.0}"),
        Some(x) if x.abs() >= 100.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.2}"),
    }
}

/// The suite's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct SuiteReport {
    /// The configuration.
    pub config: SuiteConfig,
    /// Keayl's medians.
    pub keayl: Metrics,
    /// The baseline's medians.
    pub baseline: Metrics,
    /// Medians of the per-run Keayl/baseline ratios.
    pub ratio: Metrics,
    /// Judged targets (empty for the quick preset).
    pub targets: Vec<Verdict>,
    /// Per-run figures.
    pub runs: Vec<(Metrics, Metrics)>,
    /// Things not measured, and why.
    pub notes: Vec<String>,
}

impl SuiteReport {
    /// The human-readable table.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\nkeayl-bench suite: {} run(s){}, medians; ratio = keayl / baseline (median of per-run ratios)\n",
            self.runs.len(),
            if self.config.quick { " (quick)" } else { "" }
        );
        let _ = writeln!(
            out,
            "{:<34} {:>11} {:>11} {:>7}",
            "metric", "keayl", "baseline", "ratio"
        );
        let mut keys: Vec<&String> = self.keayl.keys().chain(self.baseline.keys()).collect();
        keys.sort_by_key(|k| sort_key(k));
        keys.dedup();
        for k in keys {
            let _ = writeln!(
                out,
                "{:<34} {:>11} {:>11} {:>7}",
                k,
                fmt(self.keayl.get(k).copied()),
                fmt(self.baseline.get(k).copied()),
                fmt(self.ratio.get(k).copied())
            );
        }
        if !self.targets.is_empty() {
            let _ = writeln!(out, "\ntargets (keayl):");
            for t in &self.targets {
                let _ = writeln!(
                    out,
                    "  {:<42} {:>10} {} {:<8} {}",
                    t.name,
                    fmt(t.value),
                    t.op,
                    t.limit,
                    match t.met {
                        Some(true) => "MET",
                        Some(false) => "NOT MET",
                        None => "not measured",
                    }
                );
            }
        }
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        out
    }

    /// What makes a smoke run fail: lost deliveries, failed connections,
    /// echo timeouts, dropped idle connections (either server).
    pub fn smoke_failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, (k, b)) in self.runs.iter().enumerate() {
            for (name, m) in [("keayl", k), ("baseline", b)] {
                for (key, v) in m {
                    let bad = (key.ends_with("_lost")
                        || key.ends_with("connect_failed")
                        || key == "echo_timeouts"
                        || key == "idle_dropped")
                        && *v > 0.0;
                    if bad {
                        out.push(format!("run {}: {name} {key} = {v}", i + 1));
                    }
                }
            }
        }
        out
    }

    /// The final JSON line.
    pub fn json(&self) -> serde_json::Value {
        json!({
            "suite": "keayl-bench",
            "quick": self.config.quick,
            "runs": self.runs.len(),
            "config": self.config,
            "median": {"keayl": self.keayl, "baseline": self.baseline, "ratio": self.ratio},
            "targets": self.targets,
            "all_targets_met": !self.targets.is_empty() && self.targets.iter().all(|t| t.met == Some(true)),
            "smoke_failures": self.smoke_failures(),
            "per_run": self.runs.iter().map(|(k, b)| json!({"keayl": k, "baseline": b})).collect::<Vec<_>>(),
            "notes": self.notes,
        })
    }
}

fn sort_key(k: &str) -> (u8, u64, String) {
    let group = if k.starts_with("connect") || k.starts_with("rss") || k.starts_with("idle") {
        0
    } else if k.starts_with("bcast_") {
        1
    } else if k.starts_with("echo") {
        2
    } else {
        3
    };
    let n = k
        .split('_')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (group, n, k.to_owned())
}
