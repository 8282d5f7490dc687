//! Results of one scale and their markdown rendering.

use std::time::Duration;

use crate::procfs::CpuUse;
use crate::vault::VaultCounts;

/// Everything measured at one scale.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ScaleResult {
    /// What ran: `keyferry` or `ESO v0.16.2 (--concurrent N)`.
    pub controller: String,
    /// Length of the steady-state window (0: none).
    pub steady_secs: u64,
    /// Vault requests in that window.
    pub steady_requests: Option<VaultCounts>,
    /// ExternalSecrets.
    pub es: usize,
    /// Vault secrets.
    pub secrets: usize,
    /// `data` entries per ExternalSecret.
    pub keys: usize,
    /// Time to create all ExternalSecrets (bounded concurrency).
    pub create: Duration,
    /// Controller start → every ExternalSecret Ready=True.
    pub ready_from_start: Duration,
    /// Last ExternalSecret created → every ExternalSecret Ready=True.
    pub ready_after_last: Duration,
    /// Vault requests from controller start until all Ready.
    pub initial: VaultCounts,
    /// Floor of the first sync: one GET per referenced secret + one listing.
    pub initial_floor: u64,
    /// Rotated secrets.
    pub rotations: usize,
    /// Per rotated secret, time until every dependent Secret held the new value.
    pub rotation_latencies: Vec<Duration>,
    /// Rotated secrets whose dependents did not all update in time.
    pub rotation_incomplete: usize,
    /// Updated dependents whose data-hash annotation did not change.
    pub hash_unchanged: usize,
    /// Vault requests from the first rotation until the last dependent updated.
    pub rotation_requests: VaultCounts,
    /// Change-feed polls in that window.
    pub rotation_polls: u64,
    /// Floor of that refresh: list pages per poll × polls + one GET per rotated secret.
    pub rotation_floor: u64,
    /// Peak resident memory of the controller (VmHWM), KiB.
    pub peak_rss_kib: u64,
    /// Resident memory at the end, KiB.
    pub end_rss_kib: u64,
    /// Controller CPU from start until all Ready.
    pub controller_cpu_initial: CpuUse,
    /// API server (testenv) CPU over the same window, when its pid is known.
    pub apiserver_cpu_initial: Option<CpuUse>,
    /// This benchmark's own CPU over the same window (creates, list polls).
    pub bench_cpu_initial: CpuUse,
    /// Controller CPU from the first rotation until the last dependent updated.
    pub controller_cpu_rotation: CpuUse,
    /// API server CPU over the same window.
    pub apiserver_cpu_rotation: Option<CpuUse>,
    /// 1-minute load average when the scale started.
    pub load_average: Option<f64>,
}

/// Nearest-rank percentile (`p` in 0..=100) of unsorted samples.
pub fn percentile(samples: &[Duration], p: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn opt_secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "—".into(), secs)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn cpu(c: Option<CpuUse>) -> String {
    c.map_or_else(
        || "—".into(),
        |c| format!("{:.1} s ({:.2} cores)", c.seconds, c.cores),
    )
}

fn ratio(actual: u64, floor: u64) -> String {
    if floor == 0 {
        return "—".into();
    }
    format!("{:.2}×", actual as f64 / floor as f64)
}

/// The table header matching [`ScaleResult::row`].
pub fn header() -> String {
    [
        "| controller | ES × keys / secrets | create all ES | all Ready from controller start | all Ready after last ES | \
         first-sync vault requests (GET + list) / floor | rotation p50 / p95 / max | rotation vault requests / floor | \
         controller peak RSS / end RSS | controller CPU (first sync) | apiserver CPU (first sync) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    .join("\n")
}

impl ScaleResult {
    /// One markdown table row.
    pub fn row(&self) -> String {
        let lat = &self.rotation_latencies;
        let mut rotation = format!(
            "{} / {} / {}",
            opt_secs(percentile(lat, 50.0)),
            opt_secs(percentile(lat, 95.0)),
            opt_secs(lat.iter().max().copied())
        );
        if self.rotation_incomplete > 0 {
            rotation.push_str(&format!(" ({} incomplete)", self.rotation_incomplete));
        }
        let apiserver = cpu(self.apiserver_cpu_initial);
        format!(
            "| {} | {} × {} / {} | {} | {} | {} | {} + {} = {} / {} ({}) | {} | {} + {} = {} / {} ({}, {} polls) | {} / {} | {:.1} s ({:.2} cores) | {} |",
            self.controller,
            self.es,
            self.keys,
            self.secrets,
            secs(self.create),
            secs(self.ready_from_start),
            secs(self.ready_after_last),
            self.initial.gets,
            self.initial.list_pages,
            self.initial.data_plane(),
            self.initial_floor,
            ratio(self.initial.data_plane(), self.initial_floor),
            rotation,
            self.rotation_requests.gets,
            self.rotation_requests.list_pages,
            self.rotation_requests.data_plane(),
            self.rotation_floor,
            ratio(self.rotation_requests.data_plane(), self.rotation_floor),
            self.rotation_polls,
            mib(self.peak_rss_kib),
            mib(self.end_rss_kib),
            self.controller_cpu_initial.seconds,
            self.controller_cpu_initial.cores,
            apiserver,
        )
    }

    /// Details that do not fit the row: tokens, other requests, errors, hash check, load.
    pub fn details(&self) -> String {
        let steady = match &self.steady_requests {
            None => String::new(),
            Some(c) => format!(
                "; steady state over {} s: {} GET + {} list + {} token + {} other requests",
                self.steady_secs, c.gets, c.list_pages, c.tokens, c.other
            ),
        };
        let details = format!(
            "{} ES, {} rotations: first sync also {} token + {} other requests, {} vault errors; rotation window {} token + {} other, \
             {} errors; {} updated dependents kept their old data-hash; CPU during the first sync: this benchmark {}; \
             CPU during the rotations: controller {}, apiserver {}; load average at start {}",
            self.es,
            self.rotations,
            self.initial.tokens,
            self.initial.other,
            self.initial.errors,
            self.rotation_requests.tokens,
            self.rotation_requests.other,
            self.rotation_requests.errors,
            self.hash_unchanged,
            cpu(Some(self.bench_cpu_initial)),
            cpu(Some(self.controller_cpu_rotation)),
            cpu(self.apiserver_cpu_rotation),
            self.load_average
                .map_or_else(|| "—".into(), |l| format!("{l:.2}")),
        );
        format!("{}: {details}{steady}", self.controller)
    }
}

/// keyferry/ESO ratios for every ESO row that has a keyferry row of the same shape: time to all
/// Ready, first-sync vault requests (all kinds, tokens included), peak RSS, controller CPU, and the
/// steady-state window's requests. Below 1 means keyferry needs less.
pub fn comparison(rows: &[ScaleResult]) -> Vec<String> {
    let same_shape =
        |a: &ScaleResult, b: &ScaleResult| (a.es, a.secrets, a.keys) == (b.es, b.secrets, b.keys);
    let mut out = Vec::new();
    for kf in rows.iter().filter(|r| r.controller == "keyferry") {
        for eso in rows
            .iter()
            .filter(|r| r.controller != "keyferry" && same_shape(kf, r))
        {
            let all = |c: &VaultCounts| c.data_plane() + c.tokens + c.other;
            let mut line = format!(
                "{} ES, keyferry / {}: all Ready {} ({} vs {}), first-sync vault requests {} ({} vs {}), \
                 peak RSS {} ({} vs {}), controller CPU (first sync) {} ({:.1} s vs {:.1} s)",
                kf.es,
                eso.controller,
                quotient(
                    kf.ready_from_start.as_secs_f64(),
                    eso.ready_from_start.as_secs_f64()
                ),
                secs(kf.ready_from_start),
                secs(eso.ready_from_start),
                quotient(all(&kf.initial) as f64, all(&eso.initial) as f64),
                all(&kf.initial),
                all(&eso.initial),
                quotient(kf.peak_rss_kib as f64, eso.peak_rss_kib as f64),
                mib(kf.peak_rss_kib),
                mib(eso.peak_rss_kib),
                quotient(
                    kf.controller_cpu_initial.seconds,
                    eso.controller_cpu_initial.seconds
                ),
                kf.controller_cpu_initial.seconds,
                eso.controller_cpu_initial.seconds,
            );
            if let (Some(a), Some(b)) = (&kf.steady_requests, &eso.steady_requests) {
                line.push_str(&format!(
                    ", steady-state requests {} ({} vs {} in {} s)",
                    quotient(all(a) as f64, all(b) as f64),
                    all(a),
                    all(b),
                    kf.steady_secs
                ));
            }
            out.push(line);
        }
    }
    out
}

fn quotient(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.3}x", a / b)
    } else {
        "—".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s: Vec<Duration> = (1..=20).map(Duration::from_secs).collect();
        assert_eq!(percentile(&s, 50.0), Some(Duration::from_secs(10)));
        assert_eq!(percentile(&s, 95.0), Some(Duration::from_secs(19)));
        assert_eq!(percentile(&s, 100.0), Some(Duration::from_secs(20)));
        assert_eq!(percentile(&s[..1], 95.0), Some(Duration::from_secs(1)));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn row_has_as_many_cells_as_the_header() {
        let cells = |s: &str| s.matches('|').count();
        let head = header();
        let first = head.lines().next().unwrap_or_default();
        assert_eq!(cells(first), cells(&ScaleResult::default().row()));
    }
}
