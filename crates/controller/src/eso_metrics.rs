//! ESO's own metric names, exported beside keyferry's, so the dashboards and alerts of a team that
//! migrates from ESO keep working (docs/migrating-from-eso.md). Names, labels and units are those of
//! ESO v0.16 with its default label set (`name`, `namespace`; ESO's optional Kubernetes standard
//! labels are not added):
//!
//! | metric | ESO type | labels | value |
//! |---|---|---|---|
//! | `externalsecret_sync_calls_total` | counter | `name`, `namespace` | reconciles |
//! | `externalsecret_sync_calls_error` | counter | `name`, `namespace` | failed reconciles (exposed as a gauge that only grows: OpenMetrics names every counter `…_total`, and ESO's name has no suffix) |
//! | `externalsecret_status_condition` | gauge | `name`, `namespace`, `condition` (`Ready`), `status` (`True`, `False`) | 1 for the current status, 0 for the other |
//! | `externalsecret_reconcile_duration` | gauge | `name`, `namespace` | the last reconcile, in nanoseconds (ESO sets a Go `time.Duration`) |
//! | `secretstore_status_condition`, `clustersecretstore_status_condition` | gauge | as above (`namespace` empty for cluster stores) | as above |
//! | `secretstore_reconcile_duration`, `clustersecretstore_reconcile_duration` | gauge | `name`, `namespace` | nanoseconds |
//!
//! One series per object, as in ESO: the series of a deleted object are dropped at the next census
//! (every 15 s), so the count follows the live objects. `--eso-metrics false` turns them off.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// `name`, `namespace`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectLabels {
    /// The object's name.
    pub name: String,
    /// Its namespace (empty for cluster-scoped objects).
    pub namespace: String,
}

/// `name`, `namespace`, `condition`, `status`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConditionLabels {
    /// The object's name.
    pub name: String,
    /// Its namespace (empty for cluster-scoped objects).
    pub namespace: String,
    /// The condition type (`Ready`).
    pub condition: String,
    /// `True` or `False`.
    pub status: String,
}

/// Which object family a series belongs to.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum EsoKind {
    /// `externalsecret_*`.
    ExternalSecret,
    /// `secretstore_*`.
    SecretStore,
    /// `clustersecretstore_*`.
    ClusterSecretStore,
}

/// The ESO kind and labels of a store.
pub fn store_series(store: &crate::stores::StoreObject) -> (EsoKind, ObjectLabels) {
    let key = store.key();
    let kind = if store.is_cluster() {
        EsoKind::ClusterSecretStore
    } else {
        EsoKind::SecretStore
    };
    (
        kind,
        ObjectLabels {
            name: key.name,
            namespace: key.namespace.unwrap_or_default(),
        },
    )
}

/// The ESO labels of an ExternalSecret.
pub fn external_secret_series(es: &keyferry_api::ExternalSecret) -> ObjectLabels {
    use kube::ResourceExt as _;
    ObjectLabels {
        name: es.name_any(),
        namespace: es.namespace().unwrap_or_default(),
    }
}

struct PerKind {
    condition: Family<ConditionLabels, Gauge>,
    duration: Family<ObjectLabels, Gauge>,
}

/// ESO-named metrics (see the module docs).
pub struct EsoMetrics {
    sync_calls: Family<ObjectLabels, Counter>,
    sync_errors: Family<ObjectLabels, Gauge>,
    external_secrets: PerKind,
    secret_stores: PerKind,
    cluster_stores: PerKind,
    /// Objects with series, for dropping those of deleted objects.
    known: Mutex<HashSet<(EsoKind, ObjectLabels)>>,
}

impl EsoMetrics {
    /// Registers every ESO-named metric in `registry` (which must have no prefix).
    pub fn register(registry: &mut Registry) -> Self {
        let sync_calls = Family::<ObjectLabels, Counter>::default();
        let sync_errors = Family::<ObjectLabels, Gauge>::default();
        registry.register(
            "externalsecret_sync_calls",
            "Total number of the External Secret sync calls",
            sync_calls.clone(),
        );
        registry.register(
            "externalsecret_sync_calls_error",
            "Total number of the External Secret sync errors",
            sync_errors.clone(),
        );
        let mut per_kind = |prefix: &str, what: &str| {
            let condition = Family::<ConditionLabels, Gauge>::default();
            let duration = Family::<ObjectLabels, Gauge>::default();
            registry.register(
                format!("{prefix}_status_condition"),
                format!("The status condition of a specific {what}"),
                condition.clone(),
            );
            registry.register(
                format!("{prefix}_reconcile_duration"),
                format!("The duration time to reconcile the {what}"),
                duration.clone(),
            );
            PerKind { condition, duration }
        };
        let external_secrets = per_kind("externalsecret", "External Secret");
        let secret_stores = per_kind("secretstore", "Secret Store");
        let cluster_stores = per_kind("clustersecretstore", "Cluster Secret Store");
        EsoMetrics {
            sync_calls,
            sync_errors,
            external_secrets,
            secret_stores,
            cluster_stores,
            known: Mutex::new(HashSet::new()),
        }
    }

    fn of(&self, kind: EsoKind) -> &PerKind {
        match kind {
            EsoKind::ExternalSecret => &self.external_secrets,
            EsoKind::SecretStore => &self.secret_stores,
            EsoKind::ClusterSecretStore => &self.cluster_stores,
        }
    }

    fn remember(&self, kind: EsoKind, object: &ObjectLabels) {
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((kind, object.clone()));
    }

    /// One reconcile of an object: ESO counts sync calls and errors for ExternalSecrets and keeps
    /// the last duration for every kind.
    pub fn reconciled(&self, kind: EsoKind, object: ObjectLabels, elapsed: Duration, failed: bool) {
        if kind == EsoKind::ExternalSecret {
            self.sync_calls.get_or_create(&object).inc();
            let errors = self.sync_errors.get_or_create(&object);
            if failed {
                errors.inc();
            }
        }
        self.of(kind)
            .duration
            .get_or_create(&object)
            .set(i64::try_from(elapsed.as_nanos()).unwrap_or(i64::MAX));
        self.remember(kind, &object);
    }

    /// An object's Ready condition: 1 on its status and 0 on the other, as ESO writes them; no
    /// series while it has no Ready condition.
    pub fn ready(&self, kind: EsoKind, object: ObjectLabels, ready: Option<bool>) {
        let family = &self.of(kind).condition;
        let series = |status: &str| ConditionLabels {
            name: object.name.clone(),
            namespace: object.namespace.clone(),
            condition: "Ready".into(),
            status: status.into(),
        };
        match ready {
            Some(ready) => {
                family.get_or_create(&series("True")).set(i64::from(ready));
                family.get_or_create(&series("False")).set(i64::from(!ready));
            }
            None => {
                family.remove(&series("True"));
                family.remove(&series("False"));
            }
        }
        self.remember(kind, &object);
    }

    /// Drops every series of objects of `kind` that are not in `live`.
    pub fn retain(&self, kind: EsoKind, live: &HashSet<ObjectLabels>) {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        let gone: Vec<ObjectLabels> = known
            .iter()
            .filter(|(k, o)| *k == kind && !live.contains(o))
            .map(|(_, o)| o.clone())
            .collect();
        for object in gone {
            let per = self.of(kind);
            per.duration.remove(&object);
            for status in ["True", "False"] {
                per.condition.remove(&ConditionLabels {
                    name: object.name.clone(),
                    namespace: object.namespace.clone(),
                    condition: "Ready".into(),
                    status: status.into(),
                });
            }
            if kind == EsoKind::ExternalSecret {
                self.sync_calls.remove(&object);
                self.sync_errors.remove(&object);
            }
            known.remove(&(kind, object));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(name: &str) -> ObjectLabels {
        ObjectLabels {
            name: name.into(),
            namespace: "team".into(),
        }
    }

    fn encode(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap_or_else(|e| panic!("{e}"));
        out
    }

    #[test]
    fn names_labels_and_units_are_esos_and_deleted_objects_disappear() {
        let mut registry = Registry::default();
        let m = EsoMetrics::register(&mut registry);
        m.reconciled(
            EsoKind::ExternalSecret,
            object("db"),
            Duration::from_millis(3),
            false,
        );
        m.reconciled(
            EsoKind::ExternalSecret,
            object("db"),
            Duration::from_millis(2),
            true,
        );
        m.ready(EsoKind::ExternalSecret, object("db"), Some(false));
        m.reconciled(
            EsoKind::SecretStore,
            object("akv"),
            Duration::from_millis(1),
            false,
        );
        m.ready(EsoKind::SecretStore, object("akv"), Some(true));
        let text = encode(&registry);
        for needle in [
            "externalsecret_sync_calls_total{name=\"db\",namespace=\"team\"} 2",
            "externalsecret_sync_calls_error{name=\"db\",namespace=\"team\"} 1",
            "externalsecret_status_condition{name=\"db\",namespace=\"team\",condition=\"Ready\",status=\"False\"} 1",
            "externalsecret_status_condition{name=\"db\",namespace=\"team\",condition=\"Ready\",status=\"True\"} 0",
            "externalsecret_reconcile_duration{name=\"db\",namespace=\"team\"} 2000000",
            "secretstore_status_condition{name=\"akv\",namespace=\"team\",condition=\"Ready\",status=\"True\"} 1",
            "secretstore_reconcile_duration{name=\"akv\",namespace=\"team\"} 1000000",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        m.retain(EsoKind::ExternalSecret, &HashSet::new());
        let text = encode(&registry);
        assert!(
            !text.contains("name=\"db\""),
            "a deleted ExternalSecret keeps series:\n{text}"
        );
        assert!(text.contains("name=\"akv\""), "another kind's series stay");
    }
}
