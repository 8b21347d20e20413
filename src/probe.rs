//! `llmtape probe` (being written).
use std::io::Write;

use crate::app::CommandError;
use crate::cli::ProbeArgs;
use crate::config::Config;

/// Sends one request N times and reports the spread.
pub async fn run(
    _config: &Config,
    _args: &ProbeArgs,
    _body: Vec<u8>,
    _out: &mut dyn Write,
) -> Result<(), CommandError> {
    Err(CommandError::NotFound("probe is not written yet".into()))
}
