//! `berth rm`: remove containers, killing running ones with `-f`.

use std::time::Duration;

use crate::cli::container::RmArgs;
use crate::container::{ContainerStore, Status};
use crate::context::Context;
use crate::runtime;

use super::stop::stop_one;
use super::CommandError;

pub fn rm(ctx: &Context, args: &RmArgs) -> Result<i32, CommandError> {
    let store = ContainerStore::open(&ctx.root)?;
    let mut failed = 0;
    for name in &args.containers {
        match remove_one(&store, name, args.force) {
            Ok(()) => println!("{name}"),
            Err(e) => {
                eprintln!("berth: {}", crate::error_chain(&e));
                failed += 1;
            }
        }
    }
    Ok(if failed == 0 { 0 } else { 1 })
}

fn remove_one(store: &ContainerStore, name: &str, force: bool) -> Result<(), CommandError> {
    let record = store.find(name)?;
    let state = store.state(&record.id)?;
    if state.status == Status::Running {
        if !force {
            return Err(CommandError::Refused(format!(
                "cannot remove container {}: it is running, stop it first or use rm -f",
                record.name
            )));
        }
        stop_one(store, &record, Duration::ZERO)?;
    }
    // The monitor releases the cgroup when the container exits; make sure, in case it died.
    if let Ok(runtime) = runtime::for_name(&record.host.runtime) {
        runtime.release(&record)?;
    }
    let _lock = store.lock(&record.id)?;
    store.remove(&record.id)?;
    Ok(())
}
