//! The offline path: read manifest files, admit them as the API server would, and run the same
//! builders the controller runs. Used by `render` (and, later, `check`).

pub mod check;
pub mod load;

use std::collections::BTreeMap;
use std::path::PathBuf;

use kube::ResourceExt;
use serde_json::Value;

use crate::api::{MCPPolicy, MCPPromptVersion, MCPServer};
use crate::builders::{self, BuildContext, DesiredState, ServerInputs};
use crate::validation::{Admission, Manifest};

use self::load::{InputProblem, Origin, read_documents};

/// Label the API server puts on every namespace with its own name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Why an offline run failed.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// The input is wrong; every problem is listed (exit code 2).
    #[error("{} problem(s) in the input:\n{}", .0.len(), .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Input(Vec<InputProblem>),
    /// The crate's own CRD schemas do not compile (a bug).
    #[error(transparent)]
    Schema(#[from] crate::validation::schema::SchemaCompileError),
    /// Building a server's objects failed.
    #[error("{origin}: {source}")]
    Build {
        origin: Origin,
        #[source]
        source: builders::BuildError,
    },
    /// Writing the output failed.
    #[error("cannot format the output: {0}")]
    Output(String),
}

impl OfflineError {
    /// Process exit code: 2 for bad input, 1 for anything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            OfflineError::Input(_) => 2,
            _ => 1,
        }
    }
}

/// A typed object and where it came from.
#[derive(Clone, Debug)]
pub struct Located<T> {
    pub object: T,
    pub origin: Origin,
}

/// Every admitted manifest of a run.
#[derive(Clone, Debug, Default)]
pub struct ManifestSet {
    pub servers: Vec<Located<MCPServer>>,
    pub policies: Vec<Located<MCPPolicy>>,
    pub prompt_versions: Vec<Located<MCPPromptVersion>>,
    /// Labels of the namespaces given as Namespace manifests.
    pub namespace_labels: BTreeMap<String, BTreeMap<String, String>>,
}

/// Read and admit every manifest under `paths`; namespaced objects without a namespace get
/// `default_namespace`, as `kubectl apply` would give them the context's namespace.
pub fn load_manifests(
    paths: &[PathBuf],
    default_namespace: &str,
) -> Result<ManifestSet, OfflineError> {
    let documents = read_documents(paths).map_err(OfflineError::Input)?;
    let admission = Admission::new()?;
    let mut set = ManifestSet::default();
    let mut problems = Vec::new();
    let mut seen: BTreeMap<String, Origin> = BTreeMap::new();
    for doc in &documents {
        let origin = Origin::document(doc);
        let identity = describe_object(&doc.value, default_namespace);
        match admission.admit(&doc.value) {
            Err(errors) => problems.extend(errors.into_iter().map(|e| InputProblem {
                origin: origin.clone(),
                object: identity.clone(),
                path: e.path,
                message: e.message,
            })),
            Ok(manifest) => {
                if let Some(id) = &identity
                    && let Some(first) = seen.insert(id.clone(), origin.clone())
                {
                    problems.push(InputProblem {
                        origin: origin.clone(),
                        object: identity.clone(),
                        path: "metadata.name".into(),
                        message: format!(
                            "the same object is already defined at {first}: each object once"
                        ),
                    });
                    continue;
                }
                add_manifest(&mut set, manifest, origin, default_namespace);
            }
        }
    }
    if problems.is_empty() {
        Ok(set)
    } else {
        problems.sort();
        Err(OfflineError::Input(problems))
    }
}

fn add_manifest(
    set: &mut ManifestSet,
    manifest: Manifest,
    origin: Origin,
    default_namespace: &str,
) {
    match manifest {
        Manifest::Server(s) => {
            let mut s = *s;
            s.metadata
                .namespace
                .get_or_insert_with(|| default_namespace.to_string());
            set.servers.push(Located { object: s, origin });
        }
        Manifest::Policy(p) => {
            let mut p = *p;
            // Cluster-scoped: the API server drops a namespace given here.
            p.metadata.namespace = None;
            set.policies.push(Located { object: p, origin });
        }
        Manifest::PromptVersion(p) => {
            let mut p = *p;
            p.metadata
                .namespace
                .get_or_insert_with(|| default_namespace.to_string());
            set.prompt_versions.push(Located { object: p, origin });
        }
        Manifest::Namespace { name, labels } => {
            set.namespace_labels.insert(name, labels);
        }
    }
}

/// `Kind namespace/name` of a document, for messages and duplicate detection.
fn describe_object(value: &Value, default_namespace: &str) -> Option<String> {
    let kind = value.get("kind")?.as_str()?;
    let metadata = value.get("metadata")?;
    let name = metadata.get("name")?.as_str()?;
    let cluster_scoped = matches!(kind, "MCPPolicy" | "Namespace");
    if cluster_scoped {
        Some(format!("{kind} {name}"))
    } else {
        let namespace = metadata
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or(default_namespace);
        Some(format!("{kind} {namespace}/{name}"))
    }
}

impl ManifestSet {
    /// Labels of `namespace`: those declared in a Namespace manifest plus the name label the
    /// API server always sets.
    pub fn labels_of_namespace(&self, namespace: &str) -> BTreeMap<String, String> {
        let mut labels = self
            .namespace_labels
            .get(namespace)
            .cloned()
            .unwrap_or_default();
        labels.insert(NAMESPACE_NAME_LABEL.into(), namespace.into());
        labels
    }

    /// The policies that select `server`, by name.
    pub fn policies_for(&self, server: &MCPServer) -> Vec<&MCPPolicy> {
        let namespace_labels = self.labels_of_namespace(&server.namespace().unwrap_or_default());
        let mut selected: Vec<&MCPPolicy> = self
            .policies
            .iter()
            .map(|p| &p.object)
            .filter(|p| p.selects(&namespace_labels, server.labels()))
            .collect();
        selected.sort_by_key(|p| p.name_any());
        selected
    }

    /// The servers in namespace/name order.
    pub fn servers_in_order(&self) -> Vec<&Located<MCPServer>> {
        let mut servers: Vec<&Located<MCPServer>> = self.servers.iter().collect();
        servers.sort_by_key(|s| (s.object.namespace(), s.object.name_any()));
        servers
    }

    /// The prompt versions of `namespace`.
    pub fn prompt_versions_in(&self, namespace: &str) -> Vec<MCPPromptVersion> {
        self.prompt_versions
            .iter()
            .filter(|p| p.object.namespace().as_deref() == Some(namespace))
            .map(|p| p.object.clone())
            .collect()
    }
}

/// What `render` produced for one server.
#[derive(Clone, Debug)]
pub struct RenderedServer {
    /// `namespace/name`.
    pub server: String,
    pub desired: DesiredState,
    /// Things the user should know that do not stop the render.
    pub warnings: Vec<String>,
}

/// Build every server's desired state, in namespace/name order.
pub fn render(set: &ManifestSet, ctx: &BuildContext) -> Result<Vec<RenderedServer>, OfflineError> {
    set.servers_in_order()
        .into_iter()
        .map(|located| render_server(set, located, ctx))
        .collect()
}

/// Build one server's desired state with the policies and prompt versions of `set`.
fn render_server(
    set: &ManifestSet,
    located: &Located<MCPServer>,
    ctx: &BuildContext,
) -> Result<RenderedServer, OfflineError> {
    let server = &located.object;
    let namespace = server.namespace().unwrap_or_default();
    let policies = set.policies_for(server);
    let prompt_versions = set.prompt_versions_in(&namespace);
    let desired = builders::build(
        ServerInputs {
            server,
            policies: &policies,
            prompt_versions: &prompt_versions,
        },
        ctx,
    )
    .map_err(|source| OfflineError::Build {
        origin: located.origin.clone(),
        source,
    })?;
    let id = format!("{namespace}/{}", server.name_any());
    let mut warnings = Vec::new();
    for outcome in &desired.prompts {
        if let Some(problem) = &outcome.problem {
            warnings.push(format!(
                "MCPServer {id}: prompt {:?}: {problem}",
                outcome.name
            ));
        } else if outcome.deprecated {
            warnings.push(format!(
                "MCPServer {id}: prompt {:?} resolved to Deprecated version {}",
                outcome.name,
                outcome.resolved_version.as_deref().unwrap_or_default()
            ));
        }
    }
    for refused in &desired.effective.egress_refused {
        warnings.push(format!(
                "MCPServer {id}: egress to {} is outside the allowed egress of the selecting policies and is left out of the NetworkPolicy",
                refused.cidr
            ));
    }
    Ok(RenderedServer {
        server: id,
        desired,
        warnings,
    })
}

/// Output formats of `render`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// A YAML stream, one document per object.
    Yaml,
    /// One `v1` `List` object.
    Json,
}

/// Format the objects of `rendered`. Same input, same bytes.
pub fn format_objects(
    rendered: &[RenderedServer],
    format: OutputFormat,
) -> Result<String, OfflineError> {
    let mut objects = Vec::new();
    for server in rendered {
        objects.extend(
            server
                .desired
                .objects()
                .map_err(|e| OfflineError::Output(e.to_string()))?,
        );
    }
    match format {
        OutputFormat::Json => {
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects});
            serde_json::to_string_pretty(&list)
                .map(|mut s| {
                    s.push('\n');
                    s
                })
                .map_err(|e| OfflineError::Output(e.to_string()))
        }
        OutputFormat::Yaml => {
            let mut out = String::new();
            for object in &objects {
                out.push_str("---\n");
                out.push_str(
                    &serde_saphyr::to_string(object)
                        .map_err(|e| OfflineError::Output(e.to_string()))?,
                );
            }
            Ok(out)
        }
    }
}
