//! `state`: print the runtime-spec state JSON.

use anyhow::Result;

use super::cli::Global;
use super::container::Record;

/// `berth-runtime state`.
pub fn state(global: &Global, id: &str) -> Result<()> {
    let record = Record::load(global, id)?;
    let status = record.status(global);
    println!(
        "{}",
        serde_json::to_string_pretty(&record.state_json(status))?
    );
    Ok(())
}
