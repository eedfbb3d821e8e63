//! Reading Prometheus text exactly (shared by the demo's integration tests:
//! `#[path = "support/metrics.rs"] mod metrics;`).

#![allow(dead_code)]

/// The samples of metric `name` in Prometheus text: each sample's labels
/// (the text between `{` and `}`, empty without labels) and value. Only
/// lines naming exactly `name` count: `keayl_connections` is not
/// `keayl_connections_total`.
pub fn samples(text: &str, name: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labels, rest) = if let Some(after) = rest.strip_prefix('{') {
                let end = after.find('}').expect("labels end with `}`");
                (&after[..end], &after[end + 1..])
            } else {
                ("", rest)
            };
            // The name (and labels) end at a space; anything else is
            // another metric that starts with `name`.
            let value = rest.strip_prefix(' ')?.split_whitespace().next()?;
            Some((labels.to_owned(), value.parse().expect("a numeric value")))
        })
        .collect()
}

/// The value of the one sample of metric `name`.
pub fn sample(text: &str, name: &str) -> f64 {
    match samples(text, name).as_slice() {
        [(_, value)] => *value,
        other => panic!("expected one sample of {name}, found {other:?} in:\n{text}"),
    }
}
