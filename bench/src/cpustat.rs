//! Per-core CPU time from `/proc/stat`: the busy seconds of every core over an interval, so a
//! benchmark can charge a system with all the CPU it used — on veth much of a receiver's work
//! runs on the sender's core, and kernel forwarding has no process of its own to measure.
#![forbid(unsafe_code)]

/// Busy time of each core (user + nice + system + irq + softirq + steal), in clock ticks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CpuTimes {
    pub busy_ticks: Vec<u64>,
}

/// Clock ticks per second of /proc/stat (USER_HZ, 100 on Linux for every architecture).
pub const USER_HZ: f64 = 100.0;

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
    }
}
