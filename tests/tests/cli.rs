//! Global options and berth's own errors.
#![allow(clippy::unwrap_used)]

use berth_e2e::{path_str, require_root, run_command, Berth, RunOpts};

#[test]
fn berth_root_env_is_honoured() {
    require_root!();
    let b = Berth::with_busybox();
    let mut cmd = std::process::Command::new(b.bin());
    cmd.arg("images").env("BERTH_ROOT", b.root());
    let out = run_command(cmd, RunOpts::default());
    out.assert_success();
    assert!(
        out.stdout.contains("busybox"),
        "BERTH_ROOT must select the store: {out}"
    );

    // --root wins over BERTH_ROOT.
    let other = Berth::new();
    let mut cmd = std::process::Command::new(b.bin());
    cmd.arg("--root")
        .arg(other.root())
        .arg("images")
        .env("BERTH_ROOT", b.root());
    let out = run_command(cmd, RunOpts::default());
    out.assert_success();
    assert!(!out.stdout.contains("busybox"), "--root must win: {out}");
}

#[test]
fn debug_flag_is_accepted() {
    require_root!();
    let b = Berth::with_busybox();
    let out = b.ok(&["--debug", "run", "--rm", "busybox", "echo", "dbg"]);
    assert_eq!(
        out.stdout, "dbg\n",
        "--debug must not pollute stdout: {out}"
    );
}

#[test]
fn unknown_container_is_a_berth_error() {
    require_root!();
    let b = Berth::with_busybox();
    let mut outs = Vec::new();
    for args in [
        &["rm", "no-such-container"][..],
        &["stop", "no-such-container"],
        &["logs", "no-such-container"],
        &["exec", "no-such-container", "true"],
        &["start", "no-such-container"],
        &["inspect", "no-such-container"],
    ] {
        let out = b.run(args);
        assert_ne!(out.code, 0, "{out}");
        assert!(
            out.stderr.contains("no-such-container"),
            "the error names the container: {out}"
        );
        outs.push(out);
    }
    for out in &outs {
        out.assert_berth_error();
    }
}

#[test]
fn bad_usage_exits_125() {
    require_root!();
    let b = Berth::new();
    let out = b.run(&["run", "--no-such-flag", "busybox"]);
    out.assert_code(125);
    let out = b.run(&["no-such-command"]);
    out.assert_code(125);
}

#[test]
fn help_lists_the_commands() {
    let b = Berth::new();
    let out = b.ok(&["--help"]);
    for cmd in [
        "run", "ps", "logs", "stop", "start", "restart", "kill", "rm", "exec", "wait", "inspect",
        "pull", "push", "images", "rmi", "tag", "load", "save", "import",
    ] {
        assert!(
            out.stdout.lines().any(|l| l.trim_start().starts_with(cmd)),
            "--help does not list `{cmd}`: {out}"
        );
    }
}

#[test]
fn default_runtime_follows_the_config_file_else_the_host() {
    require_root!();
    let b = Berth::with_busybox();
    // No vmx/svm here, so the built-in VMM cannot boot a guest: ns, said once per root.
    let builtin_can_boot = std::fs::read_to_string("/proc/cpuinfo")
        .map(|c| c.contains(" vmx") || c.contains(" svm"))
        .unwrap_or(false);
    let first = b.ok(&["create", "--name", "one", "busybox", "true"]);
    let second = b.ok(&["create", "--name", "two", "busybox", "true"]);
    if builtin_can_boot {
        println!("skipped: the fallback notice is only given where the built-in VMM cannot boot");
    } else {
        assert_eq!(b.inspect("one")["HostConfig"]["Runtime"], "ns");
        assert!(
            first.stderr.contains("--runtime=ns by default"),
            "the first container explains the default: {first}"
        );
        assert!(
            !second.stderr.contains("by default"),
            "the notice is given once: {second}"
        );
    }

    // "default-runtime" in the config file wins (create does not boot anything).
    let config = b.root().join("config.json");
    std::fs::write(&config, r#"{"default-runtime": "vm"}"#).unwrap();
    let with_config = |args: &[&str]| {
        b.run_with(
            args,
            RunOpts {
                env: vec![("BERTH_CONFIG".into(), path_str(&config).into())],
                ..RunOpts::default()
            },
        )
    };
    with_config(&["create", "--name", "three", "busybox", "true"]).assert_code(0);
    assert_eq!(b.inspect("three")["HostConfig"]["Runtime"], "vm");

    // A broken config file is an error that names it, and creates nothing.
    std::fs::write(&config, "{not json").unwrap();
    let out = with_config(&["create", "--name", "four", "busybox", "true"]);
    out.assert_code(125);
    assert!(out.stderr.contains("config.json"), "{out}");
    assert!(b.run(&["inspect", "four"]).code != 0);
}
