//! CPU accounting for benchmarks: the busy time of every core from `/proc/stat` (so a
//! benchmark can charge a system with all the CPU it used — on veth much of a receiver's work
//! runs on the sender's core, and kernel forwarding has no process of its own to measure), and
//! a process's own CPU time from `/proc/PID/stat`.

/// Clock ticks per second of /proc/stat (USER_HZ, 100 on Linux for every architecture).
pub const USER_HZ: f64 = 100.0;

/// Busy time of each core (user + nice + system + irq + softirq + steal), in clock ticks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CpuTimes {
    pub busy_ticks: Vec<u64>,
}

impl CpuTimes {
    /// Parses the `cpuN` lines of /proc/stat (the `cpu` total line is skipped).
    pub fn parse(text: &str) -> CpuTimes {
        let mut busy = Vec::new();
        for line in text.lines() {
            let mut f = line.split_whitespace();
            let Some(name) = f.next() else { continue };
            let Some(idx) = name
                .strip_prefix("cpu")
                .and_then(|n| n.parse::<usize>().ok())
            else {
                continue;
            };
            let v: Vec<u64> = f.map(|x| x.parse().unwrap_or(0)).collect();
            // user nice system idle iowait irq softirq steal ...
            let get = |i: usize| v.get(i).copied().unwrap_or(0);
            let b = get(0) + get(1) + get(2) + get(5) + get(6) + get(7);
            if busy.len() <= idx {
                busy.resize(idx + 1, 0);
            }
            busy[idx] = b;
        }
        CpuTimes { busy_ticks: busy }
    }

    /// The machine's current times (empty if /proc/stat cannot be read).
    pub fn now() -> CpuTimes {
        std::fs::read_to_string("/proc/stat")
            .map(|t| CpuTimes::parse(&t))
            .unwrap_or_default()
    }

    /// Busy seconds per core between `earlier` and `self`.
    pub fn busy_secs_since(&self, earlier: &CpuTimes) -> Vec<f64> {
        self.busy_ticks
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                let a = earlier.busy_ticks.get(i).copied().unwrap_or(0);
                b.saturating_sub(a) as f64 / USER_HZ
            })
            .collect()
    }

    /// Busy seconds of the whole machine (every core) so far.
    pub fn total_secs(&self) -> f64 {
        self.busy_ticks.iter().sum::<u64>() as f64 / USER_HZ
    }
}

/// CPU seconds (user + system) process `pid` has used so far; `None` when it is gone.
pub fn process_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_process_seconds(&stat)
}

/// As [`process_seconds`], 0 when the process is gone.
pub fn cpu_seconds(pid: u32) -> f64 {
    process_seconds(pid).unwrap_or(0.0)
}

/// utime + stime of a `/proc/PID/stat` line, in seconds.
fn parse_process_seconds(stat: &str) -> Option<f64> {
    // Fields after the command (which may contain spaces and parentheses) start after the
    // last ')': state is field 3 of the line, utime 14 and stime 15 (11 and 12 after it).
    let (_, rest) = stat.rsplit_once(')')?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i)?.parse::<u64>().ok();
    Some((ticks(11)? + ticks(12)?) as f64 / USER_HZ)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "cpu  100 0 50 1000 0 0 0 0 0 0\n\
cpu0 60 0 30 500 5 1 2 0 0 0\n\
cpu1 40 0 20 500 0 0 0 3 0 0\n\
intr 12345\n";
    const B: &str = "cpu  300 0 150 1100 0 0 0 0 0 0\n\
cpu0 160 0 80 520 9 2 4 0 0 0\n\
cpu1 40 0 20 580 0 0 0 3 0 0\n";

    #[test]
    fn busy_per_core_excludes_idle_and_iowait() {
        let a = CpuTimes::parse(A);
        assert_eq!(a.busy_ticks, vec![60 + 30 + 1 + 2, 40 + 20 + 3]);
        let d = CpuTimes::parse(B).busy_secs_since(&a);
        // core 0: +100 user +50 system +1 irq +2 softirq = 153 ticks; core 1 only idled.
        assert_eq!(d.len(), 2);
        assert!((d[0] - 1.53).abs() < 1e-9);
        assert_eq!(d[1], 0.0);
        assert!((a.total_secs() - 1.56).abs() < 1e-9);
    }

    #[test]
    fn process_seconds_are_utime_plus_stime_after_the_command() {
        // A command name with a space and a ')' in it; utime 250, stime 50 ticks.
        let stat = "42 (my (odd) cmd) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 5 0 0";
        assert_eq!(parse_process_seconds(stat), Some(3.0));
        assert_eq!(parse_process_seconds("42 (truncated"), None);
        assert!(process_seconds(std::process::id()).is_some());
    }
}
