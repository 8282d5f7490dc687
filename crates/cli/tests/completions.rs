//! `keyferry completions bash|zsh|fish`: each script names every subcommand, the bash one is valid
//! bash that registers a completion for `keyferry` and completes a subcommand prefix, and `--version`
//! starts with the crate version.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

const SUBCOMMANDS: &[&str] = &[
    "controller",
    "crds",
    "audit",
    "demo",
    "emulator",
    "validate",
    "check",
    "render",
    "agent",
    "run",
    "dr",
    "completions",
];

fn keyferry(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_keyferry"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "keyferry {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn every_shell_gets_every_subcommand() {
    for shell in ["bash", "zsh", "fish"] {
        let script = keyferry(&["completions", shell]);
        for sub in SUBCOMMANDS {
            assert!(script.contains(sub), "{shell} completion lacks {sub}");
        }
    }
    let out = Command::new(env!("CARGO_BIN_EXE_keyferry"))
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "an unknown shell was accepted");
}

#[test]
fn the_bash_script_registers_and_completes() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("keyferry.bash");
    std::fs::write(&script, keyferry(&["completions", "bash"])).unwrap();
    // Source it, then ask the registered function for the words completing `keyferry ren`.
    let probe = format!(
        "set -e; source {}; complete -p keyferry; \
         COMP_WORDS=(keyferry ren); COMP_CWORD=1; COMP_LINE='keyferry ren'; COMP_POINT=${{#COMP_LINE}}; \
         _keyferry keyferry ren keyferry; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display()
    );
    let out = Command::new("bash").arg("-c").arg(&probe).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.lines().any(|l| l == "render"),
        "`keyferry ren<TAB>` did not offer render: {stdout}"
    );
}

#[test]
fn version_names_the_crate_version_and_the_commit() {
    let v = keyferry(&["--version"]);
    assert!(
        v.starts_with(&format!("keyferry {}", env!("CARGO_PKG_VERSION"))),
        "{v}"
    );
    // Built from this checkout: the commit is HEAD's (or the one KEYFERRY_COMMIT gave the build).
    let head = std::process::Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short=12",
            "HEAD",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    match (head, std::env::var("KEYFERRY_COMMIT")) {
        (_, Ok(given)) if !given.trim().is_empty() => assert!(v.contains(given.trim()), "{v}"),
        (Some(head), _) => assert!(
            v.contains(&format!("(commit {head})")),
            "{v} does not name HEAD {head}"
        ),
        (None, _) => println!("SKIPPED commit check: no git checkout to compare with"),
    }
}
