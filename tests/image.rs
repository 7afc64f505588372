//! The container image's contract, checked without a Docker engine: the release binary
//! `scripts/build-static.sh` builds (and `scripts/test.sh` builds before the tests) is statically
//! linked and runs alone in an empty root with no libraries, which is what the distroless image
//! and the stdio wrapper inside any server image need; the Dockerfile builds that binary and runs
//! it non-root with no shell.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;
use std::process::Command;

/// The static release binary: `MCP_STATIC_BINARY`, or where scripts/build-static.sh puts it.
fn static_binary() -> PathBuf {
    let path = std::env::var_os("MCP_STATIC_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            common::repo()
                .join("target")
                .join(format!("{}-unknown-linux-gnu", std::env::consts::ARCH))
                .join("release")
                .join("mcp-operator")
        });
    assert!(
        path.exists(),
        "{} is missing: run `scripts/build-static.sh` (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Whether an ELF file asks for a dynamic loader (has a PT_INTERP program header).
fn has_interpreter(elf: &[u8]) -> bool {
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "a 64-bit ELF");
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]) as usize;
    let u64_at = |at: usize| u64::from_le_bytes(elf[at..at + 8].try_into().unwrap()) as usize;
    let (offset, entry_size, count) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    (0..count).any(|i| {
        let at = offset + i * entry_size;
        u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) == 3
    })
}

#[test]
fn the_release_binary_is_static() {
    let binary = static_binary();
    let elf = std::fs::read(&binary).unwrap();
    assert!(
        !has_interpreter(&elf),
        "{} asks for a dynamic loader",
        binary.display()
    );
    // The test binary itself is dynamic: the check can fail.
    assert!(has_interpreter(
        &std::fs::read(std::env::current_exe().unwrap()).unwrap()
    ));
    let ldd = Command::new("ldd").arg(&binary).output().unwrap();
    let said =
        String::from_utf8_lossy(&ldd.stdout).to_string() + &String::from_utf8_lossy(&ldd.stderr);
    assert!(
        said.contains("not a dynamic executable") || said.contains("statically linked"),
        "ldd says: {said}"
    );
}

#[test]
fn the_release_binary_runs_alone_in_an_empty_root() {
    let binary = static_binary();
    let root = tempfile::tempdir().unwrap();
    std::fs::copy(&binary, root.path().join("mcp-operator")).unwrap();
    std::fs::copy(
        common::repo().join("examples/servers/filesystem-stdio.yaml"),
        root.path().join("server.yaml"),
    )
    .unwrap();
    // The root holds the binary and one manifest: no /lib, no /etc, no shell. Root may chroot;
    // anyone else does it in a user namespace of their own.
    let is_root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    let in_root = |args: &[&str]| {
        let mut command = if is_root {
            Command::new("/usr/sbin/chroot")
        } else {
            let mut c = Command::new("/usr/bin/unshare");
            c.args(["--user", "--map-root-user", "/usr/sbin/chroot"]);
            c
        };
        command
            .arg(root.path())
            .arg("/mcp-operator")
            .args(args)
            .env_clear()
            .output()
            .unwrap()
    };
    let version = in_root(&["--version"]);
    assert!(
        version.status.success(),
        "{}",
        String::from_utf8_lossy(&version.stderr)
    );
    assert!(String::from_utf8_lossy(&version.stdout).contains(env!("CARGO_PKG_VERSION")));
    let rendered = in_root(&["render", "-f", "/server.yaml"]);
    let stdout = common::stdout_of(&rendered);
    assert!(stdout.contains("kind: Deployment"), "{stdout}");
    // The same bytes as the development build gives.
    let reference = common::stdout_of(&common::run(&[
        "render",
        "-f",
        "examples/servers/filesystem-stdio.yaml",
    ]));
    assert_eq!(stdout, reference);
    // Names resolve without NSS libraries: distroless static has /etc/hosts, /etc/resolv.conf and
    // the CA bundle, nothing else. A listener on loopback, named in /etc/hosts, gets the
    // request `report` sends to the API server it names.
    std::fs::create_dir_all(root.path().join("etc/ssl/certs")).unwrap();
    std::fs::copy(
        "/etc/ssl/certs/ca-certificates.crt",
        root.path().join("etc/ssl/certs/ca-certificates.crt"),
    )
    .unwrap();
    std::fs::write(root.path().join("etc/hosts"), "127.0.0.1 apiserver.test\n").unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::fs::write(
        root.path().join("kubeconfig"),
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
             clusters: [{{name: c, cluster: {{server: \"http://apiserver.test:{port}\"}}}}]\n\
             users: [{{name: u, user: {{token: t}}}}]\n\
             contexts: [{{name: c, context: {{cluster: c, user: u}}}}]\n"
        ),
    )
    .unwrap();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = [0u8; 4096];
        let read = stream.read(&mut request).unwrap();
        let _ = stream
            .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        String::from_utf8_lossy(&request[..read]).to_string()
    });
    let report = in_root(&["report", "--kubeconfig", "/kubeconfig"]);
    // Had `report` not connected, this empty connection ends the wait (and the test fails).
    let _ = std::net::TcpStream::connect(("127.0.0.1", port));
    let request = server.join().unwrap();
    assert!(
        request.starts_with("GET /apis/mcp-operator.dev/v1alpha1/mcpservers"),
        "{request}\nreport said: {}",
        String::from_utf8_lossy(&report.stderr)
    );

    // The CRDs print too: nothing reads files the image lacks.
    let crds = in_root(&["crdgen"]);
    assert_eq!(
        common::stdout_of(&crds),
        common::stdout_of(&common::run(&["crdgen"]))
    );
}

#[test]
fn the_dockerfile_builds_the_static_binary_into_a_distroless_non_root_image() {
    let dockerfile = std::fs::read_to_string(common::repo().join("Dockerfile")).unwrap();
    let stages: Vec<&str> = dockerfile.split("\nFROM ").skip(1).collect();
    assert_eq!(
        stages.len(),
        2,
        "multi-stage: a build stage and a runtime stage"
    );
    assert!(
        stages[0].contains("scripts/build-static.sh"),
        "the build stage builds the static binary"
    );
    let runtime = stages[1];
    assert!(
        runtime.starts_with("gcr.io/distroless/static")
            && runtime.lines().next().unwrap().ends_with(":nonroot"),
        "distroless static, nonroot: {}",
        runtime.lines().next().unwrap()
    );
    assert!(
        !runtime.contains("\nRUN "),
        "the runtime stage has no shell to run anything"
    );
    assert!(runtime.contains("COPY --from=build /out/mcp-operator /usr/local/bin/mcp-operator"));
    assert!(runtime.contains("\nUSER 65532:65532"));
    // Exec form: no shell wraps the entrypoint, and `args` of a pod replace only CMD.
    assert!(runtime.contains("\nENTRYPOINT [\"/usr/local/bin/mcp-operator\"]"));
    // The user is the one the chart's pod security context names.
    let deployment =
        std::fs::read_to_string(common::chart_dir().join("templates/deployment.yaml")).unwrap();
    assert!(deployment.contains("runAsUser: 65532"));
}
