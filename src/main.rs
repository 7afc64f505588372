//! The `mcp-operator` binary: parses flags and hands over to the library. No logic of its own.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use std::time::Duration;

use mcp_operator::builders::{
    BuildContext, DEFAULT_GATEWAY_IMAGE, DEFAULT_OPERATOR_NAMESPACE, GatewayResourceDefaults,
};
use mcp_operator::controller::inventory::InventorySettings;
use mcp_operator::controller::leader::LeaseConfig;
use mcp_operator::controller::{self, ControllerConfig, ControllerError};
use mcp_operator::offline::check::{self, CheckFormat};
use mcp_operator::offline::{self, OutputFormat};
use mcp_operator::report::{self, ReportFormat};
use mcp_operator::telemetry::{self, LogFormat};

/// jemalloc: with tens of thousands of small cached objects, glibc's per-thread arenas keep
/// much more memory resident (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
        #[command(flatten)]
        defaults: ClusterDefaults,
    },
    /// Evaluate the governance rules on manifest files, without a cluster. Exit code 0: no
    /// enforced rule fails; 1: an enforced rule fails; 2: the input is invalid.
    Check {
        /// Manifest file or directory (read recursively), or `-` for standard input; repeat for more.
        #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
        files: Vec<PathBuf>,
        /// Report format (`json` and `sarif` are described in docs/check.md).
        #[arg(long, value_enum, default_value_t = CheckFormat::Text)]
        format: CheckFormat,
        /// Namespace of namespaced manifests that name none.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
    /// The governance state of the MCPServers in a cluster: compliance, failing rules, quarantined tools.
    Report {
        /// Kubeconfig file; without it, the in-cluster configuration or $KUBECONFIG is used.
        #[arg(long, value_name = "PATH")]
        kubeconfig: Option<PathBuf>,
        /// Only this namespace (default: all namespaces).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
        format: ReportFormat,
    },
    /// Run the reconcile loops against a cluster (leader-elected, so two replicas are safe).
    Controller(ControllerArgs),
    /// Run the MCP gateway in front of one server (sidecar, stdio wrapper, or on a laptop).
    Gateway(GatewayArgs),
    /// Copy this binary into DIR (the init container of stdio servers runs this).
    InstallGateway {
        /// Destination directory.
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
    },
}

#[derive(clap::Args)]
struct ControllerArgs {
    /// Kubeconfig file; without it, the in-cluster configuration or $KUBECONFIG is used.
    #[arg(long, value_name = "PATH")]
    kubeconfig: Option<PathBuf>,
    /// Manage MCPServers only in this namespace; repeat for more (default: all namespaces).
    #[arg(long = "namespace", value_name = "NAMESPACE")]
    namespaces: Vec<String>,
    /// Manage only MCPServers matching this label selector (to run shards).
    #[arg(long, value_name = "SELECTOR")]
    selector: Option<String>,
    /// Image of the gateway sidecar and stdio wrapper.
    #[arg(long, env = "MCP_OPERATOR_GATEWAY_IMAGE", default_value = DEFAULT_GATEWAY_IMAGE)]
    gateway_image: String,
    /// Namespace the operator runs in: holds the leader Lease, and may reach the gateways' admin port.
    #[arg(long, env = "POD_NAMESPACE", default_value = DEFAULT_OPERATOR_NAMESPACE)]
    operator_namespace: String,
    /// This replica's name in the Lease and in Events.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Elect a leader with a Lease (turn off only when a single replica runs).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// How long the leader Lease stays valid without renewal, in seconds.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..=600))]
    lease_duration_seconds: u64,
    /// How often the leader renews the Lease, in seconds (must be below the lease duration).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    lease_renew_seconds: u64,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics_addr: std::net::SocketAddr,
    /// Reconciles running at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=512))]
    concurrency: u16,
    /// Seconds between two reads of every running gateway's live tool inventory (status.tools,
    /// ToolsVerified); a completed rollout is read at once.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    inventory_period_seconds: u64,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Serve the validating admission webhook (HTTPS, POST /validate) on this address; every
    /// replica serves it. Needs --webhook-cert and --webhook-key.
    #[arg(long, value_name = "ADDR", requires_all = ["webhook_cert", "webhook_key"])]
    webhook_listen: Option<std::net::SocketAddr>,
    /// PEM certificate chain of the webhook (read again when it changes).
    #[arg(long, value_name = "PATH", requires = "webhook_listen")]
    webhook_cert: Option<PathBuf>,
    /// PEM private key of the webhook.
    #[arg(long, value_name = "PATH", requires = "webhook_listen")]
    webhook_key: Option<PathBuf>,
    #[command(flatten)]
    defaults: ClusterDefaults,
}

/// Cluster facts and defaults no MCPServer states (the same for `render` and the controller).
#[derive(clap::Args)]
struct ClusterDefaults {
    /// Namespace of the cluster DNS pods: the servers' NetworkPolicies allow DNS to them.
    #[arg(long, value_name = "NAMESPACE", default_value = "kube-system")]
    dns_namespace: String,
    /// Labels of the cluster DNS pods (`key=value[,key=value]`).
    #[arg(long, value_name = "LABELS", default_value = "k8s-app=kube-dns", value_parser = parse_labels)]
    dns_pod_labels: BTreeMap<String, String>,
    /// cpu request of the gateway container where a server's spec.gateway.resources sets none.
    #[arg(long, value_name = "QUANTITY", default_value = "50m", value_parser = parse_quantity_flag)]
    gateway_cpu_request: String,
    /// memory request of the gateway container where a server sets none.
    #[arg(long, value_name = "QUANTITY", default_value = "64Mi", value_parser = parse_quantity_flag)]
    gateway_memory_request: String,
    /// cpu limit of the gateway container where a server sets none.
    #[arg(long, value_name = "QUANTITY", default_value = "500m", value_parser = parse_quantity_flag)]
    gateway_cpu_limit: String,
    /// memory limit of the gateway container where a server sets none.
    #[arg(long, value_name = "QUANTITY", default_value = "256Mi", value_parser = parse_quantity_flag)]
    gateway_memory_limit: String,
}

impl ClusterDefaults {
    fn context(self, gateway_image: String, operator_namespace: String) -> BuildContext {
        let mut gateway_resources = GatewayResourceDefaults::default();
        gateway_resources.requests[0] = self.gateway_cpu_request;
        gateway_resources.requests[1] = self.gateway_memory_request;
        gateway_resources.limits[0] = self.gateway_cpu_limit;
        gateway_resources.limits[1] = self.gateway_memory_limit;
        BuildContext {
            gateway_image,
            operator_namespace,
            dns_namespace: self.dns_namespace,
            dns_pod_labels: self.dns_pod_labels,
            gateway_resources,
        }
    }
}

fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    text.split(',')
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                Ok((key.trim().to_string(), value.trim().to_string()))
            }
            _ => Err(format!(
                "{pair:?} is not key=value (expected e.g. k8s-app=kube-dns)"
            )),
        })
        .collect()
}

fn parse_quantity_flag(text: &str) -> Result<String, String> {
    match mcp_operator::api::quantity::canonical_quantity(text) {
        Some(canonical) if !canonical.starts_with('-') => Ok(canonical),
        _ => Err(format!(
            "{text:?} is not a Kubernetes quantity (expected e.g. 50m, 1, 256Mi)"
        )),
    }
}

#[derive(clap::Args)]
struct GatewayArgs {
    /// The gateway configuration document (what the operator renders into the gateway ConfigMap).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address MCP clients connect to (overrides `listen`).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Address of /healthz, /readyz, /metrics and /inventory (overrides `adminListen`).
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<String>,
    /// URL of a streamable-HTTP MCP server to front (overrides `upstream`).
    #[arg(long, value_name = "URL")]
    upstream: Option<String>,
    /// Listen on a non-loopback address although no authentication is configured.
    #[arg(long)]
    allow_unauthenticated: bool,
    /// Longest wait for the server to start answering a request, in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    upstream_timeout_seconds: u64,
    /// Append audit lines to this file instead of standard output.
    #[arg(long, value_name = "PATH")]
    audit_log: Option<PathBuf>,
    /// Threads serving MCP clients (default: the CPUs this process may use).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    worker_threads: Option<u16>,
    /// After a request starts or ends, keep polling for the next event up to this long before
    /// sleeping, yielding the CPU to any other thread that wants it: lower latency for
    /// back-to-back requests at the cost of CPU time (counted against a CPU limit). Each thread
    /// adapts its window to the gaps it sees: waits longer than this cost almost no polling. A
    /// thread that has just served two requests at once does not poll for 10 ms. 0 turns it off.
    /// Default: 100 unless a CPU quota (cgroup) is below one CPU per serving thread plus one,
    /// then off
    #[arg(long, value_name = "MICROSECONDS",
          value_parser = clap::value_parser!(u16).range(0..=i64::from(mcp_operator::gateway::busy_poll::MAX_BUSY_POLL_MICROSECONDS)))]
    busy_poll_microseconds: Option<u16>,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Spawn the stdio MCP server given after `--` and bridge it to streamable HTTP.
    #[arg(long, requires = "command")]
    stdio: bool,
    /// The stdio server's program and arguments (`--stdio -- PROGRAM ARGS...`).
    #[arg(last = true, value_name = "COMMAND", requires = "stdio")]
    command: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Controller(args) => run_async(controller(args)),
        Command::Gateway(args) => run_async(gateway(args)),
        Command::Crdgen { out_dir } => finish(mcp_operator::crdgen::run(out_dir.as_deref()), 1),
        Command::Render {
            files,
            output,
            namespace,
            gateway_image,
            operator_namespace,
            defaults,
        } => {
            let ctx = defaults.context(gateway_image, operator_namespace);
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
        Command::Check {
            files,
            format,
            namespace,
        } => {
            let result = offline::load_manifests(&files, &namespace)
                .and_then(|set| check::check(&set, &BuildContext::default()))
                .and_then(|servers| {
                    check::format_report(&servers, format).map(|text| (text, servers))
                });
            match result {
                Ok((text, servers)) => {
                    let printed = print_stdout(&text);
                    if printed != ExitCode::SUCCESS {
                        return printed;
                    }
                    ExitCode::from(check::exit_code(&servers))
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(check::EXIT_INVALID_INPUT)
                }
            }
        }
        Command::Report {
            kubeconfig,
            namespace,
            format,
        } => run_async(async move {
            let (client, url) = kube_client(kubeconfig.as_deref()).await?;
            let servers = report::fetch(client, namespace.as_deref())
                .await
                .map_err(|e| format!("cannot list MCPServers at {url}: {e}"))?;
            let text = report::format(&report::rows(&servers), format)
                .map_err(|e| format!("cannot format the report: {e}"))?;
            if print_stdout(&text) == ExitCode::SUCCESS {
                Ok(())
            } else {
                Err("the report could not be written".into())
            }
        }),
        Command::InstallGateway { to } => finish(mcp_operator::crdgen::install_binary(&to), 1),
    }
}

fn run_async(task: impl std::future::Future<Output = Result<(), String>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
    }
}

async fn controller(args: ControllerArgs) -> Result<(), String> {
    if args.lease_renew_seconds >= args.lease_duration_seconds {
        return Err(format!(
            "--lease-renew-seconds ({}) must be below --lease-duration-seconds ({})",
            args.lease_renew_seconds, args.lease_duration_seconds
        ));
    }
    let _telemetry =
        telemetry::init("mcp-operator-controller", args.log_format).map_err(|e| e.to_string())?;
    let _webhook = match (args.webhook_listen, args.webhook_cert, args.webhook_key) {
        (Some(addr), Some(cert), Some(key)) => {
            let (bound, task) =
                controller::webhook::serve(addr, controller::webhook::WebhookTls { cert, key })
                    .await
                    .map_err(|e| e.to_string())?;
            tracing::info!(%bound, "serving the admission webhook");
            Some(task)
        }
        _ => None,
    };
    let (client, cluster_url) = kube_client(args.kubeconfig.as_deref()).await?;
    let identity = args
        .identity
        .unwrap_or_else(|| format!("mcp-operator-{}", std::process::id()));
    let config = ControllerConfig {
        client,
        namespaces: args.namespaces,
        server_selector: args.selector,
        build: args
            .defaults
            .context(args.gateway_image, args.operator_namespace.clone()),
        lease: args.leader_elect.then(|| LeaseConfig {
            namespace: args.operator_namespace.clone(),
            name: "mcp-operator-leader".into(),
            identity: identity.clone(),
            lease_duration: Duration::from_secs(args.lease_duration_seconds),
            renew_interval: Duration::from_secs(args.lease_renew_seconds),
        }),
        metrics_addr: Some(args.metrics_addr),
        concurrency: args.concurrency,
        crd_wait: Duration::from_secs(30),
        instance: identity,
        clock: controller::system_clock,
        metrics: Default::default(),
        inventory: Some(InventorySettings {
            period: Duration::from_secs(args.inventory_period_seconds),
            ..InventorySettings::default()
        }),
    };
    controller::run(config, shutdown_signal())
        .await
        .map_err(|e| match e {
            ControllerError::Unreachable(reason) => {
                format!("cannot reach the Kubernetes API server at {cluster_url}: {reason}")
            }
            other => other.to_string(),
        })
}

/// A client from `--kubeconfig`, or the usual inference (in-cluster, then $KUBECONFIG).
async fn kube_client(
    kubeconfig: Option<&std::path::Path>,
) -> Result<(kube::Client, String), String> {
    let mut config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("cannot read kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| format!("kubeconfig {} is unusable: {e}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| format!("no Kubernetes configuration found (give --kubeconfig): {e}"))?,
    };
    config.connect_timeout = Some(Duration::from_secs(5));
    let url = config.cluster_url.to_string();
    let client = kube::Client::try_from(config)
        .map_err(|e| format!("cannot create a Kubernetes client: {e}"))?;
    Ok((client, url))
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn gateway(args: GatewayArgs) -> Result<(), String> {
    let _telemetry =
        telemetry::init("mcp-operator-gateway", args.log_format).map_err(|e| e.to_string())?;
    let options = mcp_operator::gateway::GatewayOptions {
        config: args.config,
        listen: args.listen,
        admin_listen: args.admin_listen,
        upstream: args.upstream,
        stdio: if args.stdio { args.command } else { Vec::new() },
        allow_unauthenticated: args.allow_unauthenticated,
        upstream_timeout: Duration::from_secs(args.upstream_timeout_seconds),
        audit_log: args.audit_log,
        worker_threads: args.worker_threads.map(usize::from),
        busy_poll: args
            .busy_poll_microseconds
            .map(|micros| Duration::from_micros(u64::from(micros))),
    };
    mcp_operator::gateway::run(options, shutdown_signal())
        .await
        .map_err(|e| e.to_string())
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
