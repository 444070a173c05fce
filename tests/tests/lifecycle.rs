//! Detached containers: ps, logs, stop, start, restart, kill, wait, rm and
//! inspect.
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::time::{Duration, Instant};

use berth_e2e::{is_full_id, require_root, wait_until, Berth, IMAGE_PATH};

#[test]
fn detached_logs_stop_rm() {
    require_root!();
    let b = Berth::with_busybox();
    let id = b.run_detached(&[
        "--name",
        "web",
        "busybox",
        "sh",
        "-c",
        "echo one; echo two >&2; echo three; exec sleep 1000",
    ]);
    assert!(is_full_id(&id));
    b.wait_for_status("web", "running", Duration::from_secs(10));
    assert!(
        wait_until(Duration::from_secs(10), || b
            .ok(&["logs", "web"])
            .stdout
            .contains("three")),
        "logs never showed the output"
    );
    let logs = b.ok(&["logs", "web"]);
    assert_eq!(
        logs.stdout, "one\nthree\n",
        "stdout lines go to stdout: {logs}"
    );
    assert_eq!(logs.stderr, "two\n", "stderr lines go to stderr: {logs}");
    // Addressable by id, short id and name.
    assert_eq!(b.ok(&["logs", &id]).stdout, logs.stdout);
    assert_eq!(b.ok(&["logs", &id[..12]]).stdout, logs.stdout);

    let stop = b.ok(&["stop", "web"]);
    assert!(
        stop.elapsed < Duration::from_secs(10),
        "stop must not need the 10 s SIGKILL fallback: the init forwards SIGTERM ({stop})"
    );
    assert_eq!(
        stop.out(),
        "web",
        "stop echoes its argument like Docker: {stop}"
    );
    let state = b.inspect("web");
    assert_eq!(state["State"]["Status"], "exited", "{state}");
    assert_eq!(state["State"]["Running"], false, "{state}");
    assert_eq!(
        state["State"]["ExitCode"], 143,
        "killed by SIGTERM: {state}"
    );

    // Logs survive the container's end.
    assert_eq!(b.ok(&["logs", "web"]).stdout, "one\nthree\n");

    let rm = b.ok(&["rm", "web"]);
    assert_eq!(rm.out(), "web", "{rm}");
    assert!(b.all_ids().is_empty());
    b.run(&["logs", "web"]).assert_berth_error();
}

#[test]
fn ps_shows_running_and_ps_a_shows_exited() {
    require_root!();
    let b = Berth::with_busybox();
    let running = b.run_detached(&["--name", "runner", "busybox", "sleep", "1000"]);
    b.ok(&["run", "--name", "done", "busybox", "true"]);
    let done = b.inspect("done")["Id"].as_str().unwrap().to_string();

    let ps = b.ok(&["ps"]);
    let header = ps.stdout.lines().next().unwrap_or_default();
    let mut at = 0;
    for col in [
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
        "RUNTIME",
    ] {
        let pos = header[at..]
            .find(col)
            .unwrap_or_else(|| panic!("ps header lacks {col} (in order): {ps}"));
        at += pos + col.len();
    }
    let row = ps
        .stdout
        .lines()
        .find(|l| l.starts_with(&running[..12]))
        .unwrap_or_else(|| panic!("running container missing from ps: {ps}"));
    assert!(row.contains("busybox"), "{row}");
    assert!(row.contains("Up "), "STATUS of a running container: {row}");
    assert!(row.contains("runner"), "{row}");
    assert!(row.contains("ns"), "RUNTIME: {row}");
    assert!(
        !ps.stdout.contains(&done[..12]),
        "ps without -a hides exited containers: {ps}"
    );

    let ps_a = b.ok(&["ps", "-a"]);
    let row = ps_a
        .stdout
        .lines()
        .find(|l| l.starts_with(&done[..12]))
        .unwrap_or_else(|| panic!("exited container missing from ps -a: {ps_a}"));
    assert!(row.contains("Exited (0)"), "{row}");
    assert!(row.contains("done"), "{row}");

    let q = b.ok(&["ps", "-q"]);
    assert_eq!(q.stdout, format!("{}\n", &running[..12]), "{q}");
    let mut qa: Vec<String> = b
        .ok(&["ps", "-aq"])
        .stdout
        .lines()
        .map(str::to_string)
        .collect();
    qa.sort();
    let mut expect = vec![running[..12].to_string(), done[..12].to_string()];
    expect.sort();
    assert_eq!(qa, expect);
}

#[test]
fn logs_tail_and_follow() {
    require_root!();
    let b = Berth::with_busybox();
    b.ok(&[
        "run",
        "--name",
        "counter",
        "busybox",
        "sh",
        "-c",
        "for i in 1 2 3 4 5; do echo line$i; done",
    ]);
    let out = b.ok(&["logs", "--tail", "2", "counter"]);
    assert_eq!(out.stdout, "line4\nline5\n", "{out}");
    let out = b.ok(&["logs", "--tail", "0", "counter"]);
    assert_eq!(out.stdout, "", "{out}");

    b.run_detached(&[
        "--name",
        "slow",
        "busybox",
        "sh",
        "-c",
        "echo first; sleep 2; echo second",
    ]);
    let start = Instant::now();
    let mut follow = b.spawn(&["logs", "-f", "slow"]);
    let mut stdout = follow.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let exited = wait_until(Duration::from_secs(20), || {
        matches!(follow.try_wait(), Ok(Some(_)))
    });
    if !exited {
        let _ = follow.kill();
    }
    let status = follow.wait().unwrap();
    let text = reader.join().unwrap();
    assert!(
        exited,
        "logs -f must return once the container exits; got {text:?}"
    );
    assert!(status.success());
    assert_eq!(text, "first\nsecond\n");
    assert!(
        start.elapsed() >= Duration::from_millis(1500),
        "logs -f returned before the container ended"
    );
}

#[test]
fn start_runs_an_exited_container_again() {
    require_root!();
    let b = Berth::with_busybox();
    b.run(&[
        "run",
        "--name",
        "again",
        "busybox",
        "sh",
        "-c",
        "echo hi; exit 3",
    ])
    .assert_code(3);
    let first = b.inspect("again");
    assert_eq!(first["State"]["ExitCode"], 3);
    let out = b.ok(&["start", "again"]);
    assert_eq!(out.out(), "again", "{out}");
    assert!(
        wait_until(Duration::from_secs(10), || b.ok(&["logs", "again"]).stdout
            == "hi\nhi\n"),
        "start must run the command again (logs: {:?})",
        b.ok(&["logs", "again"]).stdout
    );
    b.wait_for_status("again", "exited", Duration::from_secs(10));
    let second = b.inspect("again");
    assert_eq!(second["State"]["ExitCode"], 3);
    assert_ne!(first["State"]["StartedAt"], second["State"]["StartedAt"]);
}

#[test]
fn restart_gives_a_new_process() {
    require_root!();
    let b = Berth::with_busybox();
    b.run_detached(&["--name", "r", "busybox", "sleep", "1000"]);
    b.wait_for_status("r", "running", Duration::from_secs(10));
    let pid1 = b.inspect("r")["State"]["Pid"].as_i64().unwrap();
    assert!(pid1 > 0);
    let out = b.ok(&["restart", "r"]);
    assert!(out.elapsed < Duration::from_secs(10), "{out}");
    b.wait_for_status("r", "running", Duration::from_secs(10));
    let pid2 = b.inspect("r")["State"]["Pid"].as_i64().unwrap();
    assert!(
        pid2 > 0 && pid2 != pid1,
        "restart must start a new process ({pid1} -> {pid2})"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{pid1}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid1}/stat"))
                .unwrap_or_default()
                .contains(") Z"),
        "the old process must be gone"
    );
}

#[test]
fn kill_sends_signals() {
    require_root!();
    let b = Berth::with_busybox();
    b.run_detached(&["--name", "k9", "busybox", "sleep", "1000"]);
    b.wait_for_status("k9", "running", Duration::from_secs(10));
    b.ok(&["kill", "k9"]);
    b.wait_for_status("k9", "exited", Duration::from_secs(10));
    assert_eq!(
        b.inspect("k9")["State"]["ExitCode"],
        137,
        "default signal is SIGKILL"
    );

    // The init forwards other signals to the user's process.
    b.run_detached(&[
        "--name",
        "trap",
        "busybox",
        "sh",
        "-c",
        "trap 'echo got-usr1; exit 7' USR1; echo ready; while :; do sleep 0.1; done",
    ]);
    assert!(wait_until(Duration::from_secs(10), || b
        .ok(&["logs", "trap"])
        .stdout
        .contains("ready")));
    b.ok(&["kill", "-s", "USR1", "trap"]);
    b.wait_for_status("trap", "exited", Duration::from_secs(10));
    assert_eq!(b.inspect("trap")["State"]["ExitCode"], 7);
    assert!(b.ok(&["logs", "trap"]).stdout.contains("got-usr1"));

    b.run_detached(&["--name", "term", "busybox", "sleep", "1000"]);
    b.wait_for_status("term", "running", Duration::from_secs(10));
    b.ok(&["kill", "-s", "SIGTERM", "term"]);
    b.wait_for_status("term", "exited", Duration::from_secs(10));
    assert_eq!(b.inspect("term")["State"]["ExitCode"], 143);

    // Killing a stopped container is an error.
    b.run(&["kill", "term"]).assert_berth_error();
}

#[test]
fn wait_prints_the_exit_code() {
    require_root!();
    let b = Berth::with_busybox();
    b.run_detached(&["--name", "w", "busybox", "sh", "-c", "sleep 1; exit 5"]);
    let out = b.ok(&["wait", "w"]);
    assert_eq!(out.out(), "5", "{out}");
    assert!(
        out.elapsed >= Duration::from_millis(500),
        "wait must block until the exit: {out}"
    );
    // On an exited container it returns at once.
    assert_eq!(b.ok(&["wait", "w"]).out(), "5");
}

#[test]
fn rm_refuses_a_running_container_without_f() {
    require_root!();
    let b = Berth::with_busybox();
    let id = b.run_detached(&["busybox", "sleep", "1000"]);
    b.wait_for_status(&id, "running", Duration::from_secs(10));
    let pid = b.inspect(&id)["State"]["Pid"].as_i64().unwrap();
    let refused = b.run(&["rm", &id]);
    assert_ne!(refused.code, 0, "{refused}");
    assert_eq!(b.status(&id), "running");

    let out = b.ok(&["rm", "-f", &id]);
    assert!(out.elapsed < Duration::from_secs(10), "{out}");
    assert!(b.all_ids().is_empty());
    assert!(
        wait_until(Duration::from_secs(5), || !std::path::Path::new(&format!(
            "/proc/{pid}"
        ))
        .exists()),
        "rm -f must kill the container's processes"
    );
    refused.assert_berth_error();
}

#[test]
fn inspect_a_container() {
    require_root!();
    let b = Berth::with_busybox();
    let host = tempfile::tempdir().unwrap();
    let bind = format!("{}:/data:ro", host.path().display());
    let id = b.run_detached(&[
        "--name",
        "insp",
        "-e",
        "A=B",
        "-w",
        "/tmp",
        "-u",
        "1000",
        "--hostname",
        "h1",
        "--memory",
        "64m",
        "--cpus",
        "0.5",
        "--pids-limit",
        "50",
        "--read-only",
        "-v",
        &bind,
        "busybox",
        "sleep",
        "1000",
    ]);
    b.wait_for_status("insp", "running", Duration::from_secs(10));
    let c = b.inspect("insp");
    assert_eq!(c["Id"], id.as_str(), "{c:#}");
    assert_eq!(c["Name"], "/insp");
    assert!(
        c["Created"].as_str().unwrap_or_default().contains('T'),
        "Created is RFC 3339: {c:#}"
    );
    assert_eq!(c["Path"], "sleep");
    assert_eq!(c["Args"], serde_json::json!(["1000"]));
    let st = &c["State"];
    assert_eq!(st["Status"], "running");
    assert_eq!(st["Running"], true);
    assert_eq!(st["OOMKilled"], false);
    let pid = st["Pid"].as_i64().unwrap();
    assert!(
        pid > 0 && std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "Pid is a live host pid: {c:#}"
    );
    assert!(st["StartedAt"].as_str().unwrap_or_default().contains('T'));
    let image_id = b.inspect("busybox")["Id"].as_str().unwrap().to_string();
    assert_eq!(
        c["Image"],
        image_id.as_str(),
        "Image is the image id, like Docker"
    );
    let cfg = &c["Config"];
    let env: Vec<&str> = cfg["Env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(env.contains(&"A=B"), "{env:?}");
    assert!(
        env.contains(&format!("PATH={IMAGE_PATH}").as_str()),
        "{env:?}"
    );
    assert_eq!(cfg["Cmd"], serde_json::json!(["sleep", "1000"]));
    assert_eq!(cfg["WorkingDir"], "/tmp");
    assert_eq!(cfg["User"], "1000");
    assert_eq!(cfg["Hostname"], "h1");
    let hc = &c["HostConfig"];
    assert_eq!(hc["Runtime"], "ns");
    assert_eq!(hc["Memory"], 64 * 1024 * 1024);
    assert_eq!(hc["NanoCpus"], 500_000_000);
    assert_eq!(hc["PidsLimit"], 50);
    assert_eq!(hc["ReadonlyRootfs"], true);
    assert_eq!(hc["AutoRemove"], false);
    assert_eq!(hc["Binds"], serde_json::json!([bind]));
    let mounts = c["Mounts"].as_array().unwrap();
    assert_eq!(mounts.len(), 1, "{c:#}");
    assert_eq!(mounts[0]["Type"], "bind");
    assert_eq!(mounts[0]["Source"], host.path().to_str().unwrap());
    assert_eq!(mounts[0]["Destination"], "/data");
    assert_eq!(mounts[0]["RW"], false);

    b.ok(&["stop", "-t", "1", "insp"]);
    let c = b.inspect("insp");
    assert_eq!(c["State"]["Status"], "exited");
    assert_eq!(c["State"]["Running"], false);
    assert_eq!(c["State"]["Pid"], 0);
    let finished = c["State"]["FinishedAt"].as_str().unwrap_or_default();
    assert!(
        finished.contains('T') && !finished.starts_with("0001"),
        "{c:#}"
    );
}

#[test]
fn stop_timeout_falls_back_to_sigkill() {
    require_root!();
    let b = Berth::with_busybox();
    b.run_detached(&[
        "--name",
        "stubborn",
        "busybox",
        "sh",
        "-c",
        "trap '' TERM; echo ready; while :; do sleep 0.1; done",
    ]);
    assert!(wait_until(Duration::from_secs(10), || b
        .ok(&["logs", "stubborn"])
        .stdout
        .contains("ready")));
    let out = b.ok(&["stop", "-t", "1", "stubborn"]);
    assert!(
        out.elapsed >= Duration::from_millis(900),
        "stop -t 1 waits ~1 s before SIGKILL: {out}"
    );
    assert!(out.elapsed < Duration::from_secs(8), "{out}");
    let c = b.inspect("stubborn");
    assert_eq!(c["State"]["Status"], "exited");
    assert_eq!(c["State"]["ExitCode"], 137, "{c:#}");
}
