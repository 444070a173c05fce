//! `berth ps`: a table of containers like Docker's.

use crate::cli::container::PsArgs;
use crate::container::{ContainerState, ContainerStore, Status};
use crate::context::Context;

use super::CommandError;

pub fn ps(ctx: &Context, args: &PsArgs) -> Result<i32, CommandError> {
    let store = ContainerStore::open(&ctx.root)?;
    let mut rows = Vec::new();
    for record in store.list()?.into_iter().rev() {
        let state = match store.state(&record.id) {
            Ok(s) => s,
            // Removed by someone else while we looked.
            Err(crate::container::ContainerError::Io { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        if !args.all && state.status != Status::Running {
            continue;
        }
        if args.quiet {
            println!(
                "{}",
                if args.no_trunc {
                    &record.id
                } else {
                    record.short_id()
                }
            );
            continue;
        }
        let command = shell_words(&record.process.args);
        let command = if args.no_trunc {
            command
        } else {
            truncate(&command, 20)
        };
        rows.push([
            if args.no_trunc {
                record.id.clone()
            } else {
                record.short_id().to_string()
            },
            record.image_name.clone(),
            format!("\"{command}\""),
            format!(
                "{} ago",
                human_duration(chrono::Utc::now() - record.created)
            ),
            status_text(&state),
            String::new(),
            record.name.clone(),
            record.host.runtime.clone(),
        ]);
    }
    if args.quiet {
        return Ok(0);
    }
    let header = [
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
        "RUNTIME",
    ];
    print_table(&header, &rows);
    Ok(0)
}

/// `Up 3 seconds`, `Exited (0) 2 minutes ago`, `Created`.
pub fn status_text(state: &ContainerState) -> String {
    let now = chrono::Utc::now();
    match state.status {
        Status::Created => "Created".to_string(),
        Status::Running => match state.started_at {
            Some(t) => format!("Up {}", human_duration(now - t)),
            None => "Up".to_string(),
        },
        Status::Exited => match state.finished_at {
            Some(t) => format!(
                "Exited ({}) {} ago",
                state.exit_code.unwrap_or(0),
                human_duration(now - t)
            ),
            None => format!("Exited ({})", state.exit_code.unwrap_or(0)),
        },
    }
}

/// Docker's coarse durations: `Less than a second`, `5 seconds`, `3 minutes`, `2 hours`, `4 days`.
pub fn human_duration(d: chrono::TimeDelta) -> String {
    let seconds = d.num_seconds().max(0);
    let plural = |n: i64, unit: &str| {
        if n == 1 {
            format!("{}{unit}", if unit == "hour" { "An " } else { "1 " })
        } else {
            format!("{n} {unit}s")
        }
    };
    match seconds {
        0 => "Less than a second".to_string(),
        1..=59 => plural(seconds, "second"),
        60..=3599 => plural(seconds / 60, "minute"),
        3600..=172_799 => plural(seconds / 3600, "hour"),
        _ => plural(seconds / 86_400, "day"),
    }
}

fn shell_words(args: &[String]) -> String {
    args.join(" ")
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let cut: String = text.chars().take(max - 1).collect();
        format!("{cut}…")
    }
}

/// Left-aligned columns separated by three spaces, like Docker's tables.
pub fn print_table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == N {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}   "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_dockers() {
        let s = chrono::TimeDelta::seconds;
        assert_eq!(human_duration(s(0)), "Less than a second");
        assert_eq!(human_duration(s(1)), "1 second");
        assert_eq!(human_duration(s(42)), "42 seconds");
        assert_eq!(human_duration(s(120)), "2 minutes");
        assert_eq!(human_duration(s(3600)), "An hour");
        assert_eq!(human_duration(s(86_400 * 3)), "3 days");
    }

    #[test]
    fn long_commands_are_cut() {
        assert_eq!(truncate("short", 20), "short");
        assert_eq!(truncate("abcdefghijklmnopqrstuvwxyz", 5).chars().count(), 5);
    }
}
