//! `ps`: the container's processes, from its cgroup (in vm mode, as the guest
//! agent lists them), in `ps -ef`'s columns as runc prints them, or their pids
//! as JSON.

use berth_agent::protocol::ProcessInfo;
use berth_agent::server::ProcTable;

use super::cli::{Global, PsArgs};
use super::container::Record;
use super::CommandError;

/// `berth-runtime ps`.
pub fn ps(global: &Global, args: &PsArgs) -> Result<(), CommandError> {
    let record = Record::load(global, &args.id)?;
    if !matches!(args.format.as_str(), "json" | "table") {
        return Err(CommandError::Format(args.format.clone()));
    }
    let processes = match record.vm {
        Some(_) => super::vm::processes(global, &record)?,
        None => {
            let table = ProcTable::system();
            record
                .cgroup()?
                .pids()
                .map_err(CommandError::Processes)?
                .into_iter()
                .filter_map(|pid| table.process(pid.as_raw()))
                .collect()
        }
    };
    if args.format == "json" {
        let pids: Vec<i32> = processes.iter().map(|p| p.pid).collect();
        let json = serde_json::to_string(&pids).map_err(CommandError::Output)?;
        println!("{json}");
    } else {
        print!(
            "{}",
            ps_ef_table(&processes, chrono::Utc::now().timestamp())
        );
    }
    Ok(())
}

/// `ps -ef`'s table for `processes`, `now` being the current Unix time.
pub fn ps_ef_table(processes: &[ProcessInfo], now: i64) -> String {
    let row = |cols: [&str; 8]| {
        format!(
            "{:<8} {:>7} {:>7} {:>2} {:<5} {:<8} {:>8} {}\n",
            cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], cols[6], cols[7]
        )
    };
    let mut table = row(["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]);
    for p in processes {
        let start = i64::try_from(p.start_time).unwrap_or(i64::MAX);
        let elapsed_ms = u64::try_from(now.saturating_sub(start))
            .unwrap_or(0)
            .saturating_mul(1000)
            .max(1000);
        let cpu_percent = (p.cpu_time_ms.saturating_mul(100) / elapsed_ms).min(99);
        table.push_str(&row([
            &p.user.clone().unwrap_or_else(|| p.uid.to_string()),
            &p.pid.to_string(),
            &p.ppid.to_string(),
            &cpu_percent.to_string(),
            &start_time(start, now),
            p.tty.as_deref().unwrap_or("?"),
            &cpu_time(p.cpu_time_ms / 1000),
            &p.cmd,
        ]));
    }
    table
}

/// `HH:MM` for a process started today (UTC), else `MonDD`.
fn start_time(start: i64, now: i64) -> String {
    let (Some(start), Some(now)) = (
        chrono::DateTime::from_timestamp(start, 0),
        chrono::DateTime::from_timestamp(now, 0),
    ) else {
        return "?".into();
    };
    if start.date_naive() == now.date_naive() {
        start.format("%H:%M").to_string()
    } else {
        start.format("%b%d").to_string()
    }
}

/// `[DD-]HH:MM:SS`.
fn cpu_time(seconds: u64) -> String {
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    let clock = format!(
        "{:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    );
    if days > 0 {
        format!("{days}-{clock}")
    } else {
        clock
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(pid: i32, start_time: u64, cpu_time_ms: u64) -> ProcessInfo {
        ProcessInfo {
            pid,
            ppid: 0,
            uid: 0,
            user: Some("root".into()),
            start_time,
            cpu_time_ms,
            tty: None,
            cmd: "sleep 600".into(),
        }
    }

    #[test]
    fn table_has_ps_ef_columns() {
        // 2023-11-14 22:13:20 UTC.
        let now = 1_700_000_000;
        let mut other = process(7, 1_699_990_000, 3_723_000);
        other.user = None;
        other.uid = 1000;
        other.ppid = 1;
        other.tty = Some("pts/0".into());
        other.cmd = "sh -c top".into();
        let table = ps_ef_table(&[process(1, 1_700_000_000 - 60, 30_000), other], now);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "UID          PID    PPID  C STIME TTY          TIME CMD"
        );
        assert_eq!(
            lines[1],
            "root           1       0 50 22:12 ?        00:00:30 sleep 600"
        );
        assert_eq!(
            lines[2],
            "1000           7       1 37 19:26 pts/0    01:02:03 sh -c top"
        );
    }

    #[test]
    fn old_processes_show_the_day() {
        assert_eq!(start_time(1_600_000_000, 1_700_000_000), "Sep13");
        assert_eq!(cpu_time(2 * 86_400 + 61), "2-00:01:01");
    }
}
