//! `llmtape verify` (being written).
use std::io::Write;

use crate::app::CommandError;
use crate::cli::VerifyArgs;
use crate::config::Config;
use crate::recordings::Recordings;

/// Re-sends recorded requests; true when nothing differs.
pub async fn run(
    _config: &Config,
    _recordings: &Recordings,
    _args: &VerifyArgs,
    _out: &mut dyn Write,
) -> Result<bool, CommandError> {
    Err(CommandError::NotFound("verify is not written yet".into()))
}
