//! A new user namespace's uid and gid mappings: checked before anything is
//! created, then written to /proc/PID/{uid,gid}_map by the parent.

use std::path::PathBuf;

use nix::errno::Errno;
use nix::unistd::Pid;
use oci_spec::runtime::LinuxIdMapping;

use crate::syscall::Syscall;

/// The kernel takes at most this many lines per map (since Linux 4.15).
const MAX_LINES: usize = 340;
/// The kernel takes a map only in one write of less than a page.
const MAX_BYTES: usize = 4095;

/// A mapping the spec asks for that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IdMapError {
    /// Mappings in a spec without a user namespace.
    #[error("linux.{0} is set but linux.namespaces has no user namespace")]
    WithoutUserNamespace(&'static str),
    /// A new user namespace without one of the maps.
    #[error("a new user namespace needs linux.{0}")]
    Missing(&'static str),
    /// An entry of size 0.
    #[error("linux.{list}[{index}] has size 0")]
    Empty {
        /// `uidMappings` or `gidMappings`.
        list: &'static str,
        /// The entry.
        index: usize,
    },
    /// An entry that reaches id 4294967295, which is never valid.
    #[error("linux.{list}[{index}] runs past id 4294967294")]
    Overflow {
        /// `uidMappings` or `gidMappings`.
        list: &'static str,
        /// The entry.
        index: usize,
    },
    /// Two entries that map overlapping ranges.
    #[error("linux.{list}[{first}] and linux.{list}[{second}] overlap in {side} ids")]
    Overlap {
        /// `uidMappings` or `gidMappings`.
        list: &'static str,
        /// The earlier entry.
        first: usize,
        /// The later entry.
        second: usize,
        /// `container` or `host`.
        side: &'static str,
    },
    /// More entries than the kernel accepts.
    #[error("linux.{list} has {count} entries; the kernel takes at most {MAX_LINES}")]
    TooMany {
        /// `uidMappings` or `gidMappings`.
        list: &'static str,
        /// How many there are.
        count: usize,
    },
    /// A map that does not fit in the one write the kernel takes.
    #[error(
        "linux.{list} takes {bytes} bytes as a map file; the kernel takes at most {MAX_BYTES}"
    )]
    TooLong {
        /// `uidMappings` or `gidMappings`.
        list: &'static str,
        /// The length of the map file's text.
        bytes: usize,
    },
    /// Writing a map file failed (the kernel refused the mapping).
    #[error("failed to write the user namespace's {path}")]
    Write {
        /// The map file.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        source: Errno,
    },
}

/// Checked uid and gid mappings for a new user namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdMaps {
    /// The text for uid_map.
    uid: String,
    /// The text for gid_map.
    gid: String,
}

impl IdMaps {
    /// Check both lists; either may be refused for any reason the kernel would
    /// refuse it (except host ids this process may not map, which only the write finds).
    pub(crate) fn new(
        uid: &[LinuxIdMapping],
        gid: &[LinuxIdMapping],
    ) -> Result<IdMaps, IdMapError> {
        Ok(IdMaps {
            uid: checked("uidMappings", uid)?,
            gid: checked("gidMappings", gid)?,
        })
    }

    /// Write the maps of process `pid`'s user namespace: uid_map, then gid_map.
    /// Root in the parent namespace may write several lines and need not deny setgroups.
    pub(crate) fn write(&self, sys: &dyn Syscall, pid: Pid) -> Result<(), IdMapError> {
        for (file, text) in [("uid_map", &self.uid), ("gid_map", &self.gid)] {
            let path = PathBuf::from(format!("/proc/{pid}/{file}"));
            sys.write_file(&path, text).map_err(|e| IdMapError::Write {
                path,
                source: e.errno().unwrap_or(Errno::EIO),
            })?;
        }
        Ok(())
    }
}

/// One line per entry, `container host size`, as the map files take them.
pub(crate) fn format(mappings: &[LinuxIdMapping]) -> String {
    mappings
        .iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect()
}

fn checked(list: &'static str, mappings: &[LinuxIdMapping]) -> Result<String, IdMapError> {
    if mappings.is_empty() {
        return Err(IdMapError::Missing(list));
    }
    if mappings.len() > MAX_LINES {
        return Err(IdMapError::TooMany {
            list,
            count: mappings.len(),
        });
    }
    let end = |start: u32, size: u32| u64::from(start) + u64::from(size);
    for (index, m) in mappings.iter().enumerate() {
        if m.size() == 0 {
            return Err(IdMapError::Empty { list, index });
        }
        // (uid_t)-1 means "no id" and may not be mapped.
        let last = u64::from(u32::MAX);
        if end(m.container_id(), m.size()) > last || end(m.host_id(), m.size()) > last {
            return Err(IdMapError::Overflow { list, index });
        }
    }
    for (second, b) in mappings.iter().enumerate() {
        for (first, a) in mappings.iter().enumerate().take(second) {
            let overlap =
                |x: u32, y: u32| u64::from(x) < end(y, b.size()) && u64::from(y) < end(x, a.size());
            let side = if overlap(a.container_id(), b.container_id()) {
                "container"
            } else if overlap(a.host_id(), b.host_id()) {
                "host"
            } else {
                continue;
            };
            return Err(IdMapError::Overlap {
                list,
                first,
                second,
                side,
            });
        }
    }
    let text = format(mappings);
    // 340 lines fit in a page only when their numbers are short.
    if text.len() > MAX_BYTES {
        return Err(IdMapError::TooLong {
            list,
            bytes: text.len(),
        });
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscall::test::{Call, RecordingSyscall};

    fn map(container: u32, host: u32, size: u32) -> LinuxIdMapping {
        oci_spec::runtime::LinuxIdMappingBuilder::default()
            .container_id(container)
            .host_id(host)
            .size(size)
            .build()
            .expect("a complete mapping")
    }

    #[test]
    fn map_files_get_one_line_per_entry() {
        assert_eq!(format(&[map(0, 100000, 65536)]), "0 100000 65536\n");
        assert_eq!(
            format(&[map(0, 1000, 1), map(1, 100000, 65535)]),
            "0 1000 1\n1 100000 65535\n"
        );
    }

    #[test]
    fn the_parent_writes_uid_map_then_gid_map() {
        let sys = RecordingSyscall::default();
        let maps = IdMaps::new(&[map(0, 100000, 65536)], &[map(0, 200000, 10)]).expect("valid");
        maps.write(&sys, Pid::from_raw(42)).expect("write");
        assert_eq!(
            sys.calls(),
            [
                Call::WriteFile("/proc/42/uid_map".into(), "0 100000 65536\n".into()),
                Call::WriteFile("/proc/42/gid_map".into(), "0 200000 10\n".into()),
            ]
        );
    }

    #[test]
    fn bad_mappings_are_refused_naming_the_entry() {
        let ok = [map(0, 100000, 65536)];
        let cases: Vec<(Vec<LinuxIdMapping>, &str)> = vec![
            (vec![], "a new user namespace needs linux.uidMappings"),
            (vec![map(0, 100000, 0)], "linux.uidMappings[0] has size 0"),
            (
                vec![map(0, 100000, 10), map(5, 200000, 10)],
                "linux.uidMappings[0] and linux.uidMappings[1] overlap in container ids",
            ),
            (
                vec![map(0, 100000, 10), map(10, 100009, 10)],
                "linux.uidMappings[0] and linux.uidMappings[1] overlap in host ids",
            ),
            (
                vec![map(0, u32::MAX, 1)],
                "linux.uidMappings[0] runs past id 4294967294",
            ),
            (
                vec![map(1, 0, u32::MAX)],
                "linux.uidMappings[0] runs past id 4294967294",
            ),
            (
                (0..341).map(|i| map(i, 100000 + i, 1)).collect(),
                "linux.uidMappings has 341 entries; the kernel takes at most 340",
            ),
        ];
        for (uid, message) in cases {
            let err = IdMaps::new(&uid, &ok).expect_err(message);
            assert_eq!(err.to_string(), message);
        }
        let err = IdMaps::new(&ok, &[]).expect_err("no gid map");
        assert_eq!(
            err.to_string(),
            "a new user namespace needs linux.gidMappings"
        );
    }

    #[test]
    fn adjacent_ranges_and_the_whole_id_space_are_fine() {
        let uid = [map(0, 1000, 1), map(1, 100000, 65536)];
        let maps = IdMaps::new(&uid, &[map(0, 0, u32::MAX)]).expect("valid");
        assert_eq!(maps.uid, "0 1000 1\n1 100000 65536\n");
        assert_eq!(maps.gid, "0 0 4294967295\n");
        let many: Vec<_> = (0..340).map(|i| map(i, 1000 + i, 1)).collect();
        assert!(IdMaps::new(&many, &uid).is_ok());
        let long: Vec<_> = (0..300).map(|i| map(i, 1_000_000_000 + i, 1)).collect();
        let err = IdMaps::new(&long, &uid).expect_err("over a page");
        assert_eq!(
            err.to_string(),
            "linux.uidMappings takes 4990 bytes as a map file; the kernel takes at most 4095"
        );
    }
}
