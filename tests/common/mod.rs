//! Helpers shared by the integration tests: the binary, the repository, and the third-party
//! tools `scripts/test.sh` installs into `.venv`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Run `mcp-operator` with `args` from the repository root.
pub fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mcp-operator"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("the mcp-operator binary runs")
}

/// A program installed by `scripts/test.sh` into the test virtualenv. Fails the test (never
/// skips it) when the peer is missing.
pub fn venv_tool(name: &str) -> PathBuf {
    let venv = std::env::var_os("MCP_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv"));
    let tool = venv.join("bin").join(name);
    assert!(
        tool.exists(),
        "{} is missing: run `scripts/test.sh` (it installs the test peers into .venv), or set MCP_TEST_VENV",
        tool.display()
    );
    tool
}

/// Write `content` to `dir/name` and return the path.
pub fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

/// Stdout of a successful run, or a panic with its stderr.
pub fn stdout_of(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// Oldest Kubernetes version we support (k8s-openapi's `earliest` feature).
pub const OLDEST_KUBERNETES: &str = "1.33";

/// Run `kubernetes-validate --strict` for our oldest version on `files`; returns its report
/// after asserting it passed.
pub fn kubernetes_validate(files: &[PathBuf]) -> String {
    let output = Command::new(venv_tool("kubernetes-validate"))
        .args(["--strict", "-k", OLDEST_KUBERNETES])
        .args(files)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "kubernetes-validate --strict -k {OLDEST_KUBERNETES} failed:\n{report}"
    );
    report
}

/// Run `mcp-operator` with `args`, feeding `input` on standard input.
pub fn run_with_stdin(args: &[&str], input: &[u8]) -> Output {
    run_program_with_stdin(Path::new(env!("CARGO_BIN_EXE_mcp-operator")), args, input)
}

/// Run any program with `input` on its standard input.
pub fn run_program_with_stdin(program: &Path, args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(program)
        .args(args)
        .current_dir(repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

// ---- The Helm chart, through tests/peers/chart.py (Helm v4 SDK). ----

pub fn chart_dir() -> PathBuf {
    repo().join("charts").join("mcp-operator")
}

pub fn chart_script(args: &[&str]) -> std::process::Output {
    Command::new(venv_tool("python"))
        .arg(repo().join("tests/peers/chart.py"))
        .args(args)
        .output()
        .unwrap()
}

/// A rendered release: its manifest files, objects and NOTES.txt.
pub struct RenderedChart {
    _dir: tempfile::TempDir,
    pub files: Vec<PathBuf>,
    pub objects: Vec<Value>,
    pub notes: String,
}

impl RenderedChart {
    pub fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    pub fn one(&self, kind: &str, name: &str) -> &Value {
        self.objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name} among {:?}", self.names()))
    }

    pub fn names(&self) -> Vec<String> {
        self.objects
            .iter()
            .map(|o| format!("{}/{}", o["kind"], o["metadata"]["name"]))
            .collect()
    }

    pub fn controller_container(&self) -> &Value {
        &self.of_kind("Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    }

    pub fn args(&self) -> Vec<&str> {
        self.controller_container()["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect()
    }
}

/// Render the chart as release `release` in `namespace` with `values`; the Helm error message
/// when it refuses them.
pub fn render_chart(
    values: &Value,
    release: &str,
    namespace: &str,
) -> Result<RenderedChart, String> {
    // Not a hidden directory (tempfile's default `.tmp` prefix): checkov skips those.
    let dir = tempfile::Builder::new()
        .prefix("rendered-chart-")
        .tempdir()
        .unwrap();
    let output = chart_script(&[
        "render",
        chart_dir().to_str().unwrap(),
        &values.to_string(),
        release,
        namespace,
        dir.path().to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    match output.status.code() {
        Some(0) => {}
        Some(3) => return Err(stderr),
        code => panic!("tests/peers/chart.py failed ({code:?}):\n{stderr}"),
    }
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    Ok(RenderedChart {
        _dir: dir,
        files: report["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| PathBuf::from(f.as_str().unwrap()))
            .collect(),
        objects: report["objects"].as_array().unwrap().clone(),
        notes: report["notes"].as_str().unwrap().to_string(),
    })
}

// ---- Argo CD health checks (charts/mcp-operator/files/argocd), run by Debian's Lua 5.1. ----

/// `value` as a Lua table constructor (what Argo CD hands its health scripts as `obj`).
pub fn lua_literal(value: &Value) -> String {
    match value {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => lua_string(s),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(lua_literal).collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Object(fields) => {
            let fields: Vec<String> = fields
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("[{}] = {}", lua_string(k), lua_literal(v)))
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
    }
}

fn lua_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\{}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Argo CD's verdict on `object` by the chart's health script `script` (e.g. `mcpserver.lua`):
/// (status, message), computed by `lua5.1` as Argo CD's gopher-lua (Lua 5.1) would.
pub fn argocd_health(script: &str, object: &Value) -> (String, String) {
    let source = std::fs::read_to_string(chart_dir().join("files/argocd").join(script)).unwrap();
    let program = format!(
        "obj = {}\nlocal hs = (function()\n{source}\nend)()\nio.write(hs.status, \"\\n\", hs.message or \"\")\n",
        lua_literal(object)
    );
    let lua = Path::new("/usr/bin/lua5.1");
    assert!(
        lua.exists(),
        "lua5.1 is missing: run `scripts/test.sh` (it installs Debian's lua5.1)"
    );
    let output = run_program_with_stdin(lua, &["-"], program.as_bytes());
    assert!(
        output.status.success(),
        "{script} failed on {object}:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let (status, message) = text.split_once('\n').unwrap_or((&text, ""));
    (status.to_string(), message.to_string())
}

/// Run checkov's Kubernetes checks (all, or `only` these ids) on the manifests in `dir` (not a
/// hidden directory: checkov skips those); returns its JSON report after asserting no check
/// failed.
pub fn checkov(dir: &Path, only: &[&str]) -> Value {
    let home = tempfile::tempdir().unwrap();
    let mut command = Command::new(venv_tool("checkov"));
    command.args([
        "--framework",
        "kubernetes",
        "--skip-download",
        "--compact",
        "-o",
        "json",
    ]);
    if !only.is_empty() {
        command.arg("--check").arg(only.join(","));
    }
    let output = command
        .arg("-d")
        .arg(dir)
        .env("HOME", home.path())
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "checkov printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let failed: Vec<String> = report["results"]["failed_checks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| format!("{} {} on {}", c["check_id"], c["check_name"], c["resource"]))
        .collect();
    assert!(
        failed.is_empty(),
        "checkov failures:\n{}",
        failed.join("\n")
    );
    report
}

/// Fail when the generated page `relative` (e.g. `docs/cli.md`) differs from `expected`; with
/// `UPDATE_DOCS` set, write it first. `rerun` is the test command that regenerates it.
pub fn assert_page_in_sync(relative: &str, expected: &str, rerun: &str) {
    let path = repo().join(relative);
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(&path, expected).unwrap();
    }
    let actual = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        actual == expected,
        "{relative} is out of date: run `UPDATE_DOCS=1 {rerun}`"
    );
}
