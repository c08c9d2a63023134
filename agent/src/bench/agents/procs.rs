//! What a worker costs the machine: a process and all its descendants, read
//! from `/proc` (resident and proportional memory, CPU time). LiveKit's
//! Python framework runs each job in a child process, so only the whole
//! tree is a fair figure; PSS shares the pages those forked children have in
//! common among them instead of counting them once per process.

use std::collections::HashMap;

/// One reading of a process tree.
#[derive(Debug, Clone, Copy, Default)]
pub struct TreeSample {
    pub processes: usize,
    /// Sum of the processes' resident set sizes (shared pages counted in each).
    pub rss: u64,
    /// Sum of the proportional set sizes (shared pages divided among sharers).
    pub pss: u64,
    /// User + system CPU seconds the live processes have used.
    pub cpu_seconds: f64,
}

/// `(ppid, utime + stime in ticks)` from a `/proc/<pid>/stat` line.
fn parse_stat(stat: &str) -> Option<(u32, u64)> {
    // The command name is parenthesised and may hold spaces: fields count from its end.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    // After the name: state(0) ppid(1) ... utime(11) stime(12).
    Some((num(1)? as u32, num(11)? + num(12)?))
}

/// The value in kB of a `Name:   123 kB` line, in bytes.
fn kb_line(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// `root` and every process below it.
pub fn tree(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
            if let Some((ppid, _)) = parse_stat(&stat) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut all = vec![root];
    let mut i = 0;
    while i < all.len() {
        all.extend(children.get(&all[i]).into_iter().flatten().copied());
        i += 1;
    }
    all
}

/// Reads memory and CPU of `root`'s whole tree now.
pub fn sample(root: u32) -> TreeSample {
    let mut s = TreeSample::default();
    for pid in tree(root) {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some((_, ticks)) = parse_stat(&stat) else { continue };
        s.processes += 1;
        s.cpu_seconds += ticks as f64 / 100.0; // USER_HZ is 100 on Linux
        s.rss += std::fs::read_to_string(format!("/proc/{pid}/status")).map_or(0, |t| kb_line(&t, "VmRSS:"));
        s.pss += std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).map_or(0, |t| kb_line(&t, "Pss:"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_count_from_the_end_of_the_command_name() {
        let line = "4242 (python3 -m x) S 17 4242 4242 0 -1 4194560 1 0 0 0 250 31 0 0 20 0 3 0 9 1000 200";
        assert_eq!(parse_stat(line), Some((17, 281)));
    }

    #[test]
    fn this_process_is_its_own_tree_and_uses_memory() {
        let me = sample(std::process::id());
        assert!(me.processes >= 1 && me.rss > 0);
    }
}
