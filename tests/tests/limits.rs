//! Resource limits: --memory (OOM kill), --pids-limit, --cpus.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use berth_e2e::{cgroup, require_root, Berth, RunOpts};

/// Builds a ~100 MB string in the shell's memory.
const HOG: &str = "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo done ${#x}";

#[test]
fn memory_limit_oom_kills_with_137() {
    require_root!();
    let b = Berth::with_busybox();
    let out = b.run_with(
        &[
            "run", "--name", "hog", "--memory", "32m", "busybox", "sh", "-c", HOG,
        ],
        RunOpts {
            timeout: Some(Duration::from_secs(120)),
            ..RunOpts::default()
        },
    );
    out.assert_code(137);
    assert!(!out.stdout.contains("done"), "{out}");
    let c = b.inspect("hog");
    assert_eq!(c["State"]["OOMKilled"], true, "{c:#}");
    assert_eq!(c["State"]["ExitCode"], 137, "{c:#}");
    assert_eq!(c["HostConfig"]["Memory"], 32 * 1024 * 1024);
}

#[test]
fn memory_limit_allows_small_allocations() {
    require_root!();
    let b = Berth::with_busybox();
    let out = b.ok(&[
        "run",
        "--name",
        "small",
        "--memory",
        "32m",
        "busybox",
        "sh",
        "-c",
        "x=$(head -c 1000000 /dev/zero | tr '\\0' a); echo done ${#x}",
    ]);
    assert_eq!(out.out(), "done 1000000", "{out}");
    assert_eq!(b.inspect("small")["State"]["OOMKilled"], false);

    // Without --memory the same hog succeeds: the limit, not the test, kills it.
    let out = b.run_with(
        &["run", "--rm", "busybox", "sh", "-c", HOG],
        RunOpts {
            timeout: Some(Duration::from_secs(120)),
            ..RunOpts::default()
        },
    );
    out.assert_success();
    assert_eq!(out.out(), "done 100000000", "{out}");
}

/// Starts 20 background sleeps; fails once fork does.
const FORKS: &str =
    "i=0; while [ $i -lt 20 ]; do sleep 2 & i=$((i+1)); done; echo started $i; wait";

#[test]
fn pids_limit_stops_forks() {
    require_root!();
    let b = Berth::with_busybox();
    let out = b.run(&[
        "run",
        "--rm",
        "--pids-limit",
        "10",
        "busybox",
        "sh",
        "-c",
        FORKS,
    ]);
    assert_ne!(
        out.code, 0,
        "20 processes must not fit in --pids-limit 10: {out}"
    );
    assert!(!out.stdout.contains("started 20"), "{out}");
    assert!(
        out.stderr.contains("fork"),
        "the shell reports the failed fork: {out}"
    );

    // A higher limit lets the same script through.
    let out = b.ok(&[
        "run",
        "--rm",
        "--pids-limit",
        "50",
        "busybox",
        "sh",
        "-c",
        FORKS,
    ]);
    assert_eq!(out.out(), "started 20", "{out}");
}

#[test]
fn cgroup_limits_are_set_on_the_host() {
    require_root!();
    let b = Berth::with_busybox();
    b.run_detached(&[
        "--name",
        "lim",
        "--memory",
        "64m",
        "--pids-limit",
        "30",
        "--cpus",
        "0.5",
        "busybox",
        "sleep",
        "1000",
    ]);
    b.wait_for_status("lim", "running", Duration::from_secs(10));
    let pid = b.inspect("lim")["State"]["Pid"].as_i64().unwrap();

    assert_eq!(
        cgroup::memory_limit(pid).as_deref(),
        Some("67108864"),
        "memory limit of pid {pid}"
    );
    assert_eq!(
        cgroup::pids_max(pid).as_deref(),
        Some("30"),
        "pids.max of pid {pid}"
    );
    let (quota, period) =
        cgroup::cpu_quota(pid).unwrap_or_else(|| panic!("no cpu cgroup for pid {pid}"));
    assert!(
        period > 0 && quota * 2 == period,
        "--cpus 0.5: quota {quota} / period {period}"
    );

    let c = b.inspect("lim");
    assert_eq!(c["HostConfig"]["NanoCpus"], 500_000_000);
    assert_eq!(c["HostConfig"]["PidsLimit"], 30);
}
