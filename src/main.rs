//! Thin entry point: parse the command line, set up logging, dispatch, map the result to an
//! exit code.

use clap::Parser;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;
use wxagent::cli::{Cli, Command, ServiceCommand};
use wxagent::config::Config;
use wxagent::exit::WorkerExit;
use wxagent::{config, logging, shutdown, sim, supervisor, worker};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Some(Command::Demo))
        && cli.global.verbose == 0
        && std::env::var_os("RUST_LOG").is_none()
    {
        // The demo narrates on stdout; only problems belong on stderr.
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var("RUST_LOG", "warn") };
    }
    if matches!(cli.command, Some(Command::Worker(_))) {
        logging::init_child(cli.global.verbose);
    } else if matches!(cli.command, Some(Command::ForkServer(_))) {
        // No subscriber: the workers forked from it install their own, and a process can
        // install only one.
    } else if cfg!(windows) && matches!(cli.command, Some(Command::Service(ServiceCommand::Run))) {
        // A service has no console: it logs to a file once it knows its state directory.
    } else {
        logging::init(cli.global.verbose);
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wxagent: error: {e:#}");
            WorkerExit::Failure.into()
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config_flag = cli.global.config.as_deref();
    if let Some(session) = cli.qr_session {
        let Some(config) = load_config(config_flag) else {
            return Ok(WorkerExit::Usage.into());
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let outcome = rt.block_on(async move {
            let root = CancellationToken::new();
            shutdown::install(root.clone());
            tracing::info!(session = %session, "starting one session in the foreground");
            worker::foreground::run(config, session, root).await
        });
        // The stdin reader sits in a blocking read that a plain runtime drop would wait for.
        rt.shutdown_background();
        return Ok(outcome.exit().into());
    }
    match cli.command {
        Some(Command::Sim(args)) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let root = CancellationToken::new();
                shutdown::install(root.clone());
                sim::run(
                    sim::SimOptions {
                        listen: args.listen,
                        hold: args.hold,
                    },
                    root,
                )
                .await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::CheckConfig) => {
            let (ok, report) = config::check_config_report(config_flag);
            println!("{report}");
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                WorkerExit::Usage.into()
            })
        }
        Some(Command::Worker(args)) => {
            let code = worker::entry::main(config_flag, args.session);
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
        #[cfg(target_os = "linux")]
        Some(Command::ForkServer(_)) => {
            let exe = std::env::args_os()
                .next()
                .unwrap_or_else(|| "wxagent".into());
            let code = supervisor::forkserver::serve(config_flag.map(|p| p.to_path_buf()), exe);
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
        #[cfg(not(target_os = "linux"))]
        Some(Command::ForkServer(_)) => {
            eprintln!("wxagent: error: the fork server exists only on Linux");
            Ok(WorkerExit::Usage.into())
        }
        Some(Command::Run) => {
            let Some(config) = load_config(config_flag) else {
                return Ok(WorkerExit::Usage.into());
            };
            let notifier = std::sync::Arc::new(wxagent::service::ServiceNotifier::from_env());
            let opts = supervisor::run::SupervisorOptions::for_config(&config, notifier)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let root = CancellationToken::new();
                shutdown::install(root.clone());
                supervisor::run::run(config, opts, root).await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Status) => {
            let Some(config) = load_config(config_flag) else {
                return Ok(WorkerExit::Usage.into());
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let listen = supervisor::admin::resolve_listen(
                config.agent.admin_listen,
                &config.agent.state_dir,
            )?;
            let report = rt.block_on(supervisor::admin::fetch_status(
                listen,
                config.agent.admin_token.as_ref(),
            ))?;
            print!("{}", supervisor::admin::render_table(&report));
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(unix)]
        Some(Command::Bench(args)) => wxagent::bench::run(args, std::env::current_exe()?),
        #[cfg(not(unix))]
        Some(Command::Bench(_)) => {
            anyhow::bail!("wxagent bench reads /proc and runs on Linux only")
        }
        Some(Command::Service(action)) => service(action, config_flag),
        Some(Command::Demo) => {
            wxagent::demo::run(wxagent::demo::DemoOptions::new(std::env::current_exe()?))
        }
        None => {
            eprintln!("wxagent: nothing to do; see `wxagent --help`");
            Ok(WorkerExit::Usage.into())
        }
    }
}

/// `wxagent service install | uninstall | run`.
#[cfg(windows)]
fn service(action: ServiceCommand, config: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    use wxagent::service::windows;
    match action {
        ServiceCommand::Install => windows::install(config)?,
        ServiceCommand::Uninstall => windows::uninstall()?,
        ServiceCommand::Run => windows::run(config.map(std::path::Path::to_path_buf))?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `wxagent service …` elsewhere: a usage error that says what to use instead.
#[cfg(not(windows))]
fn service(_action: ServiceCommand, _config: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    eprintln!(
        "wxagent: error: the Windows service commands exist only on Windows; on Linux use packaging/systemd/wxagent.service"
    );
    Ok(WorkerExit::Usage.into())
}

/// Loads the configuration, logging where it came from; prints every problem and returns None
/// when it is invalid.
fn load_config(flag: Option<&std::path::Path>) -> Option<Config> {
    match Config::load(flag) {
        Ok(c) => {
            tracing::info!("{}", c.describe_source());
            Some(c)
        }
        Err(e) => {
            eprintln!("wxagent: error: {e}");
            None
        }
    }
}
