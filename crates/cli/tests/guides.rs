//! The doc runner: every `sh` block of the guides below runs, in order, in one bash session per
//! guide (so variables and background processes carry from block to block, as for a reader pasting
//! them), in a scratch copy of the repository whose `target/debug/keyferry` is the binary under test.
//! The first failing block fails the test, named by file and line.
//!
//! Blocks whose info string has a second word are not run, and the word says why: `sh azure` needs a
//! real Azure subscription, `sh long` is a benchmark, a release build or a test suite, `sh vm` changes a
//! host's system (users, systemd units) and is meant for a VM you administer, `sh example` holds
//! placeholders (`<apiserver>`) to fill in for your own system.
//!
//! The binary under test is on `PATH` as `keyferry`, as after `cargo install`; a guide's `cargo build`
//! is answered by it and `cargo run -p keyferry -- ARGS` runs it; any other cargo command fails at
//! once with a hint to mark its block `sh long` (a nested cargo would wait on the outer `cargo
//! test`'s lock until the guide's timeout). `sops` is on `PATH` too (`$SOPS_BIN`, or pip's user `bin`, where
//! `scripts/test` installs it). testenv and OpenBao get per-guide state directories, so a guide's
//! `scripts/testenv`/`scripts/openbao` never touch those of `scripts/test`, and both are stopped when
//! the guide ends. Every guide — `README.md`, `docs/*.md`, `docs/academy/*.md` — runs and must pass:
//! a new guide is held to account the moment it exists (mark what it cannot run, with the reason).
//! `KEYFERRY_GUIDES=docs/a.md,docs/b.md` runs only those; `KEYFERRY_GUIDES_VERBOSE=1` prints each
//! guide's whole output.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Every guide the runner holds to account: the README, then `docs/` and `docs/academy/` in name order.
fn guides() -> Vec<String> {
    let mut found = vec!["README.md".to_owned()];
    for dir in ["docs", "docs/academy"] {
        let mut here: Vec<String> = std::fs::read_dir(repo().join(dir))
            .unwrap()
            .map(|e| format!("{dir}/{}", e.unwrap().file_name().to_string_lossy()))
            .filter(|f| f.ends_with(".md"))
            .collect();
        here.sort();
        found.extend(here);
    }
    found
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// One fenced block: its first line number (1-based, the fence) and its text.
#[derive(Debug, PartialEq)]
struct Block {
    line: usize,
    /// The info string's second word (`azure` in ```` ```sh azure ````): why the block is not run.
    marker: Option<String>,
    text: String,
}

/// The markers a guide may use, each a reason a block is not run (see the module docs).
const MARKERS: &[&str] = &["azure", "long", "vm", "example"];

fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut current: Option<Block> = None;
    for (i, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        match &mut current {
            None => {
                if let Some(info) = trimmed.strip_prefix("```") {
                    let mut words = info.split_whitespace();
                    let shell = matches!(words.next(), Some("sh" | "bash" | "shell"));
                    current = Some(Block {
                        line: i + 1,
                        marker: words.next().map(str::to_owned),
                        text: if shell { String::new() } else { "\u{0}".to_owned() },
                    });
                }
            }
            Some(block) => {
                if trimmed.starts_with("```") {
                    let done = current.take().unwrap();
                    if !done.text.starts_with('\u{0}') {
                        out.push(done);
                    }
                } else {
                    block.text.push_str(line);
                    block.text.push('\n');
                }
            }
        }
    }
    out
}

/// A scratch checkout: every top-level entry of the repository copied (a few MB; a guide that edits
/// a file, e.g. `sed -i` on a copy of `examples/`, can never change the repository), except `target`,
/// which holds only the binary under test (the build's real target dir may be elsewhere).
fn scratch_checkout(dir: &Path) {
    for entry in std::fs::read_dir(repo()).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "target" || name == ".git" {
            continue;
        }
        let status = Command::new("cp")
            .arg("-a")
            .arg(entry.path())
            .arg(dir.join(&name))
            .status()
            .expect("cp");
        assert!(status.success(), "copying {} failed", entry.path().display());
    }
    std::fs::create_dir_all(dir.join("target/debug")).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_keyferry"), dir.join("target/debug/keyferry")).unwrap();
    // `cargo` for the guides, first on PATH (so `env … cargo` finds it too): a build is already
    // done, `cargo run -p keyferry -- ARGS` is the binary, anything else would wait on the outer
    // `cargo test`'s lock until the guide's timeout, so it fails at once and says what to do.
    let bin = dir.join(".doc-runner-bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(bin.join("cargo"), CARGO_SHIM).unwrap();
    std::fs::set_permissions(
        bin.join("cargo"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
}

const CARGO_SHIM: &str = r#"#!/usr/bin/env bash
case "$1" in
  build) echo '(doc runner: the binary under test is already built)'; exit 0 ;;
  run) case " $* " in
         *' -p keyferry '*|*' --package keyferry '*|*' --bin keyferry '*)
           while [ $# -gt 0 ] && [ "$1" != -- ]; do shift; done
           if [ $# -gt 0 ]; then shift; fi
           exec keyferry "$@" ;;
       esac ;;
esac
echo "doc runner: 'cargo $*' would wait on the outer cargo test's lock; mark the block 'sh long'" >&2
exit 1
"#;

fn script(guide: &str, blocks: &[Block], testenv_state: &Path) -> String {
    let mut s = format!(
        "set -eE -o pipefail\n\
         export KEYFERRY_TESTENV_STATE={state}\n\
         export KEYFERRY_OPENBAO_STATE={state}-openbao\n\
         unset KUBECONFIG KUBECONFIG_USER BAO_ADDR BAO_TOKEN BAO_BIN\n\
         export PATH=\"$PWD/.doc-runner-bin:$PWD/target/debug:$PATH\"\n\
         if [ -n \"${{SOPS_BIN:-}}\" ]; then PATH=\"$PATH:$(dirname \"$SOPS_BIN\")\"; fi\n\
         PATH=\"$PATH:$(python3 -m site --user-base 2>/dev/null)/bin\"\n\
         KF_BLOCK=start\n\
         trap 'echo \"DOC BLOCK FAILED: $KF_BLOCK\" >&2' ERR\n\
         trap 'kill $(jobs -p) 2>/dev/null || true; scripts/testenv down >/dev/null 2>&1 || true; [ ! -d \"$KEYFERRY_OPENBAO_STATE\" ] || scripts/openbao down >/dev/null 2>&1 || true' EXIT\n",
        state = testenv_state.display()
    );
    for b in blocks.iter().filter(|b| b.marker.is_none()) {
        s.push_str(&format!("KF_BLOCK={guide}:{}\necho \"==> $KF_BLOCK\"\n", b.line));
        s.push_str(&b.text);
    }
    s.push_str("KF_BLOCK=end\n");
    s
}

#[test]
fn the_fence_parser_keeps_only_shell_blocks_and_honours_markers() {
    let md = "x\n```sh\na\nb\n```\n```yaml\nk: v\n```\n```sh azure\naz login\n```\n";
    let got = blocks(md);
    assert_eq!(
        got,
        [
            Block {
                line: 2,
                marker: None,
                text: "a\nb\n".into()
            },
            Block {
                line: 9,
                marker: Some("azure".into()),
                text: "az login\n".into()
            }
        ]
    );
}

#[test]
fn every_guide_runs_as_written() {
    // `KEYFERRY_GUIDES=docs/a.md,docs/b.md` runs those instead (while making a guide pass).
    let chosen: Vec<String> = match std::env::var("KEYFERRY_GUIDES") {
        Ok(list) => list.split(',').map(str::to_owned).collect(),
        Err(_) => guides(),
    };
    for guide in &chosen {
        let guide = guide.as_str();
        let markdown = std::fs::read_to_string(repo().join(guide)).unwrap();
        let blocks = blocks(&markdown);
        for b in &blocks {
            if let Some(m) = b.marker.as_deref() {
                assert!(
                    MARKERS.contains(&m),
                    "{guide}:{}: unknown marker `sh {m}` (a block is skipped only for a known reason: {MARKERS:?})",
                    b.line
                );
            }
        }
        let skipped = blocks.iter().filter(|b| b.marker.is_some()).count();
        let dir = tempfile::tempdir().unwrap();
        scratch_checkout(dir.path());
        let state = dir.path().join(".testenv");
        let script_path = dir.path().join(".guide.sh");
        std::fs::write(&script_path, script(guide, &blocks, &state)).unwrap();
        let started = std::time::Instant::now();
        let out = Command::new("timeout")
            .args(["600", "bash"])
            .arg(&script_path)
            .current_dir(dir.path())
            .output()
            .expect("bash");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail = |s: &str| {
            s.lines()
                .rev()
                .take(25)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert!(
            out.status.success(),
            "{guide} failed (exit {:?}) — {}\n--- stdout (tail) ---\n{}\n--- stderr (tail) ---\n{}",
            out.status.code(),
            stderr
                .lines()
                .find(|l| l.starts_with("DOC BLOCK FAILED"))
                .unwrap_or("no block marker"),
            tail(&stdout),
            tail(&stderr)
        );
        if std::env::var_os("KEYFERRY_GUIDES_VERBOSE").is_some() {
            println!("--- {guide} stdout ---\n{stdout}\n--- {guide} stderr ---\n{stderr}");
        }
        println!(
            "{guide}: {} blocks ran, {skipped} marked not to run, {:.0} s",
            blocks.len() - skipped,
            started.elapsed().as_secs_f64()
        );
    }
}
