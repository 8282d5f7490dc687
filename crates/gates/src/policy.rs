//! The policy file, `keyferry.toml`: file layout, naming convention, allow-lists, stores defined
//! outside the repository, rule severities and `check` settings.
//!
//! ```toml
//! [layout]
//! externalsecrets = ["deploy/*/secrets/externalsecret-*.yaml"]  # globs, relative to the root
//! exclude = ["vendor/**"]                                      # never read
//!
//! [naming]
//! remote-key = "^[a-z0-9]+(-[a-z0-9]+)+$"                      # <service>-<purpose>
//!
//! [allow]
//! plaintext-secrets = ["deploy/bootstrap/**"]                  # files whose Secrets are accepted
//! env-files = ["**/.env.example"]                              # replaces the default list
//!
//! [[stores]]                                                   # stores the platform defines
//! kind = "ClusterSecretStore"                                  # or SecretStore (+ namespace)
//! name = "akv-hybridops"
//! vault-url = "https://kv-hybridops.vault.azure.net/"          # used by `check`
//!
//! [rules]
//! KF011 = "warning"                                            # error | warning | off
//! duplicate-target = "off"                                     # ids or names
//!
//! [check]
//! max-age-days = 180                                           # warn (KF105) past this age
//! concurrency = 8
//! request-budget = 2000
//! list-threshold = 10
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use globset::{GlobSet, GlobSetBuilder};
use keyferry_api::external_secret::StoreKind;
use regex::Regex;
use serde::Deserialize;

use crate::GatesError;
use crate::finding::{Rule, Severity};

/// The file name looked up in the repository root.
pub const POLICY_FILE: &str = "keyferry.toml";

/// Where ExternalSecrets live by default (the platform convention).
pub const DEFAULT_EXTERNALSECRET_PATTERN: &str = "deploy/*/secrets/externalsecret-*.yaml";

/// The default naming convention for remote keys: lowercase `<service>-<purpose>`.
pub const DEFAULT_NAMING: &str = "^[a-z0-9]+(-[a-z0-9]+)+$";

/// `.env` files that are meant to be committed (templates without values).
pub const DEFAULT_ENV_ALLOW: &[&str] = &[
    "**/.env.example",
    "**/*.env.example",
    "**/.env.sample",
    "**/.env.template",
    "**/.env.dist",
];

/// Defaults for `check`.
pub const DEFAULT_CONCURRENCY: usize = 8;
/// Default cap on requests one `check` run sends.
pub const DEFAULT_REQUEST_BUDGET: usize = 2000;
/// Default number of distinct keys in one store from which one listing beats per-secret calls.
pub const DEFAULT_LIST_THRESHOLD: usize = 10;

/// A store defined outside the repository (by the platform team, in another repo).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeclaredStore {
    /// `SecretStore` or `ClusterSecretStore`.
    pub kind: StoreKind,
    /// The store's name.
    pub name: String,
    /// For a `SecretStore`, its namespace; `None` accepts any namespace.
    pub namespace: Option<String>,
    /// The vault URL, so `check` can reach it without the store manifest.
    pub vault_url: Option<String>,
}

/// `check` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckPolicy {
    /// Warn (KF105) when a secret's current version is older than this many days.
    pub max_age_days: Option<u32>,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Requests one run may send in total.
    pub request_budget: usize,
    /// Distinct keys in one store from which one listing replaces per-secret calls.
    pub list_threshold: usize,
}

impl Default for CheckPolicy {
    fn default() -> Self {
        CheckPolicy {
            max_age_days: None,
            concurrency: DEFAULT_CONCURRENCY,
            request_budget: DEFAULT_REQUEST_BUDGET,
            list_threshold: DEFAULT_LIST_THRESHOLD,
        }
    }
}

/// A loaded, compiled policy.
#[derive(Clone, Debug)]
pub struct Policy {
    /// The repository root: file patterns are matched against paths relative to it.
    pub root: PathBuf,
    /// The policy file, if one was read.
    pub source: Option<PathBuf>,
    /// Globs of files that hold ExternalSecrets.
    pub externalsecret_patterns: Vec<String>,
    externalsecrets: GlobSet,
    exclude: GlobSet,
    /// The naming convention for remote keys.
    pub naming: Regex,
    allow_plaintext: GlobSet,
    allow_env: GlobSet,
    /// Stores defined outside the repository.
    pub stores: Vec<DeclaredStore>,
    /// Severity overrides; `None` disables a rule.
    pub rules: BTreeMap<Rule, Option<Severity>>,
    /// `check` settings.
    pub check: CheckPolicy,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct PolicyFile {
    #[serde(default)]
    layout: LayoutSection,
    #[serde(default)]
    naming: NamingSection,
    #[serde(default)]
    allow: AllowSection,
    #[serde(default)]
    stores: Vec<StoreSection>,
    #[serde(default)]
    rules: BTreeMap<String, String>,
    #[serde(default)]
    check: CheckSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct LayoutSection {
    externalsecrets: Option<Vec<String>>,
    #[serde(default)]
    exclude: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct NamingSection {
    remote_key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct AllowSection {
    #[serde(default)]
    plaintext_secrets: Vec<String>,
    env_files: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct StoreSection {
    #[serde(default)]
    kind: Option<StoreKind>,
    name: String,
    namespace: Option<String>,
    vault_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct CheckSection {
    max_age_days: Option<u32>,
    concurrency: Option<usize>,
    request_budget: Option<usize>,
    list_threshold: Option<usize>,
}

impl Policy {
    /// The built-in policy for a repository root.
    pub fn defaults(root: impl Into<PathBuf>) -> Policy {
        // The defaults are literals tested below; compiling them cannot fail.
        Policy::compile(root.into(), None, PolicyFile::default())
            .unwrap_or_else(|e| unreachable!("built-in policy does not compile: {e}"))
    }

    /// Finds the root for `paths` and reads the policy: `explicit` if given, else `keyferry.toml` in
    /// the root if present, else the defaults.
    pub fn load(paths: &[PathBuf], explicit: Option<&Path>) -> Result<Policy, GatesError> {
        let root = find_root(paths)?;
        let file = match explicit {
            Some(p) => Some(p.to_path_buf()),
            None => Some(root.join(POLICY_FILE)).filter(|p| p.is_file()),
        };
        match file {
            None => Ok(Policy::defaults(root)),
            Some(file) => {
                let text = std::fs::read_to_string(&file).map_err(|source| GatesError::PolicyRead {
                    path: file.display().to_string(),
                    source,
                })?;
                Policy::parse(root, &file, &text)
            }
        }
    }

    /// Parses policy text; `file` names it in errors.
    pub fn parse(root: impl Into<PathBuf>, file: &Path, text: &str) -> Result<Policy, GatesError> {
        let shown = file.display().to_string();
        let parsed: PolicyFile = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            GatesError::PolicyInvalid {
                path: shown.clone(),
                message: match line {
                    Some(l) => format!("line {l}: {}", e.message().trim()),
                    None => e.message().trim().to_owned(),
                },
            }
        })?;
        Policy::compile(root.into(), Some(file.to_path_buf()), parsed)
    }

    fn compile(root: PathBuf, source: Option<PathBuf>, f: PolicyFile) -> Result<Policy, GatesError> {
        let shown = source
            .as_ref()
            .map_or_else(|| "<built-in policy>".to_owned(), |p| p.display().to_string());
        let invalid = |message: String| GatesError::PolicyInvalid {
            path: shown.clone(),
            message,
        };
        let globs = |field: &str, list: &[String]| -> Result<GlobSet, GatesError> {
            let mut b = GlobSetBuilder::new();
            for g in list {
                // literal_separator: `*` stays within one path segment, as in a shell.
                let glob = globset::GlobBuilder::new(g)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| invalid(format!("{field}: {g:?} is not a valid glob: {}", e.kind())))?;
                b.add(glob);
            }
            b.build().map_err(|e| invalid(format!("{field}: {e}")))
        };
        let patterns = f
            .layout
            .externalsecrets
            .unwrap_or_else(|| vec![DEFAULT_EXTERNALSECRET_PATTERN.to_owned()]);
        let naming_src = f.naming.remote_key.unwrap_or_else(|| DEFAULT_NAMING.to_owned());
        let naming = Regex::new(&naming_src).map_err(|e| {
            invalid(format!(
                "naming.remote-key: {naming_src:?} is not a valid regex: {}",
                regex_reason(&e)
            ))
        })?;
        let env_allow = f
            .allow
            .env_files
            .unwrap_or_else(|| DEFAULT_ENV_ALLOW.iter().map(|s| (*s).to_owned()).collect());
        let mut rules = BTreeMap::new();
        for (key, value) in &f.rules {
            let rule = Rule::parse(key).ok_or_else(|| {
                invalid(format!(
                    "rules: unknown rule {key:?} (use an id like KF010 or a name like akv-name)"
                ))
            })?;
            let severity = match value.as_str() {
                "error" => Some(Severity::Error),
                "warning" | "warn" => Some(Severity::Warning),
                "off" | "disabled" => None,
                other => {
                    return Err(invalid(format!(
                        "rules.{key}: {other:?} is not a severity (use error, warning or off)"
                    )));
                }
            };
            rules.insert(rule, severity);
        }
        let mut stores = Vec::new();
        for s in f.stores {
            let kind = s.kind.unwrap_or(StoreKind::ClusterSecretStore);
            if kind == StoreKind::ClusterSecretStore && s.namespace.is_some() {
                return Err(invalid(format!(
                    "stores: ClusterSecretStore {} cannot have a namespace",
                    s.name
                )));
            }
            stores.push(DeclaredStore {
                kind,
                name: s.name,
                namespace: s.namespace,
                vault_url: s.vault_url,
            });
        }
        let positive = |field: &str, v: Option<usize>, default: usize| match v {
            Some(0) => Err(invalid(format!("check.{field}: must be at least 1"))),
            Some(n) => Ok(n),
            None => Ok(default),
        };
        let check = CheckPolicy {
            max_age_days: f.check.max_age_days,
            concurrency: positive("concurrency", f.check.concurrency, DEFAULT_CONCURRENCY)?,
            request_budget: positive("request-budget", f.check.request_budget, DEFAULT_REQUEST_BUDGET)?,
            list_threshold: positive("list-threshold", f.check.list_threshold, DEFAULT_LIST_THRESHOLD)?,
        };
        Ok(Policy {
            externalsecrets: globs("layout.externalsecrets", &patterns)?,
            exclude: globs("layout.exclude", &f.layout.exclude)?,
            externalsecret_patterns: patterns,
            naming,
            allow_plaintext: globs("allow.plaintext-secrets", &f.allow.plaintext_secrets)?,
            allow_env: globs("allow.env-files", &env_allow)?,
            stores,
            rules,
            check,
            root,
            source,
        })
    }

    /// The severity of a rule under this policy; `None` when the rule is off.
    pub fn severity(&self, rule: Rule) -> Option<Severity> {
        self.rules
            .get(&rule)
            .copied()
            .unwrap_or(Some(rule.default_severity()))
    }

    /// Whether a root-relative path is where ExternalSecrets belong.
    pub fn is_externalsecret_file(&self, rel: &str) -> bool {
        self.externalsecrets.is_match(rel)
    }

    /// Whether a root-relative path is excluded from reading.
    pub fn is_excluded(&self, rel: &str) -> bool {
        self.exclude.is_match(rel)
    }

    /// Whether a committed plaintext Secret in this file is accepted.
    pub fn allows_plaintext(&self, rel: &str) -> bool {
        self.allow_plaintext.is_match(rel)
    }

    /// Whether a tracked `.env` file at this path is accepted.
    pub fn allows_env_file(&self, rel: &str) -> bool {
        self.allow_env.is_match(rel)
    }
}

/// The last line of a regex error (the reason), so errors stay on one line.
pub(crate) fn regex_reason(e: &regex::Error) -> String {
    e.to_string()
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .trim_start_matches("error: ")
        .to_owned()
}

/// The repository root for `paths`, as an absolute path: the nearest directory at or above the
/// first path holding `keyferry.toml`, not climbing past the Git work tree's top; else that top;
/// else the first path (or its directory).
pub fn find_root(paths: &[PathBuf]) -> Result<PathBuf, GatesError> {
    let first = paths.first().cloned().unwrap_or_else(|| PathBuf::from("."));
    let abs = first.canonicalize().map_err(|_| GatesError::PathNotFound {
        path: first.display().to_string(),
    })?;
    let start = if abs.is_dir() {
        abs.clone()
    } else {
        abs.parent().map_or(abs.clone(), Path::to_path_buf)
    };
    for dir in start.ancestors() {
        if dir.join(POLICY_FILE).is_file() {
            return Ok(dir.to_path_buf());
        }
        // `.git` is a directory in a clone and a file in a worktree; either marks the top.
        if dir.join(".git").exists() {
            return Ok(dir.to_path_buf());
        }
    }
    Ok(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Policy, GatesError> {
        Policy::parse(".", Path::new("keyferry.toml"), text)
    }

    #[test]
    fn defaults_match_the_platform_convention() {
        let p = Policy::defaults(".");
        assert!(p.is_externalsecret_file("deploy/netbox/secrets/externalsecret-netbox-db-password.yaml"));
        assert!(!p.is_externalsecret_file("deploy/netbox/secrets/nested/externalsecret-x.yaml"));
        assert!(!p.is_externalsecret_file("deploy/netbox/externalsecret-x.yaml"));
        assert!(p.naming.is_match("netbox-db-password"));
        assert!(!p.naming.is_match("NetboxPassword"));
        assert!(!p.naming.is_match("tfc"));
        assert!(p.allows_env_file("control/secrets.env.example"));
        assert!(p.allows_env_file(".env.example"));
        assert!(!p.allows_env_file(".env"));
        assert_eq!(p.severity(Rule::Layout), Some(Severity::Warning));
        assert_eq!(p.check, CheckPolicy::default());
    }

    #[test]
    fn every_section_parses() {
        let p = parse(
            r#"
[layout]
externalsecrets = ["apps/*/es-*.yaml"]
exclude = ["vendor/**"]
[naming]
remote-key = "^[a-z]+$"
[allow]
plaintext-secrets = ["deploy/bootstrap/**"]
env-files = []
[[stores]]
name = "akv-hybridops"
vault-url = "https://kv.vault.azure.net/"
[[stores]]
kind = "SecretStore"
name = "local"
namespace = "netbox"
[rules]
KF011 = "warning"
duplicate-target = "off"
[check]
max-age-days = 90
concurrency = 4
"#,
        )
        .unwrap();
        assert!(p.is_externalsecret_file("apps/a/es-x.yaml"));
        assert!(p.is_excluded("vendor/x/y.yaml"));
        assert!(p.allows_plaintext("deploy/bootstrap/sp.yaml"));
        assert!(
            !p.allows_env_file(".env.example"),
            "an explicit list replaces the defaults"
        );
        assert_eq!(p.stores.len(), 2);
        assert_eq!(p.stores[0].kind, StoreKind::ClusterSecretStore);
        assert_eq!(p.severity(Rule::NamingConvention), Some(Severity::Warning));
        assert_eq!(p.severity(Rule::DuplicateTarget), None);
        assert_eq!(p.check.max_age_days, Some(90));
        assert_eq!(p.check.concurrency, 4);
        assert_eq!(p.check.request_budget, DEFAULT_REQUEST_BUDGET);
    }

    #[test]
    fn mistakes_are_one_line_errors_naming_the_field() {
        let cases = [
            ("[rules]\nKF999 = \"off\"\n", "unknown rule \"KF999\""),
            ("[rules]\nKF010 = \"loud\"\n", "\"loud\" is not a severity"),
            ("[naming]\nremote-key = \"(\"\n", "naming.remote-key"),
            (
                "[layout]\nexternalsecrets = [\"a/[\"]\n",
                "layout.externalsecrets",
            ),
            ("[layuot]\n", "line 1: unknown field `layuot`"),
            (
                "[check]\nconcurrency = 0\n",
                "check.concurrency: must be at least 1",
            ),
            (
                "[[stores]]\nname = \"x\"\nnamespace = \"n\"\n",
                "cannot have a namespace",
            ),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn root_is_the_policy_dir_or_the_git_top() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        std::fs::create_dir_all(repo.join("deploy/netbox/secrets")).unwrap();
        std::fs::create_dir_all(repo.join(".git")).unwrap();
        let repo = repo.canonicalize().unwrap();
        let deep = repo.join("deploy/netbox");
        assert_eq!(find_root(std::slice::from_ref(&deep)).unwrap(), repo);
        std::fs::write(repo.join("deploy/keyferry.toml"), "").unwrap();
        assert_eq!(
            find_root(std::slice::from_ref(&deep)).unwrap(),
            repo.join("deploy")
        );
        let file = repo.join("deploy/netbox/secrets");
        assert_eq!(find_root(&[file]).unwrap(), repo.join("deploy"));
        assert!(matches!(
            find_root(&[repo.join("nope")]),
            Err(GatesError::PathNotFound { .. })
        ));
    }
}
