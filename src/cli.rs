//! Command-line definitions. The names here are a contract other tools depend on (DESIGN §4):
//! `run`, `--qr_session ID`, `sim`, `demo`, `check-config`, `status`, `--config FILE`; `bench`
//! is for people measuring.

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
    /// The template `wxagent run` forks workers from (Linux, `[agent] fork_server`).
    #[command(hide = true)]
    ForkServer(ForkServerArgs),
    /// Measure density, latency, throughput and spawn time against a local simulator.
    Bench(BenchArgs),
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

/// `wxagent fork-server` (started by the supervisor).
#[derive(Debug, Clone, Args)]
pub struct ForkServerArgs {
    /// Room for the workers' command lines (see `supervisor::forkserver`); ignored.
    #[arg(allow_hyphen_values = true)]
    pub padding: Option<String>,
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
    fn the_fork_server_is_started_by_its_subcommand_name() {
        let cli = Cli::try_parse_from([
            "wxagent",
            crate::supervisor::process::FORK_SERVER_COMMAND,
            "   ",
        ])
        .unwrap();
        assert!(matches!(cli.command, Some(Command::ForkServer(_))));
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

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub scenario: BenchScenario,
}

/// What every bench scenario shares: the simulated world and where the results go.
#[derive(Debug, Args, Clone)]
pub struct BenchCommon {
    /// Write the results as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// The simulator's synccheck / login-poll hold time.
    #[arg(long, default_value = "25s", value_parser = humantime::parse_duration)]
    pub hold: std::time::Duration,
    /// `[control] poll_interval` (how often the supervisor asks for task 200 and for each
    /// logged-in account's tasks) while logging in and measuring latency, throughput and spawn.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub poll_interval: std::time::Duration,
    /// `[control] poll_interval` while latency and throughput are measured: every account's
    /// `pull_task` is sent at it, so the fast set-up interval would add its own load (100
    /// sessions at 100 ms make 1,000 requests/s). The supervisor is restarted with it after the
    /// logins.
    /// Default: the config default.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub traffic_poll_interval: std::time::Duration,
    /// Friends per simulated account.
    #[arg(long, default_value_t = 300)]
    pub friends: usize,
    /// Groups per simulated account.
    #[arg(long, default_value_t = 10)]
    pub groups: usize,
    /// Members per group (the account plus strangers).
    #[arg(long, default_value_t = 100)]
    pub group_size: usize,
    /// Keep the temporary directory (configs, state, logs) for inspection.
    #[arg(long)]
    pub keep: bool,
    /// Offer WebSocket mode (spec A.8) in login_ack, so reports go over one socket per
    /// session (the reference control plane echoes event ids: frames are sent ahead of their
    /// answers, up to `[control] ws_window`). Default: HTTP, one report per request.
    #[arg(long)]
    pub websocket: bool,
    /// Offer report batches of up to N reports in login_ack (`option.report_batch`, wxagent's
    /// extension): over HTTP, reports already waiting go out together in one post, up to
    /// `[control] http_batch`. Default 0: a stock WeHub server, one report per request.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub report_batch: u32,
}

#[derive(Debug, Subcommand)]
pub enum BenchScenario {
    /// N logged-in idle sessions: per-worker RSS/PSS, supervisor RSS/PSS, idle CPU.
    Density(BenchDensityArgs),
    /// Steady injection into sessions: inject → report_new_msg latency.
    Latency(BenchLatencyArgs),
    /// A burst into 1 session and spread over many: messages per second reported.
    Throughput(BenchThroughputArgs),
    /// Task 200 → QR PNG at the control plane; restart → a saved session online.
    Spawn(BenchSpawnArgs),
    /// Every scenario in turn (density, latency and throughput share one set of sessions).
    All(BenchAllArgs),
}

#[derive(Debug, Args, Clone)]
pub struct BenchDensityArgs {
    /// Logged-in sessions.
    #[arg(long, default_value_t = 100)]
    pub sessions: usize,
    /// How long CPU use is measured while every session idles.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub idle: std::time::Duration,
    /// `[control] poll_interval` while idling (workers poll for tasks at it); the supervisor
    /// is restarted with it after the logins. Default: the config default.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub idle_poll_interval: std::time::Duration,
    /// Wait after that restart before the window opens: the first minute of a worker is its
    /// login transient (contact reports, the allocator trim checking every 2 s), not idling.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub settle: std::time::Duration,
    #[command(flatten)]
    pub common: BenchCommon,
}

#[derive(Debug, Args, Clone)]
pub struct BenchLatencyArgs {
    /// Runs as SESSIONS@RATE (messages per second over that many sessions), comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1@200,100@200")]
    pub runs: Vec<String>,
    /// Messages injected per run.
    #[arg(long, default_value_t = 10_000)]
    pub messages: usize,
    #[command(flatten)]
    pub common: BenchCommon,
}

#[derive(Debug, Args, Clone)]
pub struct BenchThroughputArgs {
    /// Session counts to spread each burst over, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,50")]
    pub sessions: Vec<usize>,
    /// Messages per burst.
    #[arg(long, default_value_t = 5_000)]
    pub messages: usize,
    #[command(flatten)]
    pub common: BenchCommon,
}

#[derive(Debug, Args, Clone)]
pub struct BenchSpawnArgs {
    /// Task 200s handed out one after another.
    #[arg(long, default_value_t = 100)]
    pub sessions: usize,
    /// Supervisor restarts, each timing the resume of the saved session(s).
    #[arg(long, default_value_t = 5)]
    pub restarts: usize,
    /// Saved sessions resumed at each restart.
    #[arg(long, default_value_t = 1)]
    pub resume_sessions: usize,
    #[command(flatten)]
    pub common: BenchCommon,
}

#[derive(Debug, Args, Clone)]
pub struct BenchAllArgs {
    /// Logged-in sessions for density (latency and throughput use the same ones).
    #[arg(long, default_value_t = 100)]
    pub sessions: usize,
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub idle: std::time::Duration,
    /// `[control] poll_interval` during the idle window (see `bench density`).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub idle_poll_interval: std::time::Duration,
    /// Wait before the idle window (see `bench density`).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub settle: std::time::Duration,
    /// Latency runs as SESSIONS@RATE.
    #[arg(long, value_delimiter = ',', default_value = "1@200,100@200")]
    pub runs: Vec<String>,
    /// Messages per latency run.
    #[arg(long, default_value_t = 10_000)]
    pub messages: usize,
    /// Throughput: session counts per burst.
    #[arg(long, value_delimiter = ',', default_value = "1,50")]
    pub burst_sessions: Vec<usize>,
    /// Throughput: messages per burst.
    #[arg(long, default_value_t = 5_000)]
    pub burst: usize,
    /// Spawn: task 200s handed out.
    #[arg(long, default_value_t = 100)]
    pub spawns: usize,
    /// Spawn: supervisor restarts timing a resume.
    #[arg(long, default_value_t = 5)]
    pub restarts: usize,
    #[command(flatten)]
    pub common: BenchCommon,
}
