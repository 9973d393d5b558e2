//! The CPU limits a container puts on this process, read from its cgroup:
//! a CPU quota (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us` over
//! `cpu.cfs_period_us`) and, on v2, the CPU set (`cpuset.cpus.effective`).
//! A quota of 2 CPUs on a 16-CPU host lets the process run 2 CPUs' worth
//! of time per period whatever its affinity says, so 16 workers would
//! spend most of each period throttled.
//!
//! Pure functions over a `/proc/self/cgroup` text and a cgroup filesystem
//! root, so tests can hand them a fake tree.

use std::path::{Path, PathBuf};

/// The CPU limits found; `None` where there is none.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CpuLimits {
    /// CPUs' worth of time per period (the tightest quota from the
    /// process's cgroup up to the root).
    pub quota: Option<f64>,
    /// CPUs in the effective CPU set (v2).
    pub cpuset: Option<usize>,
}

/// Reads the limits of the cgroups named in `proc_cgroup` (the text of
/// `/proc/self/cgroup`) under the cgroup filesystem mounted at `root`.
pub fn limits(proc_cgroup: &str, root: &Path) -> CpuLimits {
    let mut out = CpuLimits::default();
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let rel = path.trim_start_matches('/');
        if controllers.is_empty() {
            // v2: mounted at the root, or at `unified` on hybrid hosts.
            for base in [root.to_path_buf(), root.join("unified")] {
                for dir in up_to(&base, rel) {
                    out.quota = min(out.quota, read_cpu_max(&dir));
                    // Effective sets narrow down the tree: the smallest on
                    // the path is the process's own.
                    let set = std::fs::read_to_string(dir.join("cpuset.cpus.effective"))
                        .ok()
                        .and_then(|s| count_cpu_list(&s));
                    out.cpuset = match (out.cpuset, set) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
            }
        } else if controllers.split(',').any(|c| c == "cpu") {
            // v1: the hierarchy is mounted under the controllers' names.
            for dir in up_to(&root.join(controllers), rel) {
                out.quota = min(out.quota, read_cfs_quota(&dir));
            }
        }
    }
    out
}

/// `base/rel` and each of its ancestors up to `base` itself.
fn up_to(base: &Path, rel: &str) -> Vec<PathBuf> {
    let mut dirs = vec![base.to_path_buf()];
    let mut dir = base.to_path_buf();
    for part in rel.split('/').filter(|p| !p.is_empty() && *p != "..") {
        dir.push(part);
        dirs.push(dir.clone());
    }
    dirs
}

fn min(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `cpu.max`: "QUOTA PERIOD" in microseconds, or "max PERIOD" for none.
fn read_cpu_max(dir: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(dir.join("cpu.max")).ok()?;
    let mut f = text.split_whitespace();
    let quota: f64 = f.next()?.parse().ok()?;
    let period: f64 = f.next()?.parse().ok()?;
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

/// v1: `cpu.cfs_quota_us` (-1 for none) over `cpu.cfs_period_us`.
fn read_cfs_quota(dir: &Path) -> Option<f64> {
    let read = |name: &str| -> Option<f64> {
        std::fs::read_to_string(dir.join(name))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let (quota, period) = (read("cpu.cfs_quota_us")?, read("cpu.cfs_period_us")?);
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

/// Counts the CPUs in a list such as "0-3,6,8-9".
fn count_cpu_list(text: &str) -> Option<usize> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut n = 0;
    for item in text.split(',') {
        n += match item.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
                b.checked_sub(a)? + 1
            }
            None => {
                item.parse::<usize>().ok()?;
                1
            }
        };
    }
    Some(n)
}

/// Workers to run by default: one per CPU the process may run on, but no
/// more than its CPU set and its quota allow (a fractional quota rounds
/// down, at least 1: a worker that is throttled every period costs more
/// latency than a missing one).
pub fn workers_for(allowed: usize, limits: CpuLimits) -> usize {
    let mut n = allowed.max(1);
    if let Some(set) = limits.cpuset {
        n = n.min(set);
    }
    if let Some(q) = limits.quota {
        n = n.min(q.floor() as usize);
    }
    n.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake cgroup root, removed when dropped.
    struct Tree(PathBuf);

    impl std::ops::Deref for Tree {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A fake cgroup root with `files` (path, contents) in it.
    fn tree(name: &str, files: &[(&str, &str)]) -> Tree {
        let root =
            std::env::temp_dir().join(format!("tidepool-cgroup-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        for (path, text) in files {
            let p = root.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        Tree(root)
    }

    #[test]
    fn v2_quota_at_the_container_root() {
        let root = tree("v2root", &[("cpu.max", "200000 100000\n")]);
        let l = limits("0::/\n", &root);
        assert_eq!(l.quota, Some(2.0));
        assert_eq!(workers_for(16, l), 2);
    }

    #[test]
    fn v2_tightest_quota_on_the_path_wins_and_max_means_none() {
        let root = tree(
            "v2nested",
            &[
                ("cpu.max", "max 100000\n"),
                ("cpuset.cpus.effective", "0-15\n"),
                ("kubepods/cpu.max", "150000 100000\n"),
                ("kubepods/pod1/cpu.max", "max 100000\n"),
                ("kubepods/pod1/cpuset.cpus.effective", "0-3,8\n"),
            ],
        );
        let l = limits("0::/kubepods/pod1\n", &root);
        assert_eq!(l.quota, Some(1.5));
        assert_eq!(l.cpuset, Some(5));
        assert_eq!(workers_for(16, l), 1, "1.5 CPUs of quota round down");
        let none = tree("v2none", &[("cpu.max", "max 100000\n")]);
        assert_eq!(workers_for(8, limits("0::/\n", &none)), 8);
    }

    #[test]
    fn v1_cfs_quota_under_the_named_hierarchy() {
        let root = tree(
            "v1",
            &[
                ("cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "300000\n"),
                ("cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n"),
                ("cpu,cpuacct/cpu.cfs_quota_us", "-1\n"),
                ("cpu,cpuacct/cpu.cfs_period_us", "100000\n"),
            ],
        );
        let text = "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n";
        let l = limits(text, &root);
        assert_eq!(l.quota, Some(3.0));
        assert_eq!(workers_for(16, l), 3);
        assert_eq!(workers_for(2, l), 2, "never more than the CPUs allowed");
    }

    #[test]
    fn no_cgroup_files_means_no_limit() {
        let root = tree("empty", &[]);
        let l = limits("0::/\n1:cpu:/\n", &root);
        assert_eq!(l, CpuLimits::default());
        assert_eq!(workers_for(4, l), 4);
        assert_eq!(workers_for(0, l), 1);
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(count_cpu_list("0-3,6,8-9\n"), Some(7));
        assert_eq!(count_cpu_list("5"), Some(1));
        assert_eq!(count_cpu_list(""), None);
        assert_eq!(count_cpu_list("3-1"), None);
    }
}
