//! The `berth-vmm` binary end to end: tiny ELF "kernels" (with a PVH note, entered at their ELF
//! entry) that reset, write the exit port, triple-fault or spin, checked against the documented
//! exit statuses; SIGTERM stops a running VM cleanly. Seccomp is on (the default).
//!
//! Skipped, with the reason printed, when /dev/kvm cannot be opened.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{kvm_usable, pvh_elf};

fn vmm(kernel: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_berth-vmm"));
    c.arg("--kernel").arg(kernel).args([
        "--mem-mib",
        "32",
        "--serial",
        "off",
        "--exit-on-port",
        "0xf4",
    ]);
    c
}

fn run(code: &[u8]) -> (i32, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("tiny.elf");
    std::fs::write(&kernel, pvh_elf(code)).unwrap();
    let t = Instant::now();
    let out = vmm(&kernel).output().unwrap();
    let elapsed = t.elapsed();
    (out.status.code().unwrap_or(-1), elapsed)
}

#[test]
fn exit_statuses_of_the_binary() {
    if !kvm_usable() {
        return;
    }
    // mov al, 0x31; out 0xf4, al; jmp $
    let (code, t) = run(&[0xb0, 0x31, 0xe6, 0xf4, 0xeb, 0xfe]);
    assert_eq!(code, 3, "exit-port write is a power-off");
    println!("timing: exec to exit-port write to process exit {t:?}");
    // mov al, 0xfe; out 0x64, al; jmp $
    assert_eq!(
        run(&[0xb0, 0xfe, 0xe6, 0x64, 0xeb, 0xfe]).0,
        0,
        "i8042 reset"
    );
    // ud2 with no usable IDT: #UD, #GP, #DF, triple fault.
    assert_eq!(run(&[0x0f, 0x0b]).0, 4, "triple fault");
    // Bad configuration.
    let out = Command::new(env!("CARGO_BIN_EXE_berth-vmm"))
        .args(["--kernel", "/nonexistent/vmlinux"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("kernel image /nonexistent/vmlinux cannot be opened"));
}

/// Starts the VMM on a guest that spins forever, with a vsock device, and waits until it is set
/// up: the vsock socket appears during set-up, before the vCPUs run. Returns the temporary
/// directory (keep it alive), the vsock socket path and the child.
fn start_spinning_guest() -> (tempfile::TempDir, std::path::PathBuf, std::process::Child) {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("spin.elf");
    std::fs::write(&kernel, pvh_elf(&[0xeb, 0xfe])).unwrap();
    let uds = dir.path().join("v.sock");
    let child = vmm(&kernel)
        .arg("--vsock")
        .arg(format!("3,{}", uds.display()))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !uds.exists() {
        assert!(t.elapsed() < Duration::from_secs(10), "VMM never came up");
        std::thread::sleep(Duration::from_millis(5));
    }
    (dir, uds, child)
}

#[test]
fn sigterm_stops_a_spinning_guest_cleanly() {
    if !kvm_usable() {
        return;
    }
    let (_dir, uds, mut child) = start_spinning_guest();
    std::thread::sleep(Duration::from_millis(100));
    assert!(child.try_wait().unwrap().is_none(), "still running");
    // SAFETY: signals our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let t = Instant::now();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(6), "{status:?}");
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(!uds.exists(), "the vsock socket is removed on a clean stop");
}

/// A status line's value in /proc/PID/task/TID/status.
fn status_field(status: &str, field: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
        .unwrap_or_default()
}

#[test]
fn capabilities_are_dropped_before_the_guest_runs() {
    if !kvm_usable() {
        return;
    }
    let (_dir, uds, mut child) = start_spinning_guest();
    // Wait for the vCPU thread, then check every thread of the VMM.
    let tasks = format!("/proc/{}/task", child.id());
    let t = Instant::now();
    loop {
        let names: Vec<String> = std::fs::read_dir(&tasks)
            .unwrap()
            .map(|e| std::fs::read_to_string(e.unwrap().path().join("comm")).unwrap())
            .collect();
        if names.iter().any(|n| n.trim() == "vcpu0") {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "no vCPU thread");
        std::thread::sleep(Duration::from_millis(5));
    }
    let privileged = std::fs::read_to_string("/proc/self/status")
        .map(|s| status_field(&s, "CapBnd") != "0000000000000000")
        .unwrap();
    for task in std::fs::read_dir(&tasks).unwrap() {
        let path = task.unwrap().path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap();
        let status = std::fs::read_to_string(path.join("status")).unwrap();
        let comm = comm.trim();
        for f in ["CapEff", "CapPrm", "CapInh", "CapAmb"] {
            assert_eq!(status_field(&status, f), "0000000000000000", "{comm}: {f}");
        }
        if privileged {
            assert_eq!(
                status_field(&status, "CapBnd"),
                "0000000000000000",
                "{comm}"
            );
        }
        assert_eq!(status_field(&status, "NoNewPrivs"), "1", "{comm}");
    }
    assert!(child.try_wait().unwrap().is_none(), "still running");
    // SAFETY: signals our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(6), "{status:?}");
    assert!(
        !uds.exists(),
        "the vsock socket is removed without capabilities"
    );
}
