//! `state`: print the runtime-spec state JSON.

use super::cli::Global;
use super::container::Record;
use super::CommandError;

/// `berth-runtime state`.
pub fn state(global: &Global, id: &str) -> Result<(), CommandError> {
    let record = Record::load(global, id)?;
    let status = record.status(global);
    let json =
        serde_json::to_string_pretty(&record.state_json(status)).map_err(CommandError::Output)?;
    println!("{json}");
    Ok(())
}
