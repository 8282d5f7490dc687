//! `SecretValue`: a secret's bytes in a type that cannot be printed.

use std::fmt;
use std::sync::Arc;

use zeroize::Zeroizing;

/// The bytes of a secret value.
///
/// It implements neither `Display` nor `Serialize`, and its `Debug` shows only the length, so a value
/// cannot reach a log line, an error or status by accident. Clones share one buffer, which is zeroed
/// when the last clone is dropped. Reading the bytes needs an explicit [`SecretValue::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Arc<Zeroizing<Vec<u8>>>);

impl SecretValue {
    /// Wraps bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        SecretValue(Arc::new(Zeroizing::new(bytes.into())))
    }

    /// The bytes. Call only where the value is written to its destination (a Secret, a file, a hash).
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The bytes as UTF-8, if they are.
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// Length in bytes (safe to print).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for SecretValue {
    fn from(s: &str) -> Self {
        SecretValue::new(s.as_bytes().to_vec())
    }
}

impl From<String> for SecretValue {
    fn from(s: String) -> Self {
        SecretValue::new(s.into_bytes())
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretValue(<redacted, {} bytes>)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let v = SecretValue::from("canary-7f3a");
        let shown = format!("{v:?} {:#?}", vec![v.clone()]);
        assert!(!shown.contains("canary"), "{shown}");
        assert!(shown.contains("11 bytes"));
    }
}
