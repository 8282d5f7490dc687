//! Atomic file writes: never a partial, blank or wrongly-permissioned file, even after `kill -9`.
//!
//! The recipe (consul-template's, plus ownership and directory fsync): create a temp file in the
//! same directory (`O_EXCL`, mode 0600), set owner/group/mode on it *before* it is visible under
//! its final name, write, fsync, rename over the target (atomic on POSIX), fsync the directory so
//! the rename survives a crash. A crash leaves at most a stale temp file, which the next start
//! removes; the target is always a complete old or new version.

use std::fs::{File, OpenOptions, Permissions};
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// Why a file could not be written. Names paths and steps, never content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// An I/O step failed.
    #[error("{path}: cannot {step}: {reason}")]
    Io {
        /// The target file.
        path: String,
        /// What we were doing (`create temp file`, `chown`, `rename`, …).
        step: &'static str,
        /// The OS error.
        reason: String,
    },
    /// `owner`/`group` names nobody on this host.
    #[error("{path}: {field} {name:?}: no such {field} on this host")]
    UnknownId {
        /// The target file.
        path: String,
        /// `owner` or `group`.
        field: &'static str,
        /// The name given.
        name: String,
    },
}

impl WriteError {
    /// Metrics/log category.
    pub fn category(&self) -> &'static str {
        match self {
            WriteError::Io { .. } => "write",
            WriteError::UnknownId { .. } => "config",
        }
    }
}

/// Owner, group and mode of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ownership {
    /// User id (`None`: the agent's).
    pub uid: Option<u32>,
    /// Group id (`None`: the agent's).
    pub gid: Option<u32>,
    /// Permission bits.
    pub mode: u32,
}

/// Resolves `owner`/`group` (names through NSS, or numeric ids).
pub fn resolve_ownership(
    path: &Path,
    owner: Option<&str>,
    group: Option<&str>,
    mode: u32,
) -> Result<Ownership, WriteError> {
    let unknown = |field: &'static str, name: &str| WriteError::UnknownId {
        path: path.display().to_string(),
        field,
        name: name.to_owned(),
    };
    let uid = owner
        .map(|o| {
            o.parse::<u32>().or_else(|_| {
                nix::unistd::User::from_name(o)
                    .ok()
                    .flatten()
                    .map(|u| u.uid.as_raw())
                    .ok_or_else(|| unknown("owner", o))
            })
        })
        .transpose()?;
    let gid = group
        .map(|g| {
            g.parse::<u32>().or_else(|_| {
                nix::unistd::Group::from_name(g)
                    .ok()
                    .flatten()
                    .map(|u| u.gid.as_raw())
                    .ok_or_else(|| unknown("group", g))
            })
        })
        .transpose()?;
    Ok(Ownership { uid, gid, mode })
}

/// What is on disk at a path, compared with what we want there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnDisk {
    /// No file.
    Missing,
    /// Content, owner, group and mode are as wanted.
    InStep,
    /// Same content, wrong owner/group/mode.
    WrongMetadata,
    /// Different content.
    Different,
}

/// Compares the file at `path` with `content` and `own`.
pub fn on_disk(path: &Path, content: &[u8], own: Ownership) -> OnDisk {
    let Ok(meta) = std::fs::metadata(path) else {
        return OnDisk::Missing;
    };
    // Read only as much as could match.
    if meta.len() != content.len() as u64 {
        return OnDisk::Different;
    }
    match std::fs::read(path) {
        Ok(now) if now == content => {}
        Ok(_) => return OnDisk::Different,
        Err(_) => return OnDisk::Missing,
    }
    let ok = meta.mode() & 0o7777 == own.mode
        && own.uid.is_none_or(|u| u == meta.uid())
        && own.gid.is_none_or(|g| g == meta.gid());
    if ok { OnDisk::InStep } else { OnDisk::WrongMetadata }
}

fn temp_prefix(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(".{name}.keyferry-")
}

/// Removes temp files a killed agent left next to `path`.
pub fn remove_stale_temps(path: &Path) {
    let (Some(dir), prefix) = (path.parent(), temp_prefix(path)) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name.ends_with(".tmp") {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => tracing::info!(file = %entry.path().display(), "removed a stale temp file"),
                Err(e) => {
                    tracing::warn!(file = %entry.path().display(), error = %e, "cannot remove a stale temp file")
                }
            }
        }
    }
}

/// Writes `content` to `path` atomically with `own`.
pub fn write_atomic(path: &Path, content: &[u8], own: Ownership) -> Result<(), WriteError> {
    let shown = path.display().to_string();
    let io = |step: &'static str| {
        let shown = shown.clone();
        move |e: std::io::Error| WriteError::Io {
            path: shown,
            step,
            reason: e.to_string(),
        }
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let suffix: u64 = rand::random();
    let temp: PathBuf = dir.join(format!(
        "{}{}-{suffix:016x}.tmp",
        temp_prefix(path),
        std::process::id()
    ));
    let result = (|| {
        let mut file: File = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .map_err(io("create temp file"))?;
        if own.uid.is_some() || own.gid.is_some() {
            std::os::unix::fs::fchown(&file, own.uid, own.gid).map_err(io("chown temp file"))?;
        }
        // After chown (which may clear set-id bits), and regardless of the umask.
        file.set_permissions(Permissions::from_mode(own.mode))
            .map_err(io("chmod temp file"))?;
        file.write_all(content).map_err(io("write temp file"))?;
        file.sync_all().map_err(io("fsync temp file"))?;
        drop(file);
        std::fs::rename(&temp, path).map_err(io("rename temp file over the target"))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("fsync the directory"))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_with_mode_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.env");
        let own = Ownership {
            uid: None,
            gid: None,
            mode: 0o640,
        };
        assert_eq!(on_disk(&path, b"a", own), OnDisk::Missing);
        write_atomic(&path, b"a", own).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o640);
        assert_eq!(on_disk(&path, b"a", own), OnDisk::InStep);
        assert_eq!(on_disk(&path, b"b", own), OnDisk::Different);
        std::fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        assert_eq!(on_disk(&path, b"a", own), OnDisk::WrongMetadata);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        std::fs::write(dir.path().join(".out.env.keyferry-1-00.tmp"), "partial").unwrap();
        remove_stale_temps(&path);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
