//! tracing set-up: human-readable lines on stderr, level chosen by `-v` or `RUST_LOG`.
//!
//! Levels (DESIGN §5): ERROR = an operator must act, WARN = something went wrong and was
//! recovered, INFO = lifecycle (start, login, logout, exit), DEBUG/TRACE = detail. Nothing per
//! message at INFO in the sync loop.
//!
//! **Secrets only at TRACE.** Cookies, tickets, `skey`, `wxsid`, `pass_ticket`, the
//! control-plane `secret_key` and anything derived from them (signatures, full request URLs or
//! bodies that carry them) may appear only in TRACE events, never at DEBUG or above, and never
//! in error messages (errors are logged at any level). Log their presence instead
//! ("skey: set"), or use [`crate::config::Secret`], whose Debug/Display redact. TRACE is for a
//! developer's own machine; `-vv` output must not be pasted into tickets unredacted.

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// The filter used when `RUST_LOG` is unset: info for everything, more for this crate only
/// (dependencies such as hyper are far too chatty at debug).
fn default_directives(verbosity: u8) -> &'static str {
    match verbosity {
        0 => "info",
        1 => "info,wxagent=debug",
        _ => "info,wxagent=trace",
    }
}

/// The filter to install, and a complaint to log once logging works when `RUST_LOG` was set
/// but unusable (the defaults for `verbosity` apply then).
fn choose_filter(verbosity: u8, rust_log: Option<&str>) -> (EnvFilter, Option<String>) {
    let fallback = || EnvFilter::new(default_directives(verbosity));
    match rust_log.map(str::trim).filter(|s| !s.is_empty()) {
        None => (fallback(), None),
        Some(directives) => match EnvFilter::builder().parse(directives) {
            Ok(filter) => (filter, None),
            Err(e) => (
                fallback(),
                Some(format!(
                    "ignoring RUST_LOG={directives:?} ({e}); using {:?}",
                    default_directives(verbosity)
                )),
            ),
        },
    }
}

/// Installs the global subscriber: compact lines with the target, on stderr (stdout is kept for
/// program output such as `wxagent sim` printing its address). `verbosity` is the `-v` count:
/// 0 → info, 1 → debug for wxagent, 2+ → trace for wxagent. `RUST_LOG`, when set, overrides.
/// Calling it again (or after another subscriber was installed) changes nothing.
pub fn init(verbosity: u8) {
    let rust_log = std::env::var("RUST_LOG").ok();
    let (filter, complaint) = choose_filter(verbosity, rust_log.as_deref());
    let installed = tracing_subscriber::fmt()
        .compact()
        .with_target(true)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        // A failed write is not reported on stderr: when stderr is the broken pipe (the
        // reader is gone), `eprintln!` would panic the task that logged.
        .log_internal_errors(false)
        .try_init()
        .is_ok();
    if let (true, Some(complaint)) = (installed, complaint) {
        tracing::warn!("{complaint}");
    }
}

/// Logging for a supervised worker: the same lines without time stamps or colours, because the
/// supervisor re-logs each line (with its own time and the session's span) by its level word.
pub fn init_child(verbosity: u8) {
    let rust_log = std::env::var("RUST_LOG").ok();
    let (filter, complaint) = choose_filter(verbosity, rust_log.as_deref());
    let installed = tracing_subscriber::fmt()
        .compact()
        .without_time()
        .with_target(true)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(filter)
        // The supervisor reads our stderr; once it is gone every write fails, and reporting
        // that on stderr would panic the logging task (e.g. the one that starts the drain).
        .log_internal_errors(false)
        .try_init()
        .is_ok();
    if let (true, Some(complaint)) = (installed, complaint) {
        tracing::warn!("{complaint}");
    }
}

/// Logging for tests: output goes through the test harness's capture (shown only for failing
/// tests), debug for wxagent unless `RUST_LOG` says otherwise. Safe to call from every test.
pub fn init_for_tests() {
    let rust_log = std::env::var("RUST_LOG").ok();
    let (filter, _) = choose_filter(1, rust_log.as_deref());
    // Err only means a subscriber is already installed (an earlier test called this).
    let _ = tracing_subscriber::fmt()
        .compact()
        .with_target(true)
        .with_test_writer()
        .with_env_filter(filter)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::level_filters::LevelFilter;

    fn debug_default() -> String {
        EnvFilter::new("info,wxagent=debug").to_string()
    }

    #[test]
    fn verbosity_raises_detail_for_this_crate_only() {
        for (v, crate_level) in [(0, "info"), (1, "debug"), (2, "trace"), (9, "trace")] {
            let (filter, complaint) = choose_filter(v, None);
            assert!(complaint.is_none());
            let text = filter.to_string();
            if v == 0 {
                assert_eq!(text, "info");
            } else {
                assert!(
                    text.contains(&format!("wxagent={crate_level}")),
                    "{v}: {text}"
                );
                assert!(text.contains("info"), "{v}: {text}");
            }
        }
        assert_eq!(
            choose_filter(0, None).0.max_level_hint(),
            Some(LevelFilter::INFO)
        );
        assert_eq!(
            choose_filter(2, None).0.max_level_hint(),
            Some(LevelFilter::TRACE)
        );
    }

    #[test]
    fn rust_log_overrides_verbosity() {
        let (filter, complaint) = choose_filter(2, Some("warn"));
        assert!(complaint.is_none());
        assert_eq!(filter.max_level_hint(), Some(LevelFilter::WARN));
        let (filter, _) = choose_filter(0, Some("wxagent::worker=trace"));
        assert_eq!(filter.to_string(), "wxagent::worker=trace");
        // Empty counts as unset.
        assert_eq!(choose_filter(1, Some("  ")).0.to_string(), debug_default());
    }

    #[test]
    fn unusable_rust_log_falls_back_with_a_complaint() {
        let (filter, complaint) = choose_filter(1, Some("wxagent=loud"));
        assert_eq!(filter.to_string(), debug_default());
        let complaint = complaint.expect("a complaint about RUST_LOG");
        assert!(
            complaint.starts_with("ignoring RUST_LOG=\"wxagent=loud\""),
            "{complaint}"
        );
    }

    #[test]
    fn init_for_tests_is_idempotent() {
        init_for_tests();
        init_for_tests();
        init(2);
        tracing::debug!("still logging after repeated initialisation");
    }
}
