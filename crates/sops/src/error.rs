//! `SopsError`: why a SOPS file could not be read, opened or written. Messages are one line and
//! never contain a decrypted value.

/// A SOPS codec failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SopsError {
    /// The text is not valid YAML or JSON, or not a map at the top.
    #[error("not a valid {format} document: {detail}")]
    Syntax {
        /// `YAML` or `JSON`.
        format: &'static str,
        /// What the parser said (positions and structure, never a decrypted value).
        detail: String,
    },
    /// The document has no top-level `sops` map: it is not a SOPS file.
    #[error("no top-level `sops` metadata: not a SOPS-encrypted file")]
    NotEncrypted,
    /// The `sops` metadata is malformed.
    #[error("invalid sops metadata: field `{field}`: {detail}")]
    Metadata {
        /// The metadata field (e.g. `sops.lastmodified`).
        field: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The file uses a SOPS feature this codec does not implement.
    #[error("unsupported SOPS feature: {feature}")]
    Unsupported {
        /// The feature (e.g. `key_groups (Shamir secret sharing)`).
        feature: String,
    },
    /// None of the given age identities is a recipient of the file.
    #[error(
        "no matching recipient: the file is encrypted for {recipients}, and none of the {identities} given age identities is one of them"
    )]
    NoMatchingRecipient {
        /// The file's recipients, comma-separated.
        recipients: String,
        /// How many identities were tried.
        identities: usize,
    },
    /// A listed recipient matches one of our identities, but its stanza did not open: the key is
    /// wrong for that stanza or the stanza was damaged.
    #[error(
        "wrong key: the age identity for recipient {recipient} did not open its data-key stanza ({detail})"
    )]
    WrongKey {
        /// The recipient whose stanza failed.
        recipient: String,
        /// What age said.
        detail: String,
    },
    /// An age identity or recipient could not be parsed.
    #[error("invalid age {what}: {detail}")]
    InvalidKey {
        /// `identity`, `identity file` or `recipient`.
        what: &'static str,
        /// Why (never the key material itself).
        detail: String,
    },
    /// A value in an encrypted position is not an `ENC[…]` string: it was replaced or the file was
    /// edited by hand.
    #[error("value at `{path}` should be encrypted but is not an ENC[AES256_GCM,…] string")]
    NotEncryptedValue {
        /// The key path, `:`-joined.
        path: String,
    },
    /// An `ENC[…]` value is malformed.
    #[error("malformed encrypted value at `{path}`: {detail}")]
    MalformedValue {
        /// The key path, `:`-joined (or `sops:mac`).
        path: String,
        /// What is malformed.
        detail: String,
    },
    /// A value failed authentication: it was tampered with, moved to another key, or the data key
    /// is not this file's.
    #[error("value at `{path}` failed authentication (tampered, moved, or encrypted with another data key)")]
    Tampered {
        /// The key path, `:`-joined.
        path: String,
    },
    /// The file has no MAC; a file without one is refused.
    #[error("the file has no MAC (sops.mac is empty); refusing an unauthenticated file")]
    MacMissing,
    /// The computed MAC differs from the stored one: values were changed, added, removed or re-ordered.
    #[error(
        "MAC mismatch: the file's values were changed, added, removed or re-ordered since it was encrypted"
    )]
    MacMismatch,
    /// A value cannot be written (wrong type for its place, a secret in a cleartext position, …).
    #[error("cannot encrypt `{path}`: {detail}")]
    Encrypt {
        /// The key path, `:`-joined.
        path: String,
        /// Why.
        detail: String,
    },
}

impl SopsError {
    /// A short, stable label for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            SopsError::Syntax { .. } => "syntax",
            SopsError::NotEncrypted => "not_encrypted",
            SopsError::Metadata { .. } => "metadata",
            SopsError::Unsupported { .. } => "unsupported",
            SopsError::NoMatchingRecipient { .. } => "no_matching_recipient",
            SopsError::WrongKey { .. } => "wrong_key",
            SopsError::InvalidKey { .. } => "invalid_key",
            SopsError::NotEncryptedValue { .. } => "not_encrypted_value",
            SopsError::MalformedValue { .. } => "malformed_value",
            SopsError::Tampered { .. } => "tampered",
            SopsError::MacMissing => "mac_missing",
            SopsError::MacMismatch => "mac_mismatch",
            SopsError::Encrypt { .. } => "encrypt",
        }
    }
}
