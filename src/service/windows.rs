//! The Windows service: `wxagent service install | uninstall | run`. The service manager starts
//! `wxagent.exe service run --config FILE`; its Stop and Shutdown controls cancel the same root
//! token that SIGTERM cancels on Unix (DESIGN §3.5), so the supervisor drains its workers the
//! same way, while the service reports STOP_PENDING with a wait hint longer than the drain.
//! Logs go to `wxagent.log` in the state directory: a service has no console.

use crate::config::Config;
use crate::supervisor::run::{SupervisorOptions, run as run_supervisor};
use anyhow::Context as _;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use windows_service::service::{
    ServiceAccess, ServiceControl, ServiceControlAccept, ServiceErrorControl, ServiceExitCode,
    ServiceInfo, ServiceStartType, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
use windows_service::{define_windows_service, service_dispatcher};

/// The name the service is registered under.
pub const SERVICE_NAME: &str = "wxagent";
const DISPLAY_NAME: &str = "wxagent";
const DESCRIPTION: &str = "Keeps personal WeChat accounts online over the web protocol for a WeHub-compatible orchestrator";
const SERVICE_TYPE: ServiceType = ServiceType::OWN_PROCESS;

/// The config file handed over from the command line to the service main function, which the
/// dispatcher calls without our arguments.
static CONFIG_PATH: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Registers the service (automatic start, LocalSystem) to run this executable with `config`.
pub fn install(config: Option<&Path>) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the wxagent executable")?;
    let mut arguments = vec![OsString::from("service"), OsString::from("run")];
    if let Some(path) = config {
        let absolute = std::path::absolute(path)
            .with_context(|| format!("cannot resolve {}", path.display()))?;
        arguments.push(OsString::from("--config"));
        arguments.push(absolute.into_os_string());
    }
    let manager = ServiceManager::local_computer(
        None::<&str>,
        ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE,
    )
    .context("cannot open the service manager (run as Administrator)")?;
    let info = ServiceInfo {
        name: OsString::from(SERVICE_NAME),
        display_name: OsString::from(DISPLAY_NAME),
        service_type: SERVICE_TYPE,
        start_type: ServiceStartType::AutoStart,
        error_control: ServiceErrorControl::Normal,
        executable_path: exe,
        launch_arguments: arguments,
        dependencies: vec![],
        account_name: None,
        account_password: None,
    };
    let service = manager
        .create_service(&info, ServiceAccess::CHANGE_CONFIG)
        .context("cannot create the wxagent service")?;
    service
        .set_description(DESCRIPTION)
        .context("cannot set the service description")?;
    println!("installed the {SERVICE_NAME} service; start it with `sc.exe start {SERVICE_NAME}`");
    Ok(())
}

/// Stops the service if it runs, waits for it to drain, and removes it.
pub fn uninstall() -> anyhow::Result<()> {
    let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
        .context("cannot open the service manager (run as Administrator)")?;
    let service = manager
        .open_service(
            SERVICE_NAME,
            ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE,
        )
        .context("cannot open the wxagent service (is it installed?)")?;
    // Marked for deletion first, so it goes away even if the stop below times out.
    service
        .delete()
        .context("cannot delete the wxagent service")?;
    if service.query_status()?.current_state != ServiceState::Stopped {
        let _ = service.stop();
        let deadline = std::time::Instant::now() + stop_wait_hint() + Duration::from_secs(5);
        while service.query_status()?.current_state != ServiceState::Stopped {
            if std::time::Instant::now() > deadline {
                anyhow::bail!(
                    "the service did not stop in time; it is removed once it has stopped"
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    println!("removed the {SERVICE_NAME} service");
    Ok(())
}

/// Hands this process to the service manager (only works when it started us).
pub fn run(config: Option<PathBuf>) -> anyhow::Result<()> {
    let _ = CONFIG_PATH.set(config);
    service_dispatcher::start(SERVICE_NAME, ffi_service_main)
        .context("cannot connect to the service manager; `wxagent service run` is started by Windows, use `wxagent run` in a console")?;
    Ok(())
}

define_windows_service!(ffi_service_main, service_main);

fn service_main(_arguments: Vec<OsString>) {
    if let Err(e) = run_service() {
        tracing::error!("the service failed: {e:#}");
    }
}

/// How long the service manager should wait for a stop: the workers' grace and some slack.
fn stop_wait_hint() -> Duration {
    crate::supervisor::run::WORKER_GRACE + Duration::from_secs(30)
}

fn status(state: ServiceState, exit: ServiceExitCode, wait_hint: Duration) -> ServiceStatus {
    ServiceStatus {
        service_type: SERVICE_TYPE,
        current_state: state,
        controls_accepted: if state == ServiceState::Running {
            ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN
        } else {
            ServiceControlAccept::empty()
        },
        exit_code: exit,
        checkpoint: 0,
        wait_hint,
        process_id: None,
    }
}

fn run_service() -> anyhow::Result<()> {
    let root = CancellationToken::new();
    let on_stop = root.clone();
    let handler = move |control| match control {
        // The one shutdown path: the same cancellation SIGTERM causes on Unix.
        ServiceControl::Stop | ServiceControl::Shutdown => {
            on_stop.cancel();
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    };
    let handle = service_control_handler::register(SERVICE_NAME, handler)
        .context("cannot register the service control handler")?;
    let ok = ServiceExitCode::Win32(0);
    handle.set_service_status(status(
        ServiceState::StartPending,
        ok,
        Duration::from_secs(30),
    ))?;

    let config_path = CONFIG_PATH.get().cloned().flatten();
    let config = match Config::load(config_path.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            // No log file yet (the state dir is in the config): the event is in the exit code.
            let _ = init_logging(&crate::config::default_state_dir());
            tracing::error!("wxagent: error: {e}");
            handle.set_service_status(status(
                ServiceState::Stopped,
                ServiceExitCode::ServiceSpecific(u32::from(crate::exit::WorkerExit::Usage.code())),
                Duration::ZERO,
            ))?;
            return Ok(());
        }
    };
    if let Err(e) = init_logging(&config.agent.state_dir) {
        // Keep running: the supervisor works without a log file.
        eprintln!("wxagent: cannot open the service log: {e:#}");
    }
    tracing::info!("{}", config.describe_source());
    let opts = SupervisorOptions::for_config(
        &config,
        Arc::new(crate::service::ServiceNotifier::disabled()),
    )?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    handle.set_service_status(status(ServiceState::Running, ok, Duration::ZERO))?;
    let result = rt.block_on(async move {
        let stopping = root.clone();
        tokio::spawn(async move {
            stopping.cancelled().await;
            let _ = handle.set_service_status(status(
                ServiceState::StopPending,
                ServiceExitCode::Win32(0),
                stop_wait_hint(),
            ));
        });
        run_supervisor(config, opts, root).await
    });
    let exit = match &result {
        Ok(()) => ok,
        Err(e) => {
            tracing::error!("supervisor failed: {e:#}");
            ServiceExitCode::ServiceSpecific(u32::from(crate::exit::WorkerExit::Failure.code()))
        }
    };
    handle.set_service_status(status(ServiceState::Stopped, exit, Duration::ZERO))?;
    Ok(())
}

/// Logs to `<state_dir>\wxagent.log` (appending), at the level `RUST_LOG` names or INFO.
fn init_logging(state_dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("cannot create {}", state_dir.display()))?;
    let path = state_dir.join("wxagent.log");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .compact()
        .with_target(true)
        .with_ansi(false)
        .with_writer(Mutex::new(file))
        .with_env_filter(filter)
        .log_internal_errors(false)
        .try_init()
        .map_err(|e| anyhow::anyhow!("logging already set up: {e}"))?;
    Ok(())
}
