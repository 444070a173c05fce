//! `berth wait`: block until containers stop, print their exit codes.

use std::time::Duration;

use crate::cli::container::WaitArgs;
use crate::container::ContainerStore;
use crate::context::Context;

use super::stop::wait_until_exited;
use super::CommandError;

pub fn wait(ctx: &Context, args: &WaitArgs) -> Result<i32, CommandError> {
    let store = ContainerStore::open(&ctx.root)?;
    for name in &args.containers {
        let record = store.find(name)?;
        while !wait_until_exited(&store, &record.id, Duration::from_secs(3600))? {}
        let state = store.state(&record.id)?;
        println!("{}", state.exit_code.unwrap_or(0));
    }
    Ok(0)
}
