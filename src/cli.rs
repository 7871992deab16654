//! Command-line definitions. The names here are a contract other tools depend on (DESIGN §4):
//! `run`, `--qr_session ID`, `sim`, `demo`, `check-config`, `status`, `--config FILE`.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "wxagent",
    version,
    about = "Keeps personal WeChat accounts online over the web protocol for a WeHub-compatible orchestrator",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// Run one login session in the foreground: show the QR code, then print every message.
    #[arg(long = "qr_session", value_name = "ID")]
    pub qr_session: Option<String>,

    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Args, Clone, Default)]
pub struct GlobalArgs {
    /// Configuration file (default: $WXAGENT_CONFIG, then the platform default path).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the supervisor: poll the control plane, start one worker per QR session.
    Run,
    /// Run the WeChat web-protocol simulator (and its test-control API) on loopback.
    Sim(SimArgs),
    /// Start simulator, reference control plane and agent, and walk through one session.
    Demo,
    /// Validate a configuration file and print every problem found.
    CheckConfig,
    /// Print the sessions of the running supervisor.
    Status,
    /// Manage the Windows service (Windows only; on Linux use packaging/systemd/wxagent.service).
    #[command(subcommand)]
    Service(ServiceCommand),
    /// One session as a supervised child process (used by `wxagent run`).
    #[command(hide = true)]
    Worker(WorkerArgs),
}

/// `wxagent service …` (Windows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum ServiceCommand {
    /// Register the `wxagent` service (automatic start) to run `service run` with this --config.
    Install,
    /// Stop the service (its workers drain) and remove it.
    Uninstall,
    /// What the service manager starts: the supervisor, stopped by the service's Stop control.
    Run,
}

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Address to listen on. Port 0 picks a free port; the address is printed on stdout.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// How long synccheck and the login poll hold an idle request (e.g. "25s", "500ms").
    #[arg(long, default_value = "25s", value_parser = humantime::parse_duration)]
    pub hold: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The QR session id this worker serves.
    #[arg(long)]
    pub session: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn qr_session_flag_parses_with_config() {
        let cli =
            Cli::try_parse_from(["wxagent", "--qr_session", "xyz", "--config", "a.toml"]).unwrap();
        assert_eq!(cli.qr_session.as_deref(), Some("xyz"));
        assert_eq!(cli.global.config, Some(PathBuf::from("a.toml")));
        assert!(cli.command.is_none());
    }

    #[test]
    fn subcommands_parse() {
        let cli = Cli::try_parse_from(["wxagent", "check-config", "--config", "x.toml"]).unwrap();
        assert!(matches!(cli.command, Some(Command::CheckConfig)));
        let cli = Cli::try_parse_from([
            "wxagent",
            "sim",
            "--listen",
            "127.0.0.1:9000",
            "--hold",
            "1s",
        ])
        .unwrap();
        match cli.command {
            Some(Command::Sim(a)) => assert_eq!(a.hold, std::time::Duration::from_secs(1)),
            other => panic!("{other:?}"),
        }
        let cli =
            Cli::try_parse_from(["wxagent", "service", "install", "--config", "c.toml"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Service(ServiceCommand::Install))
        ));
        assert_eq!(cli.global.config, Some(PathBuf::from("c.toml")));
    }
}
