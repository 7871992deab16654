//! The supervised worker's `main`, shared by `wxagent worker` (an executed worker) and a worker
//! forked from the fork-server template (`supervisor::forkserver`): allocator settings, the
//! configuration, a one-thread runtime, the session, and the final `Ended` pipe message.

use crate::config::Config;
use crate::exit::WorkerExit;
use std::path::Path;
use tokio_util::sync::CancellationToken;

/// Runs one supervised session to its end; returns the process exit code. Logging must be set
/// up by the caller (`logging::init_child`).
pub fn main(config_path: Option<&Path>, session: String) -> i32 {
    super::memory::tune_allocator();
    let config = match Config::load(config_path) {
        Ok(c) => {
            tracing::info!("{}", c.describe_source());
            c
        }
        Err(e) => {
            eprintln!("wxagent: error: {e}");
            return WorkerExit::Usage.code().into();
        }
    };
    // One thread for the session (plus the blocking pool for file I/O): hundreds of workers
    // share a machine, and a worker's work is waiting.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wxagent: error: cannot start the runtime: {e}");
            return WorkerExit::Failure.code().into();
        }
    };
    let outcome = rt.block_on(async move {
        let root = CancellationToken::new();
        crate::shutdown::install(root.clone());
        tokio::spawn(super::memory::trim_loop());
        super::supervised::run(config, session, root).await
    });
    let exit = outcome.exit();
    super::supervised::emit_line(super::ipc::WorkerMessage::Ended {
        exit_code: exit.code(),
        outcome: outcome.to_string(),
    });
    // The stdin watcher sits in a blocking read that a plain runtime drop would wait for.
    rt.shutdown_background();
    exit.code().into()
}
