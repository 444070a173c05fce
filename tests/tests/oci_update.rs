//! `berth-runtime update` as runc's: a JSON `linux.resources` object from
//! `--resources -` (stdin, how containerd's shims call it) or a file, the flags
//! (with sizes like `64m`) overriding single fields of it, read back from the
//! container's cgroup files; bad input refused with a clear message and nothing
//! changed; and the same JSON applied in the guest in vm mode.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use berth_e2e::cgroup;
use berth_e2e::oci::{unique, vm_bundle, vm_env, Env};
use serde_json::{json, Value};

/// Run berth-runtime with `input` on its stdin; its exit code and output.
fn rt_input(env: &Env, args: &[&str], input: &str) -> (i32, String) {
    let mut child = Command::new(&env.bin)
        .arg("--root")
        .arg(env.root())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

/// Run `sleep 60` detached as container `name`; its id and host pid.
fn run_sleeper(env: &Env, name: &str, edit: impl FnOnce(&mut Value)) -> (String, i64) {
    let id = unique(name);
    let bundle = env.bundle(name, &["sleep", "60"], edit);
    env.ok(&["run", "-d", "--bundle", bundle.to_str().unwrap(), &id]);
    let pid = env.state(&id)["pid"].as_i64().unwrap();
    (id, pid)
}

/// `file` in the cgroup of `pid` for `controller`, trimmed; None when absent.
fn read_cgroup(pid: i64, controller: &str, file: &str) -> Option<String> {
    let dir = cgroup::dir(pid, controller)?;
    std::fs::read_to_string(dir.join(file))
        .ok()
        .map(|s| s.trim().to_owned())
}

/// The memory+swap limit: v1's memsw file, or v2's memory.max + memory.swap.max.
fn memory_and_swap(pid: i64) -> Option<u64> {
    if let Some(memsw) = read_cgroup(pid, "memory", "memory.memsw.limit_in_bytes") {
        return memsw.parse().ok();
    }
    let max: u64 = read_cgroup(pid, "memory", "memory.max")?.parse().ok()?;
    let swap: u64 = read_cgroup(pid, "memory", "memory.swap.max")?
        .parse()
        .ok()?;
    Some(max + swap)
}

/// cpu.shares (v1), or the v2 weight the shares map to.
fn cpu_weight(pid: i64) -> String {
    read_cgroup(pid, "cpu", "cpu.shares")
        .or_else(|| read_cgroup(pid, "cpu", "cpu.weight"))
        .expect("no cpu.shares or cpu.weight")
}

fn expected_weight(pid: i64, shares: u64) -> String {
    if read_cgroup(pid, "cpu", "cpu.shares").is_some() {
        shares.to_string()
    } else {
        (1 + (shares - 2) * 9999 / 262_142).to_string()
    }
}

fn saved_resources(env: &Env, id: &str) -> Value {
    let path = env.root().join(id).join("config.json");
    let config: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    config["linux"]["resources"].clone()
}

#[test]
fn update_resources_json_on_stdin_changes_the_cgroup() {
    let Some(env) = Env::new() else { return };
    let (id, pid) = run_sleeper(&env, "upd-stdin", |c| {
        c["linux"]["resources"]["memory"] = json!({"limit": 256 << 20});
        c["linux"]["resources"]["pids"] = json!({"limit": 100});
    });
    assert_eq!(cgroup::memory_limit(pid).unwrap(), "268435456");

    let resources = json!({
        // Zeros and empty strings mean "unset", as Docker sends them.
        "memory": {"limit": 96 << 20, "reservation": 0, "kernel": 0},
        "pids": {"limit": 25},
        "cpu": {"shares": 512, "quota": 0, "period": 0, "cpus": "", "mems": ""},
        "blockIO": {"weight": 0},
        // Device rules are ignored by update, as by runc: this would allow all.
        "devices": [{"allow": true, "access": "rwm"}],
    });
    let devices_before = read_cgroup(pid, "devices", "devices.list");
    let (code, text) = rt_input(
        &env,
        &["update", "--resources", "-", &id],
        &resources.to_string(),
    );
    assert_eq!(code, 0, "{text}");
    assert_eq!(cgroup::memory_limit(pid).unwrap(), "100663296");
    assert_eq!(cgroup::pids_max(pid).unwrap(), "25");
    assert_eq!(cpu_weight(pid), expected_weight(pid, 512));
    assert_eq!(
        read_cgroup(pid, "devices", "devices.list"),
        devices_before,
        "device rules changed by update"
    );

    // The saved spec holds the new limits next to the ones left alone.
    let saved = saved_resources(&env, &id);
    assert_eq!(saved["memory"]["limit"], 96 << 20, "{saved}");
    assert_eq!(saved["pids"]["limit"], 25, "{saved}");
    assert_eq!(saved["cpu"]["shares"], 512, "{saved}");

    // A file works as well, and an empty object changes nothing.
    let file = env.dir.path().join("resources.json");
    std::fs::write(&file, r#"{"pids": {"limit": 40}}"#).unwrap();
    env.ok(&["update", "-r", file.to_str().unwrap(), &id]);
    assert_eq!(cgroup::pids_max(pid).unwrap(), "40");
    let (code, text) = rt_input(&env, &["update", "-r", "-", &id], "{}");
    assert_eq!(code, 0, "{text}");
    assert_eq!(cgroup::pids_max(pid).unwrap(), "40");
    assert_eq!(cgroup::memory_limit(pid).unwrap(), "100663296");
    env.ok(&["delete", "--force", &id]);
}

#[test]
fn update_flags_take_sizes_with_units_and_override_the_json() {
    let Some(env) = Env::new() else { return };
    let (id, pid) = run_sleeper(&env, "upd-flags", |_| {});
    env.ok(&[
        "update",
        "--cpuset-cpus",
        "0",
        "--memory",
        "64m",
        "--memory-swap",
        "128m",
        &id,
    ]);
    assert_eq!(
        read_cgroup(pid, "cpuset", "cpuset.cpus").as_deref(),
        Some("0")
    );
    assert_eq!(cgroup::memory_limit(pid).unwrap(), "67108864");
    match memory_and_swap(pid) {
        Some(total) => assert_eq!(total, 128 << 20),
        None => println!("skipped: the kernel does not account swap"),
    }

    // Flags over a JSON file: --memory wins, the file's pids limit stays.
    let file = env.dir.path().join("resources.json");
    std::fs::write(
        &file,
        r#"{"memory": {"limit": 33554432, "swap": 201326592}, "pids": {"limit": 12}}"#,
    )
    .unwrap();
    env.ok(&[
        "update",
        "--resources",
        file.to_str().unwrap(),
        "--memory",
        "48M",
        "--pids-limit",
        "-1",
        &id,
    ]);
    assert_eq!(cgroup::memory_limit(pid).unwrap(), "50331648");
    assert_eq!(cgroup::pids_max(pid).unwrap(), "max");
    if memory_and_swap(pid).is_some() {
        assert_eq!(memory_and_swap(pid), Some(192 << 20));
    }
    // --kernel-memory is accepted and ignored.
    env.ok(&["update", "--kernel-memory", "32m", &id]);
    assert_eq!(cgroup::memory_limit(pid).unwrap(), "50331648");
    env.ok(&["delete", "--force", &id]);
}

#[test]
fn update_with_bad_input_fails_clearly_and_changes_nothing() {
    let Some(env) = Env::new() else { return };
    let (id, pid) = run_sleeper(&env, "upd-bad", |c| {
        c["linux"]["resources"]["memory"] = json!({"limit": 96 << 20});
        c["linux"]["resources"]["pids"] = json!({"limit": 50});
    });
    let before = (
        cgroup::memory_limit(pid).unwrap(),
        cgroup::pids_max(pid).unwrap(),
        memory_and_swap(pid),
    );
    let saved_before = saved_resources(&env, &id);
    let missing = env.dir.path().join("missing.json");
    let missing = missing.to_str().unwrap();

    let stdin_cases: [(&str, &str); 3] = [
        (
            r#"{"pids": {"limit": "many"}}"#,
            "standard input is not a valid linux.resources JSON object",
        ),
        (
            r#"{"memory": {"limit": 1"#,
            "not a valid linux.resources JSON object",
        ),
        ("", "not a valid linux.resources JSON object"),
    ];
    for (input, needle) in stdin_cases {
        let (code, text) = rt_input(&env, &["update", "--resources", "-", &id], input);
        assert_ne!(code, 0, "{input:?} was accepted");
        assert!(text.contains(needle), "{input:?}: {text}");
    }
    let flag_cases: [(&[&str], &str); 6] = [
        (&["--memory", "12x"], "\"12x\" is not a size"),
        (&["--memory-swap", "lots"], "\"lots\" is not a size"),
        (&["--cpu-share=-5"], "--cpu-share"),
        (
            &[
                "--memory",
                "128m",
                "--memory-swap",
                "64m",
                "--pids-limit",
                "7",
            ],
            "below the memory limit",
        ),
        (&["--l3-cache-schema", "L3:0=ff"], "resctrl"),
        (&["--resources", missing], "cannot read"),
    ];
    for (flags, needle) in flag_cases {
        let mut args = vec!["update"];
        args.extend_from_slice(flags);
        args.push(&id);
        let (code, text) = env.rt(&args);
        assert_ne!(code, 0, "{flags:?} was accepted");
        assert!(text.contains(needle), "{flags:?}: {text}");
    }
    let (code, text) = env.rt(&["update", "--memory", "64m", "no-such-container"]);
    assert_ne!(code, 0);
    assert!(text.contains("does not exist"), "{text}");

    let after = (
        cgroup::memory_limit(pid).unwrap(),
        cgroup::pids_max(pid).unwrap(),
        memory_and_swap(pid),
    );
    assert_eq!(before, after, "limits changed by refused updates");
    assert_eq!(saved_resources(&env, &id), saved_before);
    assert_eq!(env.state(&id)["status"], "running");
    env.ok(&["delete", "--force", &id]);
}

/// The guest's view of the container's limits (`events --stats`).
fn guest_limits(env: &Env, id: &str) -> (Value, Value) {
    let event: Value = serde_json::from_str(env.ok(&["events", "--stats", id]).trim()).unwrap();
    let data = &event["data"];
    (
        data["memory"]["usage"]["limit"].clone(),
        data["pids"]["limit"].clone(),
    )
}

#[test]
fn vm_update_resources_json_on_stdin_reaches_the_guest() {
    let Some(env) = vm_env() else { return };
    let id = unique("upd-vm");
    let bundle: PathBuf = vm_bundle(&env, "upd-vm", &["sleep", "600"]);
    env.ok(&[
        "create",
        "--bundle",
        Path::new(&bundle).to_str().unwrap(),
        &id,
    ]);
    env.ok(&["start", &id]);
    let resources = json!({"memory": {"limit": 150 << 20}, "pids": {"limit": 33}});
    let (code, text) = rt_input(
        &env,
        &["update", "--resources", "-", &id],
        &resources.to_string(),
    );
    assert_eq!(code, 0, "{text}");
    assert_eq!(guest_limits(&env, &id), (json!(150u64 << 20), json!(33)));
    // A refused update changes nothing in the guest either.
    let (code, text) = rt_input(&env, &["update", "-r", "-", &id], "[1]");
    assert_ne!(code, 0, "{text}");
    assert_eq!(guest_limits(&env, &id), (json!(150u64 << 20), json!(33)));
    env.ok(&["delete", "--force", &id]);
}
