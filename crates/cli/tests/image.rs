//! The container image `scripts/image` builds without a daemon (umoci from the Go module proxy):
//! built from the binary under test, unpacked as a runtime would, and run from its own root
//! filesystem — its own dynamic linker and libraries, as user 65532 — for `keyferry --version` and
//! `keyferry crds`. Its name and tag are the chart's defaults.
//!
//! Without Go (so without umoci) the test prints `SKIPPED: …` and returns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn ok(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({:?}):\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn yaml(path: &str) -> serde_yaml_ng::Value {
    serde_yaml_ng::from_str(&std::fs::read_to_string(repo().join(path)).unwrap()).unwrap()
}

/// Runs the image's keyferry with ARGS from the unpacked root filesystem: `chroot` as 65532 when we
/// are root, otherwise through the image's own dynamic linker and library directories (so the
/// host's libraries are never used either way).
fn run_in_rootfs(rootfs: &Path, args: &[&str]) -> Output {
    let root = String::from_utf8_lossy(&Command::new("id").arg("-u").output().unwrap().stdout).trim() == "0";
    if root {
        Command::new("chroot")
            .arg("--userspec=65532:65532")
            .arg(rootfs)
            .arg("/usr/local/bin/keyferry")
            .args(args)
            .env_clear()
            // only for finding `chroot` itself; the image's own PATH has no host directory in it
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .output()
            .unwrap()
    } else {
        let libs = ["lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64"]
            .map(|d| rootfs.join(d).display().to_string())
            .join(":");
        Command::new(rootfs.join("lib64/ld-linux-x86-64.so.2"))
            .arg("--library-path")
            .arg(libs)
            .arg(rootfs.join("usr/local/bin/keyferry"))
            .args(args)
            .env_clear()
            .output()
            .unwrap()
    }
}

#[test]
fn the_image_runs_keyferry_from_its_own_rootfs_as_non_root() {
    let script = repo().join("scripts/image");
    let tool = Command::new(&script).arg("tool").output().unwrap();
    if !tool.status.success() {
        println!(
            "SKIPPED: scripts/image could not install umoci: {}",
            String::from_utf8_lossy(&tool.stderr)
                .lines()
                .last()
                .unwrap_or_default()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("oci");
    let built = ok(
        "scripts/image build",
        &Command::new(&script)
            .args(["build", "--binary", env!("CARGO_BIN_EXE_keyferry"), "--out"])
            .arg(&layout)
            .output()
            .unwrap(),
    );
    let printed = |key: &str| {
        built
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("scripts/image printed no {key}: {built}"))
            .to_owned()
    };

    // The chart's default image is what this builds.
    let values = yaml("charts/keyferry/values.yaml");
    let chart = yaml("charts/keyferry/Chart.yaml");
    assert_eq!(
        printed("IMAGE_NAME"),
        values["image"]["repository"].as_str().unwrap()
    );
    assert_eq!(printed("IMAGE_TAG"), chart["appVersion"].as_str().unwrap());
    assert_eq!(
        chart["appVersion"].as_str().unwrap(),
        env!("CARGO_PKG_VERSION"),
        "the chart's appVersion (the image tag) is not the crate version"
    );
    assert_eq!(
        values["image"]["tag"].as_str().unwrap_or_default(),
        "",
        "the chart pins image.tag instead of following appVersion"
    );

    let bundle = dir.path().join("bundle");
    ok(
        "scripts/image unpack",
        &Command::new(&script)
            .arg("unpack")
            .arg(&layout)
            .arg(&bundle)
            .output()
            .unwrap(),
    );
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["process"]["user"]["uid"], 65532, "{config}");
    assert_eq!(config["process"]["user"]["gid"], 65532, "{config}");
    assert_eq!(
        config["process"]["args"],
        serde_json::json!(["/usr/local/bin/keyferry", "controller"])
    );

    let rootfs = bundle.join("rootfs");
    assert!(!rootfs.join("bin/sh").exists(), "the image carries a shell");
    assert!(
        rootfs.join("etc/ssl/certs/ca-certificates.crt").is_file(),
        "no CA bundle"
    );
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
    assert!(passwd.contains(":65532:65532:"), "{passwd}");

    let version = ok(
        "keyferry --version in the image",
        &run_in_rootfs(&rootfs, &["--version"]),
    );
    assert!(
        version.starts_with(&format!("keyferry {}", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    let crds = ok("keyferry crds in the image", &run_in_rootfs(&rootfs, &["crds"]));
    let host = ok(
        "keyferry crds",
        &Command::new(env!("CARGO_BIN_EXE_keyferry"))
            .arg("crds")
            .output()
            .unwrap(),
    );
    assert!(
        crds.contains("name: externalsecrets.external-secrets.io"),
        "{crds}"
    );
    assert_eq!(
        crds, host,
        "the image's keyferry prints other CRDs than the binary it was built from"
    );
}

/// The Dockerfile (for users' own CI; no daemon here to build it) and the daemon-less image agree
/// with the chart: the final stage runs as the uid/gid the chart's pod securityContext sets, is a
/// distroless base (no shell), and builds with the lock file and the commit.
#[test]
fn the_dockerfile_runs_as_the_charts_user_on_a_distroless_base() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let deployment =
        std::fs::read_to_string(repo().join("charts/keyferry/templates/deployment.yaml")).unwrap();
    let field = |name: &str| {
        deployment
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} in the chart's Deployment"))
            .trim()
            .to_owned()
    };
    let user = format!("{}:{}", field("runAsUser"), field("runAsGroup"));
    let stages: Vec<&str> = dockerfile.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(stages.len(), 2, "not a two-stage build: {stages:?}");
    assert!(
        stages[1].contains("distroless"),
        "final stage is not distroless: {}",
        stages[1]
    );
    let final_stage = &dockerfile[dockerfile.rfind("\nFROM ").unwrap()..];
    assert!(
        final_stage.lines().any(|l| l.trim() == format!("USER {user}")),
        "the final stage does not run as the chart's {user}"
    );
    assert!(dockerfile.contains("cargo build --release --locked -p keyferry"));
    assert!(dockerfile.contains("KEYFERRY_COMMIT"));
    let script = std::fs::read_to_string(repo().join("scripts/image")).unwrap();
    assert!(
        script.contains(&format!("--config.user {user}")),
        "scripts/image does not run as the chart's {user}"
    );
}
