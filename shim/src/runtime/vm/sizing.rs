//! The VM's size from an OCI spec's `linux.resources`, sized once at create as
//! Kata's static sandbox sizing does: guest memory is the memory limit plus a
//! fixed overhead for the guest kernel and agent, vCPUs are the CPU quota over
//! its period rounded up, or else the number of CPUs in the cpuset. Without
//! limits the defaults apply.

use oci_spec::runtime::LinuxResources;

use super::{DEFAULT_MEMORY_MIB, MEMORY_OVERHEAD_MIB};

/// No guest is made smaller than this, whatever the limit (the kernel, the
/// agent and the container's tmpfs upper layer live in guest memory).
pub const MIN_MEMORY_MIB: u64 = 128;
/// vCPUs without a CPU limit.
pub const DEFAULT_VCPUS: u32 = 1;

/// How big a VM is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmSize {
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// Virtual CPUs.
    pub vcpus: u32,
}

/// What the host offers; a VM is never made bigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostLimits {
    /// Physical memory in MiB.
    pub memory_mib: u64,
    /// Online CPUs.
    pub cpus: u32,
}

impl HostLimits {
    /// This machine's memory and CPUs.
    pub fn of_this_machine() -> HostLimits {
        let memory_mib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| {
                text.lines().find_map(|l| {
                    let kib: u64 = l
                        .strip_prefix("MemTotal:")?
                        .trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse()
                        .ok()?;
                    Some(kib / 1024)
                })
            })
            .unwrap_or(u64::MAX);
        let cpus = std::thread::available_parallelism()
            .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
            .unwrap_or(1);
        HostLimits { memory_mib, cpus }
    }
}

/// The VM size for `resources`, within `host`.
pub fn for_resources(resources: Option<&LinuxResources>, host: HostLimits) -> VmSize {
    let memory_mib = resources
        .and_then(|r| r.memory().as_ref())
        .and_then(|m| m.limit())
        .filter(|limit| *limit > 0)
        .map(|limit| {
            let wanted = (limit as u64).div_ceil(1 << 20) + MEMORY_OVERHEAD_MIB;
            wanted.min(host.memory_mib).max(MIN_MEMORY_MIB)
        })
        .unwrap_or(DEFAULT_MEMORY_MIB);
    let cpu = resources.and_then(|r| r.cpu().as_ref());
    let from_quota = cpu.and_then(|c| {
        let quota = u64::try_from(c.quota()?).ok().filter(|q| *q > 0)?;
        let period = c.period().filter(|p| *p > 0).unwrap_or(100_000);
        Some(quota.div_ceil(period))
    });
    let from_cpuset = || {
        cpu.and_then(|c| c.cpus().as_deref())
            .and_then(cpuset_count)
            .filter(|n| *n > 0)
    };
    let vcpus = match from_quota.or_else(from_cpuset) {
        Some(n) => u32::try_from(n)
            .unwrap_or(u32::MAX)
            .min(host.cpus.max(1))
            .max(1),
        None => DEFAULT_VCPUS,
    };
    VmSize { memory_mib, vcpus }
}

/// How many CPUs a cpuset list (`0-3,6`) names; `None` when it is malformed.
pub fn cpuset_count(list: &str) -> Option<u64> {
    let mut count = 0u64;
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        count += match part.split_once('-') {
            Some((first, last)) => {
                let first: u64 = first.trim().parse().ok()?;
                let last: u64 = last.trim().parse().ok()?;
                last.checked_sub(first)? + 1
            }
            None => {
                part.parse::<u64>().ok()?;
                1
            }
        };
    }
    Some(count)
}

#[cfg(test)]
mod tests {
    use oci_spec::runtime::{LinuxCpu, LinuxMemory};

    use super::*;

    const HOST: HostLimits = HostLimits {
        memory_mib: 8192,
        cpus: 4,
    };

    fn resources(
        limit: Option<i64>,
        quota: Option<(i64, u64)>,
        cpus: Option<&str>,
    ) -> LinuxResources {
        let mut resources = LinuxResources::default();
        if let Some(limit) = limit {
            let mut memory = LinuxMemory::default();
            memory.set_limit(Some(limit));
            resources.set_memory(Some(memory));
        }
        let mut cpu = LinuxCpu::default();
        if let Some((quota, period)) = quota {
            cpu.set_quota(Some(quota));
            cpu.set_period(Some(period));
        }
        cpu.set_cpus(cpus.map(str::to_owned));
        resources.set_cpu(Some(cpu));
        resources
    }

    fn size(limit: Option<i64>, quota: Option<(i64, u64)>, cpus: Option<&str>) -> VmSize {
        for_resources(Some(&resources(limit, quota, cpus)), HOST)
    }

    #[test]
    fn no_limits_keep_the_defaults() {
        let defaults = VmSize {
            memory_mib: DEFAULT_MEMORY_MIB,
            vcpus: DEFAULT_VCPUS,
        };
        assert_eq!(for_resources(None, HOST), defaults);
        assert_eq!(size(None, None, None), defaults);
        // -1 is "unlimited", and a quota of -1 too.
        assert_eq!(size(Some(-1), Some((-1, 100_000)), None), defaults);
    }

    #[test]
    fn memory_is_the_limit_plus_the_overhead() {
        assert_eq!(
            size(Some(512 << 20), None, None).memory_mib,
            512 + MEMORY_OVERHEAD_MIB
        );
        // Rounded up to whole MiB.
        assert_eq!(
            size(Some((300 << 20) + 1), None, None).memory_mib,
            301 + MEMORY_OVERHEAD_MIB
        );
        // Never below the minimum, never above the host.
        assert_eq!(size(Some(4 << 20), None, None).memory_mib, MIN_MEMORY_MIB);
        assert_eq!(size(Some(1 << 40), None, None).memory_mib, HOST.memory_mib);
    }

    #[test]
    fn vcpus_from_the_quota_rounded_up_then_the_cpuset() {
        assert_eq!(size(None, Some((200_000, 100_000)), None).vcpus, 2);
        assert_eq!(size(None, Some((150_000, 100_000)), None).vcpus, 2);
        assert_eq!(size(None, Some((50_000, 100_000)), None).vcpus, 1);
        // The quota wins over the cpuset.
        assert_eq!(size(None, Some((100_000, 100_000)), Some("0-2")).vcpus, 1);
        assert_eq!(size(None, None, Some("0-2")).vcpus, 3);
        assert_eq!(size(None, None, Some("1,3")).vcpus, 2);
        // Never more than the host has.
        assert_eq!(
            size(None, Some((1_600_000, 100_000)), None).vcpus,
            HOST.cpus
        );
        // A malformed cpuset is no limit.
        assert_eq!(size(None, None, Some("x")).vcpus, DEFAULT_VCPUS);
    }

    #[test]
    fn cpuset_lists() {
        assert_eq!(cpuset_count("0"), Some(1));
        assert_eq!(cpuset_count("0-3,6, 8-9"), Some(7));
        assert_eq!(cpuset_count(""), Some(0));
        assert_eq!(cpuset_count("3-1"), None);
        assert_eq!(cpuset_count("a-b"), None);
    }

    #[test]
    fn this_machine_has_memory_and_cpus() {
        let host = HostLimits::of_this_machine();
        assert!(host.cpus >= 1);
        assert!(
            host.memory_mib > 0 && host.memory_mib < u64::MAX,
            "{host:?}"
        );
    }
}
