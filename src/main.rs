//! The `llmtape` binary: parse, start tracing, run, map errors to exit codes.

use std::io::IsTerminal;
use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // A usage error is one line on stderr, exit 2; help and version exit 0.
    let cli = llmtape::usage::parse_or_exit();
    let filter =
        EnvFilter::try_from_env("LLMTAPE_LOG").unwrap_or_else(|_| EnvFilter::new("llmtape=info"));
    let ansi = std::io::stderr().is_terminal();
    // Lines reach stderr in batches (one write per interval, warnings at
    // once); the guard, dropped last, writes what is left.
    let (writer, log_guard) =
        llmtape::logs::batched(Box::new(std::io::stderr()), llmtape::logs::FLUSH_INTERVAL);
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer.clone());
    match cli.global.log_format {
        llmtape::cli::LogFormat::Text => {
            let format = llmtape::logs::PlainFormat { ansi };
            // Request lines skip tracing's dispatch, into the same writer.
            llmtape::logs::access::install(&writer, format);
            logs.event_format(format).init()
        }
        llmtape::cli::LogFormat::Json => logs.json().init(),
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            log_guard.flush();
            eprintln!("llmtape: cannot start the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    let outcome = runtime.block_on(llmtape::app::run(cli));
    // The command's log lines before its error message.
    log_guard.flush();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("llmtape: {error}");
            error.exit_code()
        }
    }
}
