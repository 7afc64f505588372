//! MCP over streamable HTTP, as plain functions: which protocol era a request speaks, whether a
//! POST body is one well-formed JSON-RPC message, and whether the 2026 routing headers agree with
//! the body. The facts are the specification's (2025-06-18, 2025-11-25 and 2026-07-28).
//!
//! Header names are [`HeaderName`] constants: a lookup by `&str` parses and lowercases the name
//! on every request, a lookup by `HeaderName` only hashes it.

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use base64::Engine as _;
use serde_json::{Value, json};

/// Header carrying the session id (session-based era).
pub const HEADER_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
/// Header carrying the protocol version.
pub const HEADER_PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
/// Header mirroring the JSON-RPC method (2026-07-28).
pub const HEADER_METHOD: HeaderName = HeaderName::from_static("mcp-method");
/// Header mirroring the tool, prompt or resource named by the request (2026-07-28).
pub const HEADER_NAME: HeaderName = HeaderName::from_static("mcp-name");
/// Header a client sends to resume an SSE stream.
pub const HEADER_LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");
/// W3C trace context header.
pub const HEADER_TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// W3C trace state header.
pub const HEADER_TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Media type of JSON bodies.
pub const MEDIA_JSON: &str = "application/json";
/// Media type of SSE bodies.
pub const MEDIA_SSE: &str = "text/event-stream";

/// Revisions reached through the `initialize` handshake, oldest first.
pub const HANDSHAKE_VERSIONS: &[&str] = &["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
/// Stateless revisions (per-request envelope, no sessions).
pub const STATELESS_VERSIONS: &[&str] = &["2026-07-28"];
/// The version a session-era request without `MCP-Protocol-Version` is assumed to speak.
pub const DEFAULT_HEADERLESS_VERSION: &str = "2025-03-26";
/// The newest handshake revision, which the gateway offers when it initializes a server itself.
pub const LATEST_HANDSHAKE_VERSION: &str = "2025-11-25";
/// Member of a 2026-07-28 result saying whether it is final.
pub const RESULT_TYPE: &str = "resultType";
/// `resultType` of a final result.
pub const RESULT_TYPE_COMPLETE: &str = "complete";
/// `_meta` key carrying the protocol version of a stateless request.
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";

/// JSON-RPC error codes the gateway answers with.
pub mod codes {
    /// The body is not JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// The body is JSON but not one valid JSON-RPC request, notification or response.
    pub const INVALID_REQUEST: i64 = -32600;
    /// Unknown method.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// Bad parameters: unknown tool, arguments that violate the tool's input schema.
    pub const INVALID_PARAMS: i64 = -32602;
    /// The gateway could not get an answer from the server.
    pub const INTERNAL_ERROR: i64 = -32603;
    /// The caller may not call this tool (implementation-defined range).
    pub const ACCESS_DENIED: i64 = -32001;
    /// The caller sent too many requests (implementation-defined range).
    pub const RATE_LIMITED: i64 = -32002;
    /// The server did not answer in time (implementation-defined range).
    pub const UPSTREAM_TIMEOUT: i64 = -32003;
    /// A 2026 routing header disagrees with the body.
    pub const HEADER_MISMATCH: i64 = -32020;
    /// The protocol version is not one the gateway speaks.
    pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
}

/// Methods whose name parameter is mirrored in `Mcp-Name`, and that parameter.
pub fn name_parameter(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    }
}

/// Which protocol era a request speaks, from its `MCP-Protocol-Version` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Era {
    /// Session-based (initialize handshake, `Mcp-Session-Id`).
    Sessions { version: String },
    /// Stateless (2026-07-28 and later).
    Stateless { version: String },
}

/// A request the transport refuses before looking at its body.
#[derive(Clone, Debug, PartialEq)]
pub struct Rejection {
    /// HTTP status.
    pub status: StatusCode,
    /// JSON-RPC error code, when the answer carries a JSON-RPC error.
    pub code: Option<i64>,
    /// What is wrong, for the caller.
    pub message: String,
    /// Structured error data.
    pub data: Option<Value>,
}

impl Rejection {
    /// An HTTP-only rejection (no JSON-RPC body).
    pub fn http(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code: None,
            message: message.into(),
            data: None,
        }
    }

    /// A rejection answered with a JSON-RPC error.
    pub fn rpc(status: StatusCode, code: i64, message: impl Into<String>) -> Self {
        Self {
            status,
            code: Some(code),
            message: message.into(),
            data: None,
        }
    }

    /// The same rejection with error data.
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }
}

/// The era of a request, or 400 when its version is unknown.
pub fn era(headers: &HeaderMap) -> Result<Era, Rejection> {
    let Some(raw) = headers.get(HEADER_PROTOCOL_VERSION) else {
        return Ok(Era::Sessions {
            version: DEFAULT_HEADERLESS_VERSION.to_owned(),
        });
    };
    let version = raw.to_str().unwrap_or_default();
    if STATELESS_VERSIONS.contains(&version) {
        Ok(Era::Stateless {
            version: version.to_owned(),
        })
    } else if HANDSHAKE_VERSIONS.contains(&version) {
        Ok(Era::Sessions {
            version: version.to_owned(),
        })
    } else {
        Err(unsupported_version(version))
    }
}

/// 400 / -32022 for a version the gateway does not speak, listing the ones it does.
pub fn unsupported_version(requested: &str) -> Rejection {
    let supported: Vec<&str> = HANDSHAKE_VERSIONS
        .iter()
        .chain(STATELESS_VERSIONS)
        .copied()
        .collect();
    Rejection::rpc(
        StatusCode::BAD_REQUEST,
        codes::UNSUPPORTED_PROTOCOL_VERSION,
        format!("Unsupported protocol version {requested:?}"),
    )
    .with_data(json!({ "supported": supported, "requested": requested }))
}

/// A JSON-RPC request or notification id: a string or an integer, never null.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RequestId {
    /// Integer id.
    Number(i64),
    /// String id.
    String(String),
}

impl RequestId {
    fn parse(value: &Value) -> Option<Self> {
        match value {
            Value::String(s) => Some(Self::String(s.clone())),
            Value::Number(n) => n.as_i64().map(Self::Number),
            _ => None,
        }
    }

    /// Whether `value` is this id.
    pub fn matches(&self, value: &Value) -> bool {
        match (self, value) {
            (Self::Number(n), Value::Number(v)) => v.as_i64() == Some(*n),
            (Self::String(s), Value::String(v)) => s == v,
            _ => false,
        }
    }

    /// The id as JSON.
    pub fn to_json(&self) -> Value {
        match self {
            Self::Number(n) => json!(n),
            Self::String(s) => json!(s),
        }
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::String(s) => f.write_str(s),
        }
    }
}

/// One posted JSON-RPC message.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    /// A request, which gets a response.
    Request {
        id: RequestId,
        method: String,
        params: Option<Value>,
    },
    /// A notification, which gets 202.
    Notification {
        method: String,
        params: Option<Value>,
    },
    /// A response to a request the server sent, which gets 202.
    Response { id: RequestId },
}

/// The parameter holding a tool call's or a prompt's arguments.
pub const ARGUMENTS: &str = "arguments";

impl Message {
    /// The method, for requests and notifications.
    pub fn method(&self) -> Option<&str> {
        match self {
            Self::Request { method, .. } | Self::Notification { method, .. } => Some(method),
            Self::Response { .. } => None,
        }
    }

    /// The parameters, for requests and notifications.
    pub fn params(&self) -> Option<&Value> {
        match self {
            Self::Request { params, .. } | Self::Notification { params, .. } => params.as_ref(),
            Self::Response { .. } => None,
        }
    }

    /// Take `params.arguments` out, for whoever needs them longer than the message (the audit
    /// record), so they are not copied.
    pub fn take_arguments(&mut self) -> Option<Value> {
        match self {
            Self::Request {
                params: Some(Value::Object(params)),
                ..
            }
            | Self::Notification {
                params: Some(Value::Object(params)),
                ..
            } => params.remove(ARGUMENTS),
            _ => None,
        }
    }

    /// Put back what [`Message::take_arguments`] took.
    pub fn put_arguments(&mut self, arguments: Value) {
        if let Self::Request {
            params: Some(Value::Object(params)),
            ..
        }
        | Self::Notification {
            params: Some(Value::Object(params)),
            ..
        } = self
        {
            params.insert(ARGUMENTS.to_owned(), arguments);
        }
    }

    /// The value of the parameter that names a tool, prompt or resource.
    pub fn named(&self) -> Option<&str> {
        let key = name_parameter(self.method()?)?;
        self.params()?.get(key)?.as_str()
    }
}

/// The members of a well-formed JSON-RPC request or notification, read straight into place
/// instead of into a tree first. Anything unusual (a duplicate or mistyped member, a response)
/// fails this parse and takes the general path, which says what is wrong.
#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    jsonrpc: std::borrow::Cow<'a, str>,
    #[serde(default, deserialize_with = "present")]
    id: Option<Value>,
    method: String,
    #[serde(default, deserialize_with = "present")]
    params: Option<Value>,
}

/// A member that is there, even as `null` (which `Option` alone would read as absent).
fn present<'de, D: serde::Deserializer<'de>>(from: D) -> Result<Option<Value>, D::Error> {
    serde::Deserialize::deserialize(from).map(Some)
}

impl Envelope<'_> {
    /// The message, when the envelope is valid JSON-RPC 2.0.
    fn into_message(self) -> Option<Message> {
        let params_fit = self
            .params
            .as_ref()
            .is_none_or(|p| p.is_object() || p.is_array());
        if self.jsonrpc != "2.0" || !params_fit {
            return None;
        }
        let (method, params) = (self.method, self.params);
        Some(match self.id {
            None => Message::Notification { method, params },
            Some(id) => Message::Request {
                id: RequestId::parse(&id)?,
                method,
                params,
            },
        })
    }
}

/// Parse a POST body: exactly one JSON-RPC 2.0 message.
pub fn parse_message(body: &[u8]) -> Result<Message, Rejection> {
    if let Some(message) = serde_json::from_slice::<Envelope<'_>>(body)
        .ok()
        .and_then(Envelope::into_message)
    {
        return Ok(message);
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        Rejection::rpc(
            StatusCode::BAD_REQUEST,
            codes::PARSE_ERROR,
            format!("Parse error: {e}"),
        )
    })?;
    classify(value)
}

/// Classify a parsed body as one JSON-RPC message, or say what is wrong with it.
pub fn classify(value: Value) -> Result<Message, Rejection> {
    let invalid = |what: &str| {
        Rejection::rpc(
            StatusCode::BAD_REQUEST,
            codes::INVALID_REQUEST,
            format!("Invalid Request: {what}"),
        )
    };
    let Value::Object(mut object) = value else {
        return Err(if value.is_array() {
            invalid("batches are not supported; send one JSON-RPC message per POST")
        } else {
            invalid("the body must be a JSON-RPC 2.0 object")
        });
    };
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(invalid("\"jsonrpc\" must be \"2.0\""));
    }
    let id = match object.get("id") {
        None => None,
        Some(raw) => Some(
            RequestId::parse(raw)
                .ok_or_else(|| invalid("\"id\" must be a string or an integer, not null"))?,
        ),
    };
    let params = object.remove("params");
    if let Some(p) = &params
        && !(p.is_object() || p.is_array())
    {
        return Err(invalid("\"params\" must be an object"));
    }
    match (object.remove("method"), id) {
        (Some(Value::String(method)), Some(id)) => Ok(Message::Request { id, method, params }),
        (Some(Value::String(method)), None) => Ok(Message::Notification { method, params }),
        (Some(_), _) => Err(invalid("\"method\" must be a string")),
        (None, Some(id)) if object.contains_key("result") || object.contains_key("error") => {
            Ok(Message::Response { id })
        }
        (None, _) => Err(invalid("\"method\" is missing")),
    }
}

/// Decode an `Mcp-Name` value: verbatim, or `=?base64?...?=` for values that are not plain ASCII.
pub fn decode_header_value(raw: &str) -> Option<String> {
    let Some(payload) = raw
        .strip_prefix("=?base64?")
        .and_then(|rest| rest.strip_suffix("?="))
    else {
        return Some(raw.to_owned());
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(payload)
        .ok()?;
    String::from_utf8(bytes).ok()
}

/// Check a stateless (2026) request: its headers must agree with its body, once each.
pub fn check_stateless(
    headers: &HeaderMap,
    version: &str,
    message: &Message,
) -> Result<(), Rejection> {
    let mismatch =
        |what: String| Rejection::rpc(StatusCode::BAD_REQUEST, codes::HEADER_MISMATCH, what);
    for name in [HEADER_PROTOCOL_VERSION, HEADER_METHOD, HEADER_NAME] {
        if headers.get_all(&name).iter().count() > 1 {
            return Err(mismatch(format!("{name} header appears more than once")));
        }
    }
    let Some(method) = message.method() else {
        return Ok(());
    };
    let header_method = headers.get(HEADER_METHOD).and_then(|v| v.to_str().ok());
    if header_method != Some(method) {
        return Err(mismatch(format!(
            "{HEADER_METHOD} header {:?} does not match the body's method {method:?}",
            header_method.unwrap_or("")
        )));
    }
    if let Message::Request { .. } = message {
        let meta_version = message
            .params()
            .and_then(|p| p.get("_meta"))
            .and_then(|m| m.get(META_PROTOCOL_VERSION));
        match meta_version {
            Some(Value::String(v)) if v == version => {}
            Some(Value::String(v)) => {
                return Err(mismatch(format!(
                    "{HEADER_PROTOCOL_VERSION} header {version:?} does not match _meta protocol version {v:?}"
                )));
            }
            _ => {
                return Err(Rejection::rpc(
                    StatusCode::BAD_REQUEST,
                    codes::INVALID_PARAMS,
                    format!("params._meta must carry {META_PROTOCOL_VERSION:?}"),
                ));
            }
        }
    }
    if let Some(key) = name_parameter(method)
        && let Some(body_name) = message
            .params()
            .and_then(|p| p.get(key))
            .and_then(Value::as_str)
    {
        let header_name = headers
            .get(HEADER_NAME)
            .and_then(|v| v.to_str().ok())
            .and_then(decode_header_value);
        if header_name.as_deref() != Some(body_name) {
            return Err(mismatch(format!(
                "{HEADER_NAME} header does not match the body's {key:?} parameter"
            )));
        }
    }
    Ok(())
}

/// Whether the `Accept` header allows JSON and SSE answers. Absent means anything.
pub fn accepts(headers: &HeaderMap) -> (bool, bool) {
    // Read as bytes: media ranges are ASCII, and this runs on every request.
    let mut values = headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .map(HeaderValue::as_bytes)
        .peekable();
    if values.peek().is_none() {
        return (true, true);
    }
    let mut json = false;
    let mut sse = false;
    for range in values.flat_map(|v| v.split(|b| *b == b',')) {
        let media = range
            .split(|b| *b == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        if media == b"*/*" {
            json = true;
            sse = true;
        } else if media == b"application/*" || media == MEDIA_JSON.as_bytes() {
            json = true;
        } else if media == b"text/*" || media == MEDIA_SSE.as_bytes() {
            sse = true;
        }
    }
    (json, sse)
}

/// Whether `Content-Type` says JSON.
pub fn is_json_content(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case(MEDIA_JSON))
}

/// A JSON-RPC error response.
pub fn error_response(
    id: Option<&RequestId>,
    code: i64,
    message: &str,
    data: Option<&Value>,
) -> Value {
    let mut error = json!({ "code": code, "message": message });
    if let Some(data) = data {
        error["data"] = data.clone();
    }
    json!({
        "jsonrpc": "2.0",
        "id": id.map_or(Value::Null, RequestId::to_json),
        "error": error,
    })
}

/// A JSON-RPC result response.
pub fn result_response(id: &RequestId, result: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id.to_json(), "result": result })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::header::ACCEPT;

    fn headers(pairs: &[(HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), value.parse().unwrap());
        }
        map
    }

    #[test]
    fn arguments_taken_out_and_put_back_leave_the_message_as_it_was() {
        let body = br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#;
        let original = parse_message(body).unwrap();
        let mut message = parse_message(body).unwrap();
        let arguments = message.take_arguments();
        assert_eq!(arguments, Some(json!({"text": "hi"})));
        assert_eq!(message.params(), Some(&json!({"name": "echo"})));
        assert_eq!(message.named(), Some("echo"));
        message.put_arguments(arguments.unwrap());
        assert_eq!(message.params(), original.params());
        // Nothing to take from a call without arguments or from a response.
        let mut bare = parse_message(br#"{"jsonrpc":"2.0","id":4,"method":"tools/list"}"#).unwrap();
        assert_eq!(bare.take_arguments(), None);
        let mut response = parse_message(br#"{"jsonrpc":"2.0","id":4,"result":{}}"#).unwrap();
        assert_eq!(response.take_arguments(), None);
    }

    #[test]
    fn requests_notifications_and_responses_are_told_apart() {
        let request = parse_message(br#"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#).unwrap();
        assert!(matches!(
            request,
            Message::Request {
                id: RequestId::Number(7),
                ..
            }
        ));
        let note =
            parse_message(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert!(matches!(note, Message::Notification { .. }));
        let response = parse_message(br#"{"jsonrpc":"2.0","id":"a","result":{}}"#).unwrap();
        assert_eq!(
            response,
            Message::Response {
                id: RequestId::String("a".into())
            }
        );
    }

    #[test]
    fn the_direct_parse_reads_every_message_as_the_general_one_does() {
        let bodies: &[&[u8]] = &[
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#,
            br#"{"method":"ping","id":"a\"b","jsonrpc":"2.0","extra":[1,2]}"#,
            br#"{"jsonrpc":"2.0","method":"notifications/progress","params":[1]}"#,
            br#"{"jsonrpc":"2\u002e0","id":-3,"method":"ping"}"#,
            // A repeated member: the last one counts, as in the general parse.
            br#"{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/list"}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"ping","params":null}"#,
            br#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"ping","result":{}}"#,
            br#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
            br#"{"jsonrpc":2,"id":1,"method":"ping"}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"ping"} trailing"#,
        ];
        for body in bodies {
            let general = serde_json::from_slice(body)
                .map_err(|_| codes::PARSE_ERROR)
                .and_then(|value| classify(value).map_err(|r| r.code.unwrap_or_default()));
            let direct = parse_message(body).map_err(|r| r.code.unwrap_or_default());
            assert_eq!(direct, general, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn malformed_bodies_get_the_specified_codes() {
        let cases: &[(&[u8], i64)] = &[
            (b"{not json", codes::PARSE_ERROR),
            (
                br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
                codes::INVALID_REQUEST,
            ),
            (
                br#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
                codes::INVALID_REQUEST,
            ),
            (
                br#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
                codes::INVALID_REQUEST,
            ),
            (
                br#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#,
                codes::INVALID_REQUEST,
            ),
            (
                br#"{"jsonrpc":"2.0","id":1,"method":3}"#,
                codes::INVALID_REQUEST,
            ),
            (
                br#"{"jsonrpc":"2.0","id":1,"method":"ping","params":"x"}"#,
                codes::INVALID_REQUEST,
            ),
            (br#"{"jsonrpc":"2.0","id":1}"#, codes::INVALID_REQUEST),
            (b"42", codes::INVALID_REQUEST),
        ];
        for (body, code) in cases {
            let rejection = parse_message(body).unwrap_err();
            assert_eq!(
                rejection.code,
                Some(*code),
                "{}",
                String::from_utf8_lossy(body)
            );
            assert_eq!(rejection.status, StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn era_follows_the_version_header() {
        assert_eq!(
            era(&HeaderMap::new()).unwrap(),
            Era::Sessions {
                version: "2025-03-26".into()
            }
        );
        assert!(matches!(
            era(&headers(&[(HEADER_PROTOCOL_VERSION, "2026-07-28")])).unwrap(),
            Era::Stateless { .. }
        ));
        let unknown = era(&headers(&[(HEADER_PROTOCOL_VERSION, "1999-01-01")])).unwrap_err();
        assert_eq!(unknown.code, Some(codes::UNSUPPORTED_PROTOCOL_VERSION));
        assert_eq!(unknown.data.unwrap()["requested"], "1999-01-01");
    }

    #[test]
    fn stateless_headers_must_match_the_body() {
        let call = parse_message(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
        )
        .unwrap();
        let good = headers(&[
            (HEADER_PROTOCOL_VERSION, "2026-07-28"),
            (HEADER_METHOD, "tools/call"),
            (HEADER_NAME, "echo"),
        ]);
        check_stateless(&good, "2026-07-28", &call).unwrap();
        let encoded = headers(&[
            (HEADER_PROTOCOL_VERSION, "2026-07-28"),
            (HEADER_METHOD, "tools/call"),
            (HEADER_NAME, "=?base64?ZWNobw==?="),
        ]);
        check_stateless(&encoded, "2026-07-28", &call).unwrap();
        for bad in [
            headers(&[(HEADER_METHOD, "tools/list"), (HEADER_NAME, "echo")]),
            headers(&[(HEADER_METHOD, "tools/call"), (HEADER_NAME, "other")]),
            headers(&[(HEADER_METHOD, "tools/call")]),
            headers(&[
                (HEADER_METHOD, "tools/call"),
                (HEADER_METHOD, "tools/call"),
                (HEADER_NAME, "echo"),
            ]),
        ] {
            let rejection = check_stateless(&bad, "2026-07-28", &call).unwrap_err();
            assert_eq!(rejection.code, Some(codes::HEADER_MISMATCH));
        }
        let other_version = check_stateless(&good, "2026-12-01", &call).unwrap_err();
        assert_eq!(other_version.code, Some(codes::HEADER_MISMATCH));
    }

    #[test]
    fn accept_header_ranges() {
        assert_eq!(accepts(&HeaderMap::new()), (true, true));
        assert_eq!(
            accepts(&headers(&[(ACCEPT, "application/json, text/event-stream")])),
            (true, true)
        );
        assert_eq!(accepts(&headers(&[(ACCEPT, "text/html")])), (false, false));
        assert_eq!(
            accepts(&headers(&[(ACCEPT, "application/json;q=0.9")])),
            (true, false)
        );
    }
}
