use std::fs;

use super::*;

fn touch(dir: &Path, files: &[(&str, &str)]) {
    fs::create_dir_all(dir).expect("mkdir");
    for (file, content) in files {
        fs::write(dir.join(file), content).expect("write");
    }
}

#[test]
fn v2_stats_include_limits() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("berth/c1");
    touch(
        &dir,
        &[
            ("memory.current", "4096\n"),
            ("memory.max", "67108864\n"),
            ("pids.current", "3\n"),
            ("pids.max", "max\n"),
            ("cpu.stat", "usage_usec 250\nuser_usec 200\n"),
        ],
    );
    let cgroup = Cgroup::at(root.path(), CgroupVersion::V2, "/berth/c1");
    assert_eq!(
        stats(&cgroup).expect("stats"),
        ResponseBody::Stats {
            memory_bytes: 4096,
            pids: 3,
            cpu_usage_ns: 250_000,
            memory_limit_bytes: Some(64 << 20),
            pids_limit: None,
        }
    );
    fs::remove_file(dir.join("memory.current")).expect("rm");
    let message = stats(&cgroup).expect_err("no memory").to_string();
    assert!(message.contains("memory.current"), "{message}");
}

#[test]
fn v1_unlimited_memory_is_no_limit() {
    assert_eq!(limit("9223372036854771712"), None);
    assert_eq!(limit("max"), None);
    assert_eq!(limit("1048576\n"), Some(1 << 20));
}

#[test]
fn v2_freeze_writes_and_waits_for_the_event() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("c");
    touch(
        &dir,
        &[
            ("cgroup.freeze", "0"),
            ("cgroup.events", "populated 1\nfrozen 0\n"),
        ],
    );
    let cgroup = Cgroup::at(root.path(), CgroupVersion::V2, "/c");
    assert!(!is_frozen(&cgroup));
    // The kernel would report the freeze; here another thread does, a little later.
    let events = dir.join("cgroup.events");
    let reporter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        fs::write(events, "populated 1\nfrozen 1\n").expect("write");
    });
    set_frozen(&cgroup, true).expect("freeze");
    reporter.join().expect("join");
    assert_eq!(
        fs::read_to_string(dir.join("cgroup.freeze")).expect("read"),
        "1"
    );
    assert!(is_frozen(&cgroup));
    set_frozen(&cgroup, false).expect("thaw");
    assert_eq!(
        fs::read_to_string(dir.join("cgroup.freeze")).expect("read"),
        "0"
    );
}

#[test]
fn v1_freeze_uses_the_freezer_hierarchy() {
    let root = tempfile::tempdir().expect("tempdir");
    touch(&root.path().join("memory/c"), &[("cgroup.procs", "")]);
    let freezer_dir = root.path().join("freezer/c");
    // A fake freezer that is frozen as soon as it is asked.
    touch(&freezer_dir, &[("freezer.state", "THAWED")]);
    let cgroup = Cgroup::at(root.path(), CgroupVersion::V1, "/c");
    set_frozen(&cgroup, true).expect("freeze");
    assert_eq!(
        fs::read_to_string(freezer_dir.join("freezer.state")).expect("read"),
        "FROZEN"
    );
    assert!(is_frozen(&cgroup));
    set_frozen(&cgroup, false).expect("thaw");
    assert!(!is_frozen(&cgroup));
    // No freezer controller: a clear error.
    fs::remove_file(freezer_dir.join("freezer.state")).expect("rm");
    let message = set_frozen(&cgroup, true)
        .expect_err("no freezer")
        .to_string();
    assert!(message.contains("no freezer"), "{message}");
}

#[test]
fn pids_include_sub_cgroups() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("c");
    touch(&dir, &[("cgroup.procs", "7\n3\n")]);
    touch(&dir.join("inner"), &[("cgroup.procs", "12\n7\n")]);
    let cgroup = Cgroup::at(root.path(), CgroupVersion::V2, "/c");
    assert_eq!(pids(&cgroup).expect("pids"), vec![3, 7, 12]);
    let gone = Cgroup::at(root.path(), CgroupVersion::V2, "/gone");
    assert!(pids(&gone).is_err());
}

#[test]
fn process_facts_come_from_proc() {
    let root = tempfile::tempdir().expect("tempdir");
    let proc = root.path();
    fs::write(proc.join("stat"), "cpu  1 2 3\nbtime 1700000000\n").expect("write");
    let dir = proc.join("42");
    // Fields: pid (comm) state ppid pgrp session tty_nr tpgid flags minflt
    // cminflt majflt cmajflt utime stime cutime cstime priority nice threads
    // itrealvalue starttime ...
    let ticks = ProcTable::at(proc).ticks_per_second;
    let stat = format!(
        "42 (my (odd) cmd) S 1 42 42 {} 42 0 0 0 0 0 {} {} 0 0 20 0 1 0 {} 0 0",
        (136 << 8) | 3,
        2 * ticks,
        ticks,
        5 * ticks
    );
    touch(
        &dir,
        &[
            ("stat", &stat),
            ("status", "Name:\tx\nUid:\t1000\t1000\t1000\t1000\n"),
            ("cmdline", "sleep\x00600\x00"),
        ],
    );
    touch(
        &dir.join("root/etc"),
        &[(
            "passwd",
            "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home:/bin/sh\n",
        )],
    );
    let table = ProcTable::at(proc);
    let info = table.process(42).expect("process");
    assert_eq!(
        info,
        ProcessInfo {
            pid: 42,
            ppid: 1,
            uid: 1000,
            user: Some("alice".into()),
            start_time: 1_700_000_005,
            cpu_time_ms: 3000,
            tty: Some("pts/3".into()),
            cmd: "sleep 600".into(),
        }
    );
    // No command line: the name in brackets; no passwd entry: no name.
    fs::write(dir.join("cmdline"), "").expect("write");
    fs::write(dir.join("status"), "Uid:\t5\t5\t5\t5\n").expect("write");
    let info = table.process(42).expect("process");
    assert_eq!(info.cmd, "[my (odd) cmd]");
    assert_eq!(info.user, None);
    assert!(table.process(43).is_none());
}

#[test]
fn the_real_proc_describes_this_process() {
    let me = std::process::id() as i32;
    let info = ProcTable::system().process(me).expect("this process");
    assert_eq!(info.pid, me);
    assert_eq!(info.ppid, nix::unistd::getppid().as_raw());
    assert_eq!(info.uid, nix::unistd::getuid().as_raw());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(
        info.start_time <= now + 1 && info.start_time + 3600 > now,
        "{info:?}"
    );
}

#[test]
fn children_are_found_by_parent_pid() {
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("spawn sleep");
    let me = std::process::id() as i32;
    let children = ProcTable::system().children(me);
    let _ = child.kill();
    let _ = child.wait();
    assert!(children.contains(&(child.id() as i32)), "{children:?}");
    assert!(ProcTable::system().children(child.id() as i32).is_empty());
}

#[test]
fn tty_names() {
    assert_eq!(tty_name(0), None);
    assert_eq!(tty_name(136 << 8).as_deref(), Some("pts/0"));
    assert_eq!(tty_name((4 << 8) | 1).as_deref(), Some("tty1"));
    assert_eq!(tty_name((4 << 8) | 64).as_deref(), Some("ttyS0"));
}
