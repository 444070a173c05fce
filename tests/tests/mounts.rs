//! Bind mounts, read-only root filesystems and `--rm` cleaning up after
//! itself.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_e2e::{cgroup_dirs_for, is_full_id, mounts_under, require_root, wait_until, Berth};

#[test]
fn bind_mount_read_write() {
    require_root!();
    let b = Berth::with_busybox();
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("in"), "from host\n").unwrap();
    let bind = format!("{}:/data", host.path().display());
    let out = b.ok(&[
        "run",
        "--rm",
        "-v",
        &bind,
        "busybox",
        "sh",
        "-c",
        "cat /data/in && echo 'from container' > /data/out",
    ]);
    assert_eq!(out.stdout, "from host\n", "{out}");
    assert_eq!(
        std::fs::read_to_string(host.path().join("out")).unwrap(),
        "from container\n",
        "a file written in the container must appear on the host"
    );
}

#[test]
fn bind_mount_read_only() {
    require_root!();
    let b = Berth::with_busybox();
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("in"), "ro data\n").unwrap();
    let bind = format!("{}:/data:ro", host.path().display());
    let out = b.ok(&["run", "--rm", "-v", &bind, "busybox", "cat", "/data/in"]);
    assert_eq!(out.stdout, "ro data\n", "{out}");

    let out = b.run(&[
        "run",
        "--rm",
        "-v",
        &bind,
        "busybox",
        "sh",
        "-c",
        "echo x > /data/out",
    ]);
    assert_ne!(out.code, 0, "writing to a :ro bind must fail: {out}");
    assert!(out.stderr.contains("Read-only file system"), "{out}");
    assert!(
        !host.path().join("out").exists(),
        "nothing may be written to the host"
    );
}

#[test]
fn bind_mount_of_a_file() {
    require_root!();
    let b = Berth::with_busybox();
    let host = tempfile::tempdir().unwrap();
    let file = host.path().join("conf");
    std::fs::write(&file, "key=value\n").unwrap();
    let bind = format!("{}:/etc/app.conf:ro", file.display());
    let out = b.ok(&[
        "run",
        "--rm",
        "-v",
        &bind,
        "busybox",
        "cat",
        "/etc/app.conf",
    ]);
    assert_eq!(out.stdout, "key=value\n", "{out}");
}

#[test]
fn read_only_rootfs() {
    require_root!();
    let b = Berth::with_busybox();
    let out = b.run(&["run", "--rm", "--read-only", "busybox", "touch", "/newfile"]);
    assert_ne!(out.code, 0, "--read-only must forbid writes to /: {out}");
    assert!(out.stderr.contains("Read-only file system"), "{out}");

    // Bind mounts stay writable.
    let host = tempfile::tempdir().unwrap();
    let bind = format!("{}:/data", host.path().display());
    b.ok(&[
        "run",
        "--rm",
        "--read-only",
        "-v",
        &bind,
        "busybox",
        "touch",
        "/data/ok",
    ]);
    assert!(host.path().join("ok").exists());

    // Without --read-only the root filesystem is writable, and the write is
    // private to the container: the image is unchanged for the next one.
    b.ok(&["run", "--rm", "busybox", "sh", "-c", "echo x > /newfile"]);
    let out = b.run(&["run", "--rm", "busybox", "cat", "/newfile"]);
    assert_ne!(
        out.code, 0,
        "a container's writes must not leak into the image: {out}"
    );
}

/// Every path under `dir`.
fn tree(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(p.clone());
            }
            out.insert(p);
        }
    }
    out
}

/// Paths whose last component is (or contains) a 64-hex id.
fn id_named(paths: &BTreeSet<PathBuf>) -> BTreeSet<PathBuf> {
    paths
        .iter()
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.split(|c: char| !c.is_ascii_hexdigit()).any(is_full_id)
        })
        .cloned()
        .collect()
}

fn mountinfo_mentions(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_string)
        .collect()
}

fn assert_nothing_left(b: &Berth, before: &BTreeSet<PathBuf>) {
    assert!(b.all_ids().is_empty(), "ps -a must be empty after --rm");
    let after = tree(b.root());
    let new_ids: Vec<_> = id_named(&after)
        .difference(&id_named(before))
        .cloned()
        .collect();
    assert!(
        new_ids.is_empty(),
        "--rm left container state behind: {new_ids:?}"
    );
    let containers = b.root().join("containers");
    if containers.is_dir() {
        // Store bookkeeping (a `.lock` file) may stay; container state may not.
        let left: Vec<_> = std::fs::read_dir(&containers)
            .unwrap()
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "--rm left {left:?}");
    }
    assert!(
        mounts_under(b.root()).is_empty(),
        "--rm left mounts: {:?}",
        mounts_under(b.root())
    );
    let lines = mountinfo_mentions(b.root());
    assert!(
        lines.is_empty(),
        "mountinfo still mentions the root: {lines:?}"
    );
}

#[test]
fn rm_leaves_nothing_behind() {
    require_root!();
    let b = Berth::with_busybox();
    let before = tree(b.root());
    let host = tempfile::tempdir().unwrap();
    let bind = format!("{}:/data", host.path().display());
    b.ok(&[
        "run",
        "--rm",
        "--memory",
        "64m",
        "--pids-limit",
        "20",
        "-v",
        &bind,
        "busybox",
        "sh",
        "-c",
        "echo hi > /tmp/x; echo hi > /data/x",
    ]);
    assert_nothing_left(&b, &before);

    // Also when the command cannot even start.
    b.run(&["run", "--rm", "busybox", "no-such-command"])
        .assert_code(127);
    assert_nothing_left(&b, &before);

    // And when it fails.
    b.run(&["run", "--rm", "busybox", "sh", "-c", "exit 3"])
        .assert_code(3);
    assert_nothing_left(&b, &before);
}

#[test]
fn detached_rm_leaves_no_cgroups() {
    require_root!();
    let b = Berth::with_busybox();
    let before = tree(b.root());
    let id = b.run_detached(&[
        "--rm",
        "--memory",
        "64m",
        "--pids-limit",
        "20",
        "busybox",
        "sleep",
        "1",
    ]);
    assert!(
        wait_until(Duration::from_secs(15), || b.all_ids().is_empty()),
        "run -d --rm: the container must disappear after it exits"
    );
    // Give the monitor a moment to finish its clean-up after the state is gone.
    let gone = wait_until(Duration::from_secs(5), || cgroup_dirs_for(&id).is_empty());
    assert!(gone, "cgroups left behind: {:?}", cgroup_dirs_for(&id));
    assert_nothing_left(&b, &before);
    for controller in ["memory", "pids"] {
        let dir = Path::new("/sys/fs/cgroup")
            .join(controller)
            .join("berth")
            .join(&id);
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}
