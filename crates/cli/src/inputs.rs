//! Reading manifests from files and directories given on the command line.

use std::path::{Path, PathBuf};

use keyferry_api::manifest::{Located, Manifest, ManifestError, parse_documents};

/// Everything found in the given paths.
#[derive(Debug, Default)]
pub struct Inputs {
    /// Every document that parsed, in path order.
    pub documents: Vec<Located<Manifest>>,
    /// One line per document or file that could not be read.
    pub errors: Vec<String>,
}

/// Why the command line itself is wrong (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// A path does not exist.
    #[error("{path}: no such file or directory")]
    Missing {
        /// The path as given.
        path: String,
    },
    /// No paths were given, or none held YAML.
    #[error("no YAML manifests found in {paths}")]
    Empty {
        /// The paths as given.
        paths: String,
    },
}

/// Reads every `*.yaml` / `*.yml` file under `paths` (directories recursively, in name order).
pub fn read(paths: &[PathBuf]) -> Result<Inputs, InputError> {
    let mut files = Vec::new();
    for p in paths {
        if !p.exists() {
            return Err(InputError::Missing {
                path: p.display().to_string(),
            });
        }
        if p.is_file() {
            // A file named on the command line is read whatever its extension.
            files.push(p.clone());
        } else {
            collect(p, &mut files);
        }
    }
    if files.is_empty() {
        let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        return Err(InputError::Empty {
            paths: shown.join(", "),
        });
    }
    let mut inputs = Inputs::default();
    for file in files {
        let shown = file.display().to_string();
        match std::fs::read_to_string(&file) {
            Ok(text) => {
                for doc in parse_documents(&shown, &text) {
                    match doc {
                        Ok(d) => inputs.documents.push(d),
                        Err(e) => inputs.errors.push(one_line(&e)),
                    }
                }
            }
            Err(e) => inputs.errors.push(format!("{shown}: cannot read: {e}")),
        }
    }
    Ok(inputs)
}

/// The YAML files under `paths` in the order [`read`] reads them (for callers that need documents of
/// kinds keyferry does not model, such as `audit`'s workloads and RBAC objects).
pub fn yaml_files(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_file() {
            files.push(p.clone());
        } else {
            collect(p, &mut files);
        }
    }
    files
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let Ok(entries) = std::fs::read_dir(path) else {
            return;
        };
        let mut children: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        children.sort();
        for child in children {
            collect(&child, out);
        }
    } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
        out.push(path.to_path_buf());
    }
}

fn one_line(e: &ManifestError) -> String {
    e.to_string().lines().collect::<Vec<_>>().join(" ")
}
