//! `list`: every container under --root.

use super::cli::{Global, ListArgs};
use super::container::Record;
use super::CommandError;

/// `berth-runtime list`.
pub fn list(global: &Global, args: &ListArgs) -> Result<(), CommandError> {
    let mut records = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&global.root) {
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            if let Ok(record) = Record::load(global, &id) {
                records.push(record);
            }
        }
    }
    records.sort_by(|a, b| a.id.cmp(&b.id));
    if args.quiet {
        for r in &records {
            println!("{}", r.id);
        }
        return Ok(());
    }
    match args.format.as_str() {
        "json" => {
            let list: Vec<_> = records
                .iter()
                .map(|r| {
                    let status = r.status(global);
                    serde_json::json!({
                        "ociVersion": r.oci_version,
                        "id": r.id,
                        "pid": if status == super::container::Status::Stopped { 0 } else { r.pid },
                        "status": status.as_str(),
                        "bundle": r.bundle,
                        "rootfs": r.rootfs,
                        "created": r.created,
                        "annotations": r.annotations,
                        "owner": "root",
                    })
                })
                .collect();
            let json = serde_json::to_string(&list).map_err(CommandError::Output)?;
            println!("{json}");
        }
        "table" => {
            println!(
                "{:<20} {:<8} {:<10} {:<40} {:<32} OWNER",
                "ID", "PID", "STATUS", "BUNDLE", "CREATED"
            );
            for r in &records {
                let status = r.status(global);
                let pid = if status == super::container::Status::Stopped {
                    0
                } else {
                    r.pid
                };
                println!(
                    "{:<20} {:<8} {:<10} {:<40} {:<32} root",
                    r.id,
                    pid,
                    status.as_str(),
                    r.bundle.display(),
                    r.created
                );
            }
        }
        other => return Err(CommandError::Format(other.to_owned())),
    }
    Ok(())
}
