//! `keyferry --version` says the commit when the build was given one: `KEYFERRY_COMMIT` (set by
//! `scripts/image` and the Dockerfile). It is read from the environment, never from `.git`, so an
//! ordinary build never goes stale on a new commit nor rebuilds because of one.

fn main() {
    println!("cargo:rerun-if-env-changed=KEYFERRY_COMMIT");
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let full = match std::env::var("KEYFERRY_COMMIT") {
        Ok(commit) if !commit.trim().is_empty() => format!("{version} (commit {})", commit.trim()),
        _ => version,
    };
    println!("cargo:rustc-env=KEYFERRY_VERSION={full}");
}
