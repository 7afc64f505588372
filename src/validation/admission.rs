//! Validating admission (`admission.k8s.io/v1` AdmissionReview): the checks the CRD schema and
//! CEL cannot express (a placeholder naming no declared argument, duplicate environment
//! variables, invalid globs ...), answered for the API server. Pure: the review in, the answer
//! out; serving it over HTTPS is the caller's part.

use serde_json::{Value, json};

use super::FieldError;
use super::semantic::{check_policy, check_prompt_version, check_server};
use crate::api::policy::MCPPolicySpec;
use crate::api::prompt::MCPPromptVersionSpec;
use crate::api::server::MCPServerSpec;

/// `apiVersion` of the reviews answered.
pub const ADMISSION_API_VERSION: &str = "admission.k8s.io/v1";

/// Why a body is not a review that can be answered (HTTP 400).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("expected an AdmissionReview {ADMISSION_API_VERSION} with request.uid")]
    NotAReview,
}

/// Answer one AdmissionReview: allowed, or refused with every problem and its field.
pub fn review(body: &[u8]) -> Result<Value, AdmissionError> {
    let review: Value =
        serde_json::from_slice(body).map_err(|e| AdmissionError::NotJson(e.to_string()))?;
    if review.get("apiVersion").and_then(Value::as_str) != Some(ADMISSION_API_VERSION) {
        return Err(AdmissionError::NotAReview);
    }
    let request = review.get("request").ok_or(AdmissionError::NotAReview)?;
    let uid = request
        .get("uid")
        .and_then(Value::as_str)
        .ok_or(AdmissionError::NotAReview)?;
    let kind = request
        .pointer("/kind/kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let problems = match request.get("object").filter(|o| !o.is_null()) {
        // DELETE and CONNECT carry no object: nothing to check.
        None => Vec::new(),
        Some(object) => problems_of(kind, object),
    };
    let response = if problems.is_empty() {
        json!({"uid": uid, "allowed": true})
    } else {
        let name = request
            .get("name")
            .and_then(Value::as_str)
            .or_else(|| {
                request
                    .pointer("/object/metadata/name")
                    .and_then(Value::as_str)
            })
            .unwrap_or_default();
        let message = format!(
            "{kind} {name:?} is invalid: {}",
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        );
        json!({"uid": uid, "allowed": false,
               "status": {"code": 422, "reason": "Invalid", "message": message}})
    };
    Ok(
        json!({"apiVersion": ADMISSION_API_VERSION, "kind": "AdmissionReview", "response": response}),
    )
}

/// The problems of one object of `kind`; kinds not ours pass.
fn problems_of(kind: &str, object: &Value) -> Vec<FieldError> {
    let spec = object.get("spec").cloned().unwrap_or(Value::Null);
    let unreadable = |e: serde_json::Error| vec![FieldError::new("spec", e.to_string())];
    match kind {
        "MCPServer" => serde_json::from_value::<MCPServerSpec>(spec)
            .map_or_else(unreadable, |s| check_server(&s)),
        "MCPPolicy" => serde_json::from_value::<MCPPolicySpec>(spec)
            .map_or_else(unreadable, |s| check_policy(&s)),
        "MCPPromptVersion" => serde_json::from_value::<MCPPromptVersionSpec>(spec)
            .map_or_else(unreadable, |s| check_prompt_version(&s)),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(kind: &str, object: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({"apiVersion": ADMISSION_API_VERSION, "kind": "AdmissionReview",
            "request": {"uid": "705ab4f5", "kind": {"group": "mcp-operator.dev", "version": "v1alpha1", "kind": kind},
                        "operation": "CREATE", "name": "p", "object": object}}))
        .unwrap()
    }

    #[test]
    fn a_placeholder_naming_no_argument_is_refused_with_its_field() {
        let answer = review(&request(
            "MCPPromptVersion",
            json!({"metadata": {"name": "p"}, "spec": {"prompt": "triage", "version": "1.0.0",
                "messages": [{"role": "user", "text": "see {{ticket}}"}]}}),
        ))
        .unwrap();
        let response = &answer["response"];
        assert_eq!(response["uid"], "705ab4f5");
        assert_eq!(response["allowed"], false);
        assert_eq!(response["status"]["code"], 422);
        let message = response["status"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("MCPPromptVersion \"p\" is invalid: spec.messages[0].text"),
            "{message}"
        );
    }

    #[test]
    fn valid_objects_deletes_and_other_kinds_are_allowed() {
        let valid = review(&request(
            "MCPPromptVersion",
            json!({"spec": {"prompt": "triage", "version": "1.0.0", "arguments": [{"name": "ticket"}],
                "messages": [{"role": "user", "text": "see {{ticket}}"}]}}),
        ))
        .unwrap();
        assert_eq!(valid["response"]["allowed"], true);
        assert_eq!(
            review(&request("MCPServer", Value::Null)).unwrap()["response"]["allowed"],
            true
        );
        assert_eq!(
            review(&request("ConfigMap", json!({"data": {}}))).unwrap()["response"]["allowed"],
            true
        );
    }

    #[test]
    fn what_is_not_a_review_is_an_error() {
        assert!(matches!(review(b"{"), Err(AdmissionError::NotJson(_))));
        assert_eq!(
            review(br#"{"apiVersion": "admission.k8s.io/v1", "request": {}}"#),
            Err(AdmissionError::NotAReview)
        );
    }
}
