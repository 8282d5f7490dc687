//! `keyferry --version` says the commit it was built from: `KEYFERRY_COMMIT` when the build is given
//! one (`scripts/image`, the Dockerfile: a build context without `.git`), else the checkout's `HEAD`,
//! read from `.git` directly (no `git` binary needed). Only `HEAD` and the branch's ref are watched,
//! so a new commit rebuilds this crate alone; a tree without `.git` (a source tarball) says no commit.

use std::fs;
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=KEYFERRY_COMMIT");
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let commit = match std::env::var("KEYFERRY_COMMIT") {
        Ok(commit) if !commit.trim().is_empty() => Some(commit.trim().to_owned()),
        _ => std::env::var("CARGO_MANIFEST_DIR")
            .ok()
            .and_then(|dir| head_commit(Path::new(&dir))),
    };
    let full = match commit {
        Some(commit) => format!("{version} (commit {commit})"),
        None => version,
    };
    println!("cargo:rustc-env=KEYFERRY_VERSION={full}");
}

/// The abbreviated commit `HEAD` points at, for the checkout holding `dir`.
fn head_commit(dir: &Path) -> Option<String> {
    let dot_git = dir.ancestors().map(|d| d.join(".git")).find(|p| p.exists())?;
    // A worktree's `.git` is a file naming its git dir, whose `commondir` holds the refs.
    let git_dir = if dot_git.is_file() {
        PathBuf::from(fs::read_to_string(&dot_git).ok()?.strip_prefix("gitdir:")?.trim())
    } else {
        dot_git
    };
    let common = fs::read_to_string(git_dir.join("commondir"))
        .map(|c| git_dir.join(c.trim()))
        .unwrap_or_else(|_| git_dir.clone());
    let head = git_dir.join("HEAD");
    watch(&head);
    let text = fs::read_to_string(&head).ok()?;
    let sha = match text.trim().strip_prefix("ref:").map(str::trim) {
        None => text.trim().to_owned(),
        Some(branch) => {
            let loose = common.join(branch);
            let packed = common.join("packed-refs");
            if packed.exists() {
                watch(&packed);
            }
            if loose.exists() {
                watch(&loose);
                fs::read_to_string(&loose).ok()?.trim().to_owned()
            } else {
                // Packed only: a commit writes the loose ref into this directory.
                if let Some(parent) = loose.parent() {
                    watch(parent);
                }
                fs::read_to_string(&packed)
                    .ok()?
                    .lines()
                    .find_map(|l| l.strip_suffix(branch).map(|s| s.trim().to_owned()))?
            }
        }
    };
    (sha.len() >= 12 && sha.chars().all(|c| c.is_ascii_hexdigit())).then(|| sha[..12].to_owned())
}

fn watch(path: &Path) {
    println!("cargo:rerun-if-changed={}", path.display());
}
