//! The Grafana dashboard (`monitoring/grafana/oidcvault.json`) against the real
//! binary: the JSON parses, its data source is a variable (no hard-coded uid), and
//! every metric its PromQL queries is one `/metrics` exports, with every label it
//! filters or groups by.
//!
//! The prometheus crate leaves a labelled family out of the exposition (`# HELP`
//! and `# TYPE` included) until it has a series, so the check runs against a live
//! `/metrics` after traffic that creates every series the dashboard reads: a
//! config POST (requests, group commits, key terms) and a refused sign-in
//! callback (`oidcvault_sso_logins_total`). After a key rotation only the active
//! term's encryptions are exported (the key panels read their max over terms).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::harness::ops::*;
use crate::harness::prometheus::{parse_or_panic, Exposition};

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/monitoring/grafana/oidcvault.json"
);

/// Labels Prometheus attaches at scrape time (not in the exposition).
const TARGET_LABELS: [&str; 2] = ["instance", "job"];

/// What one PromQL expression refers to.
#[derive(Debug, Default, PartialEq)]
struct Refs {
    /// Metric names as written (`_bucket` etc. kept).
    metrics: BTreeSet<String>,
    /// Label names in matchers and in `by`/`without`/`on`/`ignoring` lists.
    labels: BTreeSet<String>,
}

const KEYWORDS: [&str; 12] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "atan2",
];

/// Aggregation operators, which may take their `by`/`without` clause before the
/// parenthesis.
const AGGREGATIONS: [&str; 14] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// The metric names and label names of a PromQL expression: identifiers not
/// followed by `(` (functions, aggregations) and not keywords; string literals,
/// range selectors (`[5m]`) and Grafana variables (`$x`, `${x}`) skipped; the
/// names left of the operators inside `{...}` are labels, as are the lists after
/// `by`, `without`, `on`, `ignoring`, `group_left`, `group_right`.
fn promql_refs(expr: &str) -> Result<Refs, String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut refs = Refs::default();
    let mut i = 0;
    let ident_start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':';
    let ident_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let skip_ws = |mut j: usize| {
        while j < chars.len() && chars[j].is_whitespace() {
            j += 1;
        }
        j
    };
    let skip_string = |j: usize| -> Result<usize, String> {
        let quote = chars[j];
        let mut k = j + 1;
        while k < chars.len() {
            match chars[k] {
                '\\' => k += 2,
                c if c == quote => return Ok(k + 1),
                _ => k += 1,
            }
        }
        Err(format!("unterminated string in {expr:?}"))
    };
    // Label names up to the closing `close`, at `j` just after the opening.
    let label_list = |mut j: usize, close: char, refs: &mut Refs| -> Result<usize, String> {
        loop {
            j = skip_ws(j);
            match chars.get(j) {
                None => return Err(format!("unclosed {close:?} in {expr:?}")),
                Some(c) if *c == close => return Ok(j + 1),
                Some('"' | '\'' | '`') => j = skip_string(j)?,
                Some(c) if ident_start(*c) => {
                    let start = j;
                    while j < chars.len() && ident_char(chars[j]) {
                        j += 1;
                    }
                    refs.labels.insert(chars[start..j].iter().collect());
                }
                // `,`, matcher operators, `$variables` in values.
                Some(_) => j += 1,
            }
        }
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(i)?;
        } else if c == '{' {
            i = label_list(i + 1, '}', &mut refs)?;
        } else if c == '[' {
            i = chars[i..]
                .iter()
                .position(|&c| c == ']')
                .map(|p| i + p + 1)
                .ok_or_else(|| format!("unclosed '[' in {expr:?}"))?;
        } else if c == '$' {
            i += 1;
            if chars.get(i) == Some(&'{') {
                i = chars[i..]
                    .iter()
                    .position(|&c| c == '}')
                    .map(|p| i + p + 1)
                    .ok_or_else(|| format!("unclosed '${{' in {expr:?}"))?;
            } else {
                while i < chars.len() && ident_char(chars[i]) {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // A number (also `1e3`, `0x1f`, a duration such as `5m`).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if ident_start(c) {
            let start = i;
            while i < chars.len() && ident_char(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = skip_ws(i);
            let next_word: String = chars[next..]
                .iter()
                .take_while(|c| ident_char(**c))
                .collect();
            if AGGREGATIONS.contains(&word.as_str())
                && (next_word == "by" || next_word == "without")
            {
                // `sum by (x) (...)`: the aggregation, its clause comes next.
            } else if KEYWORDS.contains(&word.as_str()) {
                if matches!(
                    word.as_str(),
                    "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
                ) && chars.get(next) == Some(&'(')
                {
                    i = label_list(next + 1, ')', &mut refs)?;
                }
            } else if chars.get(next) != Some(&'(')
                && !["inf", "nan"].contains(&word.to_lowercase().as_str())
            {
                refs.metrics.insert(word);
            }
        } else {
            i += 1;
        }
    }
    Ok(refs)
}

/// The family a metric name belongs to in `e`: itself, or the name less a
/// histogram / summary suffix when that is a typed family.
fn family<'a>(name: &'a str, e: &Exposition) -> Option<&'a str> {
    if e.types.contains_key(name) {
        return Some(name);
    }
    ["_bucket", "_sum", "_count"]
        .iter()
        .filter_map(|s| name.strip_suffix(s))
        .find(|base| {
            e.types
                .get(*base)
                .is_some_and(|k| k == "histogram" || k == "summary")
        })
}

/// Every PromQL expression of the dashboard, with where it is: each panel's
/// targets (rows' nested panels too) and the query variables.
fn expressions(dashboard: &Value) -> Vec<(String, String)> {
    fn panels(list: &Value, out: &mut Vec<(String, String)>) {
        for p in list.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("(untitled)");
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = t["expr"].as_str() {
                    out.push((format!("panel {title:?}"), expr.to_owned()));
                }
            }
            panels(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if v["type"] != "query" {
            continue;
        }
        let q = v["query"]["query"].as_str().or(v["query"].as_str());
        if let Some(q) = q {
            // label_values(metric, label) names a metric and a label.
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.strip_suffix(')'))
                .map(|args| args.replacen(',', " by (", 1) + ")");
            out.push((
                format!("variable {:?}", v["name"].as_str().unwrap_or("")),
                inner.unwrap_or_else(|| q.to_owned()),
            ));
        }
    }
    out
}

#[test]
fn promql_refs_finds_metrics_and_labels() {
    let r = promql_refs(
        "histogram_quantile(0.99, sum by (le, route) (rate(a_seconds_bucket{instance=~\"$instance\",x!=\"}{\"}[$__rate_interval])))\
         / on (job) group_left (y) b_total offset 5m > bool 1e3 + vector($threshold) and c:rule:sum",
    )
    .unwrap();
    assert_eq!(
        r.metrics,
        ["a_seconds_bucket", "b_total", "c:rule:sum"]
            .map(String::from)
            .into()
    );
    assert_eq!(
        r.labels,
        ["instance", "job", "le", "route", "x", "y"]
            .map(String::from)
            .into()
    );
    assert!(promql_refs("sum(rate(a{x=\"1\"[5m]))").is_err());
}

#[test]
fn dashboard_queries_only_metrics_the_binary_exports() {
    let text = std::fs::read_to_string(DASHBOARD).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"));
    let dashboard: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"));

    // Importable anywhere: a Prometheus data source variable, no fixed uid.
    let vars = dashboard["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        vars.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "no Prometheus data source variable named datasource: {vars:?}"
    );
    let mut uids = Vec::new();
    fn datasources<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    if k == "datasource" {
                        out.push(x);
                    }
                    datasources(x, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|x| datasources(x, out)),
            _ => {}
        }
    }
    datasources(&dashboard, &mut uids);
    for ds in &uids {
        assert_eq!(
            ds["uid"], "${datasource}",
            "a data source that is not the variable: {ds}"
        );
    }

    let exprs = expressions(&dashboard);
    assert!(exprs.len() >= 15, "only {} expressions", exprs.len());

    // The real binary, after traffic that creates every series the dashboard reads.
    let (home, operator) = operator_home();
    let mut server = home.start();
    let tenants = add_tenants(&server, &operator, "dash", 1);
    write_all(&server, &tenants, "dash", 1);
    let r = server.call(
        "GET",
        "/sso/callback?state=made-up-state&code=x",
        None,
        None,
        None,
    );
    assert!(
        r.status >= 400,
        "a made-up sign-in callback was accepted: {r}"
    );
    let scrape = server.call("GET", "/metrics", Some(&operator), None, None);
    assert_eq!(scrape.status, 200, "GET /metrics: {scrape}");
    let exposition = parse_or_panic(&scrape.body);

    // The key panels read the active term's encryptions as their max over terms:
    // after a rotation, only the new term is exported.
    server.expect(200, "POST", ROTATE, &operator, None, None);
    let rotated = server.call("GET", "/metrics", Some(&operator), None, None);
    let rotated = parse_or_panic(&rotated.body);
    let terms: Vec<_> = rotated
        .find("oidcvault_key_term_encryptions", &[])
        .iter()
        .map(|s| s.labels.get("term").cloned().unwrap_or_default())
        .collect();
    assert_eq!(
        terms,
        ["2"],
        "after a rotation to term 2: {:?}",
        rotated.find("oidcvault_key_term_encryptions", &[])
    );
    assert_eq!(rotated.single("oidcvault_key_active_term"), 2.0);
    server.stop();

    // Labels each family's samples carry (histograms: `le` on the buckets).
    let mut labels_of: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for s in &exposition.samples {
        if let Some(f) = family(&s.name, &exposition) {
            labels_of
                .entry(f)
                .or_default()
                .extend(s.labels.keys().map(String::as_str));
        }
    }
    let mut problems = Vec::new();
    let mut queried = BTreeSet::new();
    for (place, expr) in &exprs {
        let refs = match promql_refs(expr) {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("{place}: {e}"));
                continue;
            }
        };
        if refs.metrics.is_empty() && !expr.contains("vector(") {
            problems.push(format!("{place}: no metric in {expr:?}"));
        }
        let mut known: BTreeSet<&str> = TARGET_LABELS.into();
        for m in &refs.metrics {
            match family(m, &exposition) {
                Some(f) => {
                    queried.insert(f.to_owned());
                    known.extend(labels_of.get(f).into_iter().flatten());
                }
                None => problems.push(format!(
                    "{place}: metric {m} is not exported by the binary (expr {expr:?})"
                )),
            }
        }
        for l in &refs.labels {
            if !known.contains(l.as_str()) {
                problems.push(format!(
                    "{place}: label {l} is on none of {:?} (expr {expr:?})",
                    refs.metrics
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the dashboard queries what the binary does not export:\n{}\n--- exported families: {:?}",
        problems.join("\n"),
        exposition.types.keys().collect::<Vec<_>>()
    );
    // And the other way: every family the binary exports has a panel.
    let unshown: Vec<&String> = exposition
        .types
        .keys()
        .filter(|f| !queried.contains(*f))
        .collect();
    assert!(unshown.is_empty(), "exported but on no panel: {unshown:?}");
    eprintln!(
        "dashboard: {} expressions over {} metric families, all exported",
        exprs.len(),
        queried.len()
    );
}
