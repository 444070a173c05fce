//! `run -it` / `exec -it` through a real pseudo-terminal, driven by python3's
//! `pty` module.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use berth_e2e::{have_program, require_root, wait_until, Berth};

fn drive(b: &Berth, args: &[&str], typed: &str) -> berth_e2e::Output {
    b.drive_pty(
        args,
        typed,
        Duration::from_secs(10),
        Duration::from_secs(60),
    )
}

#[test]
fn run_it_gets_a_terminal() {
    require_root!();
    if !have_program("python3") {
        println!("skipped: python3 is needed to drive a pseudo-terminal");
        return;
    }
    let b = Berth::with_busybox();
    let out = drive(
        &b,
        &["run", "-it", "--rm", "busybox", "sh"],
        "tty; exit 3\n",
    );
    out.assert_code(3);
    assert!(
        out.stdout.contains("/dev/pts/0"),
        "the shell's stdin is the container's first pty: {out}"
    );
    assert!(!out.stdout.contains("not a tty"), "{out}");
}

#[test]
fn run_without_t_has_no_terminal() {
    require_root!();
    let b = Berth::with_busybox();
    let out = b.run(&["run", "--rm", "busybox", "tty"]);
    assert_ne!(out.code, 0, "{out}");
    assert!(out.stdout.contains("not a tty"), "{out}");
}

#[test]
fn exec_it_gets_a_terminal() {
    require_root!();
    if !have_program("python3") {
        println!("skipped: python3 is needed to drive a pseudo-terminal");
        return;
    }
    let b = Berth::with_busybox();
    b.run_detached(&["--name", "t", "busybox", "sleep", "1000"]);
    assert!(wait_until(Duration::from_secs(10), || b.status("t") == "running"));
    let out = drive(&b, &["exec", "-it", "t", "sh"], "tty; stty size; exit 4\n");
    out.assert_code(4);
    assert!(out.stdout.contains("/dev/pts/"), "{out}");
    assert!(!out.stdout.contains("not a tty"), "{out}");
}
