//! The supervisor (`wxagent run`): one per machine. Polls the control plane for agent tasks,
//! starts one worker process per QR session, watches, restarts and reaps them, polls
//! `pull_task` for their accounts when they ask (`pull`), and stops them all on shutdown. It
//! never speaks the WeChat protocol.

pub mod admin;
pub mod child;
#[cfg(target_os = "linux")]
pub mod forkserver;
pub mod metrics;
pub mod process;
pub mod pull;
pub mod registry;
pub mod run;
