//! `run -it` / `exec -it` through a real pseudo-terminal, driven by python3's
//! `pty` module.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use berth_e2e::{have_program, require_root, run_command, wait_until, Berth, RunOpts};

/// Runs argv[1:] on a new pty as its controlling terminal, waits for a shell
/// prompt ("# " or "$ "), types $TYPE, and relays everything it read to
/// stdout; exits with the child's exit code.
const DRIVER: &str = r##"
import os, pty, select, sys, time
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
typed = os.environ["TYPE"].encode()
out = b""
sent = False
start = time.time()
while time.time() - start < 60:
    if not sent and (b"# " in out or b"$ " in out or time.time() - start > 10):
        os.write(fd, typed)
        sent = True
    r, _, _ = select.select([fd], [], [], 0.2)
    if fd in r:
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        out += data
else:
    os.kill(pid, 9)
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
"##;

fn drive(b: &Berth, args: &[&str], typed: &str) -> berth_e2e::Output {
    let mut cmd = Command::new("python3");
    cmd.arg("-c")
        .arg(DRIVER)
        .arg(b.bin())
        .arg("--root")
        .arg(b.root())
        .args(args)
        .env("TYPE", typed);
    run_command(
        cmd,
        RunOpts {
            timeout: Some(Duration::from_secs(90)),
            ..RunOpts::default()
        },
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
