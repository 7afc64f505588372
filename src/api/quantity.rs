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

/// The form the API server stores a quantity in (`resource.Quantity`'s canonical string):
/// `1000m` is `1`, `0.5` is `500m`, `1024Mi` is `1Gi`, `1536Mi` stays, `2000` is `2k`; a value
/// finer than nano is rounded up to `1n`. `None` when `text` is not a quantity (or too large to
/// say exactly). Writing this form means what the operator sends is what it reads back.
pub fn canonical_quantity(text: &str) -> Option<String> {
    let captures = QUANTITY.as_ref()?.captures(text.trim())?;
    let number = captures.get(1)?.as_str();
    let suffix = captures.get(2).map_or("", |m| m.as_str());
    let negative = number.starts_with('-');
    let digits = number.trim_start_matches(['+', '-']);
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    // Too many digits for i128: not said exactly, so not canonicalised.
    let mut mantissa: i128 = format!("{whole}{fraction}").parse().ok()?;
    let mut scale = -i32::try_from(fraction.len()).ok()?;
    enum Format {
        DecimalSi,
        BinarySi,
        DecimalExponent,
    }
    let format = match suffix {
        "" | "n" | "u" | "m" | "k" | "M" | "G" | "T" | "P" | "E" => {
            scale += match suffix {
                "n" => -9,
                "u" => -6,
                "m" => -3,
                "k" => 3,
                "M" => 6,
                "G" => 9,
                "T" => 12,
                "P" => 15,
                "E" => 18,
                _ => 0,
            };
            Format::DecimalSi
        }
        "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => {
            let power = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]
                .iter()
                .position(|s| *s == suffix)?;
            mantissa =
                mantissa.checked_mul(1024i128.checked_pow(u32::try_from(power).ok()? + 1)?)?;
            Format::BinarySi
        }
        exponent => {
            scale = scale.checked_add(exponent[1..].parse::<i32>().ok()?)?;
            Format::DecimalExponent
        }
    };
    // Precision below nano is rounded up (away from zero), as the API server does.
    if scale < -9 {
        let divisor = 10i128.checked_pow(u32::try_from(-9 - scale).ok()?)?;
        mantissa = mantissa / divisor + i128::from(mantissa % divisor != 0);
        scale = -9;
    }
    if mantissa == 0 {
        return Some("0".into());
    }
    let sign = if negative { "-" } else { "" };
    // Binary only for whole values of at least 1024 units; otherwise shown as decimal.
    if let Format::BinarySi = format {
        let exact_whole = if scale >= 0 {
            mantissa.checked_mul(10i128.checked_pow(u32::try_from(scale).ok()?)?)
        } else {
            let divisor = 10i128.checked_pow(u32::try_from(-scale).ok()?)?;
            (mantissa % divisor == 0).then_some(mantissa / divisor)
        };
        if let Some(mut amount) = exact_whole.filter(|a| *a >= 1024) {
            let mut power = 0;
            while amount % 1024 == 0 && power < 6 {
                amount /= 1024;
                power += 1;
            }
            let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][power];
            return Some(format!("{sign}{amount}{suffix}"));
        }
    }
    while mantissa % 10 == 0 {
        mantissa /= 10;
        scale += 1;
    }
    // The exponent goes down to a multiple of three (`1e4` is `10k`).
    let down = scale.rem_euclid(3);
    mantissa = mantissa.checked_mul(10i128.pow(down.unsigned_abs()))?;
    scale -= down;
    let suffix = match (format, scale) {
        (Format::DecimalExponent, 0) => String::new(),
        (Format::DecimalExponent, exponent) => format!("e{exponent}"),
        (_, -9) => "n".into(),
        (_, -6) => "u".into(),
        (_, -3) => "m".into(),
        (_, 0) => String::new(),
        (_, 3) => "k".into(),
        (_, 6) => "M".into(),
        (_, 9) => "G".into(),
        (_, 12) => "T".into(),
        (_, 15) => "P".into(),
        (_, 18) => "E".into(),
        _ => return None,
    };
    Some(format!("{sign}{mantissa}{suffix}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn canonical_quantities_are_what_the_api_server_stores() {
        // Expected values are apimachinery's (resource.MustParse(x).String()).
        for (input, canonical) in [
            ("1000m", "1"),
            ("0.5", "500m"),
            ("1", "1"),
            ("100m", "100m"),
            ("1500m", "1500m"),
            ("2000", "2k"),
            ("1024Mi", "1Gi"),
            ("1536Mi", "1536Mi"),
            ("1.5Gi", "1536Mi"),
            ("512Mi", "512Mi"),
            ("1024", "1024"),
            ("1Ki", "1Ki"),
            ("0.5Ki", "512"),
            ("100Ki", "100Ki"),
            ("1e3", "1e3"),
            ("1E6", "1e6"),
            ("0", "0"),
            ("0Mi", "0"),
            ("0.1m", "100u"),
            ("1.0000000001", "1000000001n"),
            ("0.0000000001", "1n"),
            ("12e2", "1200"),
            ("-1500m", "-1500m"),
            ("10G", "10G"),
            ("64Mi", "64Mi"),
        ] {
            assert_eq!(
                super::canonical_quantity(input).as_deref(),
                Some(canonical),
                "{input}"
            );
        }
        assert_eq!(super::canonical_quantity("1 cpu"), None);
        // More digits than can be said exactly: left alone rather than read as something else.
        let huge = "9".repeat(40);
        assert_eq!(super::canonical_quantity(&huge), None);
        assert_eq!(
            super::canonical_quantity(&format!("{}e2", "1".repeat(38))),
            None
        );
        assert_eq!(super::canonical_quantity(""), None);
    }

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
