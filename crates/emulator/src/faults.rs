//! Fault injection: throttling, unavailability, latency and dropped connections.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::route::Operation;

/// What a fault does to a matching request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// 429 `Throttled`.
    Throttle,
    /// 503 `ServiceUnavailable`.
    Unavailable,
    /// Delay, then answer normally.
    Latency,
    /// Close the connection without answering (HTTP/2: reset the stream).
    Drop,
}

/// A fault rule, as accepted by `POST /_admin/faults` and `--fault`.
///
/// Without `count`, `duration_secs` and `probability` the rule applies until removed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// What to do.
    pub fault: FaultKind,
    /// Only requests for this operation; `None` means every vault data-plane request
    /// (the token and managed-identity endpoints are only hit when named explicitly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
    /// Only requests that name this secret (get, set, update, delete, versions, recover, purge,
    /// backup); `None` means requests for any secret and listings. Lets a test fault one secret
    /// while every other client of the emulator goes on undisturbed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Apply to the next N matching requests, then expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Apply for this many seconds from now, then expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<f64>,
    /// Apply to this fraction (0..=1) of matching requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    /// For throttle/unavailable: send `Retry-After: <seconds>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
    /// For throttle/unavailable: send `x-ms-retry-after-ms: <ms>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// For latency: the delay in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
}

impl FaultSpec {
    /// A rule of `kind` that applies until removed, to every vault request.
    pub fn new(fault: FaultKind) -> Self {
        Self {
            fault,
            operation: None,
            secret: None,
            count: None,
            duration_secs: None,
            probability: None,
            retry_after_secs: None,
            retry_after_ms: None,
            latency_ms: None,
        }
    }

    /// Restricts the rule to one operation.
    #[must_use]
    pub fn operation(mut self, op: Operation) -> Self {
        self.operation = Some(op);
        self
    }

    /// Limits the rule to the next `n` matching requests.
    #[must_use]
    pub fn count(mut self, n: u64) -> Self {
        self.count = Some(n);
        self
    }

    /// Limits the rule to a time window starting now.
    #[must_use]
    pub fn duration(mut self, d: Duration) -> Self {
        self.duration_secs = Some(d.as_secs_f64());
        self
    }

    /// Applies the rule to a fraction of matching requests.
    #[must_use]
    pub fn probability(mut self, p: f64) -> Self {
        self.probability = Some(p);
        self
    }

    /// Sets `Retry-After` (seconds).
    #[must_use]
    pub fn retry_after_secs(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// Sets `x-ms-retry-after-ms`.
    #[must_use]
    pub fn retry_after_ms(mut self, ms: u64) -> Self {
        self.retry_after_ms = Some(ms);
        self
    }

    /// Limits the rule to requests that name `secret`.
    #[must_use]
    pub fn secret(mut self, secret: impl Into<String>) -> Self {
        self.secret = Some(secret.into());
        self
    }

    /// Sets the latency of a latency fault.
    #[must_use]
    pub fn latency(mut self, d: Duration) -> Self {
        self.latency_ms = Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// Checks the rule's consistency.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(p) = self.probability
            && !(0.0..=1.0).contains(&p)
        {
            return Err(format!("probability must be within 0..=1, got {p}"));
        }
        if let Some(d) = self.duration_secs
            && !(d.is_finite() && d > 0.0 && d < 1e9)
        {
            return Err(format!(
                "duration_secs must be a positive number of seconds, got {d}"
            ));
        }
        if self.count == Some(0) {
            return Err("count must be at least 1".into());
        }
        match self.fault {
            FaultKind::Latency if self.latency_ms.is_none() => Err("a latency fault needs latency_ms".into()),
            FaultKind::Latency | FaultKind::Drop
                if self.retry_after_secs.is_some() || self.retry_after_ms.is_some() =>
            {
                Err("retry_after_* only applies to throttle and unavailable faults".into())
            }
            _ => Ok(()),
        }
    }
}

/// Parses the `--fault` flag syntax: `KIND[,key=value...]`, for example
/// `throttle,count=3,retry_after=2,op=get_secret` or `latency,ms=200,for=30` or `drop,p=0.1` or
/// `unavailable,secret=db-password`.
impl FromStr for FaultSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split(',').map(str::trim);
        let kind = match parts.next().unwrap_or_default() {
            "throttle" | "429" => FaultKind::Throttle,
            "unavailable" | "503" => FaultKind::Unavailable,
            "latency" | "delay" => FaultKind::Latency,
            "drop" => FaultKind::Drop,
            other => {
                return Err(format!(
                    "unknown fault kind {other:?} (throttle, unavailable, latency, drop)"
                ));
            }
        };
        let mut spec = FaultSpec::new(kind);
        for part in parts.filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("expected key=value, got {part:?}"))?;
            let num = |v: &str| {
                v.parse::<u64>()
                    .map_err(|_| format!("{k}: expected a whole number, got {v:?}"))
            };
            let float = |v: &str| {
                v.parse::<f64>()
                    .map_err(|_| format!("{k}: expected a number, got {v:?}"))
            };
            match k {
                "op" | "operation" => spec.operation = Some(v.parse()?),
                "secret" => spec.secret = Some(v.to_owned()),
                "count" | "n" => spec.count = Some(num(v)?),
                "for" | "duration" | "duration_secs" => spec.duration_secs = Some(float(v)?),
                "p" | "probability" => spec.probability = Some(float(v)?),
                "retry_after" | "retry_after_secs" => spec.retry_after_secs = Some(num(v)?),
                "retry_after_ms" => spec.retry_after_ms = Some(num(v)?),
                "ms" | "latency_ms" => spec.latency_ms = Some(num(v)?),
                _ => return Err(format!("unknown fault option {k:?}")),
            }
        }
        spec.validate()?;
        Ok(spec)
    }
}

impl fmt::Display for FaultSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&serde_json::to_string(self).unwrap_or_default())
    }
}

/// An installed rule, as listed by `GET /_admin/faults`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveFault {
    /// Id for `DELETE /_admin/faults/{id}`.
    pub id: u64,
    /// The rule.
    #[serde(flatten)]
    pub spec: FaultSpec,
    /// Matching requests still to be faulted, if limited by count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u64>,
    /// Requests faulted so far by this rule.
    pub hits: u64,
}

/// What the server must do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FaultAction {
    Throttle {
        retry_after_secs: Option<u64>,
        retry_after_ms: Option<u64>,
    },
    Unavailable {
        retry_after_secs: Option<u64>,
        retry_after_ms: Option<u64>,
    },
    Delay(Duration),
    Drop,
}

struct Rule {
    active: ActiveFault,
    until: Option<Instant>,
}

/// The set of installed rules.
pub(crate) struct Faults {
    any: AtomicBool,
    next_id: AtomicU64,
    rules: Mutex<Vec<Rule>>,
}

impl fmt::Debug for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Faults")
            .field("any", &self.any)
            .finish_non_exhaustive()
    }
}

impl Faults {
    pub(crate) fn new() -> Self {
        Self {
            any: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            rules: Mutex::new(Vec::new()),
        }
    }

    fn rules(&self) -> std::sync::MutexGuard<'_, Vec<Rule>> {
        self.rules.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Installs a rule and returns its id.
    pub(crate) fn add(&self, spec: FaultSpec) -> Result<u64, String> {
        spec.validate()?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let until = spec
            .duration_secs
            .map(|s| Instant::now() + Duration::from_secs_f64(s));
        let remaining = spec.count;
        let mut rules = self.rules();
        rules.push(Rule {
            active: ActiveFault {
                id,
                spec,
                remaining,
                hits: 0,
            },
            until,
        });
        self.any.store(true, Ordering::Release);
        Ok(id)
    }

    /// Removes one rule; false if unknown.
    pub(crate) fn remove(&self, id: u64) -> bool {
        let mut rules = self.rules();
        let before = rules.len();
        rules.retain(|r| r.active.id != id);
        self.any.store(!rules.is_empty(), Ordering::Release);
        rules.len() != before
    }

    /// Removes every rule.
    pub(crate) fn clear(&self) {
        let mut rules = self.rules();
        rules.clear();
        self.any.store(false, Ordering::Release);
    }

    /// The rules still in force.
    pub(crate) fn list(&self) -> Vec<ActiveFault> {
        let mut rules = self.rules();
        let now = Instant::now();
        rules.retain(|r| r.until.is_none_or(|u| u > now));
        rules.iter().map(|r| r.active.clone()).collect()
    }

    /// Decides the fault (if any) for one request; the first matching rule wins. `secret` names
    /// the secret the request is for (asked only when a rule filters by secret).
    pub(crate) fn decide(
        &self,
        op: Operation,
        secret: impl FnOnce() -> Option<String>,
    ) -> Option<FaultAction> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let mut secret = Some(secret);
        let mut named: Option<Option<String>> = None;
        let mut rules = self.rules();
        let now = Instant::now();
        rules.retain(|r| r.until.is_none_or(|u| u > now));
        let mut action = None;
        let mut exhausted = None;
        for (i, rule) in rules.iter_mut().enumerate() {
            let spec = &rule.active.spec;
            let matches = match spec.operation {
                Some(target) => target == op,
                None => op.is_vault(),
            };
            if !matches {
                continue;
            }
            if let Some(wanted) = &spec.secret {
                let name = named.get_or_insert_with(|| secret.take().and_then(|f| f()));
                if name.as_deref() != Some(wanted.as_str()) {
                    continue;
                }
            }
            if spec.probability.is_some_and(|p| rand::random::<f64>() >= p) {
                continue;
            }
            action = Some(match spec.fault {
                FaultKind::Throttle => FaultAction::Throttle {
                    retry_after_secs: spec.retry_after_secs,
                    retry_after_ms: spec.retry_after_ms,
                },
                FaultKind::Unavailable => FaultAction::Unavailable {
                    retry_after_secs: spec.retry_after_secs,
                    retry_after_ms: spec.retry_after_ms,
                },
                FaultKind::Latency => FaultAction::Delay(Duration::from_millis(spec.latency_ms.unwrap_or(0))),
                FaultKind::Drop => FaultAction::Drop,
            });
            rule.active.hits += 1;
            if let Some(left) = rule.active.remaining.as_mut() {
                *left = left.saturating_sub(1);
                if *left == 0 {
                    exhausted = Some(i);
                }
            }
            break;
        }
        if let Some(i) = exhausted {
            rules.remove(i);
        }
        self.any.store(!rules.is_empty(), Ordering::Release);
        action
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_syntax() {
        let spec: FaultSpec = "throttle,count=3,retry_after=2,op=get_secret".parse().unwrap();
        assert_eq!(
            spec,
            FaultSpec::new(FaultKind::Throttle)
                .count(3)
                .retry_after_secs(2)
                .operation(Operation::GetSecret)
        );
        assert!("latency".parse::<FaultSpec>().is_err());
        assert!("drop,p=2".parse::<FaultSpec>().is_err());
        assert!("boom".parse::<FaultSpec>().is_err());
        assert!("throttle,op=nope".parse::<FaultSpec>().is_err());
    }

    #[test]
    fn count_limited_rules_expire() {
        let faults = Faults::new();
        faults
            .add(
                FaultSpec::new(FaultKind::Drop)
                    .count(2)
                    .operation(Operation::ListSecrets),
            )
            .unwrap();
        assert_eq!(faults.decide(Operation::GetSecret, || None), None);
        assert_eq!(
            faults.decide(Operation::ListSecrets, || None),
            Some(FaultAction::Drop)
        );
        assert_eq!(
            faults.decide(Operation::ListSecrets, || None),
            Some(FaultAction::Drop)
        );
        assert_eq!(faults.decide(Operation::ListSecrets, || None), None);
        assert!(faults.list().is_empty());
    }

    #[test]
    fn unscoped_rules_skip_identity_endpoints() {
        let faults = Faults::new();
        faults.add(FaultSpec::new(FaultKind::Unavailable)).unwrap();
        assert_eq!(faults.decide(Operation::Token, || None), None);
        assert!(faults.decide(Operation::SetSecret, || None).is_some());
    }

    #[test]
    fn secret_scoped_rules_fault_only_that_secret() {
        let faults = Faults::new();
        let spec: FaultSpec = "unavailable,secret=db,count=1".parse().unwrap();
        assert_eq!(spec, FaultSpec::new(FaultKind::Unavailable).secret("db").count(1));
        faults.add(spec).unwrap();
        assert_eq!(faults.decide(Operation::ListSecrets, || None), None);
        assert_eq!(faults.decide(Operation::GetSecret, || Some("other".into())), None);
        assert!(
            faults
                .decide(Operation::GetSecret, || Some("db".into()))
                .is_some()
        );
        assert!(
            faults.list().is_empty(),
            "count=1 used up by the matching request only"
        );
    }
}
