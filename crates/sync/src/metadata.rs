//! Kubernetes' rules for label and annotation keys and label values (apimachinery
//! `validation.IsQualifiedName`, `IsValidLabelValue`, `ValidateAnnotations`), checked before apply so
//! that a templated value the apiserver would refuse is never sent (its 422 quotes the value back).
//! Messages describe the rule, never the value.

use std::sync::LazyLock;

use regex::Regex;

/// Largest total size of a Secret's annotations (keys plus values), as the apiserver enforces.
pub const MAX_ANNOTATIONS_SIZE: usize = 256 * 1024;

static NAME: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$").ok());
static DNS_SUBDOMAIN: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$").ok());

fn matches(re: &LazyLock<Option<Regex>>, s: &str) -> bool {
    re.as_ref().is_some_and(|re| re.is_match(s))
}

/// A label or annotation key: an optional DNS-subdomain prefix (≤ 253) and `/`, then a name of at
/// most 63 alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric.
pub fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && (p.is_empty() || p.len() > 253 || !matches(&DNS_SUBDOMAIN, p))
    {
        return Err("the prefix must be a DNS subdomain of at most 253 characters".to_owned());
    }
    if name.is_empty() || name.len() > 63 || !matches(&NAME, name) {
        return Err(
            "the name must be 1-63 alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
                .to_owned(),
        );
    }
    Ok(())
}

/// A label value: empty, or at most 63 alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric.
pub fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || (value.len() <= 63 && matches(&NAME, value)) {
        Ok(())
    } else {
        Err("is not a valid label value: at most 63 alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_rules() {
        for ok in ["a", "app.kubernetes.io/name", "x-y_z.1", "example.com/a"] {
            assert!(check_key(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "/a", "Example.com/a", "a/b/c", &"a".repeat(64)] {
            assert!(check_key(bad).is_err(), "{bad}");
        }
        for ok in ["", "v1", "a.b-c_d"] {
            assert!(check_label_value(ok).is_ok(), "{ok}");
        }
        for bad in ["has space", "-x", "x/y", &"a".repeat(64)] {
            let e = check_label_value(bad).err().unwrap_or_default();
            assert!(!e.contains(bad), "the value is not quoted: {e}");
        }
    }
}
