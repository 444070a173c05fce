//! A user namespace joined by path, and the id mappings a spec may give with it
//! (containerd and CRI-O send both): they must be the namespace's own mappings,
//! as seen from the runtime's user namespace (runc >= 1.2 checks the same).

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use oci_spec::runtime::LinuxIdMapping;

use super::NamespaceError;
use crate::syscall::Syscall;

/// One map line: first container id, first host id, count.
type Extent = (u32, u32, u32);

/// The mappings a spec gives together with a user namespace path; an empty list
/// was not given and is not checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ExpectedMaps {
    uid: Vec<Extent>,
    gid: Vec<Extent>,
}

impl ExpectedMaps {
    pub(crate) fn new(uid: &[LinuxIdMapping], gid: &[LinuxIdMapping]) -> ExpectedMaps {
        let extents = |maps: &[LinuxIdMapping]| {
            let mut list: Vec<Extent> = maps
                .iter()
                .map(|m| (m.container_id(), m.host_id(), m.size()))
                .collect();
            list.sort_unstable();
            list
        };
        ExpectedMaps {
            uid: extents(uid),
            gid: extents(gid),
        }
    }

    /// Nothing to check.
    pub(crate) fn is_empty(&self) -> bool {
        self.uid.is_empty() && self.gid.is_empty()
    }

    /// Compare with the maps of the user namespace process `pid` is in, read
    /// from /proc/PID/{uid,gid}_map (which show them relative to the reader's
    /// namespace). `path` names the namespace in errors.
    pub(crate) fn check(
        &self,
        sys: &dyn Syscall,
        pid: Pid,
        path: &Path,
    ) -> Result<(), NamespaceError> {
        let lists = [
            ("uidMappings", "uid_map", &self.uid),
            ("gidMappings", "gid_map", &self.gid),
        ];
        for (list, file, expected) in lists {
            if expected.is_empty() {
                continue;
            }
            let text = sys
                .read_file(&PathBuf::from(format!("/proc/{pid}/{file}")))
                .map_err(|source| NamespaceError::ReadMap {
                    file,
                    path: path.to_path_buf(),
                    source,
                })?;
            if parse(&text).as_ref() != Some(expected) {
                return Err(NamespaceError::MappingMismatch {
                    list,
                    given: lines(expected),
                    path: path.to_path_buf(),
                    file,
                    actual: text.split_whitespace().collect::<Vec<_>>().join(" "),
                });
            }
        }
        Ok(())
    }
}

/// A map file's lines (`container host count`, space padded), sorted; `None`
/// if one is not three numbers.
fn parse(text: &str) -> Option<Vec<Extent>> {
    let mut extents = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let numbers: Vec<u32> = line
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        let [container, host, count] = numbers[..] else {
            return None;
        };
        extents.push((container, host, count));
    }
    extents.sort_unstable();
    Some(extents)
}

/// `0 100000 65536, 65536 300000 10` for an error message.
fn lines(extents: &[Extent]) -> String {
    let text: Vec<String> = extents
        .iter()
        .map(|(container, host, count)| format!("{container} {host} {count}"))
        .collect();
    text.join(", ")
}

/// Check `expected` against the user namespace at `path` before anything is
/// created: a short-lived helper joins it, its maps are read from here (so
/// relative to the runtime's namespace, as the spec's host ids are), and it is
/// killed. The caller must be single-threaded.
pub(crate) fn check_mappings(
    sys: &dyn Syscall,
    path: &Path,
    expected: &ExpectedMaps,
) -> Result<(), NamespaceError> {
    if expected.is_empty() {
        return Ok(());
    }
    let namespace =
        open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).map_err(|source| {
            NamespaceError::Open {
                path: path.to_path_buf(),
                source,
            }
        })?;
    let helper = Helper::join(&namespace, path)?;
    let checked = expected.check(sys, helper.pid, path);
    drop(helper);
    checked
}

/// A child process parked in a user namespace; killed and reaped on drop.
struct Helper {
    pid: Pid,
}

impl Helper {
    fn join(namespace: &OwnedFd, path: &Path) -> Result<Helper, NamespaceError> {
        let helper_error = |source| NamespaceError::Helper {
            path: path.to_path_buf(),
            source,
        };
        let (ready_r, ready_w) = crate::channel::pipe().map_err(helper_error)?;
        // SAFETY: the caller is single-threaded, so the child's copy of memory is
        // consistent; the child only calls setns, write, prctl and pause, then
        // leaves through _exit or is killed.
        match unsafe { fork() }.map_err(helper_error)? {
            ForkResult::Child => {
                drop(ready_r);
                let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
                if let Err(errno) = nix::sched::setns(namespace.as_fd(), CloneFlags::CLONE_NEWUSER)
                {
                    crate::init::exit(errno as i32);
                }
                let _ = nix::unistd::write(&ready_w, b"j");
                loop {
                    nix::unistd::pause();
                }
            }
            ForkResult::Parent { child } => {
                drop(ready_w);
                let helper = Helper { pid: child };
                let mut byte = [0u8; 1];
                let joined = loop {
                    match nix::unistd::read(&ready_r, &mut byte) {
                        Err(Errno::EINTR) => continue,
                        other => break other,
                    }
                };
                if joined == Ok(1) {
                    return Ok(helper);
                }
                // It exited with setns's errno.
                let source = match waitpid(child, None) {
                    Ok(WaitStatus::Exited(_, code)) if code > 0 => Errno::from_raw(code),
                    _ => Errno::EIO,
                };
                std::mem::forget(helper);
                Err(NamespaceError::Join {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = kill(self.pid, Signal::SIGKILL);
        let _ = waitpid(self.pid, None);
    }
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

    /// A fake whose process 42 has these maps, as the kernel pads them.
    fn with_maps(uid: &str, gid: &str) -> RecordingSyscall {
        let mut sys = RecordingSyscall::default();
        sys.contents
            .insert("/proc/42/uid_map".into(), uid.to_owned());
        sys.contents
            .insert("/proc/42/gid_map".into(), gid.to_owned());
        sys
    }

    const KERNEL_MAP: &str = "         0     100000      65536\n     65536     300000         10\n";

    #[test]
    fn matching_mappings_pass_in_any_order() {
        let sys = with_maps(KERNEL_MAP, "         0     100000      65536\n");
        let expected = ExpectedMaps::new(
            &[map(65536, 300000, 10), map(0, 100000, 65536)],
            &[map(0, 100000, 65536)],
        );
        expected
            .check(&sys, Pid::from_raw(42), Path::new("/run/userns/a"))
            .expect("the same mappings");
        assert_eq!(
            sys.calls(),
            [
                Call::ReadFile("/proc/42/uid_map".into()),
                Call::ReadFile("/proc/42/gid_map".into()),
            ]
        );
    }

    #[test]
    fn a_mismatch_names_the_list_the_namespace_and_its_map() {
        let sys = with_maps(KERNEL_MAP, "         0     100000      65536\n");
        let expected = ExpectedMaps::new(&[map(0, 100000, 65536)], &[]);
        let err = expected
            .check(&sys, Pid::from_raw(42), Path::new("/proc/7/ns/user"))
            .expect_err("a missing extent");
        assert_eq!(
            err.to_string(),
            "linux.uidMappings (0 100000 65536) do not match user namespace /proc/7/ns/user, \
             whose uid_map is 0 100000 65536 65536 300000 10"
        );
        let expected = ExpectedMaps::new(&[], &[map(0, 200000, 65536)]);
        let err = expected
            .check(&sys, Pid::from_raw(42), Path::new("/proc/7/ns/user"))
            .expect_err("another host id");
        assert!(
            err.to_string()
                .starts_with("linux.gidMappings (0 200000 65536) do not match"),
            "{err}"
        );
        assert_eq!(
            sys.calls(),
            [
                Call::ReadFile("/proc/42/uid_map".into()),
                Call::ReadFile("/proc/42/gid_map".into()),
            ],
            "an empty list is not checked"
        );
    }

    #[test]
    fn no_mappings_means_nothing_to_check() {
        let expected = ExpectedMaps::new(&[], &[]);
        assert!(expected.is_empty());
        let sys = RecordingSyscall::default();
        check_mappings(&sys, Path::new("/nonexistent/user"), &expected).expect("nothing to do");
        assert!(sys.calls().is_empty());
    }

    #[test]
    fn unreadable_map_files_are_errors() {
        assert_eq!(
            parse("0 1 2\n 3 4 5 \n\n"),
            Some(vec![(0, 1, 2), (3, 4, 5)])
        );
        assert_eq!(parse("0 1\n"), None);
        assert_eq!(parse("0 1 x\n"), None);
        let sys = RecordingSyscall::default();
        let expected = ExpectedMaps::new(&[map(0, 1, 1)], &[]);
        let err = expected
            .check(&sys, Pid::from_raw(42), Path::new("/proc/7/ns/user"))
            .expect_err("no such file");
        assert_eq!(
            err.to_string(),
            "failed to read the uid_map of user namespace /proc/7/ns/user"
        );
    }

    #[test]
    fn the_maps_of_a_namespace_given_by_path_are_read_through_a_helper() {
        if !nix::unistd::Uid::effective().is_root() {
            println!("skipped: joining a user namespace needs root");
            return;
        }
        // Our own user namespace: joining it is refused (EINVAL), which is named.
        let sys = crate::syscall::LinuxSyscall;
        let expected = ExpectedMaps::new(&[map(0, 0, 1)], &[]);
        let err = check_mappings(&sys, Path::new("/proc/self/ns/user"), &expected)
            .expect_err("a process cannot join its own user namespace");
        assert_eq!(
            err.to_string(),
            "failed to join namespace /proc/self/ns/user"
        );
    }
}
