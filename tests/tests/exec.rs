//! `berth exec` into a running container.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use berth_e2e::{require_root, Berth, RunOpts};

fn running(b: &Berth) -> String {
    let id = b.run_detached(&[
        "--name",
        "box",
        "--hostname",
        "inside",
        "-e",
        "FROM_RUN=1",
        "busybox",
        "sleep",
        "1000",
    ]);
    b.wait_for_status("box", "running", Duration::from_secs(10));
    id
}

#[test]
fn exec_joins_the_containers_namespaces() {
    require_root!();
    let b = Berth::with_busybox();
    running(&b);
    let out = b.ok(&["exec", "box", "hostname"]);
    assert_eq!(out.out(), "inside", "same UTS namespace: {out}");

    let out = b.ok(&["exec", "box", "ps", "-o", "pid,args"]);
    let sleep = out
        .stdout
        .lines()
        .find(|l| l.contains("sleep 1000"))
        .unwrap_or_else(|| {
            panic!("exec ps must see the container's sleep (same pid namespace): {out}")
        });
    assert_eq!(
        sleep.split_whitespace().next(),
        Some("2"),
        "sleep is pid 2 under the init: {out}"
    );
    let procs = out.stdout.lines().count() - 1;
    assert!(
        procs <= 5,
        "exec must not see the host's processes ({procs} processes): {out}"
    );

    // Same mount namespace: a file written by one exec is seen by the next.
    b.ok(&["exec", "box", "sh", "-c", "echo shared > /tmp/f"]);
    assert_eq!(b.ok(&["exec", "box", "cat", "/tmp/f"]).stdout, "shared\n");
}

#[test]
fn exec_options_and_exit_codes() {
    require_root!();
    let b = Berth::with_busybox();
    running(&b);
    let out = b.ok(&["exec", "box", "sh", "-c", "echo $FROM_RUN"]);
    assert_eq!(out.out(), "1", "exec inherits the container's env: {out}");
    let out = b.ok(&["exec", "-e", "X=y", "box", "sh", "-c", "echo $X"]);
    assert_eq!(out.out(), "y", "{out}");
    let out = b.ok(&["exec", "-w", "/tmp", "box", "pwd"]);
    assert_eq!(out.out(), "/tmp", "{out}");
    let out = b.ok(&["exec", "-u", "1000", "box", "id", "-u"]);
    assert_eq!(out.out(), "1000", "{out}");
    let out = b.ok(&["exec", "-u", "user", "box", "id", "-un"]);
    assert_eq!(out.out(), "user", "{out}");

    b.run(&["exec", "box", "sh", "-c", "exit 3"]).assert_code(3);
    b.run(&["exec", "box", "no-such-command"]).assert_code(127);

    let out = b.run_with(
        &["exec", "-i", "box", "cat"],
        RunOpts {
            stdin: Some(b"piped in\n".to_vec()),
            ..RunOpts::default()
        },
    );
    out.assert_success();
    assert_eq!(out.stdout, "piped in\n", "{out}");

    // The container keeps running after exec'd processes end.
    assert_eq!(b.status("box"), "running");
}

#[test]
fn exec_into_a_stopped_container_fails() {
    require_root!();
    let b = Berth::with_busybox();
    b.ok(&["run", "--name", "gone", "busybox", "true"]);
    let out = b.run(&["exec", "gone", "true"]);
    out.assert_code(1);
    assert!(out.stderr.starts_with("berth: "), "{out}");
}
