//! A SOPS codec for keyferry's break-glass bundles.
//!
//! Reads and writes files in the format of the `sops` tool (getsops/sops) for age recipients: the
//! document with every selected leaf encrypted as `ENC[AES256_GCM,…]` (AES-256-GCM with SOPS's
//! 32-byte nonce and the key path as associated data), a top-level `sops` map holding the data key
//! wrapped for each age recipient, the `lastmodified` time and the MAC (SHA-512 over the leaf values
//! in document order, encrypted with `lastmodified` as associated data). YAML and JSON, key order
//! preserved. No I/O: callers read and write files.
//!
//! The MAC is always verified on decryption: a tampered, truncated or re-ordered file is refused.
//! Decrypted values are [`Plaintext`]s, zeroized on drop and redacted in `Debug`. Key groups,
//! Shamir splitting, comment-based encryption rules and non-age key types are refused with
//! [`SopsError::Unsupported`].

pub mod bundle;
mod cipher;
mod document;
mod error;
mod keys;
mod metadata;
mod tree;

pub use document::{Document, EncryptOptions, Format, encrypt, parse, parse_as};
pub use error::SopsError;
pub use keys::{AgeIdentity, AgeRecipient, parse_identities};
pub use metadata::{AgeStanza, CryptRule, Metadata};
pub use tree::{Leaf, Node, Plaintext, Scalar, ValueType};
