//! `ps`: the container's processes, from its cgroup.

use anyhow::{bail, Result};

use super::cli::{Global, PsArgs};
use super::container::Record;

/// `berth-runtime ps`.
pub fn ps(global: &Global, args: &PsArgs) -> Result<()> {
    let record = Record::load(global, &args.id)?;
    let pids: Vec<i32> = record
        .cgroup()?
        .pids()?
        .into_iter()
        .map(|p| p.as_raw())
        .collect();
    match args.format.as_str() {
        "json" => println!("{}", serde_json::to_string(&pids)?),
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
        other => bail!("invalid format {other:?} (table or json)"),
    }
    Ok(())
}
