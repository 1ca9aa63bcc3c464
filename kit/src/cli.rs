//! The command line of a service binary.
//!
//! ```text
//! <service>                  serve (what the container runs)
//! <service> serve            the same
//! <service> env [--json]     the environment variables it reads, and their defaults
//! <service> env --check      whether this environment is a complete configuration
//! <service> --help           all of the above
//! ```
//!
//! A service on the event bus adds the `parked` commands (`bus::main`). Arguments are
//! parsed with clap: an unknown command or option, or a bad value, is refused with a
//! message naming it and exit code 2.

use std::process::ExitCode;

use clap::{FromArgMatches as _, Parser, Subcommand};

use crate::config::{self, Env};
use crate::service::{Service, serve_from_main};
use crate::telemetry;

/// The commands every service binary has.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Serve HTTP and run the background work (the default).
    Serve,
    /// The environment variables it reads, and their defaults.
    Env {
        /// As JSON.
        #[arg(long)]
        json: bool,
        /// Check that this environment is a complete configuration instead.
        #[arg(long, conflicts_with = "json")]
        check: bool,
    },
}

impl Command {
    /// Runs the command for service `S`.
    pub async fn run<S: Service>(self) -> anyhow::Result<()> {
        match self {
            Command::Serve => {
                let _flush_logs_on_exit = telemetry::init(S::NAME);
                serve_from_main(config::load_or_exit(S::from_env)).await
            }
            Command::Env { check: true, .. } => check_env::<S>(),
            Command::Env { json, .. } => print_env::<S>(json),
        }
    }
}

#[derive(Debug, Parser)]
struct Cli<C: Subcommand> {
    #[command(subcommand)]
    command: Option<C>,
}

/// The whole of a service binary's `main`: parses the arguments and runs the command
/// they name (serving when they name none).
pub fn main<S: Service>() -> ExitCode {
    main_with::<S, Command>(async |command| command.unwrap_or(Command::Serve).run::<S>().await)
}

/// [`main`] with the commands `C` (which flatten [`Command`] and add their own): parses
/// the arguments as `S`'s command line, then `run`s what they name (`None`: no
/// command) on a tokio runtime and turns its result into the exit code.
pub fn main_with<S: Service, C: Subcommand>(
    run: impl AsyncFnOnce(Option<C>) -> anyhow::Result<()>,
) -> ExitCode {
    let command = Cli::<C>::command_for(S::NAME);
    let cli =
        Cli::<C>::from_arg_matches(&command.get_matches()).unwrap_or_else(|error| error.exit());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build();
    let result = match runtime {
        Ok(runtime) => runtime.block_on(run(cli.command)),
        Err(error) => Err(anyhow::Error::from(error).context("starting the async runtime")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{}: {error:#}", S::NAME);
            ExitCode::FAILURE
        }
    }
}

impl<C: Subcommand> Cli<C> {
    fn command_for(name: &'static str) -> clap::Command {
        use clap::CommandFactory as _;
        Self::command()
            .name(name)
            .bin_name(name)
            .about(format!("The Ticketing {name} service"))
            .after_help("Settings come from the environment: see `env`.")
    }
}

fn print_env<S: Service>(json: bool) -> anyhow::Result<()> {
    let variables = config::describe(S::from_env);
    if json {
        println!("{}", serde_json::to_string_pretty(&variables)?);
        return Ok(());
    }
    for variable in variables {
        let formerly = variable
            .formerly
            .map(|old| format!(" (formerly {old})"))
            .unwrap_or_default();
        match (variable.required, variable.default) {
            (true, _) => println!("{:<36} required{formerly}", variable.name),
            (false, Some(default)) => {
                println!("{:<36} default {default}{formerly}", variable.name);
            }
            (false, None) => println!("{:<36} optional{formerly}", variable.name),
        }
    }
    Ok(())
}

/// Loads the configuration from this environment, as serving would, and says whether
/// it is complete (the deployment manifests are checked with it).
fn check_env<S: Service>() -> anyhow::Result<()> {
    let env = Env::process();
    S::from_env(&env)?;
    for warning in env.warnings() {
        eprintln!("{}: warning: {warning}", S::NAME);
    }
    println!("{}: the configuration is complete", S::NAME);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Command>, clap::Error> {
        let matches = Cli::<Command>::command_for("svc").try_get_matches_from(args)?;
        Cli::<Command>::from_arg_matches(&matches).map(|cli| cli.command)
    }

    #[test]
    fn the_commands_parse_and_nothing_else_does() {
        assert_eq!(parse(&["svc"]).unwrap(), None);
        assert_eq!(parse(&["svc", "serve"]).unwrap(), Some(Command::Serve));
        assert_eq!(
            parse(&["svc", "env", "--json"]).unwrap(),
            Some(Command::Env {
                json: true,
                check: false
            })
        );
        let unknown = parse(&["svc", "env", "--jsno"]).unwrap_err();
        assert_eq!(unknown.exit_code(), 2);
        assert!(unknown.to_string().contains("--jsno"), "{unknown}");
        let command = parse(&["svc", "parked", "list"]).unwrap_err();
        assert_eq!(command.exit_code(), 2, "no parked events without a bus");
        assert!(command.to_string().contains("parked"), "{command}");
        let help = parse(&["svc", "--help"]).unwrap_err();
        assert_eq!(help.exit_code(), 0);
        assert!(help.to_string().contains("Usage: svc"), "{help}");
    }
}
