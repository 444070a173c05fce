use std::io::Cursor;

use super::*;

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: &T) {
    let mut buf = Vec::new();
    write_frame(&mut buf, value).expect("write");
    let len = u32::from_be_bytes(buf[..4].try_into().expect("header")) as usize;
    assert_eq!(len, buf.len() - 4, "length prefix counts the body");
    let mut cursor = Cursor::new(buf);
    let back: T = read_frame(&mut cursor).expect("read").expect("a frame");
    assert_eq!(&back, value);
    let eof: Option<T> = read_frame(&mut cursor).expect("clean eof");
    assert!(eof.is_none());
}

fn process() -> oci_spec::runtime::Process {
    let mut process = oci_spec::runtime::Process::default();
    process.set_args(Some(vec!["echo".into(), "hi".into()]));
    process
}

/// A memory, cpu and pids update.
fn limits() -> oci_spec::runtime::LinuxResources {
    let mut memory = oci_spec::runtime::LinuxMemory::default();
    memory.set_limit(Some(64 << 20));
    let mut cpu = oci_spec::runtime::LinuxCpu::default();
    cpu.set_quota(Some(50_000));
    cpu.set_period(Some(100_000));
    let mut pids = oci_spec::runtime::LinuxPids::default();
    pids.set_limit(32);
    let mut resources = oci_spec::runtime::LinuxResources::default();
    resources.set_memory(Some(memory));
    resources.set_cpu(Some(cpu));
    resources.set_pids(Some(pids));
    resources
}

fn all_requests() -> Vec<RequestBody> {
    vec![
        RequestBody::Ping,
        RequestBody::CreateContainer {
            id: "c1".into(),
            spec: crate::spec::default_spec(),
            rootfs: GuestRootfs {
                layers: vec!["/dev/vdb".into(), "/dev/vdc".into()],
                upper: Upper::Tmpfs {
                    size_bytes: Some(64 << 20),
                },
            },
            terminal: true,
            interactive: false,
            hook_state: None,
        },
        RequestBody::CreateContainer {
            id: "c2".into(),
            spec: oci_spec::runtime::Spec::default(),
            rootfs: GuestRootfs {
                layers: vec![],
                upper: Upper::Device {
                    path: "/dev/vdd".into(),
                },
            },
            terminal: false,
            interactive: true,
            hook_state: Some(serde_json::json!({"id": "c2", "status": "created", "pid": 0})),
        },
        RequestBody::StartContainer { id: "c1".into() },
        RequestBody::Exec {
            container_id: "c1".into(),
            exec_id: "e1".into(),
            process: process(),
            terminal: false,
            interactive: true,
        },
        RequestBody::Wait { id: "e1".into() },
        RequestBody::Signal {
            id: "c1".into(),
            signal: 15,
        },
        RequestBody::SignalAll {
            id: "c1".into(),
            signal: 9,
        },
        RequestBody::ResizeTty {
            id: "c1".into(),
            rows: 24,
            cols: 80,
        },
        RequestBody::Stats { id: "c1".into() },
        RequestBody::Pause { id: "c1".into() },
        RequestBody::Resume { id: "c1".into() },
        RequestBody::ListProcesses { id: "c1".into() },
        RequestBody::UpdateResources {
            id: "c1".into(),
            resources: limits(),
        },
        RequestBody::Shutdown,
    ]
}

fn all_responses() -> Vec<ResponseBody> {
    vec![
        ResponseBody::Pong {
            version: PROTOCOL_VERSION,
            agent: "0.1.0".into(),
        },
        ResponseBody::Created,
        ResponseBody::Started { pid: 42 },
        ResponseBody::Exited {
            exit_code: 137,
            oom_killed: true,
        },
        ResponseBody::Stats {
            memory_bytes: 1 << 20,
            pids: 3,
            cpu_usage_ns: 12_345,
            memory_limit_bytes: Some(64 << 20),
            pids_limit: None,
        },
        ResponseBody::Processes {
            processes: vec![
                ProcessInfo {
                    pid: 1,
                    ppid: 0,
                    uid: 0,
                    user: Some("root".into()),
                    start_time: 1_700_000_000,
                    cpu_time_ms: 20,
                    tty: Some("pts/0".into()),
                    cmd: "sleep 600".into(),
                },
                ProcessInfo {
                    pid: 7,
                    ppid: 1,
                    uid: 1000,
                    user: None,
                    start_time: 1_700_000_005,
                    cpu_time_ms: 0,
                    tty: None,
                    cmd: "[sh]".into(),
                },
            ],
        },
        ResponseBody::Processes { processes: vec![] },
        ResponseBody::Ok,
        ResponseBody::Error {
            message: "exec: \"x\": executable file not found in $PATH".into(),
            exit_code: Some(127),
        },
        ResponseBody::error("unknown container c9"),
    ]
}

#[test]
fn every_request_round_trips() {
    for (n, body) in all_requests().into_iter().enumerate() {
        round_trip(&Request::new(n as u64, body));
    }
}

#[test]
fn every_response_round_trips() {
    for (n, body) in all_responses().into_iter().enumerate() {
        round_trip(&Response { id: n as u64, body });
    }
}

#[test]
fn stdio_attach_round_trips() {
    for stream in [
        StdioStream::Stdin,
        StdioStream::Stdout,
        StdioStream::Stderr,
        StdioStream::Tty,
    ] {
        round_trip(&StdioAttach {
            id: "c1".into(),
            stream,
        });
    }
}

#[test]
fn wire_format_is_tagged_snake_case() {
    let json =
        serde_json::to_value(Request::new(7, RequestBody::Wait { id: "x".into() })).expect("json");
    assert_eq!(
        json,
        serde_json::json!({"version": 3, "id": 7, "body": {"type": "wait", "id": "x"}})
    );
    let json = serde_json::to_value(StdioAttach {
        id: "x".into(),
        stream: StdioStream::Stderr,
    })
    .expect("json");
    assert_eq!(json, serde_json::json!({"id": "x", "stream": "stderr"}));
    let json = serde_json::to_value(Upper::Tmpfs { size_bytes: None }).expect("json");
    assert_eq!(
        json,
        serde_json::json!({"type": "tmpfs", "size_bytes": null})
    );
    // exit_code may be left out by the sender.
    let body: ResponseBody =
        serde_json::from_str(r#"{"type":"error","message":"m"}"#).expect("parse");
    assert_eq!(body, ResponseBody::error("m"));
}

#[test]
fn version_2_requests_are_tagged_snake_case() {
    let json = serde_json::to_value(RequestBody::ListProcesses { id: "c".into() }).expect("json");
    assert_eq!(
        json,
        serde_json::json!({"type": "list_processes", "id": "c"})
    );
    let json = serde_json::to_value(RequestBody::Pause { id: "c".into() }).expect("json");
    assert_eq!(json, serde_json::json!({"type": "pause", "id": "c"}));
    let json = serde_json::to_value(RequestBody::UpdateResources {
        id: "c".into(),
        resources: limits(),
    })
    .expect("json");
    assert_eq!(json["type"], "update_resources");
    assert_eq!(json["resources"]["memory"]["limit"], 64 << 20);
    assert_eq!(json["resources"]["cpu"]["quota"], 50_000);
    assert_eq!(json["resources"]["pids"]["limit"], 32);
}

#[test]
fn optional_fields_may_be_left_out() {
    // Stats without limits: unlimited.
    let body: ResponseBody =
        serde_json::from_str(r#"{"type":"stats","memory_bytes":1,"pids":2,"cpu_usage_ns":3}"#)
            .expect("parse");
    assert_eq!(
        body,
        ResponseBody::Stats {
            memory_bytes: 1,
            pids: 2,
            cpu_usage_ns: 3,
            memory_limit_bytes: None,
            pids_limit: None,
        }
    );
    // A create without hook state does not send the field at all.
    let create = RequestBody::CreateContainer {
        id: "c".into(),
        spec: oci_spec::runtime::Spec::default(),
        rootfs: GuestRootfs {
            layers: vec![],
            upper: Upper::Tmpfs { size_bytes: None },
        },
        terminal: false,
        interactive: false,
        hook_state: None,
    };
    let json = serde_json::to_value(&create).expect("json");
    assert!(json.get("hook_state").is_none(), "{json}");
    let back: RequestBody = serde_json::from_value(json).expect("parse");
    assert_eq!(back, create);
    // A process without user or tty.
    let info: ProcessInfo = serde_json::from_str(
        r#"{"pid":5,"ppid":1,"uid":0,"start_time":9,"cpu_time_ms":0,"cmd":"sh"}"#,
    )
    .expect("parse");
    assert_eq!((info.user, info.tty), (None, None));
}

#[test]
fn several_frames_in_one_stream() {
    let mut buf = Vec::new();
    for body in all_requests() {
        write_frame(&mut buf, &Request::new(1, body)).expect("write");
    }
    let mut cursor = Cursor::new(buf);
    let mut n = 0;
    while let Some(request) = read_frame::<_, Request>(&mut cursor).expect("read") {
        assert_eq!(request.body, all_requests()[n]);
        n += 1;
    }
    assert_eq!(n, all_requests().len());
}

#[test]
fn malformed_json_is_a_recoverable_error() {
    let mut buf = Vec::new();
    let bad = b"{not json";
    buf.extend_from_slice(&(bad.len() as u32).to_be_bytes());
    buf.extend_from_slice(bad);
    write_frame(&mut buf, &Request::new(2, RequestBody::Ping)).expect("write");
    let mut cursor = Cursor::new(buf);
    let err = read_frame::<_, Request>(&mut cursor).expect_err("malformed");
    assert!(matches!(err, ProtocolError::Json(_)), "{err:?}");
    assert!(err.is_recoverable());
    // The next frame is still readable.
    let next: Request = read_frame(&mut cursor).expect("read").expect("frame");
    assert_eq!(next.id, 2);
}

#[test]
fn well_formed_json_of_the_wrong_shape_is_an_error() {
    let mut buf = Vec::new();
    write_frame(
        &mut buf,
        &serde_json::json!({"version": 1, "id": 1, "body": {"type": "fly"}}),
    )
    .expect("write");
    let err = read_frame::<_, Request>(&mut Cursor::new(buf)).expect_err("unknown type");
    assert!(err.is_recoverable());
}

#[test]
fn oversized_frame_is_rejected_without_reading_it() {
    let mut buf = (MAX_FRAME + 1).to_be_bytes().to_vec();
    buf.extend_from_slice(b"{}");
    let err = read_frame::<_, Request>(&mut Cursor::new(buf)).expect_err("oversized");
    assert!(
        matches!(err, ProtocolError::Oversized { len } if len == u64::from(MAX_FRAME) + 1),
        "{err:?}"
    );
    assert!(!err.is_recoverable());
    let err = read_frame::<_, Request>(&mut Cursor::new(u32::MAX.to_be_bytes().to_vec()))
        .expect_err("oversized");
    assert!(matches!(err, ProtocolError::Oversized { .. }));
}

#[test]
fn oversized_frame_is_not_written() {
    let big = "x".repeat(MAX_FRAME as usize);
    let mut buf = Vec::new();
    let err = write_frame(&mut buf, &big).expect_err("too big");
    assert!(matches!(err, ProtocolError::Oversized { .. }));
    assert!(buf.is_empty());
}

#[test]
fn frame_at_the_limit_is_accepted() {
    // A JSON string of MAX_FRAME - 2 characters plus its quotes.
    let s = "y".repeat(MAX_FRAME as usize - 2);
    let mut buf = Vec::new();
    write_frame(&mut buf, &s).expect("write");
    let back: String = read_frame(&mut Cursor::new(buf))
        .expect("read")
        .expect("frame");
    assert_eq!(back.len(), s.len());
}

#[test]
fn eof_handling() {
    // Clean EOF before any byte.
    let none: Option<Request> = read_frame(&mut Cursor::new(Vec::new())).expect("clean eof");
    assert!(none.is_none());
    // EOF inside the header.
    let err = read_frame::<_, Request>(&mut Cursor::new(vec![0, 0])).expect_err("truncated");
    assert!(matches!(err, ProtocolError::Truncated), "{err:?}");
    // EOF inside the body.
    let mut buf = 10u32.to_be_bytes().to_vec();
    buf.extend_from_slice(b"{\"a\"");
    let err = read_frame::<_, Request>(&mut Cursor::new(buf)).expect_err("truncated");
    assert!(matches!(err, ProtocolError::Truncated), "{err:?}");
}

#[test]
fn version_mismatch_names_both_versions() {
    let ok = Request::new(1, RequestBody::Ping);
    assert!(check_version(&ok).is_none());
    let old = Request {
        version: 99,
        id: 1,
        body: RequestBody::Ping,
    };
    match check_version(&old) {
        Some(ResponseBody::Error { message, exit_code }) => {
            assert!(message.contains("99"), "{message}");
            assert!(message.contains(&PROTOCOL_VERSION.to_string()), "{message}");
            assert_eq!(exit_code, None);
        }
        other => panic!("expected an error, got {other:?}"),
    }
}
