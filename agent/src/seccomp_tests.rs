use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction as A, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompOperator as O, LinuxSyscall,
};

use super::*;

const ALLOW: u32 = 0x7fff_0000;
const KILL_PROCESS: u32 = 0x8000_0000;

/// Run the classic BPF subset the compiler emits against one seccomp_data.
fn run(prog: &Program, arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    let mut data = Vec::new();
    data.extend_from_slice(&nr.to_ne_bytes());
    data.extend_from_slice(&arch.to_ne_bytes());
    data.extend_from_slice(&0u64.to_ne_bytes());
    for arg in args {
        data.extend_from_slice(&arg.to_ne_bytes());
    }
    let insns = prog.instructions();
    // Every jump must land inside the program, reached or not (the kernel checks).
    for (at, i) in insns.iter().enumerate() {
        let next = at + 1;
        match i.code {
            0x05 => assert!(
                next + (i.k as usize) < insns.len(),
                "JA at {at} leaves the program"
            ),
            0x15 | 0x25 | 0x35 => assert!(
                next + usize::from(i.jt.max(i.jf)) < insns.len(),
                "jump at {at} leaves the program"
            ),
            _ => {}
        }
    }
    assert_eq!(insns.last().map(|i| i.code), Some(0x06));
    let (mut pc, mut acc) = (0usize, 0u32);
    loop {
        let i = &insns[pc];
        pc += 1;
        match i.code {
            0x20 => {
                let k = i.k as usize;
                acc = u32::from_ne_bytes(data[k..k + 4].try_into().unwrap());
            }
            0x54 => acc &= i.k,
            0x05 => pc += i.k as usize,
            0x15 | 0x25 | 0x35 => {
                let taken = match i.code {
                    0x15 => acc == i.k,
                    0x25 => acc > i.k,
                    _ => acc >= i.k,
                };
                pc += usize::from(if taken { i.jt } else { i.jf });
            }
            0x06 => return i.k,
            code => panic!("unexpected BPF code {code:#x}"),
        }
    }
}

fn syscall(
    names: &[&str],
    action: A,
    errno: Option<u32>,
    args: Vec<LinuxSeccompArg>,
) -> LinuxSyscall {
    let mut s = LinuxSyscall::default();
    s.set_names(names.iter().map(|n| n.to_string()).collect());
    s.set_action(action);
    s.set_errno_ret(errno);
    s.set_args((!args.is_empty()).then_some(args));
    s
}

fn arg(index: usize, op: O, value: u64, value_two: Option<u64>) -> LinuxSeccompArg {
    let mut b = LinuxSeccompArgBuilder::default()
        .index(index)
        .op(op)
        .value(value);
    if let Some(two) = value_two {
        b = b.value_two(two);
    }
    b.build().unwrap()
}

fn filter(default: A, syscalls: Vec<LinuxSyscall>) -> LinuxSeccomp {
    let mut s = LinuxSeccomp::default();
    s.set_default_action(default);
    s.set_architectures(Some(vec![Arch::ScmpArchX86_64]));
    s.set_syscalls(Some(syscalls));
    s
}

fn nr(name: &str) -> u32 {
    syscall_number(name).unwrap() as u32
}

const X86: u32 = AUDIT_ARCH_X86_64;

#[test]
fn syscall_names_resolve() {
    assert_eq!(syscall_number("mkdir"), Some(83));
    assert_eq!(syscall_number("read"), Some(0));
    assert_eq!(syscall_number("close"), Some(3));
    assert_eq!(syscall_number("no_such_call"), None);
}

#[test]
fn deny_list_with_errno() {
    let spec = filter(
        A::ScmpActAllow,
        vec![syscall(
            &["mkdir", "mkdirat", "bogus"],
            A::ScmpActErrno,
            Some(1),
            vec![],
        )],
    );
    let prog = compile(&spec).unwrap();
    assert_eq!(run(&prog, X86, nr("mkdir"), [0; 6]), 0x0005_0001);
    assert_eq!(run(&prog, X86, nr("mkdirat"), [0; 6]), 0x0005_0001);
    assert_eq!(run(&prog, X86, nr("getpid"), [0; 6]), ALLOW);
}

#[test]
fn allow_list_with_default_errno_ret_and_kill() {
    let mut spec = filter(
        A::ScmpActErrno,
        vec![
            syscall(&["read", "write"], A::ScmpActAllow, None, vec![]),
            syscall(&["reboot"], A::ScmpActKillProcess, None, vec![]),
            syscall(&["ptrace"], A::ScmpActKill, None, vec![]),
            syscall(&["uname"], A::ScmpActLog, None, vec![]),
            syscall(&["getpid"], A::ScmpActTrap, None, vec![]),
        ],
    );
    spec.set_default_errno_ret(Some(38));
    let prog = compile(&spec).unwrap();
    assert_eq!(run(&prog, X86, nr("read"), [0; 6]), ALLOW);
    assert_eq!(run(&prog, X86, nr("reboot"), [0; 6]), KILL_PROCESS);
    assert_eq!(run(&prog, X86, nr("ptrace"), [0; 6]), 0);
    assert_eq!(run(&prog, X86, nr("uname"), [0; 6]), 0x7ffc_0000);
    assert_eq!(run(&prog, X86, nr("getpid"), [0; 6]), 0x0003_0000);
    assert_eq!(run(&prog, X86, nr("mkdir"), [0; 6]), 0x0005_0000 | 38);
    // Default errno without errnoRet is EPERM.
    let prog = compile(&filter(A::ScmpActErrno, vec![])).unwrap();
    assert_eq!(run(&prog, X86, nr("mkdir"), [0; 6]), 0x0005_0001);
}

#[test]
fn other_abis_get_enosys() {
    let prog = compile(&filter(A::ScmpActAllow, vec![])).unwrap();
    let enosys = 0x0005_0000 | libc::ENOSYS as u32;
    assert_eq!(run(&prog, 0x4000_0003, 1, [0; 6]), enosys);
    assert_eq!(run(&prog, X86, 0x4000_0001, [0; 6]), enosys);
    assert_eq!(run(&prog, X86, 1, [0; 6]), ALLOW);
}

#[test]
fn argument_conditions() {
    let spec = filter(
        A::ScmpActAllow,
        vec![
            // personality(0xffffffff) and personality(8) allowed, others denied, like Docker.
            syscall(
                &["personality"],
                A::ScmpActErrno,
                Some(1),
                vec![arg(0, O::ScmpCmpGt, 8, None), arg(1, O::ScmpCmpNe, 5, None)],
            ),
            // Repeated index: ORed.
            syscall(
                &["kill"],
                A::ScmpActErrno,
                Some(13),
                vec![
                    arg(1, O::ScmpCmpEq, 9, None),
                    arg(1, O::ScmpCmpEq, 15, None),
                ],
            ),
            syscall(
                &["clone"],
                A::ScmpActErrno,
                Some(1),
                vec![arg(0, O::ScmpCmpMaskedEq, 0x7e02_0000, Some(0x1000_0000))],
            ),
            syscall(
                &["dup"],
                A::ScmpActErrno,
                Some(2),
                vec![arg(0, O::ScmpCmpLt, 3, None)],
            ),
            syscall(
                &["dup2"],
                A::ScmpActErrno,
                Some(2),
                vec![arg(0, O::ScmpCmpLe, 3, None)],
            ),
            syscall(
                &["dup3"],
                A::ScmpActErrno,
                Some(2),
                vec![arg(0, O::ScmpCmpGe, 1 << 40, None)],
            ),
        ],
    );
    let prog = compile(&spec).unwrap();
    let p = nr("personality");
    assert_eq!(run(&prog, X86, p, [9, 0, 0, 0, 0, 0]), 0x0005_0001);
    assert_eq!(run(&prog, X86, p, [9, 5, 0, 0, 0, 0]), ALLOW);
    assert_eq!(run(&prog, X86, p, [8, 0, 0, 0, 0, 0]), ALLOW);
    assert_eq!(run(&prog, X86, p, [1 << 33, 0, 0, 0, 0, 0]), 0x0005_0001);
    let k = nr("kill");
    assert_eq!(run(&prog, X86, k, [1, 9, 0, 0, 0, 0]), 0x0005_000d);
    assert_eq!(run(&prog, X86, k, [1, 15, 0, 0, 0, 0]), 0x0005_000d);
    assert_eq!(run(&prog, X86, k, [1, 2, 0, 0, 0, 0]), ALLOW);
    let c = nr("clone");
    assert_eq!(
        run(&prog, X86, c, [0x1000_0011, 0, 0, 0, 0, 0]),
        0x0005_0001
    );
    assert_eq!(run(&prog, X86, c, [0x1002_0011, 0, 0, 0, 0, 0]), ALLOW);
    assert_eq!(run(&prog, X86, nr("dup"), [2, 0, 0, 0, 0, 0]), 0x0005_0002);
    assert_eq!(run(&prog, X86, nr("dup"), [3, 0, 0, 0, 0, 0]), ALLOW);
    assert_eq!(run(&prog, X86, nr("dup2"), [3, 0, 0, 0, 0, 0]), 0x0005_0002);
    assert_eq!(run(&prog, X86, nr("dup2"), [4, 0, 0, 0, 0, 0]), ALLOW);
    assert_eq!(
        run(&prog, X86, nr("dup3"), [1 << 40, 0, 0, 0, 0, 0]),
        0x0005_0002
    );
    assert_eq!(
        run(&prog, X86, nr("dup3"), [(1 << 40) - 1, 0, 0, 0, 0, 0]),
        ALLOW
    );
    // A syscall after argument rules still matches (the number is reloaded).
    assert_eq!(run(&prog, X86, nr("getpid"), [0; 6]), ALLOW);
}

#[test]
fn first_matching_rule_wins() {
    let spec = filter(
        A::ScmpActErrno,
        vec![
            syscall(
                &["write"],
                A::ScmpActAllow,
                None,
                vec![arg(0, O::ScmpCmpEq, 1, None)],
            ),
            syscall(&["write"], A::ScmpActKillProcess, None, vec![]),
        ],
    );
    let prog = compile(&spec).unwrap();
    assert_eq!(run(&prog, X86, nr("write"), [1, 0, 0, 0, 0, 0]), ALLOW);
    assert_eq!(
        run(&prog, X86, nr("write"), [2, 0, 0, 0, 0, 0]),
        KILL_PROCESS
    );
}

#[test]
fn refuses_foreign_architectures_and_notify() {
    let mut spec = filter(A::ScmpActAllow, vec![]);
    spec.set_architectures(Some(vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm]));
    let err = compile(&spec).unwrap_err();
    assert!(err.to_string().contains("do not include x86_64"), "{err}");
    // x86_64 with companions is fine (the companions are denied).
    spec.set_architectures(Some(vec![
        Arch::ScmpArchX86_64,
        Arch::ScmpArchX86,
        Arch::ScmpArchX32,
    ]));
    compile(&spec).unwrap();
    spec.set_architectures(None);
    compile(&spec).unwrap();

    let spec = filter(
        A::ScmpActAllow,
        vec![syscall(&["mkdir"], A::ScmpActNotify, None, vec![])],
    );
    assert!(matches!(compile(&spec), Err(SeccompError::Action(_))));
}

#[test]
fn bad_argument_index_is_an_error() {
    let spec = filter(
        A::ScmpActAllow,
        vec![syscall(
            &["mkdir"],
            A::ScmpActErrno,
            None,
            vec![arg(6, O::ScmpCmpEq, 1, None)],
        )],
    );
    assert!(matches!(
        compile(&spec),
        Err(SeccompError::Condition { .. })
    ));
}

#[test]
fn an_argument_rule_may_come_last() {
    let spec = filter(
        A::ScmpActErrno,
        vec![syscall(
            &["personality"],
            A::ScmpActAllow,
            None,
            vec![arg(0, O::ScmpCmpEq, 8, None)],
        )],
    );
    let prog = compile(&spec).unwrap();
    assert_eq!(
        run(&prog, X86, nr("personality"), [8, 0, 0, 0, 0, 0]),
        ALLOW
    );
    assert_eq!(
        run(&prog, X86, nr("personality"), [9, 0, 0, 0, 0, 0]),
        0x0005_0001
    );
}
