//! `berth run`: output, exit codes, environment, working directory, user,
//! hostname, entrypoint, stdin and the mini init.
#![allow(clippy::unwrap_used)]

use berth_e2e::{require_root, Berth, RunOpts, IMAGE_PATH};

#[test]
fn echo_prints_to_stdout() {
    require_root!();
    let b = Berth::with_busybox();
    let out = b.ok(&["run", "--rm", "busybox", "echo", "hello from berth"]);
    assert_eq!(out.stdout, "hello from berth\n", "{out}");
}

#[test]
fn exit_code_is_passed_through() {
    require_root!();
    let b = Berth::with_busybox();
    b.run(&["run", "--rm", "busybox", "sh", "-c", "exit 42"])
        .assert_code(42);
    b.run(&["run", "--rm", "busybox", "false"]).assert_code(1);
}

#[test]
fn missing_command_exits_127() {
    require_root!();
    let b = Berth::with_busybox();
    let out = b.run(&["run", "--rm", "busybox", "no-such-command"]);
    out.assert_code(127);
    assert!(
        out.stderr.contains("no-such-command"),
        "stderr should name the missing command: {out}"
    );
}

#[test]
fn non_executable_command_exits_126() {
    require_root!();
    let b = Berth::with_busybox();
    b.run(&["run", "--rm", "busybox", "/etc/passwd"])
        .assert_code(126);
}

#[test]
fn unknown_image_is_a_berth_error() {
    require_root!();
    let b = Berth::with_busybox();
    // A registry that refuses connections: fails fast, no network needed.
    let out = b.run(&["run", "--rm", "127.0.0.1:1/no/such-image:v1", "true"]);
    out.assert_code(125);
    // Like Docker: first the notice that a pull is attempted, then berth's error.
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert!(
        lines.iter().any(|l| l.starts_with("Unable to find image")),
        "{out}"
    );
    assert!(
        lines.last().unwrap().starts_with("berth: cannot pull"),
        "{out}"
    );
    assert!(
        b.all_ids().is_empty(),
        "a failed run leaves no container: {out}"
    );
}

#[test]
fn default_cmd_comes_from_the_image() {
    require_root!();
    let b = Berth::with_busybox();
    // CMD ["sh"] was set at import: with -i, sh reads the script from stdin.
    let out = b.run_with(
        &["run", "--rm", "-i", "busybox"],
        RunOpts {
            stdin: Some(b"echo from-default-cmd\nexit 4\n".to_vec()),
            ..RunOpts::default()
        },
    );
    out.assert_code(4);
    assert_eq!(out.stdout, "from-default-cmd\n", "{out}");
}

#[test]
fn stdin_is_attached_only_with_i() {
    require_root!();
    let b = Berth::with_busybox();
    let input = RunOpts {
        stdin: Some(b"line one\nline two\n".to_vec()),
        ..RunOpts::default()
    };
    let out = b.run_with(&["run", "--rm", "-i", "busybox", "cat"], input.clone());
    out.assert_success();
    assert_eq!(out.stdout, "line one\nline two\n", "{out}");

    // Without -i the container's stdin is empty (/dev/null), like Docker.
    let out = b.run_with(&["run", "--rm", "busybox", "cat"], input);
    out.assert_success();
    assert_eq!(out.stdout, "", "{out}");
}

#[test]
fn user_process_is_pid_2_under_an_init() {
    require_root!();
    let b = Berth::with_busybox();
    let out = b.ok(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "echo $$; cat /proc/1/cmdline | tr '\\0' ' '",
    ]);
    let mut lines = out.stdout.lines();
    assert_eq!(
        lines.next(),
        Some("2"),
        "the user process must be pid 2: {out}"
    );
    let init = lines.next().unwrap_or_default();
    assert!(!init.trim().is_empty(), "pid 1 must exist: {out}");
    assert!(
        !init.starts_with("sh "),
        "pid 1 must be the init, not the user's command: {out}"
    );
}

#[test]
fn image_env_and_e_flags() {
    require_root!();
    let b = Berth::with_busybox();
    let out = b.ok(&["run", "--rm", "busybox", "sh", "-c", "echo $PATH"]);
    assert_eq!(out.out(), IMAGE_PATH, "image ENV must apply: {out}");

    let out = b.ok(&[
        "run",
        "--rm",
        "-e",
        "FOO=bar",
        "-e",
        "SPACED=a b  c",
        "-e",
        "EMPTY=",
        "busybox",
        "sh",
        "-c",
        "echo \"$FOO|$SPACED|${EMPTY-unset}|\"",
    ]);
    assert_eq!(out.out(), "bar|a b  c||", "{out}");

    // -e overrides the image's ENV.
    let out = b.ok(&[
        "run",
        "--rm",
        "-e",
        "PATH=/bin",
        "busybox",
        "sh",
        "-c",
        "echo $PATH",
    ]);
    assert_eq!(out.out(), "/bin", "{out}");
}

#[test]
fn env_file() {
    require_root!();
    let b = Berth::with_busybox();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("env");
    std::fs::write(&file, "# a comment\nA=1\n\nB=two words\nC=x=y\n").unwrap();
    let out = b.ok(&[
        "run",
        "--rm",
        "--env-file",
        file.to_str().unwrap(),
        "-e",
        "A=override",
        "busybox",
        "sh",
        "-c",
        "echo \"$A|$B|$C\"",
    ]);
    assert_eq!(
        out.out(),
        "override|two words|x=y",
        "-e wins over --env-file: {out}"
    );

    let out = b.run(&[
        "run",
        "--rm",
        "--env-file",
        "/no/such/env-file",
        "busybox",
        "true",
    ]);
    out.assert_code(125);
}

#[test]
fn workdir() {
    require_root!();
    let b = Berth::with_busybox();
    let out = b.ok(&["run", "--rm", "busybox", "pwd"]);
    assert_eq!(out.out(), "/", "default working directory: {out}");
    let out = b.ok(&["run", "--rm", "-w", "/tmp", "busybox", "pwd"]);
    assert_eq!(out.out(), "/tmp", "{out}");
    // Docker creates a missing working directory.
    let out = b.ok(&["run", "--rm", "-w", "/new/work/dir", "busybox", "pwd"]);
    assert_eq!(out.out(), "/new/work/dir", "{out}");
}

#[test]
fn user_by_id_and_name() {
    require_root!();
    let b = Berth::with_busybox();
    let out = b.ok(&["run", "--rm", "busybox", "id", "-u"]);
    assert_eq!(out.out(), "0", "{out}");
    let out = b.ok(&["run", "--rm", "-u", "1000", "busybox", "id", "-u"]);
    assert_eq!(out.out(), "1000", "{out}");
    let out = b.ok(&["run", "--rm", "-u", "user", "busybox", "id", "-un"]);
    assert_eq!(out.out(), "user", "{out}");
    let out = b.ok(&["run", "--rm", "-u", "user", "busybox", "id"]);
    assert!(
        out.stdout.starts_with("uid=1000(user) gid=1000(user)"),
        "{out}"
    );
    let out = b.ok(&[
        "run",
        "--rm",
        "-u",
        "1000:65534",
        "busybox",
        "sh",
        "-c",
        "id -u; id -g",
    ]);
    assert_eq!(out.stdout, "1000\n65534\n", "{out}");
    let out = b.ok(&["run", "--rm", "-u", "nobody", "busybox", "id", "-u"]);
    assert_eq!(out.out(), "65534", "{out}");
    // An unprivileged user really is unprivileged.
    let out = b.run(&["run", "--rm", "-u", "1000", "busybox", "touch", "/root/x"]);
    assert_ne!(
        out.code, 0,
        "uid 1000 must not write to /root (0700 root): {out}"
    );

    let out = b.run(&["run", "--rm", "-u", "no-such-user", "busybox", "true"]);
    out.assert_code(125);
    assert!(out.stderr.starts_with("berth: "), "{out}");
}

#[test]
fn home_comes_from_passwd() {
    require_root!();
    let b = Berth::with_busybox();
    let out = b.ok(&["run", "--rm", "busybox", "sh", "-c", "echo $HOME"]);
    assert_eq!(out.out(), "/root", "{out}");
    let out = b.ok(&[
        "run",
        "--rm",
        "-u",
        "user",
        "busybox",
        "sh",
        "-c",
        "echo $HOME",
    ]);
    assert_eq!(out.out(), "/home/user", "{out}");
}

#[test]
fn hostname() {
    require_root!();
    let b = Berth::with_busybox();
    let out = b.ok(&["run", "--rm", "--hostname", "myhost", "busybox", "hostname"]);
    assert_eq!(out.out(), "myhost", "{out}");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_ne!(host.trim(), "myhost", "the host's hostname must not change");

    // By default the hostname is the short container id, like Docker.
    let out = b.ok(&["run", "--name", "hn", "busybox", "hostname"]);
    let id = b.inspect("hn")["Id"].as_str().unwrap().to_string();
    assert_eq!(out.out(), &id[..12], "{out}");
}

#[test]
fn entrypoint() {
    require_root!();
    let b = Berth::with_busybox();
    let out = b.ok(&["run", "--rm", "--entrypoint", "echo", "busybox", "a", "b"]);
    assert_eq!(out.stdout, "a b\n", "{out}");
    // --entrypoint resets the image's CMD (here ["sh"]), like Docker.
    let out = b.ok(&["run", "--rm", "--entrypoint", "echo", "busybox"]);
    assert_eq!(out.stdout, "\n", "{out}");
    let out = b.ok(&[
        "run",
        "--rm",
        "--entrypoint",
        "/bin/sh",
        "busybox",
        "-c",
        "echo via-sh",
    ]);
    assert_eq!(out.stdout, "via-sh\n", "{out}");
}

#[test]
fn name_must_be_unique() {
    require_root!();
    let b = Berth::with_busybox();
    b.ok(&["run", "--name", "dup", "busybox", "true"]);
    let out = b.run(&["run", "--name", "dup", "busybox", "true"]);
    out.assert_code(125);
    assert!(out.stderr.contains("dup"), "{out}");
    assert_eq!(
        b.all_ids().len(),
        1,
        "the second run must not create a container"
    );
}

#[test]
fn only_loopback_and_it_is_up() {
    require_root!();
    let b = Berth::with_busybox();
    let out = b.ok(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "ls /sys/class/net; ping -c 1 -W 2 127.0.0.1 >/dev/null && echo reachable",
    ]);
    assert_eq!(out.stdout, "lo\nreachable\n", "{out}");
}

#[test]
fn the_command_starts_with_default_signal_state() {
    require_root!();
    let b = Berth::with_busybox();
    // No signal ignored or blocked (berth is a Rust program, which ignores
    // SIGPIPE; that must not reach the container), for run and exec alike.
    let out = b.ok(&[
        "run",
        "--rm",
        "busybox",
        "grep",
        "-E",
        "^Sig(Ign|Blk)",
        "/proc/self/status",
    ]);
    assert_eq!(
        out.stdout, "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n",
        "{out}"
    );
    // A pipeline whose reader quits early ends quietly, as on a host shell.
    let out = b.ok(&["run", "--rm", "busybox", "sh", "-c", "yes | head -n 1"]);
    assert_eq!(out.stdout, "y\n", "{out}");
    assert!(!out.stderr.contains("Broken pipe"), "{out}");
}
