//! `linux.resources.hugepageLimits`: limits per huge page size, through the
//! hugetlb controller (`hugetlb.<size>.limit_in_bytes` on v1,
//! `hugetlb.<size>.max` on v2).
//!
//! A page size is named as the kernel's cgroup files name it: the size of one
//! of the `hugepages-<N>kB` directories the kernel lists, in the largest whole
//! unit (`64KB`, `2MB`, `1GB`). Anything else is refused before a cgroup is made.
//! Where the kernel also has a reservation limit (`.rsvd.`), it gets the same
//! value, as runc does.

use std::path::Path;

use oci_spec::runtime::{LinuxHugepageLimit, LinuxResources};

use super::v2::max_or;
use super::{require, write_file, CgroupError, Result};

/// The spec setting, as error messages name it.
pub(super) const HUGEPAGE_LIMITS: &str = "linux.resources.hugepageLimits";

/// The spec's limits (none when unset).
pub(super) fn limits(resources: &LinuxResources) -> &[LinuxHugepageLimit] {
    resources.hugepage_limits().as_deref().unwrap_or_default()
}

/// The name cgroup files give a page of `kib` KiB: `2048` is `2MB`.
pub(super) fn size_name(kib: u64) -> String {
    const UNITS: [&str; 5] = ["KB", "MB", "GB", "TB", "PB"];
    let (mut value, mut unit) = (kib, 0);
    while value >= 1024 && value % 1024 == 0 && unit + 1 < UNITS.len() {
        value /= 1024;
        unit += 1;
    }
    format!("{value}{}", UNITS[unit])
}

/// The huge page sizes the kernel lists in `dir` (`/sys/kernel/mm/hugepages`),
/// smallest first; none when it has no huge pages.
pub(super) fn page_sizes(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut kib: Vec<u64> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let name = name.to_str()?;
            name.strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()
        })
        .collect();
    kib.sort_unstable();
    kib.into_iter().map(size_name).collect()
}

/// Refuse page sizes the kernel at `hugepages_dir` does not have.
pub(super) fn validate(resources: &LinuxResources, hugepages_dir: &Path) -> Result<()> {
    let limits = limits(resources);
    if limits.is_empty() {
        return Ok(());
    }
    let sizes = page_sizes(hugepages_dir);
    for limit in limits {
        if !sizes.contains(limit.page_size()) {
            let have = if sizes.is_empty() {
                format!("it has none ({} lists none)", hugepages_dir.display())
            } else {
                format!("it has {}", sizes.join(", "))
            };
            return Err(CgroupError::Invalid {
                setting: "linux.resources.hugepageLimits[].pageSize",
                reason: format!(
                    "{:?} is not a huge page size of this kernel: {have}",
                    limit.page_size()
                ),
            });
        }
    }
    Ok(())
}

/// Write the limits into the v1 hugetlb cgroup directory `dir`.
pub(super) fn apply_v1(dir: &Path, limits: &[LinuxHugepageLimit]) -> Result<()> {
    for limit in limits {
        let size = limit.page_size();
        let value = limit.limit().to_string();
        let file = require(
            dir,
            &format!("hugetlb.{size}.limit_in_bytes"),
            HUGEPAGE_LIMITS,
        )?;
        write_file(&file, &value)?;
        let reserved = dir.join(format!("hugetlb.{size}.rsvd.limit_in_bytes"));
        if reserved.exists() {
            write_file(&reserved, &value)?;
        }
    }
    Ok(())
}

/// Write the limits into the v2 cgroup directory `dir`.
pub(super) fn apply_v2(dir: &Path, limits: &[LinuxHugepageLimit]) -> Result<()> {
    for limit in limits {
        let size = limit.page_size();
        let value = max_or(limit.limit());
        let file = require(dir, &format!("hugetlb.{size}.max"), HUGEPAGE_LIMITS)?;
        write_file(&file, &value)?;
        let reserved = dir.join(format!("hugetlb.{size}.rsvd.max"));
        if reserved.exists() {
            write_file(&reserved, &value)?;
        }
    }
    Ok(())
}
