//! `berth logs`: replay a container's output, each line to the stream it came from.

use std::io::Write;
use std::time::Duration;

use crate::cli::container::LogsArgs;
use crate::container::{ContainerStore, Status};
use crate::context::Context;
use crate::monitor::log::{read_from, Entry, Stream};

use super::CommandError;

pub fn logs(ctx: &Context, args: &LogsArgs) -> Result<i32, CommandError> {
    let store = ContainerStore::open(&ctx.root)?;
    let record = store.find(&args.container)?;
    let path = store.log_path(&record.id);
    let tail = match args.tail.as_deref() {
        None | Some("all") => None,
        Some(n) => Some(n.parse::<usize>().map_err(|_| {
            CommandError::Refused(format!("invalid --tail \"{n}\": give a number or \"all\""))
        })?),
    };
    let (mut entries, mut offset) = read_from(&path, 0)?;
    if let Some(n) = tail {
        let skip = entries.len().saturating_sub(n);
        entries.drain(..skip);
    }
    print_entries(&entries, args.timestamps)?;
    if !args.follow {
        return Ok(0);
    }
    loop {
        // Read the state before the file: output written before the exit is never missed.
        let running = matches!(store.state(&record.id), Ok(s) if s.status == Status::Running);
        let (more, next) = read_from(&path, offset)?;
        offset = next;
        print_entries(&more, args.timestamps)?;
        if !running {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn print_entries(entries: &[Entry], timestamps: bool) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    for entry in entries {
        let out: &mut dyn Write = match entry.stream {
            Stream::Stdout => &mut stdout,
            Stream::Stderr => &mut stderr,
        };
        if timestamps {
            write!(
                out,
                "{} ",
                entry
                    .time
                    .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
            )?;
        }
        out.write_all(entry.log.as_bytes())?;
    }
    stdout.flush()
}
