//! CPU time of the processes a benchmark drives (the stockflow server, Cassandra,
//! PostgreSQL), read from `/proc` over the measured window, so a run reports what each
//! command cost instead of only commands/s, which on a shared 2-core machine moves with
//! whatever else runs.
//!
//! A process counts with its descendants (PostgreSQL serves each connection from a child
//! of the postmaster): every thread of each, user and system time, plus the time of the
//! children each has reaped (a backend whose connection closed before the window's end
//! still counts: its time moves to its parent's).

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

/// `USER_HZ`: the unit of `/proc/<pid>/stat`'s times, 100 on every Linux architecture the
/// project builds for (the kernel fixes it for userspace whatever its own tick).
const TICKS_PER_SECOND: u64 = 100;

/// A named process to measure, written `NAME=PID` on the command line.
#[derive(Debug, Clone)]
pub struct Watched {
    /// What the report calls it.
    pub name: String,
    /// Its process id; its descendants count with it.
    pub pid: u32,
}

impl FromStr for Watched {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, pid) = s
            .split_once('=')
            .ok_or_else(|| format!("expected NAME=PID, got {s:?}"))?;
        let pid = pid
            .parse()
            .map_err(|_| format!("{pid:?} is not a process id"))?;
        Ok(Self {
            name: name.to_string(),
            pid,
        })
    }
}

/// CPU time of each watched process tree at one moment.
pub struct CpuSample {
    ticks: Vec<u64>,
}

/// `(parent, utime + stime + cutime + cstime)` of every process, by pid.
fn processes() -> BTreeMap<u32, (u32, u64)> {
    let mut all = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return all;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The command name (field 2) may hold spaces and parentheses: fields after the
        // last ')' are fixed.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // state is field 3, so field n is fields[n - 3].
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
        if let (Some(ppid), Some(utime), Some(stime), Some(cutime), Some(cstime)) =
            (field(4), field(14), field(15), field(16), field(17))
        {
            let ticks = utime + stime + cutime + cstime;
            all.insert(pid, (u32::try_from(ppid).unwrap_or(0), ticks));
        }
    }
    all
}

/// The ticks of `root` and every process below it.
fn tree_ticks(all: &BTreeMap<u32, (u32, u64)>, root: u32) -> u64 {
    let mut total = 0;
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        if let Some((_, ticks)) = all.get(&pid) {
            total += ticks;
        }
        stack.extend(
            all.iter()
                .filter(|(_, (parent, _))| *parent == pid)
                .map(|(child, _)| *child),
        );
    }
    total
}

impl CpuSample {
    /// Reads the CPU time of each of `watched` (with descendants) now.
    pub fn take(watched: &[Watched]) -> Self {
        if watched.is_empty() {
            return Self { ticks: Vec::new() };
        }
        let all = processes();
        Self {
            ticks: watched.iter().map(|w| tree_ticks(&all, w.pid)).collect(),
        }
    }

    /// Prints a line per watched process: CPU per `unit` and cores used between `self`
    /// (the start) and `end`, over `count` of them in `elapsed`.
    pub fn print(&self, end: &CpuSample, watched: &[Watched], per: (u64, &str), elapsed: Duration) {
        for line in self.report(end, watched, per, elapsed) {
            println!("  {line}");
        }
    }

    fn report(
        &self,
        end: &CpuSample,
        watched: &[Watched],
        (count, unit): (u64, &str),
        elapsed: Duration,
    ) -> Vec<String> {
        watched
            .iter()
            .zip(self.ticks.iter().zip(&end.ticks))
            .map(|(w, (start, stop))| {
                let seconds = stop.saturating_sub(*start) as f64 / TICKS_PER_SECOND as f64;
                format!(
                    "{} CPU  {:.0} µs per {unit}  ({:.2} cores)",
                    w.name,
                    seconds * 1e6 / count.max(1) as f64,
                    seconds / elapsed.as_secs_f64().max(f64::EPSILON)
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watched_process_is_written_name_equals_pid() {
        let w: Watched = "cassandra=4242".parse().expect("valid");
        assert_eq!((w.name.as_str(), w.pid), ("cassandra", 4242));
        assert!("4242".parse::<Watched>().is_err());
        assert!("x=y".parse::<Watched>().is_err());
    }

    #[test]
    fn this_process_is_seen_spending_cpu() {
        let me = [Watched {
            name: "me".into(),
            pid: std::process::id(),
        }];
        let start = CpuSample::take(&me);
        let mut x = 0u64;
        let until = std::time::Instant::now() + Duration::from_millis(100);
        while std::time::Instant::now() < until {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let end = CpuSample::take(&me);
        assert!(
            end.ticks[0] > start.ticks[0],
            "100 ms of work took no ticks"
        );
        let lines = start.report(&end, &me, (1, "loop"), Duration::from_millis(100));
        assert!(lines[0].starts_with("me CPU"), "{lines:?}");
    }
}
