//! The `mcp-operator` binary: parses flags and hands over to the library. No logic of its own.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mcp_operator::builders::{BuildContext, DEFAULT_GATEWAY_IMAGE, DEFAULT_OPERATOR_NAMESPACE};
use mcp_operator::offline::{self, OutputFormat};

#[derive(Parser)]
#[command(
    name = "mcp-operator",
    version,
    about = "Runs and governs Model Context Protocol servers on Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions of MCPServer, MCPPolicy and MCPPromptVersion as a YAML stream.
    Crdgen {
        /// Write one file per CRD (`<plural>.<group>.yaml`) into this directory instead of printing.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// Print every Kubernetes object the operator would create for the manifests given, without a cluster.
    Render {
        /// Manifest file or directory (read recursively), or `-` for standard input; repeat for more.
        #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
        files: Vec<PathBuf>,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Yaml)]
        output: OutputFormat,
        /// Namespace of namespaced manifests that name none.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// Image of the gateway sidecar and stdio wrapper.
        #[arg(long, default_value = DEFAULT_GATEWAY_IMAGE)]
        gateway_image: String,
        /// Namespace the operator runs in (allowed to reach the gateways' admin port).
        #[arg(long, default_value = DEFAULT_OPERATOR_NAMESPACE)]
        operator_namespace: String,
    },
    /// Copy this binary into DIR (the init container of stdio servers runs this).
    InstallGateway {
        /// Destination directory.
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crdgen { out_dir } => finish(mcp_operator::crdgen::run(out_dir.as_deref()), 1),
        Command::Render {
            files,
            output,
            namespace,
            gateway_image,
            operator_namespace,
        } => {
            let ctx = BuildContext {
                gateway_image,
                operator_namespace,
                ..BuildContext::default()
            };
            let result = offline::load_manifests(&files, &namespace)
                .and_then(|set| offline::render(&set, &ctx))
                .and_then(|rendered| {
                    for warning in rendered.iter().flat_map(|r| &r.warnings) {
                        eprintln!("warning: {warning}");
                    }
                    offline::format_objects(&rendered, output)
                });
            match result {
                Ok(text) => print_stdout(&text),
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
                }
            }
        }
        Command::InstallGateway { to } => finish(mcp_operator::crdgen::install_binary(&to), 1),
    }
}

fn finish<E: std::fmt::Display>(result: Result<Option<String>, E>, code: u8) -> ExitCode {
    match result {
        Ok(Some(text)) => print_stdout(&text),
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(code)
        }
    }
}

fn print_stdout(text: &str) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`| head`) is not an error worth a message.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot write the output: {e}");
            ExitCode::from(1)
        }
    }
}
