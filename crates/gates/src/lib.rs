//! keyferry's CI gates.
//!
//! - [`validate`] — offline, over a repository: every ExternalSecret and store passes the CRD schema
//!   and ESO's webhook rules, remote keys are valid Key Vault names that follow the naming
//!   convention, store references resolve, no two ExternalSecrets write one Secret, and no secret
//!   value is committed (plaintext `Secret`s, `.env` files).
//! - [`check()`] — online: every remote reference exists in its vault, is enabled, inside its
//!   not-before/expiry window and not soft-deleted — answered from properties, never by reading a
//!   value (except `--deep`, which reads to prove a JSON property exists and still prints nothing).
//!
//! Both return a [`Report`]: findings with file, line and a stable rule id (see [`Rule`]), rendered
//! as human text, JSON, JUnit or GitHub annotations ([`render`]), and an exit code
//! ([`Report::exit_code`]) that tells "fix the repo" (1) from "misconfigured" (2) from "vault
//! unreachable, retry" (3).
//!
//! The CLI wires the ready-made clap arguments in [`cli`]: `ValidateArgs` + `run_validate`, and
//! `CheckArgs` + `run_check`, which takes a closure building the [`StoreResolver`] (the Azure provider
//! in production, [`keyferry_providers::FakeStore`] in tests).

use std::path::PathBuf;

pub mod check;
pub mod cli;
pub mod discover;
pub mod finding;
pub mod model;
pub mod policy;
pub mod report;
pub mod rules;

pub use check::{CheckOptions, MapResolver, ResolveError, StoreContext, StoreResolver, check};
pub use finding::{Finding, Gate, RawFinding, Report, Rule, Severity, Stats};
pub use policy::Policy;
pub use report::{Format, render};

use model::EsView;
use rules::stores::StoreIndex;

/// Errors that stop a gate before it can judge anything: exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum GatesError {
    /// A path given on the command line does not exist.
    #[error("{path}: no such file or directory")]
    PathNotFound {
        /// The path.
        path: String,
    },
    /// The policy file could not be read.
    #[error("{path}: cannot read policy: {source}")]
    PolicyRead {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The policy file is not valid.
    #[error("{path}: invalid policy: {message}")]
    PolicyInvalid {
        /// The file.
        path: String,
        /// What is wrong, with its line.
        message: String,
    },
    /// A report could not be written.
    #[error("{path}: cannot write report: {source}")]
    WriteReport {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The store resolver could not be built (for example, no credentials in the environment).
    #[error("cannot set up vault access: {0}")]
    Resolver(String),
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

/// Applies the policy's severities: drops findings of disabled rules.
pub(crate) fn apply_policy(raw: Vec<RawFinding>, policy: &Policy) -> Vec<Finding> {
    raw.into_iter()
        .filter_map(|r| {
            policy.severity(r.rule).map(|severity| Finding {
                file: r.file,
                line: r.line,
                severity,
                rule: r.rule,
                rule_name: r.rule.name(),
                message: r.message,
                object: r.object,
            })
        })
        .collect()
}

/// Runs every offline rule over the files under `paths` (default: the policy's root).
///
/// Returns an error only when the gate cannot run at all (a path does not exist); everything wrong
/// with the repository is a finding in the report.
pub fn validate(paths: &[PathBuf], policy: &Policy) -> Result<Report, GatesError> {
    let found = discover::discover(paths, policy)?;
    let repo = model::load(&found.yaml, policy);
    let mut report = validate_repo(&repo, &found.env_files, policy);
    report.path_prefix = found.repo_prefix;
    Ok(report)
}

/// [`validate`] over an already-loaded repository (the bench uses this to leave out disk I/O).
pub fn validate_repo(repo: &model::Repo, env_files: &[discover::SourceFile], policy: &Policy) -> Report {
    let mut raw = repo.schema_findings.clone();
    let index = StoreIndex::build(&repo.docs, &policy.stores);
    let views: Vec<EsView<'_>> = repo.docs.iter().filter_map(EsView::of).collect();
    for es in &views {
        raw.extend(rules::schema::refresh_interval(es));
        raw.extend(rules::webhook::no_data(es));
        raw.extend(rules::webhook::duplicate_secret_keys(es));
        raw.extend(rules::webhook::k8s_names(es));
        raw.extend(rules::webhook::invalid_regexps(es));
        raw.extend(rules::webhook::datafrom_shape(es));
        raw.extend(rules::webhook::policy_conflict(es));
        raw.extend(rules::webhook::templates(es));
        raw.extend(rules::names::akv_names(es, &index));
        raw.extend(rules::names::naming_convention(es, &policy.naming, &index));
        raw.extend(rules::names::vault_paths(es, &index));
        raw.extend(rules::stores::unresolved_stores(es, &index));
        raw.extend(rules::layout::layout(es, &policy.externalsecret_patterns));
    }
    raw.extend(rules::targets::duplicate_targets(&views));
    for doc in &repo.docs {
        raw.extend(rules::schema::missing_name(&doc.located));
        raw.extend(rules::webhook::unsupported_provider(&doc.located));
        raw.extend(rules::webhook::store_spec(&doc.located));
        raw.extend(rules::plaintext::plaintext_secret(&doc.located, policy));
    }
    raw.extend(rules::plaintext::dotenv_files(env_files, policy));

    let mut report = Report::new(Gate::Validate);
    report.files = repo.files.clone();
    report.files.extend(env_files.iter().map(|f| f.rel.clone()));
    // Every document was judged (a conflict needs both sides); only files asked for are reported.
    let scope: std::collections::BTreeSet<&str> = report.files.iter().map(String::as_str).collect();
    raw.retain(|f| scope.contains(f.file.as_str()));
    report.findings = apply_policy(raw, policy);
    let in_scope: Vec<&EsView<'_>> = views.iter().filter(|v| v.doc.in_scope).collect();
    report.stats = Stats {
        files: report.files.len(),
        documents: repo.documents,
        external_secrets: in_scope.len(),
        references: in_scope.iter().map(|v| v.refs().len()).sum(),
        ..Stats::default()
    };
    report.normalize();
    report
}
