//! Echoes of keyferry's own writes.
//!
//! Every write keyferry makes comes back through its watches: the Secret it applied (Secret watch →
//! its ExternalSecret) and the status it wrote (ExternalSecret watch). The reconcile that made the
//! write already saw that content, so reconciling again on its echo only costs an apiserver GET of
//! the target Secret and a place in the queue. At 10,000 ExternalSecrets the echoes were two of
//! every three reconciles of a first sync, and rotations queued behind them for more than a minute.
//!
//! A write records the `resourceVersion` it left; a watch event carrying exactly that version is
//! its echo and triggers nothing. Any other version (someone else's write, a later write of ours
//! that raced the record) triggers a reconcile as before, so the rule can only skip work that is
//! known to be done. An echo that never arrives (the watch re-listed past it) leaves one entry per
//! object, replaced by the next write.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

/// `(namespace, name)`.
type Key = (String, String);

/// The version each object was left at by keyferry's last write of it, per kind.
#[derive(Debug, Default)]
pub struct OwnWrites {
    secrets: Mutex<HashMap<Key, String>>,
    external_secrets: Mutex<HashMap<Key, String>>,
}

/// Which watch an object comes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// A target Secret keyferry applied.
    Secret,
    /// An ExternalSecret whose status keyferry wrote.
    ExternalSecretStatus,
}

impl OwnWrites {
    fn map(&self, kind: Written) -> std::sync::MutexGuard<'_, HashMap<Key, String>> {
        match kind {
            Written::Secret => &self.secrets,
            Written::ExternalSecretStatus => &self.external_secrets,
        }
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that keyferry's write left `namespace/name` at `resource_version`.
    pub fn record(&self, kind: Written, namespace: &str, name: &str, resource_version: Option<&str>) {
        let key = (namespace.to_owned(), name.to_owned());
        let mut map = self.map(kind);
        match resource_version {
            Some(rv) => {
                map.insert(key, rv.to_owned());
            }
            None => {
                map.remove(&key);
            }
        }
    }

    /// Whether a watch event of `namespace/name` at `resource_version` is the echo of keyferry's
    /// last write of it. An echo is answered once: the entry goes with it.
    pub fn is_echo(
        &self,
        kind: Written,
        namespace: &str,
        name: &str,
        resource_version: Option<&str>,
    ) -> bool {
        let Some(rv) = resource_version else {
            return false;
        };
        let key = (namespace.to_owned(), name.to_owned());
        let mut map = self.map(kind);
        if map.get(&key).is_some_and(|own| own == rv) {
            map.remove(&key);
            return true;
        }
        false
    }

    /// How many writes still wait for their echo (both kinds).
    pub fn pending(&self) -> usize {
        self.map(Written::Secret).len() + self.map(Written::ExternalSecretStatus).len()
    }

    /// Forgets `namespace/name` (the object was deleted).
    pub fn forget(&self, kind: Written, namespace: &str, name: &str) {
        self.map(kind).remove(&(namespace.to_owned(), name.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_version_keyferry_wrote_is_an_echo_and_only_once() {
        let own = OwnWrites::default();
        own.record(Written::Secret, "ns", "db", Some("41"));
        assert!(
            !own.is_echo(Written::Secret, "ns", "db", Some("40")),
            "an older version"
        );
        assert!(
            !own.is_echo(Written::Secret, "ns", "other", Some("41")),
            "another object"
        );
        assert!(
            !own.is_echo(Written::ExternalSecretStatus, "ns", "db", Some("41")),
            "kinds do not mix"
        );
        assert!(own.is_echo(Written::Secret, "ns", "db", Some("41")));
        assert!(
            !own.is_echo(Written::Secret, "ns", "db", Some("41")),
            "answered once: a re-delivery reconciles as before"
        );
        assert_eq!(own.pending(), 0);
    }

    #[test]
    fn someone_elses_write_after_ours_is_not_an_echo() {
        let own = OwnWrites::default();
        own.record(Written::ExternalSecretStatus, "ns", "app", Some("7"));
        // A hand edit (or a spec change) lands after our status write: a new version.
        assert!(!own.is_echo(Written::ExternalSecretStatus, "ns", "app", Some("8")));
        // A later write of ours replaces the record.
        own.record(Written::ExternalSecretStatus, "ns", "app", Some("9"));
        assert!(!own.is_echo(Written::ExternalSecretStatus, "ns", "app", Some("7")));
        assert!(own.is_echo(Written::ExternalSecretStatus, "ns", "app", Some("9")));
    }

    #[test]
    fn unknown_versions_and_forgotten_objects_are_never_echoes() {
        let own = OwnWrites::default();
        own.record(Written::Secret, "ns", "db", Some("3"));
        assert!(!own.is_echo(Written::Secret, "ns", "db", None));
        own.forget(Written::Secret, "ns", "db");
        assert!(!own.is_echo(Written::Secret, "ns", "db", Some("3")));
        own.record(Written::Secret, "ns", "db", None);
        assert_eq!(own.pending(), 0);
    }
}
