//! `berth-runtime` where the OCI runtime validation suite found it wrong: a
//! config without `process` (create holds the container, start refuses),
//! failing poststart/poststop hooks (a warning, the rest go on), and in vm mode
//! `kill` of a created container, namespace paths and bind mounts written as
//! options; and an ociVersion that is not a 1.x SemVer version. The vm tests
//! boot a VM each (about 2 s under TCG).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use berth_e2e::oci::{
    cgroup_dirs, process_alive, processes_mentioning, unique, vm_env, walkdir, Env,
};
use serde_json::Value;

/// A bundle with no `process` at all.
fn bundle_without_process(env: &Env, name: &str, vm: bool) -> PathBuf {
    env.bundle(name, &["true"], |c| {
        c.as_object_mut().unwrap().remove("process");
        if vm {
            c["annotations"] = serde_json::json!({"io.berth.runtime": "vm"});
        }
    })
}

/// Nothing of the container left: no state (but vm mode's hypervisor probe
/// cache), no process naming it.
fn assert_nothing_left(env: &Env, id: &str) {
    let left: Vec<_> = walkdir(&env.root())
        .into_iter()
        .filter(|p| !p.ends_with("vm-probe.json"))
        .collect();
    assert!(left.is_empty(), "state left behind: {left:?}");
    let running = processes_mentioning(&env.root().join(id).display().to_string());
    assert!(running.is_empty(), "left running: {running:?}");
}

/// create without `process`, then start: refused, and the container stays as
/// it was (created, same pid, still held); delete then removes it.
fn start_without_process_is_refused(env: &Env, id: &str, bundle: &Path) {
    env.ok(&["create", "--bundle", bundle.to_str().unwrap(), id]);
    let state = env.state(id);
    assert_eq!(state["status"], "created", "{state}");
    let pid = state["pid"].as_i64().unwrap();
    assert!(pid > 0 && process_alive(pid), "{state}");

    let (code, text) = env.rt(&["start", id]);
    assert_ne!(code, 0, "{text}");
    assert!(
        text.contains(&format!("container {id} has no process to start")),
        "{text}"
    );
    let after = env.state(id);
    assert_eq!(after["status"], "created", "{after}");
    assert_eq!(after["pid"], state["pid"], "{after}");
    assert!(process_alive(pid));
    // A second try is refused the same way: nothing was used up.
    let (code, text) = env.rt(&["start", id]);
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("has no process to start"), "{text}");

    env.ok(&["delete", id]);
    assert_nothing_left(env, id);
}

#[test]
fn create_without_process_holds_the_container_and_start_refuses() {
    let Some(env) = Env::new() else { return };
    let id = unique("noproc");
    let bundle = bundle_without_process(&env, "noproc", false);
    start_without_process_is_refused(&env, &id, &bundle);
    assert!(cgroup_dirs(&id).is_empty(), "{:?}", cgroup_dirs(&id));

    // The held init never ran anything: the exec FIFO is still there until delete.
    let id = unique("noproc-fifo");
    env.ok(&["create", "--bundle", bundle.to_str().unwrap(), &id]);
    let _ = env.rt(&["start", &id]);
    assert!(env.root().join(&id).join("exec.fifo").exists());
    env.ok(&["delete", &id]);

    // run is create + start: it fails and leaves nothing.
    let id = unique("noproc-run");
    let (code, text) = env.rt(&["run", "--bundle", bundle.to_str().unwrap(), &id]);
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("has no process to start"), "{text}");
    assert_nothing_left(&env, &id);
    assert!(cgroup_dirs(&id).is_empty());
}

#[test]
fn vm_create_without_process_holds_the_container_and_start_refuses() {
    let Some(env) = vm_env() else { return };
    let id = unique("vmnoproc");
    let bundle = bundle_without_process(&env, "vmnoproc", true);
    start_without_process_is_refused(&env, &id, &bundle);
}

/// A host hook appending `line` to `out`.
fn append_hook(out: &Path, line: &str) -> Value {
    serde_json::json!({
        "path": "/bin/sh",
        "args": ["sh", "-c", format!("echo {line} >> {}", out.display())],
    })
}

/// poststart and poststop each have a failing hook between two good ones:
/// start and delete succeed, warn naming the hook, and run the others.
fn failing_post_hooks_warn_and_the_rest_run(env: &Env, name: &str, vm: bool) {
    let out = env.dir.path().join(format!("{name}-hooks.out"));
    let log = env.dir.path().join(format!("{name}-runtime.log"));
    let id = unique(name);
    let bundle = env.bundle(name, &["sleep", "600"], |c| {
        c["hooks"] = serde_json::json!({
            "poststart": [
                append_hook(&out, "poststart-1"),
                {"path": "/bin/false", "args": ["false"]},
                append_hook(&out, "poststart-2"),
            ],
            "poststop": [
                append_hook(&out, "poststop-1"),
                {"path": "/bin/sh", "args": ["sh", "-c", "exit 3"]},
                append_hook(&out, "poststop-2"),
            ],
        });
        if vm {
            c["annotations"] = serde_json::json!({"io.berth.runtime": "vm"});
        }
    });
    let log_arg = log.to_str().unwrap();
    env.ok(&["create", "--bundle", bundle.to_str().unwrap(), &id]);

    let text = env.ok(&["--log", log_arg, "start", &id]);
    assert!(
        text.contains("warning") && text.contains("Poststart hook /bin/false"),
        "{text}"
    );
    assert_eq!(env.state(&id)["status"], "running");
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "poststart-1\npoststart-2\n"
    );

    env.ok(&["kill", &id, "KILL"]);
    env.wait_status(&id, "stopped");
    let text = env.ok(&["--log", log_arg, "delete", &id]);
    assert!(
        text.contains("warning") && text.contains("Poststop hook /bin/sh"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "poststart-1\npoststart-2\npoststop-1\npoststop-2\n"
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    let warnings: Vec<_> = logged
        .lines()
        .filter(|l| l.contains("level=warning"))
        .collect();
    assert_eq!(warnings.len(), 2, "{logged}");
    assert!(
        warnings[0].contains("Poststart hook /bin/false"),
        "{logged}"
    );
    assert!(warnings[1].contains("Poststop hook /bin/sh"), "{logged}");
    assert_nothing_left(env, &id);
}

#[test]
fn failing_poststart_and_poststop_hooks_warn_and_the_rest_run() {
    let Some(env) = Env::new() else { return };
    failing_post_hooks_warn_and_the_rest_run(&env, "posthooks", false);
}

#[test]
fn vm_failing_poststart_and_poststop_hooks_warn_and_the_rest_run() {
    let Some(env) = vm_env() else { return };
    failing_post_hooks_warn_and_the_rest_run(&env, "vmposthooks", true);
}

#[test]
fn vm_kill_of_a_created_container_signals_its_held_process() {
    let Some(env) = vm_env() else { return };
    for signal in ["KILL", "9"] {
        let name = format!("vmkillcreated-{signal}");
        let id = unique(&name);
        let bundle = env.bundle(&name, &["sleep", "600"], |c| {
            c["annotations"] = serde_json::json!({"io.berth.runtime": "vm"});
        });
        env.ok(&["create", "--bundle", bundle.to_str().unwrap(), &id]);
        assert_eq!(env.state(&id)["status"], "created");
        env.ok(&["kill", &id, signal]);
        env.wait_status(&id, "stopped");
        // Stopped, it can be neither started nor signalled again.
        let (code, text) = env.rt(&["start", &id]);
        assert_ne!(code, 0, "{text}");
        let (code, text) = env.rt(&["kill", &id, "KILL"]);
        assert_ne!(code, 0, "{text}");
        assert!(text.contains("not running"), "{text}");
        env.ok(&["delete", &id]);
        assert_nothing_left(&env, &id);
    }
}

#[test]
fn vm_namespace_paths_are_refused_at_create() {
    let Some(env) = vm_env() else { return };
    for (kind, path) in [("network", "/proc/1/ns/net"), ("ipc", "/proc/self/ns/ipc")] {
        let name = format!("vmnspath-{kind}");
        let id = unique(&name);
        let bundle = env.bundle(&name, &["true"], |c| {
            c["annotations"] = serde_json::json!({"io.berth.runtime": "vm"});
            let namespaces = c["linux"]["namespaces"].as_array_mut().unwrap();
            namespaces.retain(|n| n["type"] != kind);
            namespaces.push(serde_json::json!({"type": kind, "path": path}));
        });
        let (code, text) = env.rt(&["create", "--bundle", bundle.to_str().unwrap(), &id]);
        assert_ne!(code, 0, "{text}");
        assert!(
            text.contains(&format!("the {kind} namespace path {path}")),
            "{text}"
        );
        // Refused before anything was made: not even the hypervisor probe ran.
        assert!(env.root_is_empty(), "{:?}", walkdir(&env.root()));
        assert!(processes_mentioning(&id).is_empty());
    }
}

#[test]
fn vm_bind_mounts_written_as_options_stay_on_the_host() {
    let Some(env) = vm_env() else { return };
    let id = unique("vmbindopts");
    // runc reads both as bind mounts of the host's /etc; the guest gets neither,
    // as with type "bind", and the container runs.
    let bundle = env.bundle(
        "vmbindopts",
        &[
            "sh",
            "-c",
            "for d in /mnt/etc-b /mnt/etc-rb; do [ -e $d/passwd ] && echo $d=bound; done; echo ran",
        ],
        |c| {
            c["annotations"] = serde_json::json!({"io.berth.runtime": "vm"});
            let mounts = c["mounts"].as_array_mut().unwrap();
            mounts.push(serde_json::json!({
                "destination": "/mnt/etc-b", "source": "/etc", "options": ["bind", "shared"],
            }));
            mounts.push(serde_json::json!({
                "destination": "/mnt/etc-rb", "type": "none", "source": "/etc",
                "options": ["rbind", "ro"],
            }));
        },
    );
    let (code, text) = env.rt(&["run", "--bundle", bundle.to_str().unwrap(), &id]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("ran"), "{text}");
    assert!(!text.contains("bound"), "{text}");
    assert_nothing_left(&env, &id);

    // A bind mount of a missing source is refused at create, naming the mount.
    let id = unique("vmbindmissing");
    let bundle = env.bundle("vmbindmissing", &["true"], |c| {
        c["annotations"] = serde_json::json!({"io.berth.runtime": "vm"});
        c["mounts"].as_array_mut().unwrap().push(serde_json::json!({
            "destination": "/data", "source": "/no/such/berth/dir", "options": ["rbind"],
        }));
    });
    let (code, text) = env.rt(&["create", "--bundle", bundle.to_str().unwrap(), &id]);
    assert_ne!(code, 0, "{text}");
    assert!(
        text.contains("bind mount of /no/such/berth/dir on /data"),
        "{text}"
    );
    assert_nothing_left(&env, &id);
    assert!(processes_mentioning(&id).is_empty());
}

#[test]
fn oci_version_must_be_a_1x_semver_version() {
    let Some(env) = Env::new() else { return };
    for (n, version) in ["invalid", "2.0.0", "1.0"].iter().enumerate() {
        let id = unique(&format!("ver{n}"));
        let bundle = env.bundle(&format!("ver{n}"), &["true"], |c| {
            c["ociVersion"] = Value::from(*version);
        });
        let (code, text) = env.rt(&["create", "--bundle", bundle.to_str().unwrap(), &id]);
        assert_ne!(code, 0, "ociVersion {version} was accepted");
        assert!(
            text.contains(&format!("ociVersion \"{version}\"")),
            "{version}: {text}"
        );
        assert_nothing_left(&env, &id);
    }
    // Pre-releases, as Docker 20.10 sends ("1.0.2-dev"), are versions too.
    let id = unique("verdev");
    let bundle = env.bundle("verdev", &["true"], |c| {
        c["ociVersion"] = Value::from("1.0.2-dev");
    });
    let (code, text) = env.rt(&["run", "--bundle", bundle.to_str().unwrap(), &id]);
    assert_eq!(code, 0, "{text}");
}
