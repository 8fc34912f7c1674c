//! What a worker process costs: its own CPU time and peak RSS, or another process's (the
//! harness reads its nodes'), from `getrusage` and `/proc`.

use crate::wire::Resources;

impl Resources {
    /// This process's usage so far; `None` where the OS does not tell (not Linux).
    pub fn of_self() -> Option<Resources> {
        use nix::sys::resource::{UsageWho, getrusage};
        let usage = getrusage(UsageWho::RUSAGE_SELF).ok()?;
        let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        Some(Resources {
            cpu_s: secs(usage.user_time()) + secs(usage.system_time()),
            peak_rss_kib: parse_vm_hwm(&status)?,
        })
    }

    /// Usage of another process so far, from `/proc/<pid>/{stat,status}`; `None` if it is
    /// gone or the OS does not tell.
    pub fn of_pid(pid: u32) -> Option<Resources> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .filter(|&t| t > 0)? as f64;
        Some(Resources {
            cpu_s: parse_stat_ticks(&stat)? as f64 / ticks,
            peak_rss_kib: parse_vm_hwm(&status)?,
        })
    }
}

/// utime + stime (clock ticks) of a `/proc/<pid>/stat` line. The command name is in
/// parentheses and may hold spaces or parentheses itself: fields count from the last `)`.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The `VmHWM:  1234 kB` line of `/proc/<pid>/status`, in KiB.
fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_resources_are_read() {
        assert_eq!(
            parse_vm_hwm("Name:\tx\nVmHWM:\t   20480 kB\nVmRSS: 1 kB\n"),
            Some(20480)
        );
        assert_eq!(parse_vm_hwm("VmRSS: 1 kB\n"), None);
        // Burn a little CPU and hold some memory: both show.
        let v: Vec<u64> = (0..2_000_000).collect();
        let sum: u64 = v.iter().copied().map(std::hint::black_box).sum();
        assert!(sum > 0);
        let r = Resources::of_self().expect("Linux tells a process its usage");
        assert!(r.cpu_s > 0.0, "{r:?}");
        assert!(r.peak_rss_kib >= 2_000_000 * 8 / 1024, "{r:?}");
        let p = Resources::of_pid(std::process::id()).expect("our own /proc entry");
        // The same held vector, seen through /proc/<pid>. Not `>= r.peak_rss_kib`: the
        // kernel computes VmHWM from per-thread RSS counters it syncs in batches, so with
        // the other tests' threads allocating and freeing, a later read came out 64 KiB
        // lower than an earlier one (CI, 28,816 vs 28,880 KiB).
        assert!(p.peak_rss_kib >= 2_000_000 * 8 / 1024, "{p:?} vs {r:?}");
        assert!(p.cpu_s > 0.0 && p.cpu_s <= r.cpu_s + 1.0, "{p:?} vs {r:?}");
        assert_eq!(Resources::of_pid(u32::MAX), None);
        let stat = "42 (a) b) c) S 1 2 3 4 5 6 7 8 9 10 250 30 0 0";
        assert_eq!(parse_stat_ticks(stat), Some(280));
        assert_eq!(parse_stat_ticks("42 (x) S 1"), None);
    }
}
