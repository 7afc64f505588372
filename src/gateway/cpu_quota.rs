//! The CPU quota a cgroup puts on this process (a container's CPU limit), which decides whether
//! busy polling is on by default: polling time counts against a quota, and a quota too small for
//! it turns saved wake-ups into throttled periods.
//!
//! Reads cgroup v2 `cpu.max` and cgroup v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us` in the
//! process's own cgroup and every ancestor visible from it; the smallest quota wins, as the
//! kernel enforces each level.

use std::path::{Path, PathBuf};

/// Where the cgroup hierarchies are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Directory names a cgroup v1 `cpu` controller is mounted under.
const V1_CPU_MOUNTS: [&str; 3] = ["cpu", "cpu,cpuacct", "cpuacct,cpu"];

/// CPUs' worth of time this process may use per period, or `None` when no cgroup limits it (or
/// none could be read).
pub fn cpu_quota() -> Option<f64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let paths = own_cgroups(&own);
    let root = Path::new(CGROUP_ROOT);
    let v2 = paths.unified.as_deref().and_then(|path| {
        smallest_quota(&root.join(relative(path)), root, |dir| {
            let text = std::fs::read_to_string(dir.join("cpu.max")).ok()?;
            Some(parse_cpu_max(&text))
        })
    });
    let v1 = paths.cpu.as_deref().and_then(|path| {
        V1_CPU_MOUNTS.iter().find_map(|mount| {
            let mount = root.join(mount);
            smallest_quota(&mount.join(relative(path)), &mount, |dir| {
                let quota = std::fs::read_to_string(dir.join("cpu.cfs_quota_us")).ok()?;
                let period = std::fs::read_to_string(dir.join("cpu.cfs_period_us")).ok()?;
                Some(parse_cfs(&quota, &period))
            })
        })
    });
    min_quota(v2, v1)
}

fn relative(path: &str) -> &str {
    path.trim_start_matches('/')
}

/// The smallest quota from `dir` up to `top` (both included); a directory whose files are missing
/// (a cgroup path from outside this mount namespace) is skipped. `None` when no level has a
/// quota or no level could be read.
fn smallest_quota(
    dir: &Path,
    top: &Path,
    read: impl Fn(&Path) -> Option<Option<f64>>,
) -> Option<f64> {
    let mut smallest = None;
    let mut current: PathBuf = dir.to_path_buf();
    loop {
        if let Some(quota) = read(&current) {
            smallest = min_quota(smallest, quota);
        }
        if current == top || !current.pop() || !current.starts_with(top) {
            return smallest;
        }
    }
}

fn min_quota(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// This process's cgroup paths, from `/proc/self/cgroup`.
#[derive(Debug, Default, PartialEq, Eq)]
struct OwnCgroups {
    /// The cgroup v2 (unified) path: the `0::PATH` line.
    unified: Option<String>,
    /// The cgroup v1 path of the `cpu` controller.
    cpu: Option<String>,
}

fn own_cgroups(text: &str) -> OwnCgroups {
    let mut own = OwnCgroups::default();
    for line in text.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            own.unified = Some(path.to_owned());
        } else if controllers.split(',').any(|c| c == "cpu") {
            own.cpu = Some(path.to_owned());
        }
    }
    own
}

/// cgroup v2 `cpu.max`: `QUOTA PERIOD` in microseconds, `max` for no quota.
fn parse_cpu_max(text: &str) -> Option<f64> {
    let mut fields = text.split_whitespace();
    let quota = fields.next()?;
    let period: f64 = fields.next().map_or(Some(100_000.0), |p| p.parse().ok())?;
    quota_in_cpus(quota.parse().ok()?, period)
}

/// cgroup v1: `cpu.cfs_quota_us` (`-1` for no quota) over `cpu.cfs_period_us`.
fn parse_cfs(quota: &str, period: &str) -> Option<f64> {
    let quota: f64 = quota.trim().parse().ok()?;
    quota_in_cpus(quota, period.trim().parse().ok()?)
}

fn quota_in_cpus(quota: f64, period: f64) -> Option<f64> {
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_cgroup_versions_lines() {
        let v2 = own_cgroups("0::/kubepods.slice/pod1/cri-containerd-abc.scope\n");
        assert_eq!(
            v2.unified.as_deref(),
            Some("/kubepods.slice/pod1/cri-containerd-abc.scope")
        );
        assert_eq!(v2.cpu, None);
        let v1 = own_cgroups(
            "12:memory:/kubepods/pod1/abc\n4:cpu,cpuacct:/kubepods/pod1/abc\n1:name=systemd:/x\n0::/\n",
        );
        assert_eq!(v1.cpu.as_deref(), Some("/kubepods/pod1/abc"));
        assert_eq!(v1.unified.as_deref(), Some("/"));
        // `cpuacct` alone is not the `cpu` controller; a malformed line is skipped.
        let neither = own_cgroups("3:cpuacct:/a\ngarbage\n");
        assert_eq!(neither, OwnCgroups::default());
    }

    #[test]
    fn quotas_read_as_cpus_and_no_quota_reads_as_none() {
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("50000 100000\n"), Some(0.5));
        assert_eq!(parse_cpu_max("300000 100000"), Some(3.0));
        assert_eq!(parse_cpu_max("200000"), Some(2.0));
        assert_eq!(parse_cpu_max(""), None);
        assert_eq!(parse_cpu_max("lots 100000"), None);
        assert_eq!(parse_cfs("-1\n", "100000\n"), None);
        assert_eq!(parse_cfs("150000\n", "100000\n"), Some(1.5));
        assert_eq!(parse_cfs("150000", "0"), None);
    }

    #[test]
    fn the_smallest_quota_from_the_own_cgroup_up_wins() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path();
        let own = top.join("kubepods/pod1/abc");
        std::fs::create_dir_all(&own).unwrap();
        std::fs::write(top.join("cpu.max"), "max 100000\n").unwrap();
        std::fs::write(top.join("kubepods/pod1/cpu.max"), "150000 100000\n").unwrap();
        std::fs::write(own.join("cpu.max"), "250000 100000\n").unwrap();
        let read = |d: &Path| {
            Some(parse_cpu_max(
                &std::fs::read_to_string(d.join("cpu.max")).ok()?,
            ))
        };
        // The pod's level limits the container below its own, looser, quota.
        assert_eq!(smallest_quota(&own, top, read), Some(1.5));
        // A path that does not exist in this namespace falls back to the levels that do.
        assert_eq!(
            smallest_quota(&top.join("elsewhere/x"), top, read),
            None,
            "only the unlimited root is readable"
        );
        std::fs::write(top.join("cpu.max"), "50000 100000\n").unwrap();
        assert_eq!(
            smallest_quota(&top.join("elsewhere/x"), top, read),
            Some(0.5)
        );
        // Nothing readable at all.
        assert_eq!(smallest_quota(&own, top, |_| None), None);
        assert_eq!(min_quota(Some(2.0), None), Some(2.0));
        assert_eq!(min_quota(Some(2.0), Some(1.0)), Some(1.0));
    }
}
