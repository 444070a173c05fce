//! `berth stop`, `restart` and `kill`: signals to a container's PID 1.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::cli::container::{KillArgs, StopArgs};
use crate::container::{ContainerRecord, ContainerStore, Status};
use crate::context::Context;
use crate::runtime;

use super::CommandError;

/// How long to wait for the monitor to record the exit after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(10);

pub fn stop(ctx: &Context, args: &StopArgs) -> Result<i32, CommandError> {
    for_each(ctx, &args.containers, |store, record| {
        stop_one(store, record, Duration::from_secs(args.time))
    })
}

pub fn restart(ctx: &Context, args: &StopArgs) -> Result<i32, CommandError> {
    for_each(ctx, &args.containers, |store, record| {
        stop_one(store, record, Duration::from_secs(args.time))?;
        super::start::start_detached(ctx, &record.id)
    })
}

pub fn kill(ctx: &Context, args: &KillArgs) -> Result<i32, CommandError> {
    let signal = parse_signal(&args.signal)?;
    for_each(ctx, &args.containers, |store, record| {
        let state = store.state(&record.id)?;
        match state.pid {
            Some(pid) if state.status == Status::Running && state.process_alive() => {
                runtime::for_name(&record.host.runtime)?.kill(
                    record,
                    Pid::from_raw(pid),
                    signal,
                )?;
                Ok(())
            }
            _ => Err(CommandError::Refused(format!(
                "cannot kill container {}: it is not running",
                record.name
            ))),
        }
    })
}

/// Applies `action` to each named container, printing the name on success like Docker.
fn for_each(
    ctx: &Context,
    names: &[String],
    action: impl Fn(&ContainerStore, &ContainerRecord) -> Result<(), CommandError>,
) -> Result<i32, CommandError> {
    let store = ContainerStore::open(&ctx.root)?;
    let mut failed = 0;
    for name in names {
        let result = store
            .find(name)
            .map_err(CommandError::from)
            .and_then(|record| action(&store, &record));
        match result {
            Ok(()) => println!("{name}"),
            Err(e) => {
                eprintln!("berth: {}", crate::error_chain(&e));
                failed += 1;
            }
        }
    }
    Ok(if failed == 0 { 0 } else { 1 })
}

/// SIGTERM, then SIGKILL after `grace`; returns once the exit is recorded.
pub(super) fn stop_one(
    store: &ContainerStore,
    record: &ContainerRecord,
    grace: Duration,
) -> Result<(), CommandError> {
    let state = store.state(&record.id)?;
    let Some(pid) = state
        .pid
        .filter(|_| state.status == Status::Running && state.process_alive())
    else {
        return Ok(());
    };
    let pid = Pid::from_raw(pid);
    let runtime = runtime::for_name(&record.host.runtime)?;
    let _ = runtime.kill(record, pid, Signal::SIGTERM);
    if wait_until_exited(store, &record.id, grace)? {
        return Ok(());
    }
    let _ = runtime.kill(record, pid, Signal::SIGKILL);
    if wait_until_exited(store, &record.id, KILL_WAIT)? {
        return Ok(());
    }
    Err(CommandError::Refused(format!(
        "container {} did not exit after SIGKILL",
        record.name
    )))
}

/// Polls the container's state until it is recorded as no longer running.
pub(super) fn wait_until_exited(
    store: &ContainerStore,
    id: &str,
    limit: Duration,
) -> Result<bool, CommandError> {
    let deadline = Instant::now() + limit;
    loop {
        if store.state(id)?.status != Status::Running {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `KILL`, `SIGKILL`, `kill` or `9`.
pub(super) fn parse_signal(text: &str) -> Result<Signal, CommandError> {
    let bad = || CommandError::Refused(format!("invalid signal \"{text}\""));
    if let Ok(number) = text.parse::<i32>() {
        return Signal::try_from(number).map_err(|_| bad());
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>().map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(parse_signal("KILL").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("sigterm").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("hup").unwrap(), Signal::SIGHUP);
        assert_eq!(parse_signal("15").unwrap(), Signal::SIGTERM);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("999").is_err());
    }
}
