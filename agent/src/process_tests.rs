use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use oci_spec::runtime::{Capability as OciCap, LinuxCapabilities};

use super::*;
use crate::syscall::test::{Call, RecordingSyscall};

fn process() -> Process {
    let mut process = crate::spec::default_spec()
        .process()
        .clone()
        .expect("process");
    process.set_cwd(PathBuf::from("/work"));
    process
}

#[test]
fn prepare_sequence_for_a_non_root_user() {
    let mut sys = RecordingSyscall::default();
    sys.missing.insert(PathBuf::from("/work"));
    let mut process = process();
    process.user_mut().set_uid(1000);
    process.user_mut().set_gid(100);
    process.user_mut().set_additional_gids(Some(vec![5, 6]));
    let rlimit = oci_spec::runtime::PosixRlimitBuilder::default()
        .typ(PosixRlimitType::RlimitNofile)
        .soft(10u64)
        .hard(20u64)
        .build()
        .expect("rlimit");
    process.set_rlimits(Some(vec![rlimit]));
    process.set_no_new_privileges(Some(true));
    prepare(&sys, &process, None).expect("prepare");

    let calls = sys.calls();
    assert_eq!(calls[0], Call::SetRlimit(Resource::RLIMIT_NOFILE, 10, 20));
    assert_eq!(calls[1], Call::CreateDirAll(PathBuf::from("/work")));
    let drops: Vec<_> = calls
        .iter()
        .filter_map(|c| match c {
            Call::DropBounding(cap) => Some(*cap),
            _ => None,
        })
        .collect();
    assert_eq!(drops.len(), caps::all().len() - 14);
    assert!(drops.contains(&caps::Capability::CAP_SYS_ADMIN));
    assert!(!drops.contains(&caps::Capability::CAP_CHOWN));
    let rest: Vec<_> = calls
        .iter()
        .skip(2 + drops.len())
        .filter(|c| !matches!(c, Call::SetCapability(..)))
        .cloned()
        .collect();
    assert_eq!(
        rest,
        vec![
            Call::SetKeepcaps(true),
            Call::SetGroups(vec![5, 6]),
            Call::SetId(1000, 100),
            Call::SetKeepcaps(false),
            Call::SetNoNewPrivs,
            Call::Chdir(PathBuf::from("/work")),
        ]
    );
    let sets: Vec<_> = calls
        .iter()
        .filter_map(|c| match c {
            Call::SetCapability(set, caps) => Some((set.clone(), caps.len())),
            _ => None,
        })
        .collect();
    assert_eq!(
        sets,
        vec![
            ("Effective".to_owned(), 14),
            ("Inheritable".to_owned(), 0),
            ("Permitted".to_owned(), 14),
            ("Ambient".to_owned(), 0),
        ]
    );
}

#[test]
fn no_capabilities_section_leaves_capabilities_alone() {
    let sys = RecordingSyscall::default();
    let mut process = process();
    process.set_capabilities(None);
    process.set_no_new_privileges(Some(false));
    prepare(&sys, &process, None).expect("prepare");
    assert!(!sys.calls().iter().any(|c| matches!(
        c,
        Call::DropBounding(_) | Call::SetCapability(..) | Call::SetNoNewPrivs
    )));
}

#[test]
fn capability_names_convert() {
    let mut caps = LinuxCapabilities::default();
    caps.set_bounding(Some([OciCap::NetBindService, OciCap::SysAdmin].into()));
    let converted = to_caps(caps.bounding().as_ref()).expect("convert");
    assert!(converted.contains(&caps::Capability::CAP_NET_BIND_SERVICE));
    assert!(converted.contains(&caps::Capability::CAP_SYS_ADMIN));
}

#[test]
fn path_lookup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).expect("mkdir");
    let tool = bin.join("tool");
    std::fs::write(&tool, "#!/bin/sh\n").expect("write");
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let data = bin.join("data");
    std::fs::write(&data, "").expect("write");
    let path = format!("/nonexistent:{}", bin.display());

    assert_eq!(find_executable("tool", &path).expect("found"), tool);
    let err = find_executable("data", &path).expect_err("not executable");
    assert_eq!(
        err.to_string(),
        "exec: \"data\": executable file not found in $PATH"
    );
    assert_eq!(err.exit_code(), 127);
    let err = find_executable("/no/such", &path).expect_err("missing");
    assert_eq!(err.exit_code(), 127);
    assert_eq!(
        find_executable(tool.to_str().expect("utf8"), "").expect("explicit"),
        tool
    );
    let not_exec = ProcessError::NotExecutable {
        cmd: "/etc".into(),
        reason: "permission denied".into(),
    };
    assert_eq!(not_exec.exit_code(), 126);
    assert_eq!(not_exec.to_string(), "exec: \"/etc\": permission denied");
}

#[test]
fn path_comes_from_the_process_env() {
    assert_eq!(path_var(&["A=1".into(), "PATH=/x:/y".into()]), "/x:/y");
    assert_eq!(path_var(&[]), DEFAULT_PATH);
}

#[test]
fn oom_score_adj_is_written_first() {
    let sys = RecordingSyscall::default();
    let mut process = process();
    process.set_oom_score_adj(Some(-500));
    prepare(&sys, &process, None).expect("prepare");
    assert_eq!(
        sys.calls()[0],
        Call::WriteFile(PathBuf::from("/proc/self/oom_score_adj"), "-500".into())
    );
}
