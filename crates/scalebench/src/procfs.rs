//! Process figures from Linux `/proc`: resident memory (current and peak), CPU time, load average.

use anyhow::{Context, Result, anyhow};

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`, 100 on every Linux target we run on).
const USER_HZ: f64 = 100.0;

/// Resident memory of a process, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// `VmRSS`: resident now.
    pub rss_kib: u64,
    /// `VmHWM`: peak resident ("high water mark") since the process started.
    pub hwm_kib: u64,
}

/// Reads `VmRSS` and `VmHWM` of `pid`.
pub fn memory(pid: u32) -> Result<Memory> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    parse_status(&text).ok_or_else(|| anyhow!("{path} has no VmRSS/VmHWM lines"))
}

fn parse_status(text: &str) -> Option<Memory> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<u64>().ok())
    };
    Some(Memory {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

/// `(ppid, comm, user + system CPU seconds)` of `pid`.
fn stat(pid: u32) -> Result<(u32, String, f64)> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    parse_stat(&text).ok_or_else(|| anyhow!("cannot parse {path}"))
}

fn parse_stat(text: &str) -> Option<(u32, String, f64)> {
    // "pid (comm) state ppid ... utime(14) stime(15) ..."; comm may hold spaces and parentheses.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state), so field n is rest[n - 3].
    let ppid = rest.get(1)?.parse().ok()?;
    let utime: f64 = rest.get(11)?.parse().ok()?;
    let stime: f64 = rest.get(12)?.parse().ok()?;
    Some((ppid, comm, (utime + stime) / USER_HZ))
}

/// CPU seconds (user + system) `pid` has used so far.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    stat(pid).map(|(_, _, cpu)| cpu)
}

/// The pid of a child of this process whose command name is `comm` (testenv started by the
/// testkit harness is `kube-testenv`).
pub fn find_child(comm: &str) -> Option<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| matches!(stat(*pid), Ok((ppid, c, _)) if ppid == me && c == comm))
}

/// The 1-minute load average.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU time of a process between two points, as seconds and as a share of one core.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct CpuUse {
    /// CPU seconds used.
    pub seconds: f64,
    /// `seconds / wall seconds`: 1.0 = one core busy the whole time.
    pub cores: f64,
}

/// Measures a process's CPU use from now on.
#[derive(Debug, Clone, Copy)]
pub struct CpuMeter {
    pid: u32,
    start_cpu: f64,
    start: std::time::Instant,
}

impl CpuMeter {
    /// Starts measuring `pid` (an error if it is gone).
    pub fn start(pid: u32) -> Result<Self> {
        Ok(CpuMeter {
            pid,
            start_cpu: cpu_seconds(pid)?,
            start: std::time::Instant::now(),
        })
    }

    /// CPU used since [`CpuMeter::start`].
    pub fn read(&self) -> Result<CpuUse> {
        let seconds = cpu_seconds(self.pid)? - self.start_cpu;
        let wall = self.start.elapsed().as_secs_f64().max(1e-9);
        Ok(CpuUse {
            seconds,
            cores: seconds / wall,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_stat() {
        let status = "Name:\tkeyferry\nVmHWM:\t   51200 kB\nVmRSS:\t   40960 kB\n";
        assert_eq!(
            parse_status(status),
            Some(Memory {
                rss_kib: 40960,
                hwm_kib: 51200
            })
        );
        let stat = "42 (kube (test) env) S 7 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0";
        let (ppid, comm, cpu) = parse_stat(stat).unwrap_or_default();
        assert_eq!((ppid, comm.as_str()), (7, "kube (test) env"));
        assert!((cpu - 3.0).abs() < 1e-9, "{cpu}");
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let mem = memory(me).unwrap_or_default();
        assert!(mem.hwm_kib >= mem.rss_kib && mem.rss_kib > 0);
        assert!(cpu_seconds(me).is_ok());
    }
}
