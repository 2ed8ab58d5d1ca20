//! The operations kit (issue 17): the alert rules and their unit tests go
//! through promtool, the Grafana dashboard is checked as JSON and its PromQL
//! through promtool, and every metric name in the kit and its runbook is
//! checked against the exposition of a running dispatcher.
//!
//! The promtool tests skip themselves when promtool is not installed, unless
//! `HOOKPOOL_REQUIRE_PROMTOOL` is set (CI sets it).

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::exposition::{queryable_names, rich_exposition};
use common::promtool;
use serde_json::Value;

const RULES: &str = "contrib/prometheus/hookpool-alerts.yml";
const RULE_TESTS: &str = "contrib/prometheus/hookpool-alerts.test.yml";
const DASHBOARD: &str = "contrib/grafana/hookpool.json";
const OPERATIONS: &str = "docs/OPERATIONS.md";

fn path(relative: &str) -> String {
    format!("{}/{relative}", env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(path(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// One alert of the rules file, read line by line: the file keeps each
/// field on one line, which this test holds it to.
#[derive(Debug, Default)]
struct Alert {
    name: String,
    fields: BTreeMap<String, String>,
}

fn alerts(rules: &str) -> Vec<Alert> {
    let mut alerts: Vec<Alert> = Vec::new();
    for line in rules.lines().map(str::trim) {
        if line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix("- alert: ") {
            alerts.push(Alert {
                name: name.to_owned(),
                ..Alert::default()
            });
        } else if let (Some(alert), Some((key, value))) = (alerts.last_mut(), line.split_once(": "))
        {
            let value = value.trim_matches('"').to_owned();
            assert!(
                alert.fields.insert(key.to_owned(), value).is_none(),
                "{}: {key} twice",
                alert.name
            );
        }
    }
    alerts
}

/// GitHub's anchor for each heading of a Markdown file. A heading whose
/// anchor is taken already gets `-1`, `-2` and so on, as on GitHub.
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut in_code = false;
    let mut seen = BTreeSet::new();
    markdown
        .lines()
        .filter(|l| {
            if l.starts_with("```") {
                in_code = !in_code;
            }
            !in_code && l.starts_with('#')
        })
        .map(|l| {
            let base: String = l
                .trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect();
            let anchor = (0..)
                .map(|i| match i {
                    0 => base.clone(),
                    i => format!("{base}-{i}"),
                })
                .find(|a| !seen.contains(a))
                .unwrap_or_default();
            seen.insert(anchor.clone());
            anchor
        })
        .collect()
}

/// Each `hookpool_...` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("hookpool_") {
        let before = rest[..at].chars().next_back();
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        if !before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

#[test]
fn promtool_checks_the_alert_rules() {
    let count = alerts(&read(RULES)).len();
    if let Some(said) = promtool(&["check", "rules", &path(RULES)], "") {
        assert!(
            said.contains(&format!("SUCCESS: {count} rules found")),
            "{said}"
        );
    }
}

#[test]
fn the_alert_rules_pass_their_unit_tests() {
    if let Some(said) = promtool(&["test", "rules", &path(RULE_TESTS)], "") {
        assert!(said.contains("SUCCESS"), "{said}");
    }
}

#[test]
fn every_alert_is_annotated_has_a_runbook_section_and_is_tested_three_ways() {
    let rules = read(RULES);
    let tests = read(RULE_TESTS);
    let sections = anchors(&read(OPERATIONS));
    let alerts = alerts(&rules);
    assert!(alerts.len() >= 8, "{alerts:?}");
    let lines: Vec<&str> = tests.lines().map(str::trim).collect();
    for alert in &alerts {
        let name = &alert.name;
        for key in ["expr", "severity", "summary", "description", "runbook"] {
            assert!(alert.fields.contains_key(key), "{name} has no {key}");
        }
        // A shared queue's alerts are about the queue, whichever processes
        // (pools) report it.
        let subject = if name.starts_with("HookpoolSharedQueue") {
            "$labels.queue"
        } else {
            "$labels.pool"
        };
        assert!(
            alert.fields["summary"].contains(subject),
            "{name}'s summary does not name {subject}"
        );
        assert!(
            alert.fields["description"].contains("$value"),
            "{name}'s description does not print the value"
        );
        let anchor = alert.fields["runbook"]
            .strip_prefix("docs/OPERATIONS.md#")
            .unwrap_or_else(|| panic!("{name}'s runbook is not in {OPERATIONS}"));
        assert!(
            sections.contains(anchor),
            "{name}'s runbook section #{anchor} is not a heading of {OPERATIONS}"
        );
        // Quiet before it fires and after it resolves, and firing between.
        let (mut quiet, mut firing) = (0, 0);
        for pair in lines.windows(2) {
            if pair[0] == format!("alertname: {name}") {
                match pair[1] {
                    "exp_alerts: []" => quiet += 1,
                    "exp_alerts:" => firing += 1,
                    other => panic!("{name}: unexpected {other:?} in {RULE_TESTS}"),
                }
            }
        }
        assert!(
            quiet >= 2 && firing >= 1,
            "{name} is tested quiet {quiet} and firing {firing} times in {RULE_TESTS}"
        );
    }
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    let mut stack: Vec<&Value> = dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(panel) = stack.pop() {
        if let Some(nested) = panel["panels"].as_array() {
            stack.extend(nested);
        }
        all.push(panel);
    }
    all
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is not valid JSON")
}

/// Each target's PromQL, with Grafana's variables given values Prometheus
/// accepts.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    panels(dashboard)
        .into_iter()
        .filter_map(|p| p["targets"].as_array())
        .flatten()
        .map(|t| {
            let expr = t["expr"].as_str().expect("a target without expr");
            let expr = expr
                .replace("$__rate_interval", "5m")
                .replace("$pool", ".*");
            assert!(!expr.contains('$'), "an unknown variable in {expr}");
            expr
        })
        .collect()
}

#[test]
fn the_dashboard_is_valid_json_with_unique_panel_ids_and_both_variables() {
    let dashboard = dashboard();
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 39);
    let mut ids = BTreeSet::new();
    let panels = panels(&dashboard);
    for panel in &panels {
        let id = panel["id"].as_u64().expect("a panel without an id");
        assert!(ids.insert(id), "panel id {id} twice");
        assert!(panel["gridPos"].is_object(), "panel {id} has no gridPos");
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "panel {id}");
        let targets = panel["targets"]
            .as_array()
            .expect("a panel without targets");
        assert!(!targets.is_empty(), "panel {id} has no targets");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "panel {id}");
            // Every hookpool series in a panel follows the pool variable.
            let expr = target["expr"].as_str().unwrap();
            for name in metric_names(expr) {
                assert!(
                    expr.contains(&format!("{name}{{pool=~\"$pool\"")),
                    "panel {id}: {name} does not follow $pool in {expr}"
                );
            }
        }
    }
    assert!(panels.len() >= 10, "{} panels", panels.len());
    let variables: BTreeMap<&str, &Value> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v))
        .collect();
    assert_eq!(variables["datasource"]["type"], "datasource");
    assert_eq!(variables["datasource"]["query"], "prometheus");
    assert_eq!(variables["pool"]["type"], "query");
    assert_eq!(variables["pool"]["datasource"]["uid"], "${datasource}");
    assert_eq!(
        variables["pool"]["definition"],
        "label_values(hookpool_queue_depth, pool)"
    );
}

#[test]
fn promtool_parses_every_query_of_the_dashboard() {
    let queries = dashboard_queries(&dashboard());
    assert!(queries.len() >= 10, "{queries:?}");
    // JSON is YAML, so the queries go to promtool as recording rules.
    let rules: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(
            |(i, expr)| serde_json::json!({"record": format!("dashboard:query_{i}"), "expr": expr}),
        )
        .collect();
    let file = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let file_path = dir.join(format!("dashboard-queries-{}.yml", std::process::id()));
    std::fs::write(&file_path, file.to_string()).unwrap();
    let said = promtool(&["check", "rules", file_path.to_str().unwrap()], "");
    std::fs::remove_file(&file_path).unwrap();
    if let Some(said) = said {
        assert!(
            said.contains(&format!("SUCCESS: {} rules found", queries.len())),
            "{said}"
        );
    }
}

#[test]
fn every_metric_the_kit_and_its_runbook_name_is_exported() {
    let exported = queryable_names(&rich_exposition());
    for file in [RULES, RULE_TESTS, DASHBOARD, OPERATIONS] {
        let used = metric_names(&read(file));
        assert!(used.len() >= 5, "{file} names only {used:?}");
        let unknown: Vec<_> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{file} names metrics a dispatcher does not export: {unknown:?}"
        );
    }
}

#[test]
fn metric_names_are_found_whole_and_only_as_words() {
    assert_eq!(
        metric_names("rate(hookpool_jobs_total{pool=\"a\"}[5m]) x_hookpool_no hookpool-alerts"),
        BTreeSet::from(["hookpool_jobs_total".to_owned()])
    );
    assert_eq!(
        anchors(
            "# Operations\n```\n# HELP x\n```\n### HookpoolQueueNearlyFull\n## The `/metrics` handler"
        ),
        BTreeSet::from([
            "operations".to_owned(),
            "hookpoolqueuenearlyfull".to_owned(),
            "the-metrics-handler".to_owned()
        ])
    );
}

/// Each relative link `[text](target)` in `markdown`, outside code blocks:
/// the file part (empty for a link within the page) and the anchor.
fn relative_links(markdown: &str) -> Vec<(String, Option<String>)> {
    let mut in_code = false;
    let mut links = Vec::new();
    for line in markdown.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        }
        if in_code {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let tail = &rest[at + 2..];
            let Some(end) = tail.find(')') else { break };
            let target = &tail[..end];
            rest = &tail[end..];
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, anchor) = match target.split_once('#') {
                Some((file, anchor)) => (file, Some(anchor.to_owned())),
                None => (target, None),
            };
            links.push((file.to_owned(), anchor));
        }
    }
    links
}

/// The README and every page under docs/ link only to files that exist, and
/// to headings those files have.
#[test]
fn every_relative_link_in_the_docs_resolves() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut pages = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(path);
        }
    }
    let mut checked = 0;
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        for (file, anchor) in relative_links(&text) {
            let target = if file.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap().join(&file)
            };
            assert!(
                target.exists(),
                "{}: a link to {file}, which does not exist",
                page.display()
            );
            if let Some(anchor) = anchor {
                let headings = anchors(&std::fs::read_to_string(&target).unwrap());
                assert!(
                    headings.contains(&anchor),
                    "{}: a link to {file}#{anchor}, which is not a heading there",
                    page.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} links found");
}
