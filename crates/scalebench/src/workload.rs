//! The shape of one run: which vault secrets exist, which ExternalSecrets read which of them, in
//! which namespaces, and which secrets get rotated. Pure arithmetic, no I/O.

use std::collections::BTreeMap;

/// Label put on every namespace and ExternalSecret of a run; the controller under test reconciles
/// only ExternalSecrets carrying it (`--label-selector`).
pub const RUN_LABEL: &str = "keyferry-scalebench";

/// One scale's workload.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Unique id of the run (label value, controller class, name prefix).
    pub run: String,
    /// Number of ExternalSecrets.
    pub es: usize,
    /// Number of vault secrets.
    pub secrets: usize,
    /// `data` entries per ExternalSecret.
    pub keys: usize,
    /// Namespaces the ExternalSecrets are spread over.
    pub namespaces: usize,
    /// `remoteRef.property` of every `data` entry (Vault: the field of the secret's data map).
    pub property: Option<String>,
    /// Every ExternalSecret's `refreshInterval`.
    pub refresh_interval: String,
}

/// One `data` entry: the Secret key and the vault secret it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataRef {
    /// Key in the target Secret.
    pub secret_key: String,
    /// Index of the vault secret.
    pub remote: usize,
}

/// Where a rotated vault secret shows up: a target Secret (namespace, name) and the key in it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dependent {
    /// Namespace of the target Secret.
    pub namespace: String,
    /// Name of the target Secret (= the ExternalSecret's name).
    pub name: String,
    /// The key that holds the rotated value.
    pub key: String,
}

impl Workload {
    /// Name of vault secret `i`.
    pub fn secret_name(i: usize) -> String {
        format!("sb-{i:05}")
    }

    /// Name of namespace `n` of this run.
    pub fn namespace(&self, n: usize) -> String {
        format!("sb-{}-{n:02}", self.run)
    }

    /// All namespaces holding ExternalSecrets.
    pub fn namespaces(&self) -> Vec<String> {
        (0..self.namespaces.max(1)).map(|n| self.namespace(n)).collect()
    }

    /// The namespace holding the store credentials.
    pub fn creds_namespace(&self) -> String {
        format!("sb-{}-creds", self.run)
    }

    /// Name of the run's ClusterSecretStore.
    pub fn store_name(&self) -> String {
        format!("sb-{}", self.run)
    }

    /// Namespace and name of ExternalSecret `i` (its target Secret has the same name).
    pub fn es_location(&self, i: usize) -> (String, String) {
        (self.namespace(i % self.namespaces.max(1)), format!("es-{i:05}"))
    }

    /// The `data` entries of ExternalSecret `i`: `keys` consecutive vault secrets, wrapping around,
    /// so every secret is read by about `es × keys / secrets` ExternalSecrets.
    pub fn refs(&self, i: usize) -> Vec<DataRef> {
        (0..self.keys)
            .map(|j| DataRef {
                secret_key: format!("key-{j}"),
                remote: (i * self.keys + j) % self.secrets.max(1),
            })
            .collect()
    }

    /// How many distinct vault secrets the ExternalSecrets read (the GET floor of a first sync).
    pub fn referenced_secrets(&self) -> usize {
        self.secrets.min(self.es * self.keys)
    }

    /// `rotations` distinct referenced secrets, spread evenly over the referenced range.
    pub fn rotated(&self, rotations: usize) -> Vec<usize> {
        let referenced = self.referenced_secrets();
        let n = rotations.min(referenced);
        (0..n).map(|k| k * referenced / n.max(1)).collect()
    }

    /// For each vault secret in `which`, the target Secret keys that hold it.
    pub fn dependents(&self, which: &[usize]) -> BTreeMap<usize, Vec<Dependent>> {
        let mut out: BTreeMap<usize, Vec<Dependent>> = which.iter().map(|w| (*w, Vec::new())).collect();
        for i in 0..self.es {
            let (namespace, name) = self.es_location(i);
            for r in self.refs(i) {
                if let Some(deps) = out.get_mut(&r.remote) {
                    deps.push(Dependent {
                        namespace: namespace.clone(),
                        name: name.clone(),
                        key: r.secret_key,
                    });
                }
            }
        }
        out
    }
}

/// Number of list pages one change-feed poll needs for `secrets` secrets (AKV pages hold 25).
pub fn list_pages(secrets: usize) -> usize {
    secrets.div_ceil(keyferry_emulator::MAX_PAGE).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(es: usize, secrets: usize, keys: usize) -> Workload {
        Workload {
            run: "t".into(),
            es,
            secrets,
            keys,
            namespaces: 10,
            property: None,
            refresh_interval: "1h".into(),
        }
    }

    #[test]
    fn every_secret_is_read_about_equally() {
        let w = w(2000, 500, 3);
        let mut uses = vec![0usize; 500];
        for i in 0..2000 {
            let refs = w.refs(i);
            assert_eq!(refs.len(), 3);
            for r in refs {
                uses[r.remote] += 1;
            }
        }
        assert!(uses.iter().all(|u| *u == 12), "{uses:?}");
        assert_eq!(w.referenced_secrets(), 500);
    }

    #[test]
    fn rotated_secrets_are_distinct_and_have_dependents() {
        let w = w(500, 500, 3);
        let rotated = w.rotated(50);
        assert_eq!(rotated.len(), 50);
        let mut sorted = rotated.clone();
        sorted.dedup();
        assert_eq!(sorted.len(), 50);
        let deps = w.dependents(&rotated);
        assert!(deps.values().all(|d| d.len() == 3), "{deps:?}");
    }

    #[test]
    fn few_external_secrets_reference_few_secrets() {
        let w = w(10, 500, 3);
        assert_eq!(w.referenced_secrets(), 30);
        assert!(w.rotated(50).iter().all(|r| *r < 30));
        assert_eq!(list_pages(500), 20);
        assert_eq!(list_pages(501), 21);
    }
}
