//! Lock-free per-operation request and status counters.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::route::Operation;

const OPS: usize = Operation::ALL.len();
const MIN_STATUS: u16 = 100;
const STATUSES: usize = 500; // 100..=599

/// Request counters, updated on every request.
pub(crate) struct Counters {
    requests: [AtomicU64; OPS],
    dropped: [AtomicU64; OPS],
    statuses: Vec<AtomicU64>, // OPS * STATUSES
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counters").finish_non_exhaustive()
    }
}

impl Counters {
    pub(crate) fn new() -> Self {
        Self {
            requests: std::array::from_fn(|_| AtomicU64::new(0)),
            dropped: std::array::from_fn(|_| AtomicU64::new(0)),
            statuses: (0..OPS * STATUSES).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub(crate) fn request(&self, op: Operation) {
        self.requests[op.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn dropped(&self, op: Operation) {
        self.dropped[op.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn status(&self, op: Operation, status: u16) {
        if let Some(i) = status
            .checked_sub(MIN_STATUS)
            .map(usize::from)
            .filter(|i| *i < STATUSES)
        {
            self.statuses[op.index() * STATUSES + i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn reset(&self) {
        self.requests
            .iter()
            .chain(&self.dropped)
            .chain(&self.statuses)
            .for_each(|c| c.store(0, Ordering::Relaxed));
    }

    pub(crate) fn snapshot(&self) -> CounterSnapshot {
        let mut snap = CounterSnapshot::default();
        for op in Operation::ALL {
            let requests = self.requests[op.index()].load(Ordering::Relaxed);
            if requests == 0 {
                continue;
            }
            let mut counts = OperationCounts {
                requests,
                dropped: self.dropped[op.index()].load(Ordering::Relaxed),
                statuses: BTreeMap::new(),
            };
            for i in 0..STATUSES {
                let n = self.statuses[op.index() * STATUSES + i].load(Ordering::Relaxed);
                if n > 0 {
                    let code = MIN_STATUS + u16::try_from(i).unwrap_or(0);
                    counts.statuses.insert(code, n);
                    *snap.statuses.entry(code).or_default() += n;
                }
            }
            snap.total += requests;
            snap.operations.insert(op, counts);
        }
        snap
    }
}

/// A point-in-time copy of the counters, as served by `GET /_admin/counters`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterSnapshot {
    /// All counted requests (admin requests are not counted).
    pub total: u64,
    /// Counts per operation (operations never seen are absent).
    pub operations: BTreeMap<Operation, OperationCounts>,
    /// Responses per HTTP status, all operations together.
    pub statuses: BTreeMap<u16, u64>,
}

/// Counts for one operation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationCounts {
    /// Requests received (including unauthenticated probes and faulted requests).
    pub requests: u64,
    /// Connections dropped by a fault.
    pub dropped: u64,
    /// Responses per HTTP status.
    pub statuses: BTreeMap<u16, u64>,
}

impl CounterSnapshot {
    /// Requests received for `op`.
    pub fn requests(&self, op: Operation) -> u64 {
        self.operations.get(&op).map_or(0, |c| c.requests)
    }

    /// Responses with `status` for `op`.
    pub fn status(&self, op: Operation, status: u16) -> u64 {
        self.operations
            .get(&op)
            .and_then(|c| c.statuses.get(&status))
            .copied()
            .unwrap_or(0)
    }

    /// Connections dropped for `op`.
    pub fn dropped(&self, op: Operation) -> u64 {
        self.operations.get(&op).map_or(0, |c| c.dropped)
    }
}
