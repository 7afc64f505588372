//! Tool-poisoning scanner throughput. Scans every tool of the labelled corpus (tests/corpus:
//! reference servers' tools, attacks, near misses) on one thread, many rounds, and reports tool
//! descriptions scanned per second (a tool's description plus all its schema texts count as one
//! description). Baseline in the same run: the SHA-256 over the RFC 8785 canonical JSON of the
//! same tools (what pinning computes for every tool anyway).
//!
//! Run: `cargo bench --bench poisoning_scan -- [ROUNDS]` (default 400).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::Instant;

use mcp_operator::gateway::inventory::definition_hash;
use mcp_operator::governance::poisoning::{ScanContext, scan_tool};
use serde_json::Value;

fn corpus(name: &str) -> Vec<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(name);
    let entries: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    entries.into_iter().map(|e| e["tool"].clone()).collect()
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(400);
    let mut tools = corpus("benign-tools.json");
    tools.extend(corpus("malicious.json"));
    tools.extend(corpus("benign-hard.json"));
    let names: Vec<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
    let foreign: Vec<String> = names.iter().map(|n| format!("other_{n}")).collect();
    let ctx = ScanContext::new(names.iter().copied(), foreign.iter().map(String::as_str));
    let bytes: usize = tools.iter().map(|t| t.to_string().len()).sum();

    // Warm up (compiles the lazily built regexes).
    for tool in &tools {
        black_box(scan_tool(tool, &ctx));
    }
    let mut scan_seconds = f64::MAX;
    let mut hash_seconds = f64::MAX;
    // Interleaved, best of 5 of each.
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..rounds / 5 {
            for tool in &tools {
                black_box(scan_tool(black_box(tool), &ctx));
            }
        }
        scan_seconds = scan_seconds.min(start.elapsed().as_secs_f64());
        let start = Instant::now();
        for _ in 0..rounds / 5 {
            for tool in &tools {
                black_box(definition_hash(black_box(tool)));
            }
        }
        hash_seconds = hash_seconds.min(start.elapsed().as_secs_f64());
    }
    let per_round = (rounds / 5) as f64;
    let scanned = tools.len() as f64 * per_round;
    println!(
        "corpus: {} tools, {:.0} bytes of JSON each on average; {} rounds per sample, best of 5, one thread",
        tools.len(),
        bytes as f64 / tools.len() as f64,
        rounds / 5
    );
    println!("| work | descriptions/s | µs per tool |\n|---|---|---|");
    println!(
        "| poisoning scan (H1–H4 + MCP-TOOL-005) | {:.0} | {:.2} |",
        scanned / scan_seconds,
        scan_seconds * 1e6 / scanned
    );
    println!(
        "| baseline: SHA-256 of the canonical JSON | {:.0} | {:.2} |",
        scanned / hash_seconds,
        hash_seconds * 1e6 / scanned
    );
    println!("scan / hash time ratio: {:.2}", scan_seconds / hash_seconds);
}
