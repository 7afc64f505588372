//! The tool-poisoning scanner measured on a labelled corpus: `tests/corpus/malicious.json`
//! (attacks from public write-ups on tool poisoning, rug pulls, shadowing, invisible Unicode and
//! exfiltration, and our own variants) and `tests/corpus/benign-tools.json` (every tool the MCP
//! reference servers list, read from their own `tools/list`; a test re-reads them from the
//! installed servers), plus `tests/corpus/benign-hard.json` (hand-written near misses, reported
//! only). Run with `-- --nocapture` to see the table BENCHMARKS.md quotes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use mcp_operator::governance::poisoning::{ToolFlag, scan_tools};
use serde_json::Value;

/// Targets of the governance issue.
const MIN_RECALL: f64 = 0.95;
const MAX_FALSE_POSITIVE_RATE: f64 = 0.02;
/// Rules of the poisoning heuristics H1–H4 (MCP-TOOL-005 hygiene is reported apart).
const POISONING_RULES: &[&str] = &[
    "MCP-TOOL-001",
    "MCP-TOOL-002",
    "MCP-TOOL-003",
    "MCP-TOOL-004",
];

fn corpus(name: &str) -> Vec<Value> {
    let path = common::repo().join("tests/corpus").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn poisoning(flags: &[ToolFlag]) -> Vec<&ToolFlag> {
    flags
        .iter()
        .filter(|f| POISONING_RULES.contains(&f.rule))
        .collect()
}

#[test]
fn benign_corpus_is_what_the_installed_reference_servers_list() {
    let python = common::venv_tool("python");
    let node_modules = common::repo().join("tests/peers/node/node_modules");
    assert!(
        node_modules
            .join("@modelcontextprotocol/server-filesystem")
            .exists(),
        "the npm reference servers are missing: run scripts/test.sh"
    );
    let output = Command::new(python)
        .arg(common::repo().join("tests/corpus/collect_benign.py"))
        .arg(&node_modules)
        .output()
        .unwrap();
    let collected = common::stdout_of(&output);
    let path = common::repo().join("tests/corpus/benign-tools.json");
    if std::env::var_os("UPDATE_CORPUS").is_some() {
        std::fs::write(&path, &collected).unwrap();
    }
    let collected: Value = serde_json::from_str(&collected).unwrap();
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        collected, stored,
        "tests/corpus/benign-tools.json differs from what the installed servers list: run `UPDATE_CORPUS=1 cargo test --test poisoning benign_corpus`"
    );
    assert!(stored.as_array().unwrap().len() >= 100);
}

#[test]
fn scanner_meets_the_recall_and_false_positive_targets() {
    let malicious = corpus("malicious.json");
    let benign = corpus("benign-tools.json");
    assert!(malicious.len() >= 40 && benign.len() >= 100);

    // Benign: each server's catalogue scanned as the controller does, its own tools as
    // siblings and every other server's tool names as foreign names.
    let mut by_server: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for entry in &benign {
        by_server
            .entry(entry["server"].as_str().unwrap())
            .or_default()
            .push(entry["tool"].clone());
    }
    let mut false_positives = Vec::new();
    let mut hygiene = Vec::new();
    for (server, tools) in &by_server {
        let foreign: Vec<&str> = by_server
            .iter()
            .filter(|(other, _)| other != &server)
            .flat_map(|(_, tools)| tools.iter().filter_map(|t| t["name"].as_str()))
            .collect();
        for (tool, flags) in scan_tools(tools, &foreign) {
            let hits = poisoning(&flags);
            if !hits.is_empty() {
                false_positives.push(format!("{server}/{tool}: {}", hits[0].message()));
            }
            if let Some(flag) = flags.iter().find(|f| f.rule == "MCP-TOOL-005") {
                hygiene.push(format!("{server}/{tool}: {}", flag.message()));
            }
        }
    }

    // Malicious: each tool alone, with every benign tool name as another server's.
    let foreign: Vec<&str> = benign
        .iter()
        .filter_map(|e| e["tool"]["name"].as_str())
        .collect();
    let mut missed = Vec::new();
    let mut by_attack: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut by_rule: BTreeMap<&str, usize> = BTreeMap::new();
    for entry in &malicious {
        let tool = &entry["tool"];
        let flags = scan_tools(std::slice::from_ref(tool), &foreign)
            .into_values()
            .flatten()
            .collect::<Vec<_>>();
        let hits = poisoning(&flags);
        let attack = entry["attack"].as_str().unwrap();
        let counts = by_attack.entry(attack).or_default();
        counts.1 += 1;
        if hits.is_empty() {
            missed.push(format!("{attack}: {}", tool["name"]));
        } else {
            counts.0 += 1;
        }
        let mut rules: Vec<&str> = hits.iter().map(|f| f.rule).collect();
        rules.dedup();
        for rule in rules {
            *by_rule.entry(rule).or_default() += 1;
        }
    }

    // Near misses: our own realistic descriptions that use risky words; reported, not a target.
    let hard = corpus("benign-hard.json");
    let hard_tools: Vec<Value> = hard.iter().map(|e| e["tool"].clone()).collect();
    let hard_positives: Vec<String> = scan_tools(&hard_tools, &foreign)
        .into_iter()
        .filter_map(|(tool, flags)| {
            poisoning(&flags)
                .first()
                .map(|f| format!("{tool}: {}", f.message()))
        })
        .collect();

    let recall = (malicious.len() - missed.len()) as f64 / malicious.len() as f64;
    let false_positive_rate = false_positives.len() as f64 / benign.len() as f64;
    println!("| corpus | tools | flagged | rate |\n|---|---|---|---|");
    println!(
        "| malicious | {} | {} | recall {:.1}% |",
        malicious.len(),
        malicious.len() - missed.len(),
        recall * 100.0
    );
    println!(
        "| benign (reference servers) | {} | {} | false positives {:.1}% |",
        benign.len(),
        false_positives.len(),
        false_positive_rate * 100.0
    );
    println!(
        "| benign near misses (hand-written) | {} | {} | false positives {:.1}% |",
        hard.len(),
        hard_positives.len(),
        hard_positives.len() as f64 * 100.0 / hard.len() as f64
    );
    println!("near-miss false positives: {hard_positives:#?}");
    println!("\nby attack: {by_attack:?}\nmalicious tools flagged per rule: {by_rule:?}");
    println!("missed: {missed:#?}\nfalse positives: {false_positives:#?}");
    println!("MCP-TOOL-005 (hygiene) on benign tools: {hygiene:#?}");
    assert!(
        recall >= MIN_RECALL,
        "recall {recall:.3} below {MIN_RECALL}: missed {missed:#?}"
    );
    assert!(
        false_positive_rate <= MAX_FALSE_POSITIVE_RATE,
        "false-positive rate {false_positive_rate:.3} above {MAX_FALSE_POSITIVE_RATE}: {false_positives:#?}"
    );
}
