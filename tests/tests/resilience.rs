//! Signals reach the container through a foreground `run`, and state stays true when
//! berth's own monitor dies under a running container.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use berth_e2e::{cgroup_dirs_for, require_root, wait_until, Berth};

/// The parent pid of `pid`, from /proc.
fn parent_of(pid: i64) -> i64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    rest.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_foreground_run_forwards_sigterm_and_returns_the_exit_code() {
    require_root!();
    let b = Berth::with_busybox();
    let script = "trap 'echo got-term; exit 7' TERM; echo ready; while true; do sleep 0.1; done";
    let mut child = b.spawn(&["run", "--name", "fg", "busybox", "sh", "-c", script]);
    let running = || {
        let out = b.run(&["inspect", "--type", "container", "fg"]);
        out.success() && out.stdout.contains("\"Status\": \"running\"")
    };
    assert!(
        wait_until(Duration::from_secs(20), running),
        "the container never ran"
    );
    // Give the shell a moment to install its trap after printing "ready".
    assert!(wait_until(Duration::from_secs(10), || b
        .ok(&["logs", "fg"])
        .stdout
        .contains("ready")));
    let pid = child.id() as i32;
    // SAFETY: kill(2) takes plain integers; `pid` is our own child, not yet reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "berth run did not end"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(7), "the trap's exit code comes back");
    assert_eq!(b.inspect("fg")["State"]["ExitCode"], 7);
    assert!(b.ok(&["logs", "fg"]).stdout.contains("got-term"));
}

#[test]
fn a_killed_monitor_leaves_state_that_the_next_command_repairs() {
    require_root!();
    let b = Berth::with_busybox();
    let id = b.run_detached(&["--name", "orphan", "busybox", "sleep", "1000"]);
    b.wait_for_status("orphan", "running", Duration::from_secs(10));
    let pid = b.inspect("orphan")["State"]["Pid"].as_i64().unwrap();
    let monitor = parent_of(pid);
    assert_ne!(
        monitor, 1,
        "the container's PID 1 is a child of berth's monitor"
    );
    // SAFETY: kill(2) takes plain integers; `monitor` is berth's monitor process.
    assert_eq!(unsafe { libc::kill(monitor as i32, libc::SIGKILL) }, 0);

    // The container outlives its monitor and still shows as running.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(b.status("orphan"), "running");

    // Now the container dies with nobody watching: the next command notices.
    // SAFETY: kill(2) takes plain integers; `pid` is the container's PID 1.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    assert!(
        wait_until(Duration::from_secs(10), || b.status("orphan") == "exited"),
        "a dead container must not show as running"
    );
    let state = &b.inspect("orphan")["State"];
    assert_eq!(state["Running"], false);
    assert!(
        state["Error"].as_str().unwrap().contains("monitor"),
        "the state says why the exit code is unknown: {state}"
    );
    b.ok(&["rm", "orphan"]);
    assert!(
        cgroup_dirs_for(&id).iter().all(|d| !d.exists()),
        "rm releases the cgroup the dead monitor could not"
    );
}
