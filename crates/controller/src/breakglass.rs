//! Break-glass serving for the controller: the store annotations, when a store serves from its
//! bundle, and the rule that a bundle never replaces what a Secret already holds.
//!
//! Not wired into the reconcilers yet (see docs/dr.md, "Not yet done"): this module holds the
//! decisions so the hook where stores are resolved stays small.

use std::collections::BTreeMap;
use std::time::Duration;

/// Annotation on a store: the Secret (`<namespace>/<name>`) holding the SOPS bundle.
pub const BUNDLE_ANNOTATION: &str = "keyferry.io/break-glass-bundle";
/// Annotation on a store: the Secret (`<namespace>/<name>`) holding the age identity, created only
/// during DR.
pub const IDENTITY_ANNOTATION: &str = "keyferry.io/break-glass-identity";
/// Annotation on a store: `active` (manual switch) or `auto` (after the vault is unreachable for the
/// grace period).
pub const MODE_ANNOTATION: &str = "keyferry.io/break-glass";
/// The Ready condition reason while an ExternalSecret is served from a bundle.
pub const REASON: &str = "BreakGlass";

/// Why a store's break-glass annotations are unusable (reported on the store, one line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BreakGlassConfigError {
    /// An annotation is not `<namespace>/<name>`.
    #[error("annotation {annotation}: {value:?} is not <namespace>/<name>")]
    BadReference {
        /// The annotation key.
        annotation: &'static str,
        /// Its value.
        value: String,
    },
    /// The mode is neither `active` nor `auto`.
    #[error("annotation {MODE_ANNOTATION}: {value:?} is not active or auto")]
    BadMode {
        /// Its value.
        value: String,
    },
    /// A mode is set but no bundle is named.
    #[error("annotation {MODE_ANNOTATION} is set but {BUNDLE_ANNOTATION} is missing")]
    NoBundle,
}

impl BreakGlassConfigError {
    /// A short, stable label for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            BreakGlassConfigError::BadReference { .. } => "bad_reference",
            BreakGlassConfigError::BadMode { .. } => "bad_mode",
            BreakGlassConfigError::NoBundle => "no_bundle",
        }
    }
}

/// A Secret named by an annotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// When the store serves from its bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Annotation absent: never.
    Off,
    /// `active`: now, whatever the vault says.
    Active,
    /// `auto`: once the vault has been unreachable for the grace period.
    Auto,
}

/// A store's break-glass settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakGlassConfig {
    /// The bundle Secret.
    pub bundle: SecretRef,
    /// The identity Secret, if named.
    pub identity: Option<SecretRef>,
    /// The switch.
    pub mode: Mode,
}

fn secret_ref(annotation: &'static str, value: &str) -> Result<SecretRef, BreakGlassConfigError> {
    match value.trim().split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => Ok(SecretRef {
            namespace: ns.to_owned(),
            name: name.to_owned(),
        }),
        _ => Err(BreakGlassConfigError::BadReference {
            annotation,
            value: value.to_owned(),
        }),
    }
}

/// Reads a store's annotations. `Ok(None)` when the store has no bundle and no mode.
pub fn from_annotations(
    annotations: &BTreeMap<String, String>,
) -> Result<Option<BreakGlassConfig>, BreakGlassConfigError> {
    let mode = match annotations.get(MODE_ANNOTATION).map(|s| s.trim()) {
        None | Some("") => Mode::Off,
        Some("active") => Mode::Active,
        Some("auto") => Mode::Auto,
        Some(other) => {
            return Err(BreakGlassConfigError::BadMode {
                value: other.to_owned(),
            });
        }
    };
    let Some(bundle) = annotations.get(BUNDLE_ANNOTATION) else {
        return if mode == Mode::Off {
            Ok(None)
        } else {
            Err(BreakGlassConfigError::NoBundle)
        };
    };
    Ok(Some(BreakGlassConfig {
        bundle: secret_ref(BUNDLE_ANNOTATION, bundle)?,
        identity: annotations
            .get(IDENTITY_ANNOTATION)
            .map(|v| secret_ref(IDENTITY_ANNOTATION, v))
            .transpose()?,
        mode,
    }))
}

/// Whether to serve from the bundle now: `active` always; `auto` once the vault has been
/// unreachable for at least `grace` (`unreachable_for` is `None` while the vault answers).
pub fn should_serve(mode: Mode, unreachable_for: Option<Duration>, grace: Duration) -> bool {
    match mode {
        Mode::Off => false,
        Mode::Active => true,
        Mode::Auto => unreachable_for.is_some_and(|d| d >= grace),
    }
}

/// Merges bundle data into a Secret's existing data: only keys the Secret lacks are filled, unless
/// `force`. Returns the keys filled (never their values).
pub fn fill_missing<V: Clone>(
    existing: &mut BTreeMap<String, V>,
    from_bundle: &BTreeMap<String, V>,
    force: bool,
) -> Vec<String> {
    let mut filled = Vec::new();
    for (k, v) in from_bundle {
        if force || !existing.contains_key(k) {
            existing.insert(k.clone(), v.clone());
            filled.push(k.clone());
        }
    }
    filled
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn annotations_parse_and_fail_clearly() {
        assert_eq!(from_annotations(&ann(&[])), Ok(None));
        let c = from_annotations(&ann(&[
            (BUNDLE_ANNOTATION, "dr/bundle"),
            (IDENTITY_ANNOTATION, "dr/age"),
            (MODE_ANNOTATION, "active"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(c.mode, Mode::Active);
        assert_eq!(c.bundle.name, "bundle");
        assert_eq!(c.identity.unwrap().namespace, "dr");
        let e = from_annotations(&ann(&[(BUNDLE_ANNOTATION, "bundle")])).unwrap_err();
        assert_eq!(e.category(), "bad_reference");
        let e = from_annotations(&ann(&[(BUNDLE_ANNOTATION, "a/b"), (MODE_ANNOTATION, "on")])).unwrap_err();
        assert!(e.to_string().contains("\"on\""), "{e}");
        assert_eq!(
            from_annotations(&ann(&[(MODE_ANNOTATION, "auto")])),
            Err(BreakGlassConfigError::NoBundle)
        );
    }

    #[test]
    fn serving_decision() {
        let grace = Duration::from_secs(300);
        assert!(!should_serve(Mode::Off, Some(Duration::from_secs(9999)), grace));
        assert!(should_serve(Mode::Active, None, grace));
        assert!(!should_serve(Mode::Auto, None, grace));
        assert!(!should_serve(Mode::Auto, Some(Duration::from_secs(299)), grace));
        assert!(should_serve(Mode::Auto, Some(grace), grace));
    }

    #[test]
    fn existing_keys_are_never_replaced_unless_forced() {
        let mut existing = BTreeMap::from([("a".to_owned(), "newer".to_owned())]);
        let bundle = BTreeMap::from([
            ("a".to_owned(), "older".to_owned()),
            ("b".to_owned(), "x".to_owned()),
        ]);
        assert_eq!(fill_missing(&mut existing, &bundle, false), vec!["b".to_owned()]);
        assert_eq!(existing["a"], "newer");
        assert_eq!(
            fill_missing(&mut existing, &bundle, true),
            vec!["a".to_owned(), "b".to_owned()]
        );
        assert_eq!(existing["a"], "older");
    }
}
