//! `berth run`: create a container, then either supervise it here (attached) or hand it to a
//! detached monitor and print its id (`-d`).

use crate::cli::container::RunArgs;
use crate::context::Context;
use crate::monitor::{self, Wiring};

use super::{create::create_container, start::start_detached, CommandError};

pub fn run(ctx: &Context, args: RunArgs) -> Result<i32, CommandError> {
    let record = create_container(ctx, &args.create)?;
    let wiring = Wiring {
        tty: args.create.tty,
        interactive: args.create.interactive,
        attached: !args.detach,
    };
    if args.detach {
        start_detached(ctx, &record.id)?;
        println!("{}", record.id);
        return Ok(0);
    }
    Ok(monitor::run_container(ctx, &record.id, wiring, |_| {})?)
}
