//! The rule catalogue: every rule's stable id, severity, area, where its data comes from, whether
//! it can block, and what to change when it fails. `docs/rules.md` is generated from this table.

/// How bad a failure is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// The lowercase name used in status, reports and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

/// Where a rule's data comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The custom resource's spec.
    Resource,
    /// The rendered Pod, Service and NetworkPolicy.
    Workload,
    /// The gateway's live view of the server (`initialize`, `tools/list`).
    Live,
    /// Traffic, enforced by the gateway on every request.
    Runtime,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Self::Resource => "resource",
            Self::Workload => "workload",
            Self::Live => "live",
            Self::Runtime => "runtime",
        }
    }
}

/// Whether the operator or the gateway can prevent what the rule describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Enforce policies stop the rollout (or the gateway refuses the request).
    Block,
    /// Reported only.
    Report,
}

/// One rule of the catalogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub id: &'static str,
    pub title: &'static str,
    pub severity: Severity,
    pub sources: &'static [Source],
    pub mode: Mode,
    /// What to change when the rule fails.
    pub remediation: &'static str,
}

pub const AUTH_REQUIRED: &str = "MCP-AUTH-001";
pub const AUTH_CHALLENGE: &str = "MCP-AUTH-002";
pub const AUTH_METADATA: &str = "MCP-AUTH-003";
pub const AUTH_TOKEN_VALIDATION: &str = "MCP-AUTH-004";
pub const AUTH_NO_PASSTHROUGH: &str = "MCP-AUTH-005";
pub const AUTH_NO_WILDCARD_SCOPES: &str = "MCP-AUTH-007";
pub const AUTH_ALLOWED_ISSUER: &str = "MCP-AUTH-009";
pub const AUTHZ_DEFAULT_DENY: &str = "MCP-AUTHZ-001";
pub const TRANS_LEGACY_SSE: &str = "MCP-TRANS-004";
pub const SUPPLY_DIGEST: &str = "MCP-SUPPLY-001";
pub const SUPPLY_REGISTRY: &str = "MCP-SUPPLY-002";
pub const SUPPLY_NO_FETCH_AT_START: &str = "MCP-SUPPLY-004";
pub const POD_RESTRICTED: &str = "MCP-POD-001";
pub const POD_NO_TOKEN: &str = "MCP-POD-002";
pub const POD_HARDENED: &str = "MCP-POD-003";
pub const POD_REPLICAS: &str = "MCP-POD-004";
pub const NET_DEFAULT_DENY: &str = "MCP-NET-001";
pub const NET_EGRESS_ALLOWLIST: &str = "MCP-NET-002";
pub const SEC_NO_LITERAL_SECRETS: &str = "MCP-SEC-001";
pub const RATE_LIMITS: &str = "MCP-RATE-001";
pub const TOOL_HIDDEN_INSTRUCTIONS: &str = "MCP-TOOL-001";
pub const TOOL_INVISIBLE: &str = "MCP-TOOL-002";
pub const TOOL_EXFILTRATION: &str = "MCP-TOOL-003";
pub const TOOL_CROSS_TOOL: &str = "MCP-TOOL-004";
pub const TOOL_HYGIENE: &str = "MCP-TOOL-005";
pub const PIN_DEFINITION: &str = "MCP-PIN-001";
pub const PIN_CATALOGUE: &str = "MCP-PIN-002";
pub const PROMPT_IMMUTABLE: &str = "MCP-PROMPT-001";
pub const PROMPT_ARGUMENTS: &str = "MCP-PROMPT-002";

/// The heuristics a managed prompt's rendered messages are scanned with (H1 to H3, under
/// MCP-PROMPT-002): the ones about instructions; names and schemas do not apply to prompts.
pub const PROMPT_SCANNED: &[&str] = &[TOOL_HIDDEN_INSTRUCTIONS, TOOL_INVISIBLE, TOOL_EXFILTRATION];

/// Every rule, in id order of area.
pub const RULES: &[Rule] = &[
    Rule {
        id: AUTH_REQUIRED,
        title: "Every route reachable off-loopback requires authentication",
        severity: Severity::Critical,
        sources: &[Source::Resource],
        mode: Mode::Block,
        remediation: "Set spec.authentication (issuer and, if the issuer has no discovery document, jwksUri), or select the server with a policy whose authentication.required is true and configure it.",
    },
    Rule {
        id: AUTH_CHALLENGE,
        title: "A missing or invalid token is answered 401 with WWW-Authenticate: Bearer resource_metadata",
        severity: Severity::High,
        sources: &[Source::Runtime],
        mode: Mode::Block,
        remediation: "Nothing to configure: the gateway answers so whenever authentication is set.",
    },
    Rule {
        id: AUTH_METADATA,
        title: "Protected-resource metadata names an https resource URI and an authorization server",
        severity: Severity::High,
        sources: &[Source::Resource, Source::Runtime],
        mode: Mode::Block,
        remediation: "Use https URLs in spec.authentication.issuer, jwksUri and resource.",
    },
    Rule {
        id: AUTH_TOKEN_VALIDATION,
        title: "Tokens are checked: signature via JWKS, iss, aud, exp/nbf, lifetime; never from the query string",
        severity: Severity::Critical,
        sources: &[Source::Runtime],
        mode: Mode::Block,
        remediation: "Nothing to configure: the gateway validates every token; set maxTokenLifetimeSeconds in a policy to bound lifetimes.",
    },
    Rule {
        id: AUTH_NO_PASSTHROUGH,
        title: "The client's Authorization header never reaches the server",
        severity: Severity::Critical,
        sources: &[Source::Resource, Source::Runtime],
        mode: Mode::Block,
        remediation: "Nothing to configure: the gateway strips it. Give the server its own credentials through secretEnv.",
    },
    Rule {
        id: AUTH_NO_WILDCARD_SCOPES,
        title: "No wildcard scopes (`*`, `admin:*`) are required or granted",
        severity: Severity::Medium,
        sources: &[Source::Resource],
        mode: Mode::Block,
        remediation: "Name the exact scopes in spec.authentication.requiredScopes and the policies' requiredScopes.",
    },
    Rule {
        id: AUTH_ALLOWED_ISSUER,
        title: "The token issuer is one the selecting policies allow",
        severity: Severity::High,
        sources: &[Source::Resource],
        mode: Mode::Block,
        remediation: "Set spec.authentication.issuer to one of the policy's authentication.allowedIssuers.",
    },
    Rule {
        id: AUTHZ_DEFAULT_DENY,
        title: "Tools are denied by default: every allowed tool is covered by an authorization rule",
        severity: Severity::High,
        sources: &[Source::Resource, Source::Live, Source::Runtime],
        mode: Mode::Block,
        remediation: "Add spec.authorization rules naming who may call which tools, or a policy with authorization.defaultDeny and rules.",
    },
    Rule {
        id: TRANS_LEGACY_SSE,
        title: "The legacy HTTP+SSE transport is used only when the resource opts in",
        severity: Severity::Medium,
        sources: &[Source::Resource, Source::Runtime],
        mode: Mode::Report,
        remediation: "Move the server to streamable HTTP (transport: streamable-http) when it supports it.",
    },
    Rule {
        id: SUPPLY_DIGEST,
        title: "The image is referenced by digest (@sha256:<64 hex>)",
        severity: Severity::High,
        sources: &[Source::Resource],
        mode: Mode::Block,
        remediation: "Pin spec.image by digest: `crane digest IMAGE:TAG` (or `docker buildx imagetools inspect`) gives it; write IMAGE@sha256:<digest>.",
    },
    Rule {
        id: SUPPLY_REGISTRY,
        title: "The image comes from a registry or repository the policies allow",
        severity: Severity::High,
        sources: &[Source::Resource],
        mode: Mode::Block,
        remediation: "Mirror the image into one of the policy's workload.allowedRegistries and reference it from there.",
    },
    Rule {
        id: SUPPLY_NO_FETCH_AT_START,
        title: "Nothing is downloaded at start (npx -y, uvx, pip install, curl | sh, go run)",
        severity: Severity::High,
        sources: &[Source::Workload],
        mode: Mode::Block,
        remediation: "Build the server's code into the image and run it directly in spec.command/args.",
    },
    Rule {
        id: POD_RESTRICTED,
        title: "The pod meets the restricted Pod Security Standard",
        severity: Severity::Critical,
        sources: &[Source::Workload],
        mode: Mode::Block,
        remediation: "Run as a non-root user: set spec.securityContext.runAsUser to a UID other than 0 (the image must not need root).",
    },
    Rule {
        id: POD_NO_TOKEN,
        title: "No Kubernetes API token is mounted; a dedicated ServiceAccount is used",
        severity: Severity::High,
        sources: &[Source::Workload],
        mode: Mode::Block,
        remediation: "Nothing to configure: the operator renders automountServiceAccountToken: false and a ServiceAccount per server.",
    },
    Rule {
        id: POD_HARDENED,
        title: "Read-only root filesystem, resource limits on cpu, memory and ephemeral storage, no service links",
        severity: Severity::Medium,
        sources: &[Source::Workload],
        mode: Mode::Block,
        remediation: "Set spec.resources.limits.cpu, memory and ephemeralStorage.",
    },
    Rule {
        id: POD_REPLICAS,
        title: "Replicas lie within the policies' bounds",
        severity: Severity::Medium,
        sources: &[Source::Resource],
        mode: Mode::Block,
        remediation: "Set spec.replicas (or autoscaling minReplicas/maxReplicas) within the policy's workload.minReplicas and maxReplicas.",
    },
    Rule {
        id: NET_DEFAULT_DENY,
        title: "Default-deny NetworkPolicy for ingress and egress; ingress only to the gateway; ClusterIP Service",
        severity: Severity::Critical,
        sources: &[Source::Workload],
        mode: Mode::Block,
        remediation: "Nothing to configure: the operator renders it. Declare extra ingress peers in spec.ingress.",
    },
    Rule {
        id: NET_EGRESS_ALLOWLIST,
        title: "Egress only to DNS and declared CIDR:port pairs the policies allow",
        severity: Severity::High,
        sources: &[Source::Resource, Source::Workload],
        mode: Mode::Block,
        remediation: "Keep spec.egress within the policy's network.allowedEgress, or ask the policy owner to allow the destination.",
    },
    Rule {
        id: SEC_NO_LITERAL_SECRETS,
        title: "No literal secrets in env or args; secrets come from secretKeyRef",
        severity: Severity::High,
        sources: &[Source::Resource, Source::Workload],
        mode: Mode::Block,
        remediation: "Move the value into a Secret and reference it from spec.secretEnv.",
    },
    Rule {
        id: RATE_LIMITS,
        title: "Rate limits per caller are set",
        severity: Severity::Medium,
        sources: &[Source::Resource, Source::Runtime],
        mode: Mode::Report,
        remediation: "Set spec.gateway.rateLimit (requestsPerMinute, burst), or a policy rateLimit.",
    },
    Rule {
        id: TOOL_HIDDEN_INSTRUCTIONS,
        title: "No hidden-instruction markers in any text of a tool the model sees (H1)",
        severity: Severity::Critical,
        sources: &[Source::Live],
        mode: Mode::Block,
        remediation: "Remove the marked text from the tool (tags such as <IMPORTANT>, HTML comments, chat-template tokens, requests to ignore instructions or keep things from the user); until then the gateway hides the tool under an Enforce policy. Ask the server's publisher why it is there.",
    },
    Rule {
        id: TOOL_INVISIBLE,
        title: "No invisible, obfuscating or encoded content in tool texts (H2)",
        severity: Severity::High,
        sources: &[Source::Live],
        mode: Mode::Block,
        remediation: "Remove invisible characters (zero-width, Unicode tags, bidi controls, soft hyphens), ANSI escapes, padding runs, encoded blobs and look-alike letters from the tool's texts.",
    },
    Rule {
        id: TOOL_EXFILTRATION,
        title: "No instructions to read sensitive files or send data out (H3)",
        severity: Severity::Critical,
        sources: &[Source::Live],
        mode: Mode::Block,
        remediation: "Treat the server as compromised: the tool asks for secrets (SSH keys, cloud credentials, service-account tokens, .env, MCP client configs) or to send data to an address. Remove the server or pin a known-good image.",
    },
    Rule {
        id: TOOL_CROSS_TOOL,
        title: "No references that change how other tools behave (H4)",
        severity: Severity::High,
        sources: &[Source::Live],
        mode: Mode::Block,
        remediation: "Remove text that redirects, overrides or shadows other tools (\"instead of\", \"when X is called\", \"always use this tool\", other servers' tool names).",
    },
    Rule {
        id: TOOL_HYGIENE,
        title: "Tool names and schemas are clean: valid unique names, no look-alike names, descriptions up to 2 KiB, free-text parameters explained",
        severity: Severity::Medium,
        sources: &[Source::Live],
        mode: Mode::Block,
        remediation: "Rename tools to [A-Za-z0-9_.-]{1,128} with no duplicates or look-alikes, keep descriptions under 2 KiB, and describe parameters named sidenote, note, context, metadata, extra or debug (or remove them).",
    },
    Rule {
        id: PIN_DEFINITION,
        title: "Each tool's definition matches its approved SHA-256 (RFC 8785 canonical JSON of the whole definition)",
        severity: Severity::Critical,
        sources: &[Source::Live, Source::Resource],
        mode: Mode::Block,
        remediation: "Review the changed tool (status.tools has its live hash and why; the gateway's admin /inventory its definition); if the change is expected, set its new sha256 in spec.toolApprovals (docs/tool-approvals.md). Until then the gateway hides it under an Enforce policy with tools.pinDefinitions.",
    },
    Rule {
        id: PIN_CATALOGUE,
        title: "Every advertised tool is approved: new tools stay hidden until approved",
        severity: Severity::High,
        sources: &[Source::Live, Source::Resource],
        mode: Mode::Block,
        remediation: "Review the new tool in status.tools and add it with its sha256 to spec.toolApprovals (docs/tool-approvals.md); until then the gateway hides it under an Enforce policy with tools.pinDefinitions.",
    },
    Rule {
        id: PROMPT_IMMUTABLE,
        title: "Managed prompts are versioned and immutable: the content served under a version never changes",
        severity: Severity::Medium,
        sources: &[Source::Resource],
        mode: Mode::Report,
        remediation: "Publish changed prompt text as a new MCPPromptVersion (a new semver) instead of editing one; a version whose content differs from the hash recorded at publication (its status.contentHash) is never served. Restore the original content or delete the object.",
    },
    Rule {
        id: PROMPT_ARGUMENTS,
        title: "Managed prompts get only their declared arguments (-32602 otherwise), and what they render is scanned with H1 to H3",
        severity: Severity::Medium,
        sources: &[Source::Runtime],
        mode: Mode::Block,
        remediation: "Callers: pass every required argument as a string and no undeclared one. Prompt authors: remove hidden-instruction markers, invisible text and requests for secrets from the MCPPromptVersion's messages (a rendered prompt that trips them is refused under an Enforce policy and audited otherwise).",
    },
];

impl Rule {
    /// Whether the rule reads the running server's tools: the gateway enforces it (by hiding
    /// tools), it never blocks a rollout, and `check` cannot evaluate it offline.
    pub fn is_live(&self) -> bool {
        self.sources.contains(&Source::Live)
    }
}

/// The rule with `id`.
pub fn rule(id: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.id == id)
}

/// The rules reference page (`docs/rules.md`), generated from [`RULES`].
pub fn reference_markdown() -> String {
    let mut out = String::from(
        "# Governance rules\n\n\
         Generated from `src/governance/catalogue.rs` (a test keeps this page in sync). Rule ids are\n\
         stable. *Data*: `resource` (the custom resource), `workload` (the rendered Pod, Service\n\
         and NetworkPolicy), `live` (the gateway's view of the running server), `runtime` (checked\n\
         by the gateway on every request). *Mode*: `block` rules stop a rollout under an Enforce\n\
         policy; `report` rules are reported only. A policy can disable a rule or change its\n\
         enforcement with `overrides` (a reason is required and shows in reports).\n\n\
         | id | checks | severity | data | mode |\n|---|---|---|---|---|\n",
    );
    for rule in RULES {
        let sources: Vec<&str> = rule.sources.iter().map(|s| s.as_str()).collect();
        out.push_str(&format!(
            "| [{id}](#{anchor}) | {title} | {severity} | {sources} | {mode} |\n",
            id = rule.id,
            anchor = rule.id.to_ascii_lowercase(),
            title = rule.title.replace('|', "\\|"),
            severity = rule.severity.as_str(),
            sources = sources.join(", "),
            mode = match rule.mode {
                Mode::Block => "block",
                Mode::Report => "report",
            },
        ));
    }
    for rule in RULES {
        out.push_str(&format!(
            "\n## {id}\n\n{title}.\n\n**Fix:** {fix}\n",
            id = rule.id,
            title = rule.title,
            fix = rule.remediation
        ));
    }
    out
}
