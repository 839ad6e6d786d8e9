//! The one Prometheus text parser of the tests (used by `api_ops` in process and
//! `ops_metrics` over TCP): strict, so a malformed exposition fails the test
//! naming the line.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    pub(crate) name: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) value: f64,
}

#[derive(Debug, Default)]
pub(crate) struct Exposition {
    pub(crate) types: BTreeMap<String, String>,
    pub(crate) samples: Vec<Sample>,
}

impl Exposition {
    /// Samples named `name` whose labels include `labels`.
    pub(crate) fn find(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// The sum of the samples [`Exposition::find`] returns (0 when none).
    pub(crate) fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels).iter().map(|s| s.value).sum()
    }

    /// The one sample `name` with no labels.
    pub(crate) fn single(&self, name: &str) -> f64 {
        let found = self.find(name, &[]);
        assert_eq!(found.len(), 1, "{name}: {found:?}");
        found[0].value
    }
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ if s
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-')) =>
        {
            s.parse::<f64>().map_err(|e| format!("value {s:?}: {e}"))
        }
        _ => Err(format!("value {s:?} is not a number")),
    }
}

/// `{a="x",b="y"}` at the start of `s`: the labels and the rest of `s`.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = s.strip_prefix('{').ok_or("expected '{'")?;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = rest.find('=').ok_or("a label without '='")?;
        let name = &rest[..eq];
        if !is_label_name(name) {
            return Err(format!("invalid label name {name:?}"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or_else(|| format!("label {name}: value not quoted"))?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err(format!("label {name}: unterminated value")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("label {name}: bad escape {other:?}")),
                },
                Some((_, '\n')) => return Err(format!("label {name}: newline in value")),
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_owned(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        rest = &rest[end + 1..];
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err("expected ',' or '}' after a label".into());
        }
    }
}

/// A strict parser of the Prometheus text format (0.0.4): `# HELP` / `# TYPE`
/// lines, samples `name{label="value",...} value [timestamp]`; every sample must
/// belong to a family with a `# TYPE` given before it, histograms must be
/// cumulative with `+Inf` equal to `_count`, and no series may repeat.
pub(crate) fn parse_prometheus(text: &str) -> Result<Exposition, String> {
    let mut out = Exposition::default();
    let mut helps = BTreeMap::new();
    if !text.ends_with('\n') {
        return Err("the exposition does not end with a newline".into());
    }
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut parts = comment.trim_start().splitn(3, ' ');
            match parts.next() {
                Some("HELP") => {
                    let name = parts.next().unwrap_or_default();
                    if !is_metric_name(name) {
                        return Err(at(format!("HELP of an invalid name {name:?}")));
                    }
                    let doc = parts.next().unwrap_or_default();
                    let mut chars = doc.chars();
                    while let Some(c) = chars.next() {
                        if c == '\\' && !matches!(chars.next(), Some('\\' | 'n')) {
                            return Err(at("bad escape in HELP".into()));
                        }
                    }
                    if helps.insert(name.to_owned(), doc.to_owned()).is_some() {
                        return Err(at(format!("second HELP for {name}")));
                    }
                }
                Some("TYPE") => {
                    let name = parts.next().unwrap_or_default();
                    let kind = parts.next().unwrap_or_default();
                    if !is_metric_name(name) {
                        return Err(at(format!("TYPE of an invalid name {name:?}")));
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(at(format!("unknown type {kind:?}")));
                    }
                    if out
                        .samples
                        .iter()
                        .any(|s| family_of(&s.name, &out.types) == name)
                    {
                        return Err(at(format!("TYPE of {name} after its samples")));
                    }
                    if out.types.insert(name.to_owned(), kind.to_owned()).is_some() {
                        return Err(at(format!("second TYPE for {name}")));
                    }
                }
                _ => {} // other comments are allowed
            }
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| at("a sample without a value".into()))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(at(format!("invalid metric name {name:?}")));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(at)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let rest = rest
            .strip_prefix(' ')
            .ok_or_else(|| at("no space before the value".into()))?;
        let mut fields = rest.split(' ');
        let value = parse_value(fields.next().unwrap_or_default()).map_err(at)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .map_err(|e| at(format!("timestamp {ts:?}: {e}")))?;
        }
        if fields.next().is_some() {
            return Err(at("trailing fields".into()));
        }
        let family = family_of(name, &out.types);
        let Some(kind) = out.types.get(&family) else {
            return Err(at(format!("no TYPE before the sample of {name}")));
        };
        let suffix = &name[family.len()..];
        let allowed: &[&str] = match kind.as_str() {
            "histogram" => &["_bucket", "_sum", "_count"],
            "summary" => &["", "_sum", "_count"],
            _ => &[""],
        };
        if !allowed.contains(&suffix) {
            return Err(at(format!("{name} does not fit the {kind} {family}")));
        }
        if kind == "histogram" && suffix == "_bucket" && !labels.contains_key("le") {
            return Err(at("a histogram bucket without le".into()));
        }
        if kind == "counter" && (value.is_nan() || value < 0.0) {
            return Err(at("a negative counter".into()));
        }
        let sample = Sample {
            name: name.to_owned(),
            labels,
            value,
        };
        if out
            .samples
            .iter()
            .any(|s| s.name == sample.name && s.labels == sample.labels)
        {
            return Err(at("a repeated series".into()));
        }
        out.samples.push(sample);
    }
    check_histograms(&out)?;
    Ok(out)
}

/// The family a sample name belongs to: itself when typed, else the name less a
/// histogram / summary suffix.
fn family_of(name: &str, types: &BTreeMap<String, String>) -> String {
    if types.contains_key(name) {
        return name.to_owned();
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types.contains_key(base) {
                return base.to_owned();
            }
        }
    }
    name.to_owned()
}

/// Buckets cumulative (non-decreasing with `le`), `+Inf` present and equal to `_count`.
fn check_histograms(e: &Exposition) -> Result<(), String> {
    for (family, kind) in &e.types {
        if kind != "histogram" {
            continue;
        }
        let bucket = format!("{family}_bucket");
        // Labels other than `le` -> (le, cumulative count) of each bucket.
        type Buckets = Vec<(f64, f64)>;
        let mut series: BTreeMap<Vec<(String, String)>, Buckets> = BTreeMap::new();
        for s in e.samples.iter().filter(|s| s.name == bucket) {
            let mut rest = s.labels.clone();
            let le = parse_value(&rest.remove("le").unwrap_or_default())?;
            series
                .entry(rest.into_iter().collect())
                .or_default()
                .push((le, s.value));
        }
        for (labels, mut buckets) in series {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            if buckets.windows(2).any(|w| w[1].1 < w[0].1) {
                return Err(format!(
                    "{family}{labels:?}: buckets not cumulative: {buckets:?}"
                ));
            }
            let inf = buckets
                .last()
                .filter(|b| b.0 == f64::INFINITY)
                .ok_or_else(|| format!("{family}{labels:?}: no +Inf bucket"))?
                .1;
            let want: BTreeMap<String, String> = labels.into_iter().collect();
            let count = e
                .samples
                .iter()
                .find(|s| s.name == format!("{family}_count") && s.labels == want)
                .ok_or_else(|| format!("{family}{want:?}: no _count"))?;
            if count.value != inf {
                return Err(format!(
                    "{family}{want:?}: _count {} but +Inf bucket {inf}",
                    count.value
                ));
            }
            if !e
                .samples
                .iter()
                .any(|s| s.name == format!("{family}_sum") && s.labels == want)
            {
                return Err(format!("{family}{want:?}: no _sum"));
            }
        }
    }
    Ok(())
}

/// [`parse_prometheus`], failing the test on a malformed exposition with the
/// error (which names the line and quotes it) and the whole text.
pub(crate) fn parse_or_panic(text: &str) -> Exposition {
    parse_prometheus(text)
        .unwrap_or_else(|e| panic!("not Prometheus text: {e}\n--- the exposition ---\n{text}"))
}
