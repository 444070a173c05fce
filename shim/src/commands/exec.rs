//! `berth exec`: run another process in a running container's namespaces and cgroup.

use nix::unistd::Pid;

use crate::cli::container::ExecArgs;
use crate::container::{ContainerStore, Status};
use crate::context::Context;
use crate::monitor::session::{self, Wiring};
use crate::options;
use crate::runtime::{self, ExecLaunch};
use crate::store::ImageStore;

use super::CommandError;

pub fn exec(ctx: &Context, args: ExecArgs) -> Result<i32, CommandError> {
    let store = ContainerStore::open(&ctx.root)?;
    let record = store.find(&args.container)?;
    let state = store.state(&record.id)?;
    let pid = match state.pid {
        Some(pid) if state.status == Status::Running && state.process_alive() => pid,
        _ => {
            return Err(CommandError::Refused(format!(
                "container {} is not running",
                record.name
            )))
        }
    };
    let cwd = args
        .workdir
        .clone()
        .unwrap_or_else(|| record.process.cwd.clone());
    options::check_workdir(&cwd)?;
    let extra: Vec<String> = args
        .env
        .iter()
        .filter_map(|e| options::expand_env_entry(e))
        .collect();
    let env = options::merge_env(&[record.process.env.clone(), extra])?;
    let images = ImageStore::open(&ctx.root)?;
    let layers = images.layer_dirs(&images.resolve(&record.image_id)?)?;
    let wiring = Wiring {
        tty: args.tty,
        interactive: args.interactive,
        attached: !args.detach,
    };
    let (io, stdio) = session::wire(wiring)?;
    let runtime = runtime::for_name(&record.host.runtime)?;
    let mut process = runtime.exec(ExecLaunch {
        record: &record,
        dir: store.dir(&record.id),
        layers,
        container_pid: Pid::from_raw(pid),
        args: args.command,
        env,
        cwd,
        user: args.user.unwrap_or_else(|| record.process.user.clone()),
        tty: args.tty,
        stdio,
    })?;
    if args.detach {
        return Ok(0);
    }
    Ok(session::supervise(process.as_mut(), io, None)?)
}
