//! Kubernetes resource quantities (`250m`, `1.5`, `512Mi`, `1e3`): syntax check and a numeric
//! value for comparisons (requests against limits, defaults against user values).

use std::sync::LazyLock;

use regex::Regex;

/// The quantity grammar of `k8s.io/apimachinery/pkg/api/resource`.
static QUANTITY: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))((?:[KMGTPE]i)|[numkMGTPE]|(?:[eE][+-]?[0-9]+))?$").ok()
});

/// The value of a quantity in base units (cores, bytes), or `None` when it is not a quantity.
pub fn parse_quantity(text: &str) -> Option<f64> {
    let captures = QUANTITY.as_ref()?.captures(text.trim())?;
    let number: f64 = captures.get(1)?.as_str().parse().ok()?;
    let scale = match captures.get(2).map(|m| m.as_str()) {
        None | Some("") => 1.0,
        Some("n") => 1e-9,
        Some("u") => 1e-6,
        Some("m") => 1e-3,
        Some("k") => 1e3,
        Some("M") => 1e6,
        Some("G") => 1e9,
        Some("T") => 1e12,
        Some("P") => 1e15,
        Some("E") => 1e18,
        Some("Ki") => 1024f64,
        Some("Mi") => 1024f64.powi(2),
        Some("Gi") => 1024f64.powi(3),
        Some("Ti") => 1024f64.powi(4),
        Some("Pi") => 1024f64.powi(5),
        Some("Ei") => 1024f64.powi(6),
        Some(exponent) => 10f64.powi(exponent[1..].parse().ok()?),
    };
    Some(number * scale)
}

#[cfg(test)]
mod tests {
    use super::parse_quantity;

    #[test]
    fn parses_the_kubernetes_forms() {
        assert_eq!(parse_quantity("250m"), Some(0.25));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("512Mi"), Some(512.0 * 1024.0 * 1024.0));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("1.5G"), Some(1.5e9));
    }

    #[test]
    fn rejects_what_is_not_a_quantity() {
        for bad in ["", "lots", "1.2.3", "5 Mi", "Mi", "1mi"] {
            assert_eq!(parse_quantity(bad), None, "{bad}");
        }
    }
}
