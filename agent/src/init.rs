//! The mini init (like tini): PID 1 that forwards signals to the user process,
//! reaps every child, and exits with the user process's status. The same
//! supervisor relays for the intermediate process of `exec`.

use std::sync::atomic::{AtomicI32, Ordering};

use nix::errno::Errno;
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

/// Signals forwarded to the supervised process.
pub const FORWARDED: &[Signal] = &[
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGPIPE,
    Signal::SIGALRM,
    Signal::SIGTERM,
    Signal::SIGCONT,
    Signal::SIGTSTP,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGURG,
    Signal::SIGXCPU,
    Signal::SIGXFSZ,
    Signal::SIGVTALRM,
    Signal::SIGPROF,
    Signal::SIGWINCH,
    Signal::SIGIO,
    Signal::SIGPWR,
    Signal::SIGSYS,
];

/// A failure setting up signal forwarding.
#[derive(Debug, thiserror::Error)]
#[error("failed to {step} for signal forwarding")]
pub struct InitError {
    step: &'static str,
    #[source]
    source: Errno,
}

static TARGET: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(signal: libc::c_int) {
    let target = TARGET.load(Ordering::SeqCst);
    if target > 0 {
        // SAFETY: kill(2) is async-signal-safe and takes plain integers.
        unsafe { libc::kill(target, signal) };
    }
}

fn forwarded_set() -> SigSet {
    let mut set = SigSet::empty();
    for signal in FORWARDED {
        set.add(*signal);
    }
    set
}

/// Block the forwarded signals (before fork) so none is lost between the fork
/// and the handlers going in. Returns the previous mask.
pub(crate) fn block_forwarded() -> Result<SigSet, InitError> {
    let mut old = SigSet::empty();
    signal::sigprocmask(
        SigmaskHow::SIG_BLOCK,
        Some(&forwarded_set()),
        Some(&mut old),
    )
    .map_err(|source| InitError {
        step: "block signals",
        source,
    })?;
    Ok(old)
}

/// In the forked child: put the mask back as it was.
pub(crate) fn restore_mask(old: &SigSet) {
    let _ = signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(old), None);
}

/// The exit code for a wait status: the code, or 128+signal.
pub fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, signal, _) => Some(128 + signal as i32),
        _ => None,
    }
}

/// Forward signals to `child`, reap every child, and exit with `child`'s status.
pub(crate) fn supervise(child: Pid, old_mask: &SigSet) -> ! {
    TARGET.store(child.as_raw(), Ordering::SeqCst);
    let action = SigAction::new(
        SigHandler::Handler(forward),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in FORWARDED {
        // SAFETY: `forward` only reads an atomic and calls kill(2), both
        // async-signal-safe.
        let _ = unsafe { signal::sigaction(*signal, &action) };
    }
    restore_mask(old_mask);
    loop {
        match waitpid(None, None) {
            Ok(status) if status.pid() == Some(child) => {
                if let Some(code) = exit_code(status) {
                    exit(code);
                }
            }
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => exit(255),
        }
    }
}

/// What `ps` shows for the supervisor inside the container.
const INIT_NAME: &[u8] = b"berth-init";

/// Renames the supervisor so the container does not see the command line of the host process
/// it was forked from (which names host paths), the way setproctitle() does: the kernel shows
/// /proc/PID/cmdline from the original argument area, which is rewritten in place.
pub(crate) fn rename() {
    let _ = nix::sys::prctl::set_name(c"berth-init");
    let Some((start, end)) = argument_area() else {
        return;
    };
    let len = end.saturating_sub(start);
    if len <= INIT_NAME.len() {
        return;
    }
    let area = start as *mut u8;
    // SAFETY: [start, end) is this process's own argument area on its stack (from
    // /proc/self/stat), mapped writable for the life of the process; `len` keeps every write
    // inside it. Nothing in this process holds a Rust reference into it: the standard library
    // reads argv lazily through raw pointers, and the supervisor never reads its arguments.
    unsafe {
        std::ptr::copy_nonoverlapping(INIT_NAME.as_ptr(), area, INIT_NAME.len());
        std::ptr::write_bytes(area.add(INIT_NAME.len()), 0, len - INIT_NAME.len());
    }
}

/// Fields 48 and 49 of /proc/self/stat: where the argument strings start and end.
fn argument_area() -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_argument_area(&stat)
}

fn parse_argument_area(stat: &str) -> Option<(usize, usize)> {
    // Field 2 (comm) may contain spaces: count from the last ')', which ends field 2.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `fields[0]` is field 3, so field N is fields[N - 3].
    let start = fields.get(45)?.parse().ok()?;
    let end = fields.get(46)?.parse().ok()?;
    (start < end).then_some((start, end))
}

/// Leave the process at once, without running at-exit handlers of the copied
/// parent state.
pub(crate) fn exit(code: i32) -> ! {
    // SAFETY: _exit(2) has no preconditions and never returns.
    unsafe { libc::_exit(code) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argument_area_is_fields_48_and_49() {
        let mut fields: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        fields[45] = "1000".into();
        fields[46] = "1050".into();
        let stat = format!("7 (a) b) {}", fields.join(" "));
        assert_eq!(parse_argument_area(&stat), Some((1000, 1050)));
        assert!(
            argument_area().is_some(),
            "this process has an argument area"
        );
    }

    #[test]
    fn exit_codes() {
        let pid = Pid::from_raw(5);
        assert_eq!(exit_code(WaitStatus::Exited(pid, 3)), Some(3));
        assert_eq!(
            exit_code(WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
            Some(137)
        );
        assert_eq!(exit_code(WaitStatus::StillAlive), None);
    }

    #[test]
    fn forwarded_set_excludes_uncatchable_and_child_signals() {
        let set = forwarded_set();
        assert!(set.contains(Signal::SIGTERM) && set.contains(Signal::SIGWINCH));
        assert!(!set.contains(Signal::SIGKILL) && !set.contains(Signal::SIGCHLD));
    }
}
