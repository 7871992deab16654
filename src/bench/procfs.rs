//! Memory and CPU of processes from /proc: `smaps_rollup` for RSS and PSS, `stat` for CPU ticks
//! and the parent pid; the machine's CPU time and steal from `/proc/stat`. Linux only;
//! elsewhere every reading is absent.

use std::path::Path;

/// Memory of one process, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Memory {
    pub rss_kib: u64,
    pub pss_kib: u64,
    pub pss_anon_kib: u64,
    pub pss_file_kib: u64,
}

/// Reads `/proc/<pid>/smaps_rollup`; None when the process is gone or the file unreadable.
pub fn memory(pid: u32) -> Option<Memory> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    Some(parse_rollup(&text))
}

fn parse_rollup(text: &str) -> Memory {
    let mut m = Memory::default();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(key), Some(value)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Ok(value) = value.parse::<u64>() else {
            continue;
        };
        match key {
            "Rss:" => m.rss_kib = value,
            "Pss:" => m.pss_kib = value,
            "Pss_Anon:" => m.pss_anon_kib = value,
            "Pss_File:" => m.pss_file_kib = value,
            _ => {}
        }
    }
    m
}

/// Fields of `/proc/<pid>/stat` the bench uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub ppid: u32,
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    pub threads: u64,
}

pub fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

fn parse_stat(text: &str) -> Option<Stat> {
    // The command name is in parentheses and may hold spaces; fields count from after it.
    let rest = text.get(text.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state) of proc(5).
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some(Stat {
        ppid: u32::try_from(field(4)?).ok()?,
        cpu_ticks: field(14)? + field(15)?,
        threads: field(20)?,
    })
}

/// Clock ticks per second for [`Stat::cpu_ticks`].
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|t| *t > 0).unwrap_or(100)
}

/// Every live process whose parent is `ppid`.
pub fn children_of(ppid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir(Path::new("/proc")) else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| stat(*pid).is_some_and(|s| s.ppid == ppid))
        .collect();
    pids.sort_unstable();
    pids
}

/// Total CPU ticks of these processes (gone ones count 0).
pub fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| stat(*p))
        .map(|s| s.cpu_ticks)
        .sum()
}

/// The machine's CPU time so far, in ticks over all CPUs (the first line of `/proc/stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MachineCpu {
    pub total: u64,
    /// Time the hypervisor gave to others while this machine's CPUs wanted to run.
    pub steal: u64,
}

/// Reads `/proc/stat`; None where it cannot be read.
pub fn machine_cpu() -> Option<MachineCpu> {
    parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)
}

fn parse_proc_stat(text: &str) -> Option<MachineCpu> {
    let fields: Vec<u64> = text
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]: the guest times are
    // counted in user and nice already.
    let steal = *fields.get(7)?;
    Some(MachineCpu {
        total: fields.iter().take(8).sum(),
        steal,
    })
}

/// The share of the CPU time between two readings that the hypervisor took (`st` in
/// `vmstat`), in percent; None without readings or time between them.
pub fn steal_percent(before: Option<MachineCpu>, after: Option<MachineCpu>) -> Option<f64> {
    let (before, after) = (before?, after?);
    let total = after.total.checked_sub(before.total)?;
    let steal = after.steal.checked_sub(before.steal)?;
    (total > 0).then(|| steal as f64 * 100.0 / total as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steal_is_read_and_taken_as_a_share_of_the_time_between_readings() {
        let before =
            parse_proc_stat("cpu  100 0 50 800 10 0 5 35 7 0\ncpu0 50 0 25 400 5 0 2 18 3 0\n")
                .expect("parses");
        assert_eq!(
            before,
            MachineCpu {
                total: 1000,
                steal: 35
            }
        );
        let after = MachineCpu {
            total: 1200,
            steal: 65,
        };
        assert_eq!(steal_percent(Some(before), Some(after)), Some(15.0));
        assert_eq!(steal_percent(Some(before), Some(before)), None);
        assert_eq!(steal_percent(None, Some(after)), None);
        assert_eq!(parse_proc_stat("cpu0 1 2 3\n"), None);
        assert_eq!(parse_proc_stat("cpu  1 2 3\n"), None, "no steal field");
        if cfg!(target_os = "linux") {
            assert!(machine_cpu().is_some(), "this machine's /proc/stat");
        }
    }

    #[test]
    fn rollup_fields_are_read() {
        let text = "00400000-7ffd [rollup]\nRss:                1234 kB\nPss:                 567 kB\nPss_Anon:            400 kB\nPss_File:            167 kB\nPss_Shmem:             0 kB\n";
        let m = parse_rollup(text);
        assert_eq!(
            m,
            Memory {
                rss_kib: 1234,
                pss_kib: 567,
                pss_anon_kib: 400,
                pss_file_kib: 167
            }
        );
    }

    #[test]
    fn stat_fields_survive_a_name_with_spaces_and_parens() {
        let text = "42 (a (b) c) S 7 42 42 0 -1 4194560 100 0 0 0 11 22 0 0 20 0 3 0 100 0 0";
        let s = parse_stat(text).expect("parses");
        assert_eq!(s.ppid, 7);
        assert_eq!(s.cpu_ticks, 33);
        assert_eq!(s.threads, 3);
    }

    #[test]
    fn own_process_is_readable() {
        let me = std::process::id();
        let m = memory(me).expect("own smaps_rollup");
        assert!(m.rss_kib > 0 && m.pss_kib > 0);
        assert!(stat(me).expect("own stat").threads >= 1);
    }
}
