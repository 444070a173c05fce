//! cgroup v2 device rules for real: a child cgroup of the v2 hierarchy gets the
//! rules (an eBPF device program), a forked process moved into it opens device
//! nodes, and a denied open fails with EPERM. Needs root and a cgroup2 mount at
//! /sys/fs/cgroup/unified (hybrid hosts) or /sys/fs/cgroup; otherwise prints why
//! and passes.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use berth_agent::cgroups::{Cgroup, CgroupVersion};
use nix::errno::Errno;
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxResources};

/// The v2 hierarchy to test in, or why there is none.
fn v2_root() -> Result<PathBuf, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("needs root".to_owned());
    }
    for root in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
        let is_v2 = nix::sys::statfs::statfs(root)
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC);
        if is_v2 {
            return Ok(PathBuf::from(root));
        }
    }
    Err("/sys/fs/cgroup/unified is not a cgroup2 mount".to_owned())
}

fn rule(
    allow: bool,
    typ: Option<LinuxDeviceType>,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut rule = LinuxDeviceCgroup::default();
    rule.set_allow(allow);
    rule.set_typ(typ);
    rule.set_major(major);
    rule.set_minor(minor);
    rule.set_access(Some(access.to_owned()));
    rule
}

fn deny_all() -> LinuxDeviceCgroup {
    rule(false, None, None, None, "rwm")
}

fn allow_all() -> LinuxDeviceCgroup {
    rule(true, None, None, None, "rwm")
}

/// A cgroup that is removed when the test ends, however it ends.
struct TestCgroup(Cgroup);

impl TestCgroup {
    fn new(root: &Path) -> TestCgroup {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("berth-bpf-test-{}-{n}", std::process::id());
        TestCgroup(Cgroup::at(root, CgroupVersion::V2, &name))
    }

    fn apply(&self, rules: Vec<LinuxDeviceCgroup>) {
        let mut resources = LinuxResources::default();
        resources.set_devices(Some(rules));
        self.0.create(Some(&resources)).expect("create the cgroup");
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        self.0.destroy().expect("remove the test cgroup");
    }
}

/// Device nodes made in a temporary directory, so no real device is touched:
/// `null` (c 1:3), `kmem` (c 1:2, which no modern kernel has: an allowed open
/// fails with ENXIO) and `block` (b 240:0, the local/experimental major).
struct Nodes {
    dir: tempfile::TempDir,
}

impl Nodes {
    fn new() -> Nodes {
        let dir = tempfile::tempdir().expect("tempdir");
        let mode = Mode::from_bits_truncate(0o666);
        for (name, kind, major, minor) in [
            ("null", SFlag::S_IFCHR, 1, 3),
            ("kmem", SFlag::S_IFCHR, 1, 2),
            ("block", SFlag::S_IFBLK, 240, 0),
        ] {
            mknod(&dir.path().join(name), kind, mode, makedev(major, minor)).expect("mknod");
        }
        Nodes { dir }
    }

    fn path(&self, name: &str) -> CString {
        CString::new(self.dir.path().join(name).as_os_str().as_bytes()).expect("path")
    }
}

/// What a probe does: open a node with some flags, or make a new char node 1:2.
enum Probe {
    Open(CString, libc::c_int),
    Mknod(CString),
}

/// Fork a process, move it into `cgroup`, run `probes` there and return each
/// one's errno (0 for success).
fn probe_in(cgroup: &TestCgroup, probes: &[Probe]) -> Vec<i32> {
    let (go_r, go_w) = nix::unistd::pipe().expect("pipe");
    let (result_r, result_w) = nix::unistd::pipe().expect("pipe");
    let mut results = vec![0i32; probes.len()];
    // SAFETY: the child only calls async-signal-safe functions (read, open, close,
    // mknod, write, _exit) on memory prepared before the fork.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            let mut byte = 0u8;
            // SAFETY: reads one byte into a local.
            unsafe { libc::read(go_r.as_raw_fd(), (&mut byte as *mut u8).cast(), 1) };
            for (probe, result) in probes.iter().zip(results.iter_mut()) {
                // SAFETY: the paths are NUL-terminated strings that outlive the calls.
                let rc = unsafe {
                    match probe {
                        Probe::Open(path, flags) => {
                            let fd = libc::open(path.as_ptr(), *flags | libc::O_NONBLOCK);
                            if fd >= 0 {
                                libc::close(fd);
                            }
                            fd
                        }
                        Probe::Mknod(path) => {
                            libc::mknod(path.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 2))
                        }
                    }
                };
                *result = if rc < 0 { Errno::last_raw() } else { 0 };
            }
            let bytes = std::mem::size_of_val(results.as_slice());
            // SAFETY: writes the results buffer, then leaves without unwinding.
            unsafe {
                libc::write(result_w.as_raw_fd(), results.as_ptr().cast(), bytes);
                libc::_exit(0)
            }
        }
        ForkResult::Parent { child } => {
            drop(go_r);
            drop(result_w);
            let moved = cgroup.0.add_process(child);
            nix::unistd::write(&go_w, b"g").expect("release the child");
            let mut raw = Vec::new();
            std::io::Read::read_to_end(&mut std::fs::File::from(result_r), &mut raw)
                .expect("results");
            assert_eq!(
                waitpid(child, None).expect("wait"),
                WaitStatus::Exited(child, 0)
            );
            moved.expect("move the child into the cgroup");
            assert_eq!(raw.len(), results.len() * 4, "child results");
            raw.chunks(4)
                .map(|c| i32::from_ne_bytes(c.try_into().expect("4 bytes")))
                .collect()
        }
    }
}

fn read_only(nodes: &Nodes, name: &str) -> Probe {
    Probe::Open(nodes.path(name), libc::O_RDONLY | libc::O_CLOEXEC)
}

fn write_only(nodes: &Nodes, name: &str) -> Probe {
    Probe::Open(nodes.path(name), libc::O_WRONLY | libc::O_CLOEXEC)
}

const EPERM: i32 = libc::EPERM;

/// Allowed opens succeed or fail for another reason than EPERM.
fn allowed(errno: i32) -> bool {
    errno != EPERM
}

#[test]
fn deny_all_keeps_the_default_nodes() {
    let root = match v2_root() {
        Ok(root) => root,
        Err(why) => return println!("skipped: {why}"),
    };
    let nodes = Nodes::new();
    let cgroup = TestCgroup::new(&root);
    cgroup.apply(vec![deny_all()]);
    let new_node = CString::new(nodes.dir.path().join("new").as_os_str().as_bytes()).expect("p");
    let results = probe_in(
        &cgroup,
        &[
            Probe::Open(nodes.path("null"), libc::O_RDWR),
            read_only(&nodes, "kmem"),
            read_only(&nodes, "block"),
            Probe::Mknod(new_node),
        ],
    );
    assert_eq!(results, [0, EPERM, EPERM, 0]);
    // Outside the cgroup the same open is not refused.
    let outside = nix::fcntl::open(
        &nodes.dir.path().join("kmem"),
        nix::fcntl::OFlag::O_RDONLY,
        Mode::empty(),
    );
    assert_ne!(outside.err(), Some(Errno::EPERM));
}

#[test]
fn an_allowed_access_passes_and_others_stay_denied() {
    let root = match v2_root() {
        Ok(root) => root,
        Err(why) => return println!("skipped: {why}"),
    };
    let nodes = Nodes::new();
    let cgroup = TestCgroup::new(&root);
    let kmem_read = rule(true, Some(LinuxDeviceType::C), Some(1), Some(2), "r");
    cgroup.apply(vec![deny_all(), kmem_read]);
    let results = probe_in(
        &cgroup,
        &[
            read_only(&nodes, "kmem"),
            write_only(&nodes, "kmem"),
            read_only(&nodes, "block"),
        ],
    );
    assert!(allowed(results[0]), "kmem read: {results:?}");
    assert_eq!(results[1..], [EPERM, EPERM]);
}

#[test]
fn the_last_matching_rule_wins() {
    let root = match v2_root() {
        Ok(root) => root,
        Err(why) => return println!("skipped: {why}"),
    };
    let nodes = Nodes::new();
    let cgroup = TestCgroup::new(&root);
    // Everything, then no writes to 1:2, then writes to char major 1 again except
    // that the final rule takes reads of 1:2 away.
    cgroup.apply(vec![
        allow_all(),
        rule(false, Some(LinuxDeviceType::C), Some(1), Some(2), "w"),
        rule(false, Some(LinuxDeviceType::C), Some(1), Some(2), "r"),
    ]);
    let results = probe_in(
        &cgroup,
        &[
            read_only(&nodes, "kmem"),
            write_only(&nodes, "kmem"),
            read_only(&nodes, "block"),
            Probe::Open(nodes.path("null"), libc::O_RDWR),
        ],
    );
    assert_eq!(results[..2], [EPERM, EPERM], "{results:?}");
    assert!(allowed(results[2]), "block: {results:?}");
    assert_eq!(results[3], 0);
}

#[test]
fn applying_again_replaces_the_rules() {
    let root = match v2_root() {
        Ok(root) => root,
        Err(why) => return println!("skipped: {why}"),
    };
    let nodes = Nodes::new();
    let cgroup = TestCgroup::new(&root);
    cgroup.apply(vec![deny_all()]);
    assert_eq!(probe_in(&cgroup, &[read_only(&nodes, "kmem")]), [EPERM]);
    // Programs attached side by side would all have to allow: the old deny-all
    // must be gone.
    cgroup.apply(vec![allow_all()]);
    let results = probe_in(&cgroup, &[read_only(&nodes, "kmem")]);
    assert!(allowed(results[0]), "{results:?}");
    cgroup.apply(vec![deny_all()]);
    assert_eq!(probe_in(&cgroup, &[read_only(&nodes, "kmem")]), [EPERM]);
}

/// A cgroup with a device program attached is removed like any other.
#[test]
fn a_cgroup_with_a_program_is_removed() {
    let root = match v2_root() {
        Ok(root) => root,
        Err(why) => return println!("skipped: {why}"),
    };
    let path = {
        let cgroup = TestCgroup::new(&root);
        cgroup.apply(vec![deny_all()]);
        let dirs = cgroup.0.dirs();
        assert!(dirs[0].is_dir());
        dirs[0].clone()
    };
    assert!(!path.exists(), "{} left behind", path.display());
}
