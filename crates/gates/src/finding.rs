//! Findings, rule ids and the report both gates produce.

use std::fmt;
use std::process::ExitCode;

use serde::Serialize;

/// How serious a finding is. Only errors fail a gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Fails the gate (exit 1, 2 or 3 depending on the rule).
    Error,
    /// Reported, never fails the gate.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// What an error-level finding of a rule means for the exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExitClass {
    /// Something in the repository or the vault is wrong: exit 1.
    Finding,
    /// The vault could not be asked (down, throttled past retries, budget spent): exit 3.
    Unreachable,
    /// The gate is misconfigured (a store cannot be turned into a client): exit 2.
    Config,
}

macro_rules! rules {
    ($( $(#[$doc:meta])* $variant:ident = ($id:literal, $name:literal, $sev:ident, $class:ident); )*) => {
        /// Every rule a gate can report. Ids are stable: policies and CI dashboards refer to them.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Rule {
            $( $(#[$doc])* $variant, )*
        }

        impl Rule {
            /// Every rule, in id order.
            pub const ALL: &'static [Rule] = &[$(Rule::$variant),*];

            /// The stable id, e.g. `KF010`.
            pub fn id(self) -> &'static str {
                match self { $(Rule::$variant => $id,)* }
            }

            /// The short name, e.g. `akv-name`.
            pub fn name(self) -> &'static str {
                match self { $(Rule::$variant => $name,)* }
            }

            /// The severity unless a policy changes it.
            pub fn default_severity(self) -> Severity {
                match self { $(Rule::$variant => Severity::$sev,)* }
            }

            /// What an error of this rule does to the exit code.
            pub fn exit_class(self) -> ExitClass {
                match self { $(Rule::$variant => ExitClass::$class,)* }
            }
        }
    };
}

rules! {
    /// A document does not pass the CRD schema (malformed YAML, wrong apiVersion, missing or
    /// mistyped field, bad duration).
    Schema = ("KF001", "schema", Error, Finding);
    /// An ExternalSecret has neither `data` nor `dataFrom` (ESO webhook).
    NoData = ("KF002", "no-data", Error, Finding);
    /// Two `data` entries write the same `secretKey` (ESO webhook).
    DuplicateSecretKey = ("KF003", "duplicate-secret-key", Error, Finding);
    /// A `find.name.regexp` or `rewrite.regexp.source` does not compile (ESO webhook).
    InvalidRegexp = ("KF004", "invalid-regexp", Error, Finding);
    /// A `dataFrom` entry sets none or both of `extract`/`find`, or a rewrite sets none or both of
    /// `regexp`/`transform` (ESO webhook).
    DataFromShape = ("KF005", "datafrom-shape", Error, Finding);
    /// `deletionPolicy` contradicts `creationPolicy` (ESO webhook).
    PolicyConflict = ("KF006", "policy-conflict", Error, Finding);
    /// A store selects no provider, several, or one keyferry does not support (ESO webhook).
    UnsupportedProvider = ("KF007", "unsupported-provider", Error, Finding);
    /// A `secretKey` is not a valid Secret data key (`[-._a-zA-Z0-9]+`), or the target Secret's name
    /// is not a valid Kubernetes object name: the sync would fail when the Secret is written.
    K8sName = ("KF008", "k8s-name", Error, Finding);
    /// A store's provider settings are refused by ESO's store validation: a vault URL that is not
    /// https, a service principal without `authSecretRef`, a namespace set in a namespaced
    /// SecretStore, an invalid `namespaceRegexes` entry.
    StoreSpec = ("KF009", "store-spec", Error, Finding);
    /// A remote key breaks Azure Key Vault's object-name rule (1-127 of `0-9a-zA-Z-`).
    AkvName = ("KF010", "akv-name", Error, Finding);
    /// A remote key breaks the naming convention (default `<service>-<purpose>`, lowercase).
    NamingConvention = ("KF011", "naming-convention", Error, Finding);
    /// A remote key of a Vault store is not a usable KV secret path.
    VaultPath = ("KF012", "vault-path", Error, Finding);
    /// A template (`target.template.data`, `templateFrom[].literal`, templated labels and
    /// annotations, `rewrite[].transform.template`) does not compile with keyferry's engine, the one
    /// the controller runs.
    Template = ("KF013", "template", Error, Finding);
    /// A store reference resolves neither to a store in the repository nor to one declared in the
    /// policy.
    UnresolvedStore = ("KF020", "unresolved-store", Error, Finding);
    /// Two ExternalSecrets in one namespace write the same Secret.
    DuplicateTarget = ("KF030", "duplicate-target", Error, Finding);
    /// A committed Kubernetes `Secret` carries `data` or `stringData`.
    PlaintextSecret = ("KF040", "plaintext-secret", Error, Finding);
    /// A `.env` file is tracked in Git.
    DotenvFile = ("KF041", "dotenv-file", Error, Finding);
    /// An ExternalSecret lives outside the configured file pattern.
    Layout = ("KF050", "layout", Warning, Finding);
    /// The referenced secret does not exist.
    Missing = ("KF100", "missing", Error, Finding);
    /// The referenced secret exists but its current version is disabled.
    Disabled = ("KF101", "disabled", Error, Finding);
    /// The referenced secret's expiry (`exp`) has passed.
    Expired = ("KF102", "expired", Error, Finding);
    /// The referenced secret's not-before time (`nbf`) is in the future.
    NotYetValid = ("KF103", "not-yet-valid", Error, Finding);
    /// The referenced secret is soft-deleted (recoverable, but reads fail).
    SoftDeleted = ("KF104", "soft-deleted", Error, Finding);
    /// The secret's current version is older than the policy's `max-age-days`.
    Stale = ("KF105", "stale", Warning, Finding);
    /// The vault refused access (authentication or authorization).
    AccessDenied = ("KF106", "access-denied", Error, Finding);
    /// The vault could not be reached, kept throttling, or the request budget ran out.
    VaultUnreachable = ("KF107", "vault-unreachable", Error, Unreachable);
    /// `--deep`: the referenced JSON property (or, with `metadataPolicy: Fetch`, the tag) is absent.
    PropertyMissing = ("KF108", "property-missing", Error, Finding);
    /// A `dataFrom.find` matches no enabled secret.
    FindEmpty = ("KF109", "find-empty", Warning, Finding);
    /// A store cannot be turned into a vault client (no credentials, unsupported provider).
    StoreConfig = ("KF110", "store-config", Error, Config);
    /// The vault called a reference invalid.
    InvalidReference = ("KF111", "invalid-reference", Error, Finding);
    /// A `key/` or `cert/` reference the provider cannot check from properties.
    Unchecked = ("KF112", "unchecked", Warning, Finding);
}

impl Rule {
    /// Looks a rule up by id (`KF010`, any case) or name (`akv-name`).
    pub fn parse(s: &str) -> Option<Rule> {
        Rule::ALL
            .iter()
            .copied()
            .find(|r| r.id().eq_ignore_ascii_case(s) || r.name() == s)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.id(), self.name())
    }
}

impl Serialize for Rule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.id())
    }
}

/// One thing a gate found, located in a file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// The file, relative to the repository root, with `/` separators.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// Error or warning, after the policy's overrides.
    pub severity: Severity,
    /// The rule (serialized as its id).
    pub rule: Rule,
    /// The rule's short name (for JSON readers).
    pub rule_name: &'static str,
    /// What is wrong, in one line. Never contains a secret value.
    pub message: String,
    /// The object it is about, e.g. `ExternalSecret netbox/netbox-db-password`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
}

/// A finding before the policy assigns its severity: what the pure rule functions return.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawFinding {
    /// The rule.
    pub rule: Rule,
    /// The file.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// The message.
    pub message: String,
    /// The object, if any.
    pub object: Option<String>,
}

impl RawFinding {
    /// A finding of `rule` at `file:line`.
    pub fn new(rule: Rule, file: &str, line: usize, message: impl Into<String>) -> Self {
        RawFinding {
            rule,
            file: file.to_owned(),
            line,
            message: message.into(),
            object: None,
        }
    }

    /// Names the object the finding is about.
    pub fn with_object(mut self, object: impl Into<String>) -> Self {
        self.object = Some(object.into());
        self
    }
}

/// Which gate produced a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Gate {
    /// `keyferry validate`.
    Validate,
    /// `keyferry check`.
    Check,
}

impl fmt::Display for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Gate::Validate => "validate",
            Gate::Check => "check",
        })
    }
}

/// Counts for the summary line.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Files read.
    pub files: usize,
    /// YAML documents read.
    pub documents: usize,
    /// ExternalSecrets (and ClusterExternalSecrets) seen.
    pub external_secrets: usize,
    /// Remote references (each use counts).
    pub references: usize,
    /// Distinct (store, key) lookups made by `check`.
    pub distinct_lookups: usize,
    /// Requests sent to vaults by `check` (a paged listing counts each page).
    pub requests: usize,
}

/// What a gate found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The gate.
    pub gate: Gate,
    /// Findings, sorted by file, line and rule.
    pub findings: Vec<Finding>,
    /// Files that were examined (JUnit lists each one as a test case).
    pub files: Vec<String>,
    /// Counts.
    pub stats: Stats,
    /// The root's path from the Git work tree's top (`""` or `dir/`); GitHub annotations prepend
    /// it, since GitHub resolves them from the repository's top.
    #[serde(skip)]
    pub path_prefix: String,
}

impl Report {
    /// An empty report.
    pub fn new(gate: Gate) -> Self {
        Report {
            gate,
            findings: Vec::new(),
            files: Vec::new(),
            stats: Stats::default(),
            path_prefix: String::new(),
        }
    }

    /// Sorts and deduplicates findings so output is stable across runs (check runs concurrently).
    pub fn normalize(&mut self) {
        self.findings.sort_by(|a, b| {
            (&a.file, a.line, a.rule, &a.message).cmp(&(&b.file, b.line, b.rule, &b.message))
        });
        self.findings.dedup();
        self.files.sort();
        self.files.dedup();
    }

    /// Number of error findings.
    pub fn errors(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .count()
    }

    /// Number of warning findings.
    pub fn warnings(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Warning)
            .count()
    }

    /// The process exit code as a number: 0 clean (warnings allowed), 1 error findings, 2 a
    /// configuration error, 3 a vault that could not be asked.
    ///
    /// Precedence is 2, then 3, then 1: a misconfiguration needs a person whatever else happened;
    /// an unreachable vault means the answer is incomplete, so a pipeline should retry rather than
    /// trust the findings it did get.
    pub fn exit_status(&self) -> u8 {
        let classes: Vec<ExitClass> = self
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .map(|f| f.rule.exit_class())
            .collect();
        if classes.contains(&ExitClass::Config) {
            2
        } else if classes.contains(&ExitClass::Unreachable) {
            3
        } else if classes.is_empty() {
            0
        } else {
            1
        }
    }

    /// [`Report::exit_status`] as an [`ExitCode`].
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.exit_status())
    }

    /// Renders the report in `format` (same as [`crate::render`]).
    pub fn render(&self, format: crate::report::Format) -> String {
        crate::report::render(self, format)
    }

    /// The one-line summary every format ends with.
    pub fn summary(&self) -> String {
        let s = &self.stats;
        let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        let mut line = format!(
            "keyferry {}: {}, {} ({}, {}, {}",
            self.gate,
            plural(self.errors(), "error"),
            plural(self.warnings(), "warning"),
            plural(s.files, "file"),
            plural(s.external_secrets, "ExternalSecret"),
            plural(s.references, "reference"),
        );
        if self.gate == Gate::Check {
            line.push_str(&format!(
                ", {}, {}",
                plural(s.distinct_lookups, "distinct lookup"),
                plural(s.requests, "vault request")
            ));
        }
        line.push(')');
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(rule: Rule, severity: Severity) -> Finding {
        Finding {
            file: "f".into(),
            line: 1,
            severity,
            rule,
            rule_name: rule.name(),
            message: "m".into(),
            object: None,
        }
    }

    #[test]
    fn ids_and_names_are_unique_and_parse_back() {
        let mut ids: Vec<_> = Rule::ALL.iter().map(|r| r.id()).collect();
        let mut names: Vec<_> = Rule::ALL.iter().map(|r| r.name()).collect();
        ids.dedup();
        names.sort();
        names.dedup();
        assert_eq!(ids.len(), Rule::ALL.len());
        assert_eq!(names.len(), Rule::ALL.len());
        for r in Rule::ALL {
            assert_eq!(Rule::parse(r.id()), Some(*r));
            assert_eq!(Rule::parse(&r.id().to_lowercase()), Some(*r));
            assert_eq!(Rule::parse(r.name()), Some(*r));
        }
        assert_eq!(Rule::parse("KF999"), None);
    }

    #[test]
    fn exit_codes_follow_precedence() {
        let mut r = Report::new(Gate::Check);
        assert_eq!(r.exit_status(), 0);
        r.findings.push(finding(Rule::Stale, Severity::Warning));
        assert_eq!(r.exit_status(), 0, "warnings never fail");
        r.findings.push(finding(Rule::Missing, Severity::Error));
        assert_eq!(r.exit_status(), 1);
        r.findings.push(finding(Rule::VaultUnreachable, Severity::Error));
        assert_eq!(r.exit_status(), 3);
        r.findings.push(finding(Rule::StoreConfig, Severity::Error));
        assert_eq!(r.exit_status(), 2);
    }

    #[test]
    fn downgraded_unreachable_does_not_exit_3() {
        let mut r = Report::new(Gate::Check);
        r.findings
            .push(finding(Rule::VaultUnreachable, Severity::Warning));
        assert_eq!(r.exit_status(), 0);
    }
}
