//! Boots a real Linux guest with the `berth-vmm` binary: an initramfs whose /init (a few bytes
//! of hand-assembled x86_64 code) prints a marker on the serial console and reboots, which with
//! `reboot=k` is the microVM's orderly shutdown (exit status 0). Power-off is not used: without
//! ACPI a Linux guest cannot signal it.
//!
//! Needs hardware virtualization (vmx or svm in /proc/cpuinfo) and a guest vmlinux
//! (BERTH_GUEST_KERNEL, or $XDG_CACHE_HOME/berth/vmlinux); otherwise prints `skipped: <reason>`.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const MARKER: &str = "BERTH-BOOT-OK";

fn prerequisites() -> Result<PathBuf, String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo")
        .map_err(|e| format!("/proc/cpuinfo cannot be read ({e})"))?;
    let flags: Vec<&str> = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, f)| f.split_whitespace().collect())
        .unwrap_or_default();
    if !flags.iter().any(|f| *f == "vmx" || *f == "svm") {
        let nested = if flags.contains(&"hypervisor") {
            "; the 'hypervisor' flag is set: this host is itself a guest whose hypervisor does not \
             expose hardware virtualization (KVM here runs guest user mode natively and emulates \
             guest kernel mode, which Linux cannot boot on)"
        } else {
            ""
        };
        return Err(format!(
            "/proc/cpuinfo flags have neither vmx nor svm{nested}"
        ));
    }
    if let Some(k) = std::env::var_os("BERTH_GUEST_KERNEL") {
        let k = PathBuf::from(k);
        return if k.is_file() {
            Ok(k)
        } else {
            Err(format!("BERTH_GUEST_KERNEL={} is not a file", k.display()))
        };
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .ok_or("neither XDG_CACHE_HOME nor HOME is set")?;
    let k = cache.join("berth").join("vmlinux");
    if k.is_file() {
        Ok(k)
    } else {
        Err(format!(
            "no guest kernel: BERTH_GUEST_KERNEL is unset and {} does not exist",
            k.display()
        ))
    }
}

/// A static x86_64 ELF: write(1, MARKER "\n"); reboot(RESTART); loop.
fn init_elf() -> Vec<u8> {
    let msg = format!("{MARKER}\n");
    let mut code: Vec<u8> = vec![
        0xb8,
        1,
        0,
        0,
        0, // mov eax, 1 (write)
        0xbf,
        1,
        0,
        0,
        0, // mov edi, 1
        0x48,
        0x8d,
        0x35,
        31,
        0,
        0,
        0, // lea rsi, [rip + 31] (the message)
        0xba,
        msg.len() as u8,
        0,
        0,
        0, // mov edx, len
        0x0f,
        0x05, // syscall
        0xb8,
        169,
        0,
        0,
        0, // mov eax, 169 (reboot)
        0xbf,
        0xad,
        0xde,
        0xe1,
        0xfe, // mov edi, LINUX_REBOOT_MAGIC1
        0xbe,
        0x69,
        0x19,
        0x12,
        0x28, // mov esi, LINUX_REBOOT_MAGIC2
        0xba,
        0x67,
        0x45,
        0x23,
        0x01, // mov edx, LINUX_REBOOT_CMD_RESTART
        0x0f,
        0x05, // syscall
        0xeb,
        0xfe, // jmp $
    ];
    assert_eq!(code.len(), 48);
    code.extend_from_slice(msg.as_bytes());
    let total = 120 + code.len() as u64;
    let mut f = vec![0u8; 120];
    let put = |f: &mut Vec<u8>, at: usize, v: &[u8]| f[at..at + v.len()].copy_from_slice(v);
    put(&mut f, 0, b"\x7fELF\x02\x01\x01");
    put(&mut f, 16, &2u16.to_le_bytes());
    put(&mut f, 18, &62u16.to_le_bytes());
    put(&mut f, 20, &1u32.to_le_bytes());
    put(&mut f, 24, &0x40_0078u64.to_le_bytes());
    put(&mut f, 32, &64u64.to_le_bytes());
    put(&mut f, 52, &64u16.to_le_bytes());
    put(&mut f, 54, &56u16.to_le_bytes());
    put(&mut f, 56, &1u16.to_le_bytes());
    put(&mut f, 64, &1u32.to_le_bytes()); // PT_LOAD
    put(&mut f, 68, &5u32.to_le_bytes()); // R+X
    put(&mut f, 80, &0x40_0000u64.to_le_bytes());
    put(&mut f, 88, &0x40_0000u64.to_le_bytes());
    put(&mut f, 96, &total.to_le_bytes());
    put(&mut f, 104, &total.to_le_bytes());
    put(&mut f, 112, &0x1000u64.to_le_bytes());
    f.extend_from_slice(&code);
    f
}

/// A newc cpio archive: /dev, /dev/console (5:1), /init.
fn initramfs() -> Vec<u8> {
    let mut out = Vec::new();
    let mut ino = 1;
    let mut entry = |out: &mut Vec<u8>, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]| {
        let hdr = format!(
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0
        );
        ino += 1;
        out.extend_from_slice(hdr.as_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out.extend_from_slice(data);
        while out.len() % 4 != 0 {
            out.push(0);
        }
    };
    entry(&mut out, "dev", 0o040755, (0, 0), b"");
    entry(&mut out, "dev/console", 0o020600, (5, 1), b"");
    entry(&mut out, "init", 0o100755, (0, 0), &init_elf());
    entry(&mut out, "TRAILER!!!", 0, (0, 0), b"");
    out
}

#[test]
fn linux_boots_prints_the_marker_and_shuts_down() {
    let kernel = match prerequisites() {
        Ok(k) => k,
        Err(reason) => {
            println!("skipped: {reason}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let initrd = dir.path().join("initramfs.cpio");
    std::fs::write(&initrd, initramfs()).unwrap();
    let serial = dir.path().join("serial.log");
    let t = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth-vmm"))
        .arg("--kernel")
        .arg(&kernel)
        .arg("--initrd")
        .arg(&initrd)
        .args([
            "--cmdline",
            "console=ttyS0 reboot=k panic=-1 rdinit=/init",
            "--mem-mib",
            "256",
        ])
        .arg("--serial")
        .arg(format!("file:{}", serial.display()))
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!(
                "guest did not shut down in 60 s; console:\n{}",
                std::fs::read_to_string(&serial).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let console = std::fs::read_to_string(&serial).unwrap_or_default();
    assert!(
        console.contains(MARKER),
        "marker missing; console:\n{console}"
    );
    assert_eq!(status.code(), Some(0), "console:\n{console}");
    println!("timing: exec to guest shutdown {:?}", t.elapsed());
}

#[test]
fn initramfs_layout() {
    let cpio = initramfs();
    assert!(cpio.starts_with(b"070701"));
    assert_eq!(cpio.len() % 4, 0);
    let text = String::from_utf8_lossy(&cpio);
    for name in ["dev/console", "init", "TRAILER!!!"] {
        assert!(text.contains(name), "{name}");
    }
    let elf = init_elf();
    assert_eq!(&elf[..4], b"\x7fELF");
    assert!(elf.ends_with(format!("{MARKER}\n").as_bytes()));
}
