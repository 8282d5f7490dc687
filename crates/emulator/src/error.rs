//! Error types: [`EmulatorError`] for the library and CLI, [`ApiError`] for AKV-style HTTP answers.

use std::io;
use std::path::PathBuf;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Everything that can go wrong when starting, seeding or driving the emulator.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// A seed, state or clients file is malformed.
    #[error("{path}: {message}")]
    InvalidFile {
        /// The offending file.
        path: PathBuf,
        /// What is wrong, naming the field where possible.
        message: String,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The requested address.
        addr: std::net::SocketAddr,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// TLS material could not be generated or loaded.
    #[error("TLS: {0}")]
    Tls(String),
    /// A configuration value is invalid (for example a vault name or a fault spec).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A vault operation requested through the library API was refused.
    #[error("{0}")]
    Vault(#[from] ApiError),
    /// The server task failed.
    #[error("server: {0}")]
    Server(#[source] io::Error),
}

impl EmulatorError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid_file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::InvalidFile {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// An error answer in Azure Key Vault's shape:
/// `{"error":{"code":"…","message":"…","innererror":{"code":"…"}}}` plus an `x-ms-error-code` header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// AKV error code, e.g. `SecretNotFound`.
    pub code: &'static str,
    /// Human-readable message (never contains secret values).
    pub message: String,
    /// Optional inner error code, e.g. `SecretDisabled`.
    pub inner: Option<&'static str>,
}

impl ApiError {
    /// Builds an error from its parts.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            inner: None,
        }
    }

    /// Adds an inner error code.
    #[must_use]
    pub fn with_inner(mut self, inner: &'static str) -> Self {
        self.inner = Some(inner);
        self
    }

    /// 400 `BadParameter`.
    pub fn bad_parameter(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadParameter", message)
    }

    /// 404 `SecretNotFound` for a live secret (optionally a specific version).
    pub fn secret_not_found(name: &str, version: Option<&str>) -> Self {
        let id = match version {
            Some(v) => format!("{name}/{v}"),
            None => name.to_owned(),
        };
        Self::new(
            StatusCode::NOT_FOUND,
            "SecretNotFound",
            format!(
                "A secret with (name/id) {id} was not found in this key vault. If you recently deleted \
                 this secret you may be able to recover it using the correct recovery command."
            ),
        )
    }

    /// 404 `SecretNotFound` for a deleted secret.
    pub fn deleted_secret_not_found(name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "SecretNotFound",
            format!("Deleted Secret not found: {name}"),
        )
    }

    /// 403 `Forbidden` / `SecretDisabled`.
    pub fn secret_disabled(operation: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!("Operation {operation} is not allowed on a disabled secret."),
        )
        .with_inner("SecretDisabled")
    }

    /// 409 `Conflict` / `ObjectIsDeletedButRecoverable`.
    pub fn deleted_but_recoverable(name: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Secret {name} is currently in a deleted but recoverable state, and its name cannot be \
                 reused; in this state, the secret can only be recovered or purged."
            ),
        )
        .with_inner("ObjectIsDeletedButRecoverable")
    }

    /// 409 `Conflict` for restoring over an existing secret.
    pub fn already_exists(name: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!("Secret {name} already exists."),
        )
    }

    /// 429 `Throttled`.
    pub fn throttled() -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "Throttled",
            "Request was not processed because too many requests were received. Reason: \
             VaultRequestTypeLimitReached",
        )
    }

    /// 503 `ServiceUnavailable`.
    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "The service is temporarily unavailable (injected fault).",
        )
    }

    /// 401 `Unauthorized` (the caller adds the `WWW-Authenticate` challenge).
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", message)
    }

    /// 404 for a path the vault does not serve.
    pub fn no_such_path(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("The requested path {path} was not found."),
        )
    }

    /// 405 for a known path with an unsupported method.
    pub fn method_not_allowed(method: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("The requested method {method} is not allowed on this resource."),
        )
    }
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    innererror: Option<InnerError<'a>>,
}

#[derive(Serialize)]
struct InnerError<'a> {
    code: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorEnvelope {
            error: ErrorBody {
                code: self.code,
                message: &self.message,
                innererror: self.inner.map(|code| InnerError { code }),
            },
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = (self.status, bytes).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        headers.insert("x-ms-error-code", HeaderValue::from_static(self.code));
        response
    }
}
