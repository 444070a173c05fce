//! In-process tests of the request handling that starts no process.

use std::io::Write;
use std::os::unix::net::UnixStream;

use super::*;
use crate::protocol::{GuestRootfs, Upper};

fn server(dir: &std::path::Path) -> Server {
    Server::new(Config {
        state_dir: dir.to_path_buf(),
        on_shutdown: Box::new(|| {}),
    })
}

/// A control connection served by a thread.
fn connect(server: &Server) -> UnixStream {
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let server = server.clone();
    std::thread::spawn(move || server.handle_control_connection(theirs.into()));
    ours
}

fn call(conn: &mut UnixStream, id: u64, body: RequestBody) -> ResponseBody {
    write_frame(conn, &Request::new(id, body)).expect("write");
    let response: Response = read_frame(conn).expect("read").expect("response");
    assert_eq!(response.id, id);
    response.body
}

fn error_message(body: ResponseBody) -> String {
    match body {
        ResponseBody::Error { message, .. } => message,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn ping_answers_version_and_crate_version() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut conn = connect(&server(tmp.path()));
    assert_eq!(
        call(&mut conn, 1, RequestBody::Ping),
        ResponseBody::Pong {
            version: PROTOCOL_VERSION,
            agent: env!("CARGO_PKG_VERSION").into()
        }
    );
}

#[test]
fn malformed_frames_get_errors_and_the_connection_survives() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut conn = connect(&server(tmp.path()));
    for bad in [
        &b"{nope"[..],
        br#"{"version":1,"id":9,"body":{"type":"fly"}}"#,
    ] {
        conn.write_all(&(bad.len() as u32).to_be_bytes())
            .expect("write");
        conn.write_all(bad).expect("write");
        let response: Response = read_frame(&mut conn).expect("read").expect("response");
        assert!(matches!(response.body, ResponseBody::Error { .. }));
        if bad.starts_with(b"{\"") {
            assert_eq!(response.id, 9, "the id is echoed when readable");
        }
    }
    assert!(matches!(
        call(&mut conn, 2, RequestBody::Ping),
        ResponseBody::Pong { .. }
    ));
}

#[test]
fn oversized_frame_closes_only_that_connection() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = server(tmp.path());
    let mut conn = connect(&server);
    conn.write_all(&u32::MAX.to_be_bytes()).expect("write");
    let next: Option<Response> = read_frame(&mut conn).expect("clean close");
    assert!(next.is_none());
    let mut other = connect(&server);
    assert!(matches!(
        call(&mut other, 1, RequestBody::Ping),
        ResponseBody::Pong { .. }
    ));
}

#[test]
fn version_mismatch_is_an_error_naming_both() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut conn = connect(&server(tmp.path()));
    let request = Request {
        version: 7,
        id: 3,
        body: RequestBody::Ping,
    };
    write_frame(&mut conn, &request).expect("write");
    let response: Response = read_frame(&mut conn).expect("read").expect("response");
    assert_eq!(response.id, 3);
    let message = error_message(response.body);
    assert!(
        message.contains('7') && message.contains(&PROTOCOL_VERSION.to_string()),
        "{message}"
    );
}

#[test]
fn unknown_ids_and_bad_requests_are_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut conn = connect(&server(tmp.path()));
    for body in [
        RequestBody::StartContainer { id: "nope".into() },
        RequestBody::Wait { id: "nope".into() },
        RequestBody::Signal {
            id: "nope".into(),
            signal: 9,
        },
        RequestBody::ResizeTty {
            id: "nope".into(),
            rows: 1,
            cols: 1,
        },
        RequestBody::Stats { id: "nope".into() },
        RequestBody::SignalAll {
            id: "nope".into(),
            signal: 15,
        },
        RequestBody::Pause { id: "nope".into() },
        RequestBody::Resume { id: "nope".into() },
        RequestBody::ListProcesses { id: "nope".into() },
        RequestBody::UpdateResources {
            id: "nope".into(),
            resources: oci_spec::runtime::LinuxResources::default(),
        },
    ] {
        let message = error_message(call(&mut conn, 1, body));
        assert!(message.contains("nope"), "{message}");
    }
    let message = error_message(call(
        &mut conn,
        2,
        RequestBody::Signal {
            id: "x".into(),
            signal: 999,
        },
    ));
    assert!(message.contains("invalid signal"), "{message}");
    let rootfs = GuestRootfs {
        layers: vec![],
        upper: Upper::Tmpfs { size_bytes: None },
    };
    let mut spec = crate::spec::default_spec();
    let message = error_message(call(
        &mut conn,
        3,
        RequestBody::CreateContainer {
            id: "../etc".into(),
            spec: spec.clone(),
            rootfs: rootfs.clone(),
            terminal: false,
            interactive: false,
            hook_state: None,
        },
    ));
    assert!(message.contains("invalid id"), "{message}");
    let message = error_message(call(
        &mut conn,
        4,
        RequestBody::CreateContainer {
            id: "c".into(),
            spec: spec.clone(),
            rootfs: rootfs.clone(),
            terminal: false,
            interactive: false,
            hook_state: None,
        },
    ));
    assert!(message.contains("process.args"), "{message}");
    if let Some(p) = spec.process_mut() {
        p.set_args(Some(vec!["true".into()]));
    }
    let message = error_message(call(
        &mut conn,
        5,
        RequestBody::CreateContainer {
            id: "c".into(),
            spec,
            rootfs,
            terminal: false,
            interactive: false,
            hook_state: None,
        },
    ));
    assert!(message.contains("no layers"), "{message}");
    // The failed create left no container behind.
    let message = error_message(call(&mut conn, 6, RequestBody::Wait { id: "c".into() }));
    assert!(message.contains("no such"), "{message}");
}

#[test]
fn shutdown_answers_then_calls_the_hook() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = Mutex::new(tx);
    let server = Server::new(Config {
        state_dir: tmp.path().to_path_buf(),
        on_shutdown: Box::new(move || {
            let _ = lock(&tx).send(());
        }),
    });
    let mut conn = connect(&server);
    assert_eq!(call(&mut conn, 1, RequestBody::Shutdown), ResponseBody::Ok);
    rx.recv_timeout(Duration::from_secs(5))
        .expect("hook called");
}

#[test]
fn stdio_attachments_are_recorded_by_id_and_stream() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = server(tmp.path());
    let (mut ours, theirs) = UnixStream::pair().expect("socketpair");
    write_frame(
        &mut ours,
        &StdioAttach {
            id: "c1".into(),
            stream: StdioStream::Stdout,
        },
    )
    .expect("write");
    server.handle_stdio_connection(theirs.into());
    assert!(server
        .inner
        .attachments
        .has_all("c1", &[StdioStream::Stdout]));
    assert!(!server
        .inner
        .attachments
        .has_all("c1", &[StdioStream::Stdout, StdioStream::Stderr]));
    let attached = server.inner.attachments.take("c1");
    assert!(attached.stdout.is_some() && attached.stdin.is_none());
    assert!(!server
        .inner
        .attachments
        .has_all("c1", &[StdioStream::Stdout]));
}

#[test]
fn ids_are_validated() {
    for ok in ["c1", "a-b_c.d", &"x".repeat(128)] {
        assert!(validate_id(ok).is_ok(), "{ok}");
    }
    for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(129)] {
        assert!(validate_id(bad).is_err(), "{bad}");
    }
}

#[test]
fn cgroup_requests_need_a_started_container() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = server(tmp.path());
    // A created entry, as CreateContainer leaves it (without mounting anything).
    let entry = server
        .insert(
            "c",
            Entry {
                kind: Kind::Container {
                    cgroups_path: Some("/berth/c".into()),
                    seccomp: None,
                    terminal: false,
                    interactive: false,
                },
                state: Mutex::new(State::Starting),
                done: Once::new(),
            },
        )
        .expect("insert");
    let mut conn = connect(&server);
    for body in [
        RequestBody::Pause { id: "c".into() },
        RequestBody::ListProcesses { id: "c".into() },
        RequestBody::Stats { id: "c".into() },
    ] {
        let message = error_message(call(&mut conn, 1, body));
        assert!(message.contains("was not started"), "{message}");
    }
    *lock(&entry.state) = State::Exited;
    let message = error_message(call(&mut conn, 2, RequestBody::Resume { id: "c".into() }));
    assert!(message.contains("has exited"), "{message}");
}

#[test]
fn hook_state_names_the_container() {
    let mut spec = crate::spec::default_spec();
    let mut annotations = HashMap::new();
    annotations.insert("a".to_owned(), "b".to_owned());
    spec.set_annotations(Some(annotations));
    let state = default_hook_state("c1", &spec);
    assert_eq!(state["id"], "c1");
    assert_eq!(state["status"], "created");
    assert_eq!(state["annotations"]["a"], "b");
    assert_eq!(state["ociVersion"], spec.version().as_str());
}
