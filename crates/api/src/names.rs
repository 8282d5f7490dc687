//! Azure Key Vault object-name rules and remote-key prefixes (`secret/`, `key/`, `cert/`).

/// The kind of Key Vault object a remote key addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectType {
    /// A secret (the default).
    Secret,
    /// A key; read as its public JWK.
    Key,
    /// A certificate; read as its DER encoding.
    Certificate,
}

/// Whether `key` is a valid Kubernetes Secret data key: 1–253 characters of `[-._a-zA-Z0-9]`, and
/// not `.` or `..` (the apiserver refuses those). One rule for the controller, `render` and `validate`.
pub fn is_valid_secret_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key != "."
        && key != ".."
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Splits a remote key into its object type and name: `cert/tls` → (Certificate, `tls`).
pub fn split_remote_key(key: &str) -> (ObjectType, &str) {
    if let Some(name) = key.strip_prefix("secret/") {
        (ObjectType::Secret, name)
    } else if let Some(name) = key.strip_prefix("key/") {
        (ObjectType::Key, name)
    } else if let Some(name) = key.strip_prefix("cert/") {
        (ObjectType::Certificate, name)
    } else {
        (ObjectType::Secret, key)
    }
}

/// Why a name is not a valid Key Vault object name.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    /// Empty name.
    #[error("name is empty")]
    Empty,
    /// Longer than 127 characters.
    #[error("name is {len} characters long; Key Vault allows at most 127")]
    TooLong {
        /// The name's length.
        len: usize,
    },
    /// A character outside `0-9a-zA-Z-`.
    #[error("name contains {found:?}; Key Vault names use only 0-9, a-z, A-Z and -")]
    BadCharacter {
        /// The first offending character.
        found: char,
    },
}

/// Checks Key Vault's object-name rule: 1–127 characters of `0-9a-zA-Z-`.
pub fn check_vault_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if let Some(found) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-')) {
        return Err(NameError::BadCharacter { found });
    }
    if name.len() > 127 {
        return Err(NameError::TooLong { len: name.len() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_pick_the_object_type() {
        assert_eq!(
            split_remote_key("netbox-db-password"),
            (ObjectType::Secret, "netbox-db-password")
        );
        assert_eq!(split_remote_key("secret/a"), (ObjectType::Secret, "a"));
        assert_eq!(split_remote_key("key/signing"), (ObjectType::Key, "signing"));
        assert_eq!(split_remote_key("cert/tls"), (ObjectType::Certificate, "tls"));
    }

    #[test]
    fn vault_name_rules() {
        assert!(check_vault_name("netbox-db-password").is_ok());
        assert_eq!(check_vault_name(""), Err(NameError::Empty));
        assert_eq!(
            check_vault_name("a_b"),
            Err(NameError::BadCharacter { found: '_' })
        );
        assert_eq!(
            check_vault_name("prod/x"),
            Err(NameError::BadCharacter { found: '/' })
        );
        assert_eq!(
            check_vault_name(&"a".repeat(128)),
            Err(NameError::TooLong { len: 128 })
        );
        assert!(check_vault_name(&"a".repeat(127)).is_ok());
    }
}
