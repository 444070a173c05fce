//! `ps`: the container's processes, from its cgroup.

use super::cli::{Global, PsArgs};
use super::container::Record;
use super::CommandError;

/// `berth-runtime ps`.
pub fn ps(global: &Global, args: &PsArgs) -> Result<(), CommandError> {
    let record = Record::load(global, &args.id)?;
    let pids: Vec<i32> = record
        .cgroup()?
        .pids()
        .map_err(CommandError::Processes)?
        .into_iter()
        .map(|p| p.as_raw())
        .collect();
    match args.format.as_str() {
        "json" => println!(
            "{}",
            serde_json::to_string(&pids).map_err(CommandError::Output)?
        ),
        "table" => {
            println!("{:<8} CMD", "PID");
            for pid in pids {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|b| {
                        b.split(|c| *c == 0)
                            .filter(|s| !s.is_empty())
                            .map(|s| String::from_utf8_lossy(s).into_owned())
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default();
                println!("{pid:<8} {cmd}");
            }
        }
        other => return Err(CommandError::Format(other.to_owned())),
    }
    Ok(())
}
