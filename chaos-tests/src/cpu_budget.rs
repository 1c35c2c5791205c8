//! A CPU budget per node process, through Linux control groups: the nodes
//! of a cell started on one machine each get a fixed share of a CPU, as if
//! each had a machine of its own, so that what a benchmark shows is how the
//! cell spreads work over its nodes, not how the nodes of one box split its
//! cores between them.
//!
//! Each process goes into a control group of its own, made for the run
//! under the `cpu` controller (cgroup v2's `cpu.max`, or v1's CFS quota),
//! and is moved back to the group it came from when the [`CpuBudget`] is
//! dropped. Needs root (or a delegated group).

use std::path::{Path, PathBuf};

use crate::error::Error;

/// How long the CFS accounting period is, in microseconds (the kernel's
/// default).
const PERIOD_US: u64 = 100_000;

/// Where control groups are made.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Hierarchy {
    /// cgroup v2: `cpu.max` holds "QUOTA PERIOD".
    V2(PathBuf),
    /// cgroup v1's `cpu` controller: `cpu.cfs_quota_us`, `cpu.cfs_period_us`.
    V1(PathBuf),
}

impl Hierarchy {
    /// The `cpu` hierarchy this machine has, if one can hold new groups.
    fn find(root: &Path) -> Option<Self> {
        let unified = root.join("cgroup.controllers");
        if std::fs::read_to_string(&unified).is_ok_and(|c| c.split_whitespace().any(|c| c == "cpu"))
        {
            return Some(Self::V2(root.to_path_buf()));
        }
        let v1 = root.join("cpu");
        v1.join("cpu.cfs_quota_us").exists().then_some(Self::V1(v1))
    }

    fn root(&self) -> &Path {
        match self {
            Self::V2(p) | Self::V1(p) => p,
        }
    }

    fn limit(&self, group: &Path, quota_us: u64) -> std::io::Result<()> {
        match self {
            Self::V2(_) => std::fs::write(group.join("cpu.max"), format!("{quota_us} {PERIOD_US}")),
            Self::V1(_) => {
                std::fs::write(group.join("cpu.cfs_period_us"), PERIOD_US.to_string())?;
                std::fs::write(group.join("cpu.cfs_quota_us"), quota_us.to_string())
            }
        }
    }
}

/// The nodes' processes, each held to its budget until this is dropped.
#[derive(Debug)]
pub struct CpuBudget {
    hierarchy: Hierarchy,
    /// The group made for each process, with the pid.
    groups: Vec<(PathBuf, u32)>,
}

impl CpuBudget {
    /// Confines each of `pids` (named for the error messages) to `cpus` CPUs
    /// (0.5 is half of one) until the budget is dropped.
    pub fn apply(pids: &[(String, u32)], cpus: f64) -> Result<Self, Error> {
        Self::apply_under(Path::new("/sys/fs/cgroup"), pids, cpus)
    }

    fn apply_under(root: &Path, pids: &[(String, u32)], cpus: f64) -> Result<Self, Error> {
        let bad = |problem: String| Error::Config {
            key: "--node-cpus",
            problem,
        };
        if !(cpus.is_finite() && cpus >= 0.01) {
            return Err(bad(format!("`{cpus}` is not a share of CPUs ≥ 0.01")));
        }
        let hierarchy = Hierarchy::find(root).ok_or_else(|| {
            bad(format!(
                "no cgroup `cpu` controller under {} to hold the nodes",
                root.display()
            ))
        })?;
        if let Hierarchy::V2(root) = &hierarchy {
            // Children get the controller only if the root hands it down.
            let _ = std::fs::write(root.join("cgroup.subtree_control"), "+cpu");
        }
        let quota_us = (cpus * PERIOD_US as f64).round() as u64;
        let mut budget = Self {
            hierarchy,
            groups: Vec::new(),
        };
        for (name, pid) in pids {
            let group = budget.hierarchy.root().join(format!("sigil-bench-{pid}"));
            let made = std::fs::create_dir_all(&group)
                .and_then(|()| budget.hierarchy.limit(&group, quota_us))
                .and_then(|()| std::fs::write(group.join("cgroup.procs"), pid.to_string()));
            if let Err(e) = made {
                let _ = std::fs::remove_dir(&group);
                // Dropping `budget` releases the processes already moved.
                return Err(bad(format!(
                    "cannot limit node {name} (pid {pid}) in {}: {e}",
                    group.display()
                )));
            }
            budget.groups.push((group, *pid));
        }
        Ok(budget)
    }

    /// How many processes are held.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

impl Drop for CpuBudget {
    fn drop(&mut self) {
        let parent = self.hierarchy.root().join("cgroup.procs");
        for (group, pid) in self.groups.drain(..) {
            // A process that has exited left its group already.
            let _ = std::fs::write(&parent, pid.to_string());
            if let Err(e) = std::fs::remove_dir(&group) {
                eprintln!("could not remove {}: {e}", group.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_below_the_floor_or_not_a_number_is_refused() {
        let dir = tempfile::tempdir().expect("test setup");
        for cpus in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let e =
                CpuBudget::apply_under(dir.path(), &[("n".into(), 1)], cpus).expect_err("refused");
            assert!(e.to_string().contains("share of CPUs"), "{e}");
        }
    }

    #[test]
    fn a_machine_without_a_cpu_controller_is_named_in_the_error() {
        let dir = tempfile::tempdir().expect("test setup");
        let e = CpuBudget::apply_under(dir.path(), &[("n".into(), 1)], 0.5).expect_err("refused");
        assert!(e.to_string().contains("no cgroup `cpu` controller"), "{e}");
    }

    /// On a machine with a `cpu` controller this test may use (as root), a
    /// process is moved into its group with the quota set, and back out.
    #[test]
    fn a_process_is_held_in_its_group_and_released() {
        let root = Path::new("/sys/fs/cgroup");
        if Hierarchy::find(root).is_none() || !nix_is_root() {
            eprintln!("no cgroup cpu controller writable here; nothing to check");
            return;
        }
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("test setup");
        let pid = child.id();
        let in_group = || {
            std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .expect("test setup")
                .contains(&format!("sigil-bench-{pid}"))
        };
        let budget = CpuBudget::apply(&[("sleeper".into(), pid)], 0.25).expect("test setup");
        assert_eq!(budget.len(), 1);
        assert!(in_group(), "the process is in its group");
        let group = budget.groups[0].0.clone();
        let quota = match &budget.hierarchy {
            Hierarchy::V2(_) => std::fs::read_to_string(group.join("cpu.max")).expect("test setup"),
            Hierarchy::V1(_) => {
                std::fs::read_to_string(group.join("cpu.cfs_quota_us")).expect("test setup")
            }
        };
        assert!(quota.trim().starts_with("25000"), "quota {quota:?}");
        drop(budget);
        assert!(!in_group(), "the process is back where it was");
        assert!(!group.exists(), "the group is removed");
        child.kill().expect("test setup");
        child.wait().expect("test setup");
    }

    fn nix_is_root() -> bool {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Uid:"))
                    .map(|l| l.split_whitespace().nth(1) == Some("0"))
            })
            .unwrap_or(false)
    }

    #[test]
    fn the_v1_and_v2_hierarchies_are_told_apart() {
        let v2 = tempfile::tempdir().expect("test setup");
        std::fs::write(v2.path().join("cgroup.controllers"), "cpuset cpu io memory")
            .expect("test setup");
        assert_eq!(
            Hierarchy::find(v2.path()),
            Some(Hierarchy::V2(v2.path().to_path_buf()))
        );
        let v1 = tempfile::tempdir().expect("test setup");
        std::fs::create_dir(v1.path().join("cpu")).expect("test setup");
        std::fs::write(v1.path().join("cpu/cpu.cfs_quota_us"), "-1").expect("test setup");
        assert_eq!(
            Hierarchy::find(v1.path()),
            Some(Hierarchy::V1(v1.path().join("cpu")))
        );
    }
}
