//! The agent binary in test mode (`--listen unix:PATH`) driven over its Unix
//! sockets like the host drives it over vsock. Needs root, overlayfs and
//! /bin/busybox (busybox-static); without them it prints why and passes.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::symlink;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use berth_agent::protocol::{
    read_frame, write_frame, GuestRootfs, Request, RequestBody, Response, ResponseBody,
    StdioAttach, StdioStream, Upper,
};
use oci_spec::runtime::{Process, Spec};

struct Agent {
    child: Child,
    socket: PathBuf,
    next_id: u64,
}

impl Agent {
    fn start(dir: &Path) -> Agent {
        let socket = dir.join("agent");
        let mut child = Command::new(env!("CARGO_BIN_EXE_berth-agent"))
            .arg("--listen")
            .arg(format!("unix:{}", socket.display()))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .stdout(Stdio::piped())
            .spawn()
            .expect("start berth-agent");
        let mut stdout = child.stdout.take().expect("stdout");
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while stdout.read(&mut byte).expect("read ready line") == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        assert_eq!(String::from_utf8_lossy(&line), "berth-agent: ready");
        Agent {
            child,
            socket,
            next_id: 1,
        }
    }

    fn control(&self) -> UnixStream {
        UnixStream::connect(format!("{}_1024", self.socket.display())).expect("connect control")
    }

    fn attach(&self, id: &str, stream: StdioStream) -> UnixStream {
        let mut conn =
            UnixStream::connect(format!("{}_1025", self.socket.display())).expect("connect stdio");
        write_frame(
            &mut conn,
            &StdioAttach {
                id: id.into(),
                stream,
            },
        )
        .expect("attach");
        conn
    }

    fn call_on(&mut self, conn: &mut UnixStream, body: RequestBody) -> ResponseBody {
        let id = self.next_id;
        self.next_id += 1;
        write_frame(conn, &Request::new(id, body)).expect("send request");
        let response: Response = read_frame(conn)
            .expect("read response")
            .expect("a response");
        assert_eq!(response.id, id);
        response.body
    }

    fn call(&mut self, body: RequestBody) -> ResponseBody {
        let mut conn = self.control();
        self.call_on(&mut conn, body)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two layers: busybox at the bottom, an /etc/motd override on top.
fn layers(dir: &Path) -> Vec<String> {
    let bottom = dir.join("layer0");
    let top = dir.join("layer1");
    fs::create_dir_all(bottom.join("bin")).expect("mkdir");
    fs::create_dir_all(bottom.join("etc")).expect("mkdir");
    fs::create_dir_all(top.join("etc")).expect("mkdir");
    fs::copy("/bin/busybox", bottom.join("bin/busybox")).expect("copy busybox");
    for applet in ["sh", "cat", "echo", "sleep", "tty", "stty", "true"] {
        symlink("busybox", bottom.join("bin").join(applet)).expect("symlink");
    }
    fs::write(bottom.join("etc/motd"), "bottom\n").expect("write");
    fs::write(bottom.join("etc/only-bottom"), "b\n").expect("write");
    fs::write(top.join("etc/motd"), "top\n").expect("write");
    vec![bottom.display().to_string(), top.display().to_string()]
}

fn spec(args: &[&str], cgroups_path: Option<&str>) -> Spec {
    let mut spec = berth_agent::spec::default_spec();
    spec.set_hostname(Some("guest".into()));
    if let Some(process) = spec.process_mut() {
        process.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
    }
    if let Some(linux) = spec.linux_mut() {
        linux.set_cgroups_path(cgroups_path.map(PathBuf::from));
    }
    spec
}

fn process(args: &[&str]) -> Process {
    let mut process = berth_agent::spec::default_spec()
        .process()
        .clone()
        .expect("process");
    process.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
    process
}

fn create(agent: &mut Agent, id: &str, spec: Spec, layers: &[String], terminal: bool) {
    let body = agent.call(RequestBody::CreateContainer {
        id: id.into(),
        spec,
        rootfs: GuestRootfs {
            layers: layers.to_vec(),
            upper: Upper::Tmpfs {
                size_bytes: Some(16 << 20),
            },
        },
        terminal,
        interactive: false,
        hook_state: None,
    });
    assert_eq!(body, ResponseBody::Created, "create {id}");
}

fn start(agent: &mut Agent, id: &str) -> i32 {
    match agent.call(RequestBody::StartContainer { id: id.into() }) {
        ResponseBody::Started { pid } => pid,
        other => panic!("start {id}: {other:?}"),
    }
}

fn wait(agent: &mut Agent, id: &str) -> (i32, bool) {
    match agent.call(RequestBody::Wait { id: id.into() }) {
        ResponseBody::Exited {
            exit_code,
            oom_killed,
        } => (exit_code, oom_killed),
        other => panic!("wait {id}: {other:?}"),
    }
}

fn read_all(mut conn: UnixStream) -> String {
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut text = String::new();
    conn.read_to_string(&mut text).expect("read stream");
    text
}

#[test]
fn agent_serves_containers_over_unix_sockets() {
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: starting containers needs root");
        return;
    }
    if !Path::new("/bin/busybox").exists() {
        println!("skipped: /bin/busybox (busybox-static) is not installed");
        return;
    }
    if !fs::read_to_string("/proc/filesystems")
        .unwrap_or_default()
        .contains("overlay")
    {
        println!("skipped: the kernel has no overlayfs");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let layers = layers(tmp.path());
    let mut agent = Agent::start(tmp.path());
    let cgroup_parent = format!("/berth-agent-test-{}", std::process::id());

    // Ping.
    assert!(matches!(
        agent.call(RequestBody::Ping),
        ResponseBody::Pong {
            version: berth_agent::protocol::PROTOCOL_VERSION,
            ..
        }
    ));

    // echo hi: stdout carries "hi", Wait gives 0, the streams close. The streams
    // are attached before CreateContainer, which sets the process up.
    let out = agent.attach("c1", StdioStream::Stdout);
    let err = agent.attach("c1", StdioStream::Stderr);
    create(
        &mut agent,
        "c1",
        spec(&["echo", "hi"], None),
        &layers,
        false,
    );
    assert!(start(&mut agent, "c1") > 1);
    assert_eq!(read_all(out), "hi\n");
    assert_eq!(read_all(err), "");
    assert_eq!(wait(&mut agent, "c1"), (0, false));
    // Waiting again gives the same answer; starting again is refused.
    assert_eq!(wait(&mut agent, "c1"), (0, false));
    assert!(matches!(
        agent.call(RequestBody::StartContainer { id: "c1".into() }),
        ResponseBody::Error { .. }
    ));

    // Exit code passthrough, stderr, overlay layer order, hostname.
    let script = "cat /etc/motd /etc/only-bottom; echo oops >&2; hostname 2>/dev/null || cat /proc/sys/kernel/hostname; exit 3";
    let out = agent.attach("c2", StdioStream::Stdout);
    let err = agent.attach("c2", StdioStream::Stderr);
    create(
        &mut agent,
        "c2",
        spec(&["sh", "-c", script], None),
        &layers,
        false,
    );
    start(&mut agent, "c2");
    assert_eq!(read_all(out), "top\nb\nguest\n");
    assert_eq!(read_all(err), "oops\n");
    assert_eq!(wait(&mut agent, "c2"), (3, false));

    // Command not found: create fails with Docker's wording and 127.
    let rootfs = GuestRootfs {
        layers: layers.clone(),
        upper: Upper::Tmpfs {
            size_bytes: Some(16 << 20),
        },
    };
    match agent.call(RequestBody::CreateContainer {
        id: "c3".into(),
        spec: spec(&["nosuchcmd"], None),
        rootfs,
        terminal: false,
        interactive: false,
        hook_state: None,
    }) {
        ResponseBody::Error { message, exit_code } => {
            assert!(
                message.contains(r#"exec: "nosuchcmd": executable file not found in $PATH"#),
                "{message}"
            );
            assert_eq!(exit_code, Some(127));
        }
        other => panic!("expected an error, got {other:?}"),
    }
    assert!(matches!(
        agent.call(RequestBody::Wait { id: "c3".into() }),
        ResponseBody::Error { .. }
    ));

    // A long-running container: Wait on another connection blocks while
    // Stats, Exec and Signal keep working; SIGKILL gives 137.
    let cg = format!("{cgroup_parent}/c4");
    create(
        &mut agent,
        "c4",
        spec(&["sleep", "1000"], Some(&cg)),
        &layers,
        false,
    );
    let socket = agent.socket.clone();
    let waiter = std::thread::spawn(move || {
        let mut conn = UnixStream::connect(format!("{}_1024", socket.display())).expect("connect");
        write_frame(
            &mut conn,
            &Request::new(99, RequestBody::Wait { id: "c4".into() }),
        )
        .expect("send");
        let response: Response = read_frame(&mut conn).expect("read").expect("response");
        response.body
    });
    start(&mut agent, "c4");
    match agent.call(RequestBody::Stats { id: "c4".into() }) {
        ResponseBody::Stats {
            memory_bytes, pids, ..
        } => {
            assert!(memory_bytes > 0);
            assert!(pids >= 1, "{pids}");
        }
        other => panic!("stats: {other:?}"),
    }

    // Exec with stdin: input reaches the process, its exit code comes back.
    let stdin = agent.attach("e1", StdioStream::Stdin);
    let out = agent.attach("e1", StdioStream::Stdout);
    let err = agent.attach("e1", StdioStream::Stderr);
    let body = agent.call(RequestBody::Exec {
        container_id: "c4".into(),
        exec_id: "e1".into(),
        process: process(&["sh", "-c", "echo from-exec; cat; exit 5"]),
        terminal: false,
        interactive: true,
    });
    assert!(matches!(body, ResponseBody::Started { .. }), "{body:?}");
    (&stdin).write_all(b"data\n").expect("write stdin");
    stdin
        .shutdown(std::net::Shutdown::Write)
        .expect("half-close stdin");
    assert_eq!(read_all(out), "from-exec\ndata\n");
    assert_eq!(read_all(err), "");
    assert_eq!(wait(&mut agent, "e1"), (5, false));

    // Exec of a missing command.
    match agent.call(RequestBody::Exec {
        container_id: "c4".into(),
        exec_id: "e2".into(),
        process: process(&["nosuchcmd"]),
        terminal: false,
        interactive: false,
    }) {
        ResponseBody::Error { exit_code, .. } => assert_eq!(exit_code, Some(127)),
        other => panic!("expected an error, got {other:?}"),
    }

    // Exec with a terminal: a pty in the container, resizable.
    let tty = agent.attach("e3", StdioStream::Tty);
    let body = agent.call(RequestBody::Exec {
        container_id: "c4".into(),
        exec_id: "e3".into(),
        process: process(&["sh", "-c", "tty; sleep 1; stty size"]),
        terminal: true,
        interactive: false,
    });
    assert!(matches!(body, ResponseBody::Started { .. }), "{body:?}");
    assert_eq!(
        agent.call(RequestBody::ResizeTty {
            id: "e3".into(),
            rows: 30,
            cols: 91,
        }),
        ResponseBody::Ok
    );
    let text = read_all(tty);
    assert!(text.contains("/dev/pts/"), "{text:?}");
    assert!(text.contains("30 91"), "{text:?}");
    assert_eq!(wait(&mut agent, "e3"), (0, false));

    // A malformed frame gets an error and the connection (and server) lives on.
    let mut conn = agent.control();
    conn.write_all(&5u32.to_be_bytes()).expect("write");
    conn.write_all(b"{bad}").expect("write");
    let response: Response = read_frame(&mut conn).expect("read").expect("response");
    assert!(matches!(response.body, ResponseBody::Error { .. }));
    assert!(matches!(
        agent.call_on(&mut conn, RequestBody::Ping),
        ResponseBody::Pong { .. }
    ));

    assert_eq!(
        agent.call(RequestBody::Signal {
            id: "c4".into(),
            signal: 9
        }),
        ResponseBody::Ok
    );
    match waiter.join().expect("waiter") {
        ResponseBody::Exited {
            exit_code,
            oom_killed,
        } => assert_eq!((exit_code, oom_killed), (137, false)),
        other => panic!("wait c4: {other:?}"),
    }
    assert!(matches!(
        agent.call(RequestBody::Signal {
            id: "c4".into(),
            signal: 9
        }),
        ResponseBody::Error { .. }
    ));

    // A terminal container: only the tty stream, the output arrives on it.
    let tty = agent.attach("c5", StdioStream::Tty);
    create(
        &mut agent,
        "c5",
        spec(&["sh", "-c", "tty; echo $((40+2))"], None),
        &layers,
        true,
    );
    start(&mut agent, "c5");
    let text = read_all(tty);
    assert!(text.contains("/dev/pts/0"), "{text:?}");
    assert!(text.contains("42"), "{text:?}");
    assert_eq!(wait(&mut agent, "c5"), (0, false));

    // The mounts of finished containers are gone.
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mountinfo.contains(&tmp.path().join("state").display().to_string()),
        "{mountinfo}"
    );

    // Shutdown answers Ok and ends the test-mode agent.
    assert_eq!(agent.call(RequestBody::Shutdown), ResponseBody::Ok);
    let status = agent.child.wait().expect("agent exit");
    assert!(status.success(), "{status:?}");
    if let Ok(cgroup) = berth_agent::cgroups::Cgroup::open(&cgroup_parent) {
        let _ = cgroup.destroy();
    }
}
