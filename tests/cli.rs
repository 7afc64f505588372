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
    for command in ["crdgen", "render", "check", "report", "install-gateway"] {
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

/// `controller` with an unusable cluster configuration: a non-zero exit within 10 s and one
/// line naming the problem.
fn controller_fails_fast(args: &[&str], expected: &str) {
    let started = std::time::Instant::now();
    let mut full = vec!["controller", "--metrics-addr", "127.0.0.1:0"];
    full.extend_from_slice(args);
    let output = common::run(&full);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line, got: {stderr}");
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains(expected),
        "{stderr}"
    );
}

#[test]
fn controller_with_a_missing_kubeconfig_fails_fast() {
    controller_fails_fast(
        &["--kubeconfig", "/nonexistent"],
        "cannot read kubeconfig /nonexistent",
    );
}

#[test]
fn controller_with_an_unreachable_api_server_fails_fast() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = common::write(
        dir.path(),
        "kubeconfig",
        &format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: 'http://127.0.0.1:{port}'}}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\nusers:\n- name: u\n  user: {{token: t}}\n"
        ),
    );
    controller_fails_fast(
        &["--kubeconfig", &kubeconfig.display().to_string()],
        &format!("cannot reach the Kubernetes API server at http://127.0.0.1:{port}"),
    );
}

#[test]
fn controller_refuses_a_renew_interval_above_the_lease() {
    controller_fails_fast(
        &[
            "--lease-duration-seconds",
            "5",
            "--lease-renew-seconds",
            "9",
        ],
        "must be below --lease-duration-seconds",
    );
}

/// `docs/cli.md`: the help of every command, as the binary prints it, kept in sync.
#[test]
fn the_cli_reference_page_is_in_sync() {
    let mut expected = String::from(
        "# Command-line reference\n\n\
         The help of every command, as `mcp-operator COMMAND --help` prints it (a test keeps this\n\
         page in sync).\n",
    );
    let commands = [
        "",
        "crdgen",
        "render",
        "check",
        "report",
        "controller",
        "gateway",
        "install-gateway",
    ];
    for command in commands {
        let mut args: Vec<&str> = Vec::new();
        if !command.is_empty() {
            args.push(command);
        }
        args.push("--help");
        // Help shows the value of a flag's environment variable when set: leave them unset.
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_mcp-operator"))
            .args(&args)
            .env_remove("MCP_OPERATOR_GATEWAY_IMAGE")
            .env_remove("POD_NAME")
            .env_remove("POD_NAMESPACE")
            .output()
            .unwrap();
        assert!(output.status.success(), "{command} --help failed");
        let help = String::from_utf8(output.stdout).unwrap();
        let title = if command.is_empty() {
            "mcp-operator".to_owned()
        } else {
            format!("mcp-operator {command}")
        };
        expected.push_str(&format!(
            "\n## {title}\n\n```text\n{}\n```\n",
            help.trim_end()
        ));
    }
    common::assert_page_in_sync(
        "docs/cli.md",
        &expected,
        "cargo test --test cli the_cli_reference_page_is_in_sync",
    );
    assert!(expected.contains("--inventory-period-seconds"));
}
