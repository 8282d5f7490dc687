//! age identities (private keys) and recipients (public keys), and the data-key stanzas.

use std::fmt;
use std::str::FromStr;

use age::secrecy::ExposeSecret as _;
use zeroize::Zeroizing;

use crate::SopsError;

/// An age X25519 identity (`AGE-SECRET-KEY-1…`). `Debug` shows only its public recipient.
#[derive(Clone)]
pub struct AgeIdentity(age::x25519::Identity);

impl AgeIdentity {
    /// Parses one `AGE-SECRET-KEY-1…` line.
    pub fn parse(text: &str) -> Result<Self, SopsError> {
        age::x25519::Identity::from_str(text.trim())
            .map(AgeIdentity)
            .map_err(|_| SopsError::InvalidKey {
                what: "identity",
                detail: "not an AGE-SECRET-KEY-1… X25519 key".to_owned(),
            })
    }

    /// A new random identity (for tests and key creation).
    pub fn generate() -> Self {
        AgeIdentity(age::x25519::Identity::generate())
    }

    /// The public half.
    pub fn recipient(&self) -> AgeRecipient {
        AgeRecipient(self.0.to_public())
    }

    /// The `AGE-SECRET-KEY-1…` text, to write a key file.
    pub fn to_secret_string(&self) -> Zeroizing<String> {
        Zeroizing::new(self.0.to_string().expose_secret().to_owned())
    }

    /// The key file text `age-keygen` writes (a comment with the public key, then the key).
    pub fn to_key_file(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "# public key: {}\n{}\n",
            self.recipient(),
            self.to_secret_string().as_str()
        ))
    }

    pub(crate) fn inner(&self) -> &age::x25519::Identity {
        &self.0
    }
}

impl fmt::Debug for AgeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgeIdentity(<redacted>, recipient {})", self.recipient())
    }
}

/// Parses an age key file (as `age-keygen` writes it, or `SOPS_AGE_KEY`): one identity per line,
/// `#` comments and blank lines ignored. At least one identity is required.
pub fn parse_identities(text: &str) -> Result<Vec<AgeIdentity>, SopsError> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with("AGE-PLUGIN-") {
            return Err(SopsError::Unsupported {
                feature: format!("age plugin identity on line {}", n + 1),
            });
        }
        out.push(AgeIdentity::parse(line).map_err(|_| SopsError::InvalidKey {
            what: "identity file",
            detail: format!("line {} is not an AGE-SECRET-KEY-1… X25519 key", n + 1),
        })?);
    }
    if out.is_empty() {
        return Err(SopsError::InvalidKey {
            what: "identity file",
            detail: "it holds no AGE-SECRET-KEY-1… line".to_owned(),
        });
    }
    Ok(out)
}

/// An age X25519 recipient (`age1…`).
#[derive(Clone, PartialEq, Eq)]
pub struct AgeRecipient(age::x25519::Recipient);

impl AgeRecipient {
    /// Parses an `age1…` public key. SSH keys and plugin recipients are refused as unsupported.
    pub fn parse(text: &str) -> Result<Self, SopsError> {
        let text = text.trim();
        if text.starts_with("ssh-") {
            return Err(SopsError::Unsupported {
                feature: "SSH age recipients".to_owned(),
            });
        }
        age::x25519::Recipient::from_str(text)
            .map(AgeRecipient)
            .map_err(|_| SopsError::InvalidKey {
                what: "recipient",
                detail: format!("{text:?} is not an age1… X25519 public key"),
            })
    }
}

impl fmt::Display for AgeRecipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for AgeRecipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgeRecipient({})", self.0)
    }
}

/// Wraps the data key for one recipient: an ASCII-armored age file, as SOPS stores it.
pub(crate) fn wrap_data_key(key: &[u8; 32], recipient: &AgeRecipient) -> Result<String, SopsError> {
    let bytes = age::encrypt_and_armor(&recipient.0, key).map_err(|e| SopsError::Encrypt {
        path: "sops:age".to_owned(),
        detail: format!("age could not wrap the data key: {e}"),
    })?;
    Ok(bytes)
}

/// Unwraps a data-key stanza with one identity. `Ok(None)` when the identity is not a recipient of
/// this stanza.
pub(crate) fn unwrap_data_key(
    armored: &str,
    identity: &AgeIdentity,
) -> Result<Option<Zeroizing<Vec<u8>>>, String> {
    match age::decrypt(identity.inner(), armored.as_bytes()) {
        Ok(bytes) => Ok(Some(Zeroizing::new(bytes))),
        Err(age::DecryptError::NoMatchingKeys) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}
