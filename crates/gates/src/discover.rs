//! Which files the gates read: YAML manifests under the given paths, and `.env` files that are
//! tracked in Git.
//!
//! Inside a Git work tree the candidate files come from `git ls-files`: tracked files, plus untracked
//! files that `.gitignore` does not exclude (they are about to be committed, and a local run should
//! see what CI will see). Ignored files — build output, a developer's local `.env` — are never read.
//! Outside Git the tree is walked instead, skipping hidden directories.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::GatesError;
use crate::policy::Policy;

/// A file to read.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SourceFile {
    /// The path relative to the root with `/` separators (absolute when outside the root). Used in
    /// findings and for pattern matching.
    pub rel: String,
    /// The path to open.
    pub path: PathBuf,
    /// Whether the file is under the paths asked for. Files outside them are still read for
    /// context (stores, other writers of a Secret) but get no findings.
    pub in_scope: bool,
}

/// What discovery found.
#[derive(Clone, Debug, Default)]
pub struct Discovery {
    /// The root, absolute.
    pub root: PathBuf,
    /// Whether the root is inside a Git work tree (and `tracked` therefore means `git ls-files`).
    pub in_git: bool,
    /// The root's path inside the Git work tree (`""` at the top, else `dir/sub/`): GitHub
    /// annotations need paths from the repository's top.
    pub repo_prefix: String,
    /// YAML files (`*.yaml`, `*.yml`) under the root and the paths asked for, sorted; those outside
    /// the paths are marked out of scope.
    pub yaml: Vec<SourceFile>,
    /// `.env` files under the paths asked for that are tracked (in Git) or present (outside Git),
    /// sorted.
    pub env_files: Vec<SourceFile>,
}

/// Whether a file name is a dotenv file: `.env`, `.env.<anything>` or `<anything>.env`.
pub fn is_env_file(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    name == ".env" || name.starts_with(".env.") || (name.ends_with(".env") && name.len() > 4)
}

fn is_yaml(rel: &str) -> bool {
    rel.ends_with(".yaml") || rel.ends_with(".yml")
}

/// Finds the files under `paths` (default: the root) that the gates read.
pub fn discover(paths: &[PathBuf], policy: &Policy) -> Result<Discovery, GatesError> {
    let root = policy.root.canonicalize().map_err(|_| GatesError::PathNotFound {
        path: policy.root.display().to_string(),
    })?;
    let mut scopes = Vec::new();
    let mut outside = Vec::new();
    let given: Vec<PathBuf> = if paths.is_empty() {
        vec![root.clone()]
    } else {
        paths.to_vec()
    };
    for p in &given {
        let abs = p.canonicalize().map_err(|_| GatesError::PathNotFound {
            path: p.display().to_string(),
        })?;
        match abs.strip_prefix(&root) {
            Ok(rel) => scopes.push(Scope {
                rel: to_slash(rel),
                dir: abs.is_dir(),
            }),
            // A path outside the root is read as given; patterns cannot match it.
            Err(_) => outside.push(abs),
        }
    }

    let git = git_files(&root);
    let in_git = git.is_some();
    let repo_prefix = if in_git {
        git_prefix(&root).unwrap_or_default()
    } else {
        String::new()
    };
    let (candidates, tracked): (BTreeSet<String>, BTreeSet<String>) = match git {
        Some(g) => g,
        None => {
            let mut all = BTreeSet::new();
            walk(&root, &root, policy, &mut all);
            (all.clone(), all)
        }
    };

    // A directory below the root with its own keyferry.toml is another project (a vendored repo,
    // examples, test fixtures): its own policy governs it, so it is left to a run there.
    let nested: Vec<String> = candidates
        .iter()
        .filter_map(|rel| rel.strip_suffix(&format!("/{}", crate::policy::POLICY_FILE)))
        .map(|dir| format!("{dir}/"))
        .collect();
    let candidates: BTreeSet<String> = candidates
        .into_iter()
        .filter(|rel| !nested.iter().any(|n| rel.starts_with(n.as_str())))
        .collect();

    let mut out = Discovery {
        root: root.clone(),
        in_git,
        repo_prefix,
        ..Discovery::default()
    };
    for rel in &candidates {
        if policy.is_excluded(rel) {
            continue;
        }
        let in_scope = scopes.iter().any(|s| s.contains(rel));
        let wanted = is_yaml(rel) || (in_scope && is_env_file(rel));
        let path = root.join(rel);
        // A tracked file deleted in the work tree is not there to read.
        if !wanted || !path.is_file() {
            continue;
        }
        let file = SourceFile {
            rel: rel.clone(),
            path,
            in_scope,
        };
        if is_yaml(rel) {
            out.yaml.push(file.clone());
        }
        if in_scope && is_env_file(rel) && tracked.contains(rel) {
            out.env_files.push(file);
        }
    }
    // Files named explicitly are read even when Git does not know them.
    for s in scopes.iter().filter(|s| !s.dir) {
        if is_yaml(&s.rel) && !out.yaml.iter().any(|f| f.rel == s.rel) {
            out.yaml.push(SourceFile {
                rel: s.rel.clone(),
                path: root.join(&s.rel),
                in_scope: true,
            });
        }
    }
    for abs in outside {
        let mut found = BTreeSet::new();
        if abs.is_dir() {
            walk(&abs, &abs, policy, &mut found);
        } else {
            found.insert(String::new());
        }
        for rel in found {
            let path = if rel.is_empty() {
                abs.clone()
            } else {
                abs.join(&rel)
            };
            let shown = to_slash(&path);
            if is_yaml(&shown) {
                out.yaml.push(SourceFile {
                    rel: shown.clone(),
                    path: path.clone(),
                    in_scope: true,
                });
            }
            if is_env_file(&shown) {
                out.env_files.push(SourceFile {
                    rel: shown,
                    path,
                    in_scope: true,
                });
            }
        }
    }
    out.yaml.sort();
    out.yaml.dedup();
    out.env_files.sort();
    out.env_files.dedup();
    Ok(out)
}

struct Scope {
    rel: String,
    dir: bool,
}

impl Scope {
    fn contains(&self, rel: &str) -> bool {
        if self.rel.is_empty() {
            return true;
        }
        if self.dir {
            rel.strip_prefix(self.rel.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
        } else {
            rel == self.rel
        }
    }
}

fn to_slash(p: &Path) -> String {
    p.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// `(candidates, tracked)` from Git, relative to `root`; `None` when `root` is not in a work tree or
/// Git is not installed.
fn git_files(root: &Path) -> Option<(BTreeSet<String>, BTreeSet<String>)> {
    let list = |args: &[&str]| -> Option<BTreeSet<String>> {
        let out = Command::new("git").arg("-C").arg(root).args(args).output().ok()?;
        if !out.status.success() {
            return None;
        }
        Some(
            out.stdout
                .split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect(),
        )
    };
    let tracked = list(&["ls-files", "-z", "--cached"])?;
    let others = list(&["ls-files", "-z", "--others", "--exclude-standard"])?;
    let candidates = tracked.union(&others).cloned().collect();
    Some((candidates, tracked))
}

/// `git rev-parse --show-prefix`: the root's path from the work tree's top, with a trailing `/`.
fn git_prefix(root: &Path) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["rev-parse", "--show-prefix"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Walks `dir`, collecting paths relative to `base`; skips hidden directories and excluded paths,
/// never follows symlinks (a link cycle must not hang CI).
fn walk(base: &Path, dir: &Path, policy: &Policy, out: &mut BTreeSet<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(rel) = path.strip_prefix(base) else {
            continue;
        };
        let rel = to_slash(rel);
        let Ok(ft) = entry.file_type() else { continue };
        let name = entry.file_name();
        let hidden = name.to_string_lossy().starts_with('.');
        if ft.is_dir() {
            if !hidden && !policy.is_excluded(&rel) {
                walk(base, &path, policy, out);
            }
        } else if ft.is_file() {
            out.insert(rel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_file_names() {
        for yes in [
            ".env",
            "a/.env",
            ".env.local",
            "control/secrets.env",
            "x/.env.example",
        ] {
            assert!(is_env_file(yes), "{yes}");
        }
        for no in [
            "env",
            "a/environment.yaml",
            ".envrc",
            "a/.env/x.yaml",
            "prod.environment",
        ] {
            assert!(!is_env_file(no), "{no}");
        }
    }

    #[test]
    fn scopes_match_directories_and_files() {
        let dir = Scope {
            rel: "deploy/netbox".into(),
            dir: true,
        };
        assert!(dir.contains("deploy/netbox/secrets/a.yaml"));
        assert!(!dir.contains("deploy/netbox2/a.yaml"));
        let file = Scope {
            rel: "a.yaml".into(),
            dir: false,
        };
        assert!(file.contains("a.yaml") && !file.contains("a.yaml.bak"));
        assert!(
            Scope {
                rel: String::new(),
                dir: true
            }
            .contains("anything")
        );
    }

    #[test]
    fn outside_git_the_tree_is_walked() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("deploy/a/secrets")).unwrap();
        std::fs::create_dir_all(root.join(".hidden")).unwrap();
        std::fs::write(root.join("deploy/a/secrets/externalsecret-a.yaml"), "a: 1\n").unwrap();
        std::fs::write(root.join(".hidden/x.yaml"), "a: 1\n").unwrap();
        std::fs::write(root.join(".env"), "A=1\n").unwrap();
        std::fs::write(root.join("README.md"), "hi\n").unwrap();
        std::fs::create_dir_all(root.join("vendor/other/deploy")).unwrap();
        std::fs::write(root.join("vendor/other/keyferry.toml"), "").unwrap();
        std::fs::write(root.join("vendor/other/deploy/x.yaml"), "a: 1\n").unwrap();
        // tempdirs live outside any Git work tree on CI and here; skip if that is not so.
        if git_files(root).is_some() {
            return;
        }
        let policy = Policy::defaults(root);
        let d = discover(&[], &policy).unwrap();
        assert!(!d.in_git);
        let yaml: Vec<_> = d.yaml.iter().map(|f| f.rel.as_str()).collect();
        assert_eq!(yaml, ["deploy/a/secrets/externalsecret-a.yaml"]);
        let narrow = discover(&[root.join("README.md")], &policy).unwrap();
        assert!(narrow.env_files.is_empty(), "out of scope");
        assert!(!narrow.yaml[0].in_scope, "read for context only");
        let env: Vec<_> = d.env_files.iter().map(|f| f.rel.as_str()).collect();
        assert_eq!(env, [".env"]);
    }

    #[test]
    fn inside_git_only_tracked_env_files_count() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let git = |args: &[&str]| {
            Command::new("git")
                .arg("-C")
                .arg(root)
                .args(args)
                .output()
                .map(|o| o.status.success())
        };
        if git(&["init", "-q"]).ok() != Some(true) {
            return; // no git on this machine
        }
        std::fs::write(root.join(".env"), "A=1\n").unwrap();
        std::fs::write(root.join("local.env"), "A=1\n").unwrap();
        std::fs::write(root.join(".gitignore"), "ignored.yaml\n").unwrap();
        std::fs::write(root.join("ignored.yaml"), "a: 1\n").unwrap();
        std::fs::write(root.join("new.yaml"), "a: 1\n").unwrap();
        assert_eq!(git(&["add", ".env"]).ok(), Some(true));
        let policy = Policy::defaults(root);
        let d = discover(&[], &policy).unwrap();
        assert!(d.in_git);
        assert_eq!(d.repo_prefix, "", "the root is the top of its work tree");
        assert_eq!(d.repo_prefix, "");
        let env: Vec<_> = d.env_files.iter().map(|f| f.rel.as_str()).collect();
        assert_eq!(env, [".env"], "untracked local.env is a developer's own business");
        let yaml: Vec<_> = d.yaml.iter().map(|f| f.rel.as_str()).collect();
        assert_eq!(yaml, ["new.yaml"], "ignored files are never read");
    }
}
