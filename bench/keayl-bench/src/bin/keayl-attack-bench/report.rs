//! Reports: the verdict, the table rows and the JSON line of an attack,
//! and the RSS figures every report shows.

use std::fmt::Display;

use serde::Serialize;
use serde_json::{Value, json};

use crate::util::{growth_mib, mib, opt};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Verdict {
    Resisted,
    Vulnerable,
    Skipped,
}

impl Verdict {
    fn of(resisted: bool) -> Verdict {
        if resisted {
            Verdict::Resisted
        } else {
            Verdict::Vulnerable
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Rows(Vec<(String, String)>);

impl Rows {
    pub(crate) fn add(&mut self, label: &str, value: impl Display) -> &mut Rows {
        self.0.push((label.to_owned(), value.to_string()));
        self
    }
}

#[derive(Debug)]
pub(crate) struct Report {
    pub(crate) attack: &'static str,
    did: String,
    pub(crate) rows: Rows,
    pub(crate) verdict: Verdict,
    pub(crate) criterion: String,
    figures: Value,
}

impl Report {
    pub(crate) fn new(attack: &'static str, did: String, figures: &impl Serialize) -> Report {
        Report {
            attack,
            did,
            rows: Rows::default(),
            verdict: Verdict::Skipped,
            criterion: String::new(),
            figures: serde_json::to_value(figures).unwrap_or(Value::Null),
        }
    }

    pub(crate) fn judged(mut self, resisted: bool, criterion: impl Into<String>) -> Report {
        self.verdict = Verdict::of(resisted);
        self.criterion = criterion.into();
        self
    }

    pub(crate) fn json(&self) -> Value {
        json!({
            "attack": self.attack,
            "verdict": self.verdict,
            "criterion": self.criterion,
            "did": self.did,
            "figures": self.figures,
        })
    }

    pub(crate) fn print(&self, json_only: bool) {
        if !json_only {
            println!("\n== {}: {}", self.attack, self.did);
            let width = self
                .rows
                .0
                .iter()
                .map(|(k, _)| k.chars().count())
                .max()
                .unwrap_or(0);
            for (k, v) in &self.rows.0 {
                println!("   {k:<width$}  {v}");
            }
            let word = serde_json::to_value(self.verdict).unwrap_or(Value::Null);
            println!(
                "   verdict: {} ({})",
                word.as_str().unwrap_or("?").to_uppercase(),
                self.criterion
            );
        }
        println!("{}", self.json());
    }
}

/// RSS figures shared by the reports.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Rss {
    before_kib: Option<u64>,
    peak_kib: Option<u64>,
    after_kib: Option<u64>,
    pub(crate) peak_growth_mib: Option<f64>,
}

impl Rss {
    pub(crate) fn new(before: Option<u64>, peak: Option<u64>, after: Option<u64>) -> Rss {
        let peak = peak.max(after);
        Rss {
            before_kib: before,
            peak_kib: peak,
            after_kib: after,
            peak_growth_mib: growth_mib(before, peak),
        }
    }

    pub(crate) fn line(&self) -> String {
        format!(
            "{} before, {} peak, {} after (peak growth {})",
            mib(self.before_kib),
            mib(self.peak_kib),
            mib(self.after_kib),
            opt(self.peak_growth_mib, " MiB")
        )
    }
}
