//! Usage errors as one line: clap's errors (a bad value, an unknown flag
//! or command, a missing argument) become the single stderr line, exit 2,
//! that every other user error is, naming the problem and what would be
//! accepted. clap's usage block and tips are left out; `--help` and
//! `--version` (and `llmtape help ...`) are clap's, unchanged, exit 0.
//!
//! Owns only the wording. The flags themselves are [`crate::cli`]'s; what
//! a line names (the command, its flags, a flag's environment variable)
//! is read from clap's own description of the command line, so a new flag
//! or command needs nothing here.

use std::ffi::OsString;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Arg, Command, CommandFactory, Parser};

use crate::cli::Cli;

/// The exit code of a usage error, as for every user error.
const USAGE_EXIT: i32 = 2;

/// Parses the process's command line; on a usage error prints its one line
/// (`llmtape: ...`) to stderr and exits 2. Help and version requests print
/// clap's text to stdout and exit 0.
pub fn parse_or_exit() -> Cli {
    let args: Vec<OsString> = std::env::args_os().collect();
    match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(error) => match one_line(&error, &Cli::command(), &args) {
            Some(line) => {
                eprintln!("llmtape: {line}");
                std::process::exit(USAGE_EXIT);
            }
            None => error.exit(),
        },
    }
}

/// The one line for `error`, raised while parsing `args` against `root`;
/// `None` when it is not an error but a request for help or the version.
fn one_line(error: &clap::Error, root: &Command, args: &[OsString]) -> Option<String> {
    let mut root = root.clone();
    // Built, the subcommands carry the global flags: what they accept.
    root.build();
    let (command, path) = command_of(&root, args);
    let text = |kind| match error.get(kind) {
        Some(ContextValue::String(s)) => s.clone(),
        Some(ContextValue::Strings(all)) => all.join(" "),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let list = |kind| match error.get(kind) {
        Some(ContextValue::Strings(all)) => all.clone(),
        Some(ContextValue::String(one)) => vec![one.clone()],
        _ => Vec::new(),
    };
    let see_help = format!("(see '{path} --help')");
    let line = match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => return None,
        ErrorKind::InvalidValue => {
            let arg = text(ContextKind::InvalidArg);
            let value = text(ContextKind::InvalidValue);
            let from = from_environment(command, &arg, args);
            let mut line = if value.is_empty() {
                format!("'{arg}'{from} needs a value")
            } else {
                format!("invalid value '{value}' for '{arg}'{from}")
            };
            let valid = list(ContextKind::ValidValue);
            if !valid.is_empty() {
                line.push_str(&format!(": expected one of {}", valid.join(", ")));
            }
            line + &did_you_mean(&list(ContextKind::SuggestedValue))
        }
        ErrorKind::ValueValidation => {
            let arg = text(ContextKind::InvalidArg);
            let from = from_environment(command, &arg, args);
            let why = std::error::Error::source(error)
                .map(|source| format!(": {source}"))
                .unwrap_or_default();
            format!(
                "invalid value '{}' for '{arg}'{from}{why}",
                text(ContextKind::InvalidValue)
            )
        }
        ErrorKind::UnknownArgument => {
            let arg = text(ContextKind::InvalidArg);
            let flags = flags_of(command);
            let mut line = if arg.starts_with('-') {
                format!("unknown flag '{arg}' for '{path}'")
            } else {
                format!("unexpected argument '{arg}' for '{path}'")
            };
            if arg.starts_with('-') && !flags.is_empty() {
                line.push_str(&format!(": expected one of {}", flags.join(", ")));
            }
            format!(
                "{line}{} {see_help}",
                did_you_mean(&list(ContextKind::SuggestedArg))
            )
        }
        ErrorKind::MissingRequiredArgument => format!(
            "'{path}' needs {} {see_help}",
            list(ContextKind::InvalidArg).join(" and ")
        ),
        ErrorKind::InvalidSubcommand => format!(
            "unknown command '{}' for '{path}': expected one of {}{}",
            text(ContextKind::InvalidSubcommand),
            subcommands_of(command).join(", "),
            did_you_mean(&list(ContextKind::SuggestedSubcommand))
        ),
        ErrorKind::MissingSubcommand | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            format!(
                "'{path}' needs a command: one of {} {see_help}",
                subcommands_of(command).join(", ")
            )
        }
        // The rarer kinds (conflicts, counts of values, invalid UTF-8):
        // clap's own first line says what is wrong.
        _ => format!("{} {see_help}", first_line(error)),
    };
    Some(line)
}

/// The subcommand `args` reached (the deepest one named, skipping flag
/// values) and its path, e.g. `llmtape key explain`.
fn command_of<'a>(root: &'a Command, args: &[OsString]) -> (&'a Command, String) {
    let mut command = root;
    let mut path = root.get_name().to_string();
    let mut words = args.iter().skip(1).map(|a| a.to_string_lossy());
    while let Some(word) = words.next() {
        if word == "--" {
            break;
        }
        if let Some(long) = word.strip_prefix("--") {
            let takes_value = !long.contains('=')
                && find_flag(command, long).is_some_and(|a| a.get_action().takes_values());
            if takes_value {
                words.next();
            }
            continue;
        }
        if let Some(sub) = command.find_subcommand(word.as_ref()) {
            command = sub;
            path.push(' ');
            path.push_str(sub.get_name());
        }
    }
    (command, path)
}

/// The flag `--long` of `command`.
fn find_flag<'a>(command: &'a Command, long: &str) -> Option<&'a Arg> {
    command.get_arguments().find(|a| a.get_long() == Some(long))
}

/// ` (from LLMTAPE_MODE)` when the value of `arg` (as clap names it,
/// `--mode <MODE>`) came from its environment variable: the flag is not on
/// the command line and the variable is set.
fn from_environment(command: &Command, arg: &str, args: &[OsString]) -> String {
    let Some(long) = arg
        .strip_prefix("--")
        .map(|rest| rest.split([' ', '=']).next().unwrap_or(rest))
    else {
        return String::new();
    };
    let on_command_line = args.iter().skip(1).any(|a| {
        let a = a.to_string_lossy();
        a.strip_prefix("--")
            .is_some_and(|rest| rest == long || rest.starts_with(&format!("{long}=")))
    });
    match find_flag(command, long).and_then(Arg::get_env) {
        Some(name) if !on_command_line && std::env::var_os(name).is_some() => {
            format!(" (from {})", name.to_string_lossy())
        }
        _ => String::new(),
    }
}

/// `--flag` for every visible flag of `command`, globals included, help
/// and version left out.
fn flags_of(command: &Command) -> Vec<String> {
    command
        .get_arguments()
        .filter(|a| !a.is_hide_set() && !matches!(a.get_id().as_str(), "help" | "version"))
        .filter_map(|a| a.get_long().map(|long| format!("--{long}")))
        .collect()
}

/// The visible subcommands of `command`, `help` left out.
fn subcommands_of(command: &Command) -> Vec<String> {
    command
        .get_subcommands()
        .filter(|c| !c.is_hide_set() && c.get_name() != "help")
        .map(|c| c.get_name().to_string())
        .collect()
}

/// `; did you mean 'x'?` for clap's suggestions, or nothing.
fn did_you_mean(suggestions: &[String]) -> String {
    match suggestions {
        [] => String::new(),
        [one] => format!("; did you mean '{one}'?"),
        many => format!("; did you mean one of {}?", many.join(", ")),
    }
}

/// clap's own summary: the first line of its message, without `error: `.
fn first_line(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let line = rendered.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The line for `args`, which must fail to parse.
    fn line(args: &[&str]) -> Option<String> {
        let args: Vec<OsString> = std::iter::once("llmtape")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect();
        let error = Cli::try_parse_from(&args).expect_err("a usage error");
        one_line(&error, &Cli::command(), &args)
    }

    #[test]
    fn a_bad_value_names_the_flag_and_the_accepted_values() {
        assert_eq!(
            line(&["serve", "--mode", "sometimes"]).unwrap(),
            "invalid value 'sometimes' for '--mode <MODE>': expected one of auto, record, replay, passthrough"
        );
        assert_eq!(
            line(&["serve", "--mode", "recrod"]).unwrap(),
            "invalid value 'recrod' for '--mode <MODE>': expected one of auto, record, replay, passthrough; did you mean 'record'?"
        );
        assert_eq!(
            line(&["ls", "--log-format", "xml"]).unwrap(),
            "invalid value 'xml' for '--log-format <LOG_FORMAT>': expected one of text, json"
        );
        assert_eq!(
            line(&["serve", "--mode"]).unwrap(),
            "'--mode <MODE>' needs a value: expected one of auto, record, replay, passthrough"
        );
    }

    #[test]
    fn a_value_that_does_not_parse_says_why() {
        assert_eq!(
            line(&["verify", "--concurrency", "0"]).unwrap(),
            "invalid value '0' for '--concurrency <CONCURRENCY>': 0 is not in 1..=256"
        );
        assert_eq!(
            line(&["verify", "--sample", "some"]).unwrap(),
            "invalid value 'some' for '--sample <N>': invalid digit found in string"
        );
    }

    #[test]
    fn an_unknown_flag_lists_the_commands_flags() {
        assert_eq!(
            line(&["serve", "--frobnicate"]).unwrap(),
            "unknown flag '--frobnicate' for 'llmtape serve': expected one of --listen, --upstream, --anthropic-upstream, --mode, --remote, --config, --store, --fixtures, --log-format (see 'llmtape serve --help')"
        );
        let suggested = line(&["ls", "--jsn"]).unwrap();
        assert!(
            suggested.ends_with("; did you mean '--json'? (see 'llmtape ls --help')"),
            "{suggested}"
        );
        assert_eq!(
            line(&["ls", "extra"]).unwrap(),
            "unexpected argument 'extra' for 'llmtape ls' (see 'llmtape ls --help')"
        );
        // A flag's value is not mistaken for a command: `--store show`.
        let nested = line(&["--store", "show", "key", "explain", "--bogus"]).unwrap();
        assert!(
            nested.starts_with("unknown flag '--bogus' for 'llmtape key explain': "),
            "{nested}"
        );
    }

    #[test]
    fn a_missing_argument_or_command_is_named() {
        assert_eq!(
            line(&["show"]).unwrap(),
            "'llmtape show' needs <KEY_PREFIX> (see 'llmtape show --help')"
        );
        assert_eq!(
            line(&["export"]).unwrap(),
            "'llmtape export' needs --out <DIR> (see 'llmtape export --help')"
        );
        assert_eq!(
            line(&["key"]).unwrap(),
            "'llmtape key' needs a command: one of explain (see 'llmtape key --help')"
        );
        let bare = line(&[]).unwrap();
        assert!(
            bare.starts_with("'llmtape' needs a command: one of serve, ls, show, "),
            "{bare}"
        );
        let flags_only = line(&["--store", "x"]).unwrap();
        assert_eq!(flags_only, bare);
    }

    #[test]
    fn an_unknown_command_lists_the_commands() {
        let unknown = line(&["frobnicate"]).unwrap();
        assert!(
            unknown.starts_with(
                "unknown command 'frobnicate' for 'llmtape': expected one of serve, ls, show, "
            ),
            "{unknown}"
        );
        assert!(unknown.ends_with(", probe, push, pull, stats"), "{unknown}");
        let near = line(&["verfy"]).unwrap();
        assert!(near.ends_with("; did you mean 'verify'?"), "{near}");
    }

    #[test]
    fn help_and_version_are_not_errors_to_rewrite() {
        for args in [
            &["--help"][..],
            &["serve", "--help"],
            &["help", "serve"],
            &["--version"],
        ] {
            assert_eq!(line(args), None, "{args:?}");
        }
    }

    #[test]
    fn every_line_is_one_line() {
        for args in [
            &["serve", "--mode", "x"][..],
            &["serve", "--frobnicate"],
            &["show"],
            &["frobnicate"],
            &[],
            &["verify", "--json=yes"],
        ] {
            let line = line(args).unwrap();
            assert!(
                !line.contains('\n') && !line.is_empty(),
                "{args:?}: {line:?}"
            );
            assert!(!line.contains("Usage:") && !line.contains("tip:"), "{line}");
        }
    }
}
