//! berth's guest agent. As PID 1 of a microVM it mounts the early
//! filesystems, listens on vsock ports 1024 (control) and 1025 (stdio) and
//! serves the host. Elsewhere it serves on Unix sockets for tests:
//!
//! ```text
//! berth-agent --listen unix:PATH [--state-dir DIR]
//! ```
//!
//! listens on `PATH_1024` (control) and `PATH_1025` (stdio), like
//! Firecracker's host-side naming of vsock ports.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use berth_agent::protocol::{CONTROL_PORT, STDIO_PORT};
use berth_agent::server::{bind_unix, pid1, Config, Server, VsockListener};

const READY: &str = "berth-agent: ready";

fn main() -> ExitCode {
    if nix::unistd::getpid().as_raw() == 1 {
        run_as_pid1()
    }
    match run_test_mode(std::env::args().skip(1).collect()) {
        Ok(never) => match never {},
        Err(message) => {
            eprintln!("berth-agent: {message}");
            ExitCode::from(2)
        }
    }
}

fn run_as_pid1() -> ! {
    if !std::env::args().any(|a| a == pid1::SWITCHED_ROOT_ARG) {
        let e = pid1::leave_initramfs();
        pid1::console(&format!("berth-agent: {}", chain(&e)));
        pid1::power_off();
    }
    if let Err(e) = pid1::early_setup() {
        pid1::console(&format!("berth-agent: {}", chain(&e)));
        pid1::power_off();
    }
    let listeners = VsockListener::bind(CONTROL_PORT)
        .and_then(|control| Ok((control, VsockListener::bind(STDIO_PORT)?)));
    let (control, stdio) = match listeners {
        Ok(pair) => pair,
        Err(e) => {
            pid1::console(&format!("berth-agent: {}", chain(&e)));
            pid1::power_off();
        }
    };
    let server = Server::new(Config {
        state_dir: PathBuf::from("/run/berth"),
        on_shutdown: Box::new(|| pid1::power_off()),
    });
    pid1::console(READY);
    let Err(e) = server.serve(control, stdio);
    pid1::console(&format!("berth-agent: {}", chain(&e)));
    pid1::power_off()
}

fn run_test_mode(args: Vec<String>) -> Result<std::convert::Infallible, String> {
    let mut listen = None;
    let mut state_dir = PathBuf::from("/run/berth");
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next(),
            "--state-dir" => {
                state_dir = args
                    .next()
                    .map(PathBuf::from)
                    .ok_or("--state-dir needs a directory")?
            }
            "--version" => {
                println!("berth-agent {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            other => return Err(format!("unexpected argument {other:?}; usage: berth-agent --listen unix:PATH [--state-dir DIR]")),
        }
    }
    let Some(path) = listen.as_deref().and_then(|l| l.strip_prefix("unix:")) else {
        return Err("not PID 1: pass --listen unix:PATH".into());
    };
    // Started processes are re-parented to us when their spawn helper exits.
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes plain integers.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(format!(
            "failed to become a child subreaper: {}",
            std::io::Error::last_os_error()
        ));
    }
    let control =
        bind_unix(&PathBuf::from(format!("{path}_{CONTROL_PORT}"))).map_err(|e| chain(&e))?;
    let stdio = bind_unix(&PathBuf::from(format!("{path}_{STDIO_PORT}"))).map_err(|e| chain(&e))?;
    let server = Server::new(Config {
        state_dir,
        on_shutdown: Box::new(|| std::process::exit(0)),
    });
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "{READY}");
    let _ = stdout.flush();
    server.serve(control, stdio).map_err(|e| chain(&e))
}

fn chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        message.push_str(": ");
        message.push_str(&e.to_string());
        source = e.source();
    }
    message
}
