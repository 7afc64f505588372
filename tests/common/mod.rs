//! Helpers shared by the integration tests: the binary, the repository, and the third-party
//! tools `scripts/test.sh` installs into `.venv`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
