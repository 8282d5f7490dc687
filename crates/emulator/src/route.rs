//! Request classification: which vault operation a method + path denotes.
//!
//! This is a pure function of the request line, used both for counters / fault targeting and
//! for dispatch, so it never panics on arbitrary input.

use std::fmt;
use std::str::FromStr;

use axum::http::Method;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// The operations the emulator counts and can target with faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// `GET /secrets/{name}[/{version}]`
    GetSecret,
    /// `PUT /secrets/{name}`
    SetSecret,
    /// `PATCH /secrets/{name}/{version}`
    UpdateSecret,
    /// `DELETE /secrets/{name}`
    DeleteSecret,
    /// `GET /secrets`
    ListSecrets,
    /// `GET /secrets/{name}/versions`
    ListVersions,
    /// `GET /deletedsecrets/{name}`
    GetDeletedSecret,
    /// `GET /deletedsecrets`
    ListDeletedSecrets,
    /// `POST /deletedsecrets/{name}/recover`
    RecoverDeletedSecret,
    /// `DELETE /deletedsecrets/{name}`
    PurgeDeletedSecret,
    /// `POST /secrets/{name}/backup`
    BackupSecret,
    /// `POST /secrets/restore`
    RestoreSecret,
    /// `POST /{tenant}/oauth2/v2.0/token`, `POST /{tenant}/oauth2/token` (AAD v1) and the
    /// discovery documents clients fetch first (OpenID configuration, instance discovery, keys)
    Token,
    /// `GET /msi/token` (App Service managed identity protocol), `GET /metadata/identity/oauth2/token`
    /// (Azure VM IMDS) and `GET /arc/metadata/identity/oauth2/token` (Azure Arc)
    ManagedIdentity,
    /// `POST /topics/{topic}/eventsubscriptions/{sub}:receive|:acknowledge|:release` (Event Grid
    /// namespace-topic pull delivery)
    EventGrid,
    /// Anything else that reached the vault (unknown paths or methods).
    Other,
}

impl Operation {
    /// Every operation, in a stable order.
    pub const ALL: [Operation; 16] = [
        Operation::GetSecret,
        Operation::SetSecret,
        Operation::UpdateSecret,
        Operation::DeleteSecret,
        Operation::ListSecrets,
        Operation::ListVersions,
        Operation::GetDeletedSecret,
        Operation::ListDeletedSecrets,
        Operation::RecoverDeletedSecret,
        Operation::PurgeDeletedSecret,
        Operation::BackupSecret,
        Operation::RestoreSecret,
        Operation::Token,
        Operation::ManagedIdentity,
        Operation::EventGrid,
        Operation::Other,
    ];

    /// The snake_case name used in counters, fault specs and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::GetSecret => "get_secret",
            Operation::SetSecret => "set_secret",
            Operation::UpdateSecret => "update_secret",
            Operation::DeleteSecret => "delete_secret",
            Operation::ListSecrets => "list_secrets",
            Operation::ListVersions => "list_versions",
            Operation::GetDeletedSecret => "get_deleted_secret",
            Operation::ListDeletedSecrets => "list_deleted_secrets",
            Operation::RecoverDeletedSecret => "recover_deleted_secret",
            Operation::PurgeDeletedSecret => "purge_deleted_secret",
            Operation::BackupSecret => "backup_secret",
            Operation::RestoreSecret => "restore_secret",
            Operation::Token => "token",
            Operation::ManagedIdentity => "managed_identity",
            Operation::EventGrid => "event_grid",
            Operation::Other => "other",
        }
    }

    /// Position in [`Operation::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// Whether this is a vault data-plane operation (as opposed to an identity endpoint).
    pub fn is_vault(self) -> bool {
        !matches!(
            self,
            Operation::Token | Operation::ManagedIdentity | Operation::EventGrid
        )
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Operation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Operation::ALL
            .into_iter()
            .find(|op| op.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Operation::ALL.iter().map(|op| op.as_str()).collect();
                format!("unknown operation {s:?} (expected one of {})", names.join(", "))
            })
    }
}

/// A parsed vault data-plane request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    GetSecret { name: String, version: Option<String> },
    SetSecret { name: String },
    UpdateSecret { name: String, version: Option<String> },
    DeleteSecret { name: String },
    ListSecrets,
    ListVersions { name: String },
    GetDeleted { name: String },
    ListDeleted,
    Recover { name: String },
    Purge { name: String },
    Backup { name: String },
    Restore,
}

impl Route {
    /// The secret this request names, if any (for faults aimed at one secret).
    pub(crate) fn secret_name(self) -> Option<String> {
        match self {
            Route::GetSecret { name, .. }
            | Route::SetSecret { name }
            | Route::UpdateSecret { name, .. }
            | Route::DeleteSecret { name }
            | Route::ListVersions { name }
            | Route::GetDeleted { name }
            | Route::Recover { name }
            | Route::Purge { name }
            | Route::Backup { name } => Some(name),
            Route::ListSecrets | Route::ListDeleted | Route::Restore => None,
        }
    }

    /// The counter / fault operation of this route.
    pub(crate) fn operation(&self) -> Operation {
        match self {
            Route::GetSecret { .. } => Operation::GetSecret,
            Route::SetSecret { .. } => Operation::SetSecret,
            Route::UpdateSecret { .. } => Operation::UpdateSecret,
            Route::DeleteSecret { .. } => Operation::DeleteSecret,
            Route::ListSecrets => Operation::ListSecrets,
            Route::ListVersions { .. } => Operation::ListVersions,
            Route::GetDeleted { .. } => Operation::GetDeletedSecret,
            Route::ListDeleted => Operation::ListDeletedSecrets,
            Route::Recover { .. } => Operation::RecoverDeletedSecret,
            Route::Purge { .. } => Operation::PurgeDeletedSecret,
            Route::Backup { .. } => Operation::BackupSecret,
            Route::Restore => Operation::RestoreSecret,
        }
    }
}

/// Maximum length of a secret name.
pub(crate) const MAX_NAME_LEN: usize = 127;

/// Checks AKV's object-name rule: 1–127 characters of `0-9a-zA-Z-`.
pub(crate) fn validate_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_parameter(format!(
            "The request URI contains an invalid name: {}",
            truncate(name)
        )))
    }
}

fn validate_version(version: &str) -> Result<(), ApiError> {
    if !version.is_empty() && version.len() <= 64 && version.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(ApiError::bad_parameter(format!(
            "The request URI contains an invalid version: {}",
            truncate(version)
        )))
    }
}

/// Shortens user input echoed in messages.
pub(crate) fn truncate(s: &str) -> String {
    const MAX: usize = 64;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        s.chars().take(MAX).collect::<String>() + "…"
    }
}

/// Decodes `%XX` escapes in a path segment; invalid escapes are kept literally.
fn percent_decode(segment: &str) -> String {
    if !segment.contains('%') {
        return segment.to_owned();
    }
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = bytes.get(i + 1..i + 3)
            && let Ok(hex) = std::str::from_utf8(hex)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Classifies a request for counters and fault targeting without validating names.
pub(crate) fn classify(method: &Method, path: &str) -> Operation {
    let segments = split(path);
    match segments.as_slice() {
        [_, "oauth2", "v2.0", "token"] | [_, "oauth2", "token"] if method == Method::POST => Operation::Token,
        [_, "v2.0", ".well-known", "openid-configuration"]
        | [_, ".well-known", "openid-configuration"]
        | [_, "discovery", "instance"]
        | [_, "discovery", "v2.0", "keys"]
        | [_, "discovery", "keys"]
            if method == Method::GET =>
        {
            Operation::Token
        }
        ["msi", "token"]
        | ["metadata", "identity", "oauth2", "token"]
        | ["arc", "metadata", "identity", "oauth2", "token"] => Operation::ManagedIdentity,
        ["topics", _, "eventsubscriptions", _] => Operation::EventGrid,
        _ => parse(method, path)
            .map(|r| r.operation())
            .unwrap_or(Operation::Other),
    }
}

/// Splits a path into segments, ignoring leading slashes and one trailing slash.
fn split(path: &str) -> Vec<&str> {
    let trimmed = path.trim_start_matches('/');
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    if trimmed.is_empty() {
        Vec::new()
    } else {
        trimmed.split('/').collect()
    }
}

/// Parses a vault data-plane request line into a [`Route`].
///
/// Unknown paths give 404 `NotFound`, known paths with the wrong method 405, invalid names 400.
pub(crate) fn parse(method: &Method, path: &str) -> Result<Route, ApiError> {
    let decoded: Vec<String> = split(path).into_iter().map(percent_decode).collect();
    let segments: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let name = |n: &str| validate_name(n).map(|()| n.to_owned());
    let version = |v: &str| validate_version(v).map(|()| v.to_owned());
    let not_allowed = || Err(ApiError::method_not_allowed(method.as_str()));

    match segments.as_slice() {
        ["secrets"] => match *method {
            Method::GET => Ok(Route::ListSecrets),
            _ => not_allowed(),
        },
        ["secrets", "restore"] if method == Method::POST => Ok(Route::Restore),
        ["secrets", n] => match *method {
            Method::GET => Ok(Route::GetSecret {
                name: name(n)?,
                version: None,
            }),
            Method::PUT => Ok(Route::SetSecret { name: name(n)? }),
            Method::PATCH => Ok(Route::UpdateSecret {
                name: name(n)?,
                version: None,
            }),
            Method::DELETE => Ok(Route::DeleteSecret { name: name(n)? }),
            _ => not_allowed(),
        },
        ["secrets", n, "versions"] => match *method {
            Method::GET => Ok(Route::ListVersions { name: name(n)? }),
            _ => not_allowed(),
        },
        ["secrets", n, "backup"] => match *method {
            Method::POST => Ok(Route::Backup { name: name(n)? }),
            _ => not_allowed(),
        },
        ["secrets", n, v] => match *method {
            Method::GET => Ok(Route::GetSecret {
                name: name(n)?,
                version: Some(version(v)?),
            }),
            Method::PATCH => Ok(Route::UpdateSecret {
                name: name(n)?,
                version: Some(version(v)?),
            }),
            _ => not_allowed(),
        },
        ["deletedsecrets"] => match *method {
            Method::GET => Ok(Route::ListDeleted),
            _ => not_allowed(),
        },
        ["deletedsecrets", n] => match *method {
            Method::GET => Ok(Route::GetDeleted { name: name(n)? }),
            Method::DELETE => Ok(Route::Purge { name: name(n)? }),
            _ => not_allowed(),
        },
        ["deletedsecrets", n, "recover"] => match *method {
            Method::POST => Ok(Route::Recover { name: name(n)? }),
            _ => not_allowed(),
        },
        _ => Err(ApiError::no_such_path(&truncate(path))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sdk_paths() {
        let get = |p: &str| parse(&Method::GET, p);
        assert_eq!(
            get("/secrets/a-B1/").unwrap(),
            Route::GetSecret {
                name: "a-B1".into(),
                version: None
            }
        );
        assert_eq!(
            get("/secrets/a/0123456789abcdef0123456789abcdef").unwrap(),
            Route::GetSecret {
                name: "a".into(),
                version: Some("0123456789abcdef0123456789abcdef".into())
            }
        );
        assert_eq!(get("/secrets").unwrap(), Route::ListSecrets);
        assert_eq!(
            get("/secrets/x/versions").unwrap(),
            Route::ListVersions { name: "x".into() }
        );
        assert_eq!(
            parse(&Method::PATCH, "/secrets/x/").unwrap(),
            Route::UpdateSecret {
                name: "x".into(),
                version: None
            }
        );
        assert_eq!(parse(&Method::POST, "/secrets/restore").unwrap(), Route::Restore);
        assert_eq!(
            get("/secrets/restore").unwrap(),
            Route::GetSecret {
                name: "restore".into(),
                version: None
            }
        );
        assert_eq!(
            parse(&Method::POST, "/deletedsecrets/x/recover").unwrap(),
            Route::Recover { name: "x".into() }
        );
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(parse(&Method::GET, "/secrets/a_b").unwrap_err().status, 400);
        assert_eq!(parse(&Method::GET, "/secrets/a%2Fb").unwrap_err().status, 400);
        assert_eq!(parse(&Method::GET, "/nope").unwrap_err().status, 404);
        assert_eq!(parse(&Method::POST, "/secrets").unwrap_err().status, 405);
        assert_eq!(
            parse(&Method::GET, &format!("/secrets/{}", "a".repeat(128)))
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(percent_decode("a%41%zz%"), "aA%zz%");
    }

    #[test]
    fn classifies_identity_endpoints() {
        assert_eq!(
            classify(&Method::POST, "/tenant/oauth2/v2.0/token"),
            Operation::Token
        );
        assert_eq!(classify(&Method::GET, "/msi/token"), Operation::ManagedIdentity);
        assert_eq!(classify(&Method::POST, "/t/oauth2/token"), Operation::Token);
        assert_eq!(
            classify(&Method::GET, "/t/v2.0/.well-known/openid-configuration"),
            Operation::Token
        );
        assert_eq!(
            classify(&Method::GET, "/common/discovery/instance"),
            Operation::Token
        );
        assert_eq!(classify(&Method::GET, "/x/y/z/w/v"), Operation::Other);
        assert_eq!(
            classify(&Method::POST, "/topics/kv/eventsubscriptions/keyferry:receive"),
            Operation::EventGrid
        );
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parse_never_panics_and_errors_are_client_errors(path in "\\PC{0,200}", m in 0usize..6) {
            let method = [Method::GET, Method::PUT, Method::PATCH, Method::POST, Method::DELETE, Method::HEAD][m].clone();
            let _ = classify(&method, &path);
            if let Err(e) = parse(&method, &path) {
                prop_assert!(e.status.is_client_error());
            }
        }

        #[test]
        fn valid_names_round_trip(name in "[0-9a-zA-Z-]{1,127}") {
            prop_assert_eq!(parse(&Method::GET, &format!("/secrets/{name}/")).unwrap(), Route::GetSecret { name, version: None });
        }
    }
}
