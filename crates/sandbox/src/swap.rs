//! Whether a page of this process can be swapped out.
//!
//! The sandbox resets a pool slot by rewriting only the pages the last
//! instance wrote, found with Linux's `PAGEMAP_SCAN`. That scan (wasmtime
//! 48) sees only pages that are present: a written page the kernel swapped
//! out would be neither rewritten nor dropped, and the next event in the slot
//! would read it back. So the scan is used only where no page can be swapped:
//! no swap device at all, or a cgroup v2 `memory.swap.max` of 0 on the
//! process's cgroup or one above it.

use std::path::{Path, PathBuf};

/// Why pages can or cannot be swapped out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Swap {
    /// No page can be swapped out, for the reason given.
    Impossible(String),
    /// Pages may be swapped out, for the reason given.
    Possible(String),
}

impl Swap {
    /// Reads `/proc/swaps` and the process's cgroup.
    pub fn detect() -> Swap {
        let swaps = std::fs::read_to_string("/proc/swaps").ok();
        let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok();
        Swap::decide(
            swaps.as_deref(),
            cgroup.as_deref(),
            Path::new("/sys/fs/cgroup"),
        )
    }

    /// The decision from the text of `/proc/swaps`, of `/proc/self/cgroup`
    /// and the cgroup v2 mount point `root`. An unreadable `/proc/swaps`
    /// counts as swap being possible.
    pub fn decide(swaps: Option<&str>, cgroup: Option<&str>, root: &Path) -> Swap {
        let Some(swaps) = swaps else {
            return Swap::Possible("/proc/swaps cannot be read".into());
        };
        let devices: Vec<&str> = swaps
            .lines()
            .skip(1)
            .filter_map(|line| line.split_whitespace().next())
            .collect();
        if devices.is_empty() {
            return Swap::Impossible("no swap device".into());
        }
        let devices = devices.join(", ");
        match cgroup.and_then(|c| swap_max_zero(c, root)) {
            Some(dir) => Swap::Impossible(format!(
                "swap is on ({devices}) but {} is 0",
                dir.join("memory.swap.max").display()
            )),
            None => Swap::Possible(format!("swap is on ({devices})")),
        }
    }

    pub fn is_possible(&self) -> bool {
        matches!(self, Swap::Possible(_))
    }

    pub fn reason(&self) -> &str {
        match self {
            Swap::Impossible(reason) | Swap::Possible(reason) => reason,
        }
    }
}

/// The cgroup v2 folder, the process's own or one above it, whose
/// `memory.swap.max` is 0, if there is one.
fn swap_max_zero(proc_self_cgroup: &str, root: &Path) -> Option<PathBuf> {
    let path = proc_self_cgroup
        .lines()
        .find_map(|line| line.strip_prefix("0::"))?;
    let mut dir = root.join(path.trim().trim_start_matches('/'));
    loop {
        let max = std::fs::read_to_string(dir.join("memory.swap.max"));
        if max.is_ok_and(|max| max.trim() == "0") {
            return Some(dir);
        }
        if dir == root || !dir.pop() || !dir.starts_with(root) {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n";
    const ONE_DEVICE: &str = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n\
                              /swapfile                               file\t\t4194300\t\t0\t\t-2\n";

    #[test]
    fn no_swap_device_means_no_swap() {
        let swap = Swap::decide(Some(HEADER), Some("0::/\n"), Path::new("/nonexistent"));
        assert_eq!(swap, Swap::Impossible("no swap device".into()));
    }

    #[test]
    fn a_swap_device_means_swap_unless_the_cgroup_forbids_it() {
        let root = tempdir("eddy-swap-test");
        let leaf = root.join("kubepods/pod1/eddy");
        std::fs::create_dir_all(&leaf).unwrap();
        let cgroup = "0::/kubepods/pod1/eddy\n";

        let swap = Swap::decide(Some(ONE_DEVICE), Some(cgroup), &root);
        assert_eq!(swap, Swap::Possible("swap is on (/swapfile)".into()));

        std::fs::write(leaf.join("memory.swap.max"), "max\n").unwrap();
        assert!(Swap::decide(Some(ONE_DEVICE), Some(cgroup), &root).is_possible());

        // A limit of 0 above the process's own cgroup holds for it too.
        std::fs::write(root.join("kubepods/memory.swap.max"), "0\n").unwrap();
        let swap = Swap::decide(Some(ONE_DEVICE), Some(cgroup), &root);
        assert!(!swap.is_possible(), "{swap:?}");
        assert!(swap.reason().contains("kubepods/memory.swap.max is 0"));

        // cgroup v1 has no such limit; unreadable files count as swap.
        let v1 = "4:memory:/kubepods/pod1/eddy\n";
        assert!(Swap::decide(Some(ONE_DEVICE), Some(v1), &root).is_possible());
        assert!(Swap::decide(Some(ONE_DEVICE), None, &root).is_possible());
        assert!(Swap::decide(None, Some(cgroup), &root).is_possible());
        std::fs::remove_dir_all(&root).unwrap();
    }

    fn tempdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
