//! Label selector evaluation, shared by policy selection and validation.

use std::collections::BTreeMap;

use kube::core::{Selector, SelectorExt};

use super::common::LabelSelector;

/// Operators a `matchExpressions` entry may use.
pub const SELECTOR_OPERATORS: [&str; 4] = ["In", "NotIn", "Exists", "DoesNotExist"];

/// Whether `labels` satisfy `selector`. An invalid selector matches nothing; manifests are
/// checked with [`selector_problem`] before they get here, so this only guards stored objects.
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    Selector::try_from(selector.clone()).is_ok_and(|s| s.matches(labels))
}

/// What is wrong with a selector, if anything, phrased for the user.
pub fn selector_problem(selector: &LabelSelector) -> Option<String> {
    for (index, requirement) in selector.match_expressions.iter().flatten().enumerate() {
        let operator = requirement.operator.as_str();
        let has_values = requirement.values.as_ref().is_some_and(|v| !v.is_empty());
        let problem = match operator {
            "In" | "NotIn" if !has_values => "needs at least one value",
            "Exists" | "DoesNotExist" if has_values => "must not list values",
            "In" | "NotIn" | "Exists" | "DoesNotExist" => continue,
            _ => "has an unknown operator",
        };
        return Some(format!(
            "matchExpressions[{index}] (key {:?}, operator {operator:?}) {problem}; operators are {}",
            requirement.key,
            SELECTOR_OPERATORS.join(", ")
        ));
    }
    None
}
