//! The binary's own commands beyond render: the stdio wrapper's self-install and the help text.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

#[test]
fn install_gateway_copies_an_executable_binary() {
    let dir = tempfile::tempdir().unwrap();
    let output = common::run(&["install-gateway", "--to", &dir.path().display().to_string()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let installed = dir.path().join("mcp-operator");
    let copied = std::process::Command::new(&installed)
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&copied.stdout).starts_with("mcp-operator "));
}

#[test]
fn install_gateway_into_a_missing_directory_fails_clearly() {
    let output = common::run(&["install-gateway", "--to", "/nonexistent/dir"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("error: cannot write /nonexistent/dir/mcp-operator"),
        "{stderr}"
    );
}

#[test]
fn help_lists_only_working_commands() {
    let help = common::stdout_of(&common::run(&["--help"]));
    for command in ["crdgen", "render", "install-gateway"] {
        assert!(help.contains(command), "{help}");
    }
    assert!(!help.to_lowercase().contains("not implemented"));
}

#[test]
fn render_reads_standard_input() {
    let manifest =
        std::fs::read_to_string(common::repo().join("examples/servers/legacy-sse.yaml")).unwrap();
    let output = common::run_with_stdin(&["render", "-f", "-", "-o", "json"], manifest.as_bytes());
    let list: serde_json::Value = serde_json::from_str(&common::stdout_of(&output)).unwrap();
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        6,
        "weather: SA, ConfigMap, Deployment, Service, NetworkPolicy, PDB"
    );

    let output = common::run_with_stdin(&["render", "-f", "-"], b"kind: MCPServer\n");
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("<stdin>: document 1 (line 1): apiVersion: required field is missing")
    );
}
