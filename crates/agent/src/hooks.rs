//! `onChange` commands: run without a shell, bounded by a timeout, output captured to the log with
//! the output's values redacted, failures retried with backoff.

use std::process::Stdio;
use std::time::Duration;

use keyferry_providers::SecretValue;

use crate::config::OnChange;

/// Default timeout of a hook.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default attempts.
pub const DEFAULT_ATTEMPTS: u32 = 3;

/// Why a hook failed (after its last attempt). Never holds the hook's output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    /// The program could not be started.
    #[error("onChange {program}: cannot start: {reason}")]
    Spawn {
        /// The program.
        program: String,
        /// The OS error.
        reason: String,
    },
    /// It ran longer than its timeout and was killed.
    #[error("onChange {program}: killed after {secs} s")]
    Timeout {
        /// The program.
        program: String,
        /// The timeout.
        secs: u64,
    },
    /// It exited unsuccessfully.
    #[error("onChange {program}: exited with {status}")]
    Failed {
        /// The program.
        program: String,
        /// The exit status.
        status: String,
    },
}

impl HookError {
    /// Metrics/log category.
    pub fn category(&self) -> &'static str {
        "hook"
    }
}

/// Replaces every occurrence of a value (4 bytes or longer) in `text` by `<redacted>`.
pub fn redact(text: &str, values: &[SecretValue]) -> String {
    let mut out = text.to_owned();
    for v in values {
        if let Some(s) = v.expose_str()
            && s.len() >= 4
        {
            out = out.replace(s, "<redacted>");
            for line in s.lines().filter(|l| l.trim().len() >= 4) {
                out = out.replace(line, "<redacted>");
            }
        }
    }
    out
}

async fn run_once(
    hook: &OnChange,
    output: &str,
    path: &std::path::Path,
    values: &[SecretValue],
) -> Result<(), HookError> {
    let program = hook.command[0].clone();
    let timeout = hook.timeout_seconds.map_or(DEFAULT_TIMEOUT, Duration::from_secs);
    let child = tokio::process::Command::new(&program)
        .args(&hook.command[1..])
        .env("KEYFERRY_OUTPUT", output)
        .env("KEYFERRY_OUTPUT_PATH", path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| HookError::Spawn {
            program: program.clone(),
            reason: e.to_string(),
        })?;
    let result = tokio::time::timeout(timeout, child.wait_with_output()).await;
    let out = match result {
        Err(_) => {
            return Err(HookError::Timeout {
                program,
                secs: timeout.as_secs(),
            });
        }
        Ok(Err(e)) => {
            return Err(HookError::Spawn {
                program,
                reason: e.to_string(),
            });
        }
        Ok(Ok(out)) => out,
    };
    for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        let text = redact(&String::from_utf8_lossy(bytes), values);
        for line in text.lines().filter(|l| !l.trim().is_empty()).take(50) {
            tracing::info!(output, stream, "onChange: {line}");
        }
    }
    if out.status.success() {
        Ok(())
    } else {
        Err(HookError::Failed {
            program,
            status: out.status.to_string(),
        })
    }
}

/// Runs the hook up to its attempts, waiting 1 s, 2 s, 4 s, … between them.
pub async fn run(
    hook: &OnChange,
    output: &str,
    path: &std::path::Path,
    values: &[SecretValue],
) -> Result<(), HookError> {
    let attempts = hook.attempts.unwrap_or(DEFAULT_ATTEMPTS).max(1);
    let mut delay = Duration::from_secs(1);
    let mut attempt = 1;
    loop {
        match run_once(hook, output, path, values).await {
            Ok(()) => {
                tracing::info!(output, attempt, "onChange succeeded");
                return Ok(());
            }
            Err(e) if attempt < attempts => {
                tracing::warn!(output, attempt, error = %e, "onChange failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(60));
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}
