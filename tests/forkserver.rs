//! Workers forked from the fork-server template (`[agent] fork_server`, the Linux default),
//! through the real binaries: a forked worker is the supervisor's own child in its own group
//! with a worker's command line; it outlives the template; a dead template is reaped and
//! replaced; nothing is left after the supervisor stops; and `fork_server = false` executes
//! workers as before. Both kinds start with the allocator tuning in their environment, and a
//! forked worker leaves the template's heap pages shared.

mod common;

use common::*;

fn cmdline(pid: u32) -> Vec<String> {
    proc_list(pid, "cmdline")
}

/// The worker's `GLIBC_TUNABLES`, if its environment has one.
fn tunables(pid: u32) -> Option<String> {
    environ(pid)
        .into_iter()
        .find_map(|v| v.strip_prefix("GLIBC_TUNABLES=").map(str::to_owned))
}

/// Resident and shared KiB of the `[heap]` mapping that starts at `start` in `pid`, and the
/// start of its first `[heap]` mapping.
fn heap(pid: u32, start: Option<&str>) -> (String, u64, u64) {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut found: Option<(String, u64, u64)> = None;
    let mut inside = false;
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or_default();
        if first.contains('-') && !first.ends_with(':') {
            let range_start = first.split('-').next().unwrap_or_default();
            inside = found.is_none()
                && line.trim_end().ends_with("[heap]")
                && start.is_none_or(|s| s == range_start);
            if inside {
                found = Some((range_start.to_owned(), 0, 0));
            }
            continue;
        }
        if let (true, Some(f)) = (inside, found.as_mut()) {
            let kib = words
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
            match first {
                "Rss:" => f.1 = kib,
                "Shared_Clean:" | "Shared_Dirty:" => f.2 += kib,
                _ => {}
            }
        }
    }
    found.unwrap_or_else(|| panic!("process {pid} has no [heap] mapping{start:?}"))
}

/// Asks for session `id` and waits for its first QR upload; returns the worker's pid.
fn start_session(sim: &Sim, sup: &Supervisor, id: &str) -> u32 {
    sim.request_qr_session(id);
    sup.worker_pid(id)
}

#[test]
fn forked_workers_are_the_supervisors_children_and_outlive_the_template() {
    let sim = Sim::start();
    let cfg = TestConfig::supervisor(&sim, &SupervisorSettings::default());
    let mut sup = Supervisor::start(&cfg.path);

    let first = start_session(&sim, &sup, "fk-a");
    let line = sup.wait_log("the first worker's start", &["worker started", "fk-a"]);
    assert!(
        line.contains("forked=true"),
        "forked from the template: {line}"
    );
    let template = sup.fork_server().expect("a fork-server template runs");
    let worker = sup
        .children()
        .into_iter()
        .find(|c| c.pid == first)
        .unwrap_or_else(|| panic!("worker {first} is not the supervisor's child"));
    assert_eq!(worker.pgrp, first as i32, "the worker leads its own group");
    assert_ne!(template.pgrp, worker.pgrp, "not in the template's group");
    let args = cmdline(first);
    assert_eq!(
        args[1..4],
        ["worker", "--session", "fk-a"],
        "a worker's command line: {args:?}"
    );
    assert!(args.iter().any(|a| a == "--config"), "{args:?}");
    assert!(
        tunables(first).is_some_and(|t| t.contains("glibc.malloc.tcache_count=")),
        "a forked worker runs with the allocator tuning: {:?}",
        tunables(first)
    );

    // The template filled its heap's holes before forking, so the worker's allocations (a
    // runtime, two HTTP clients, a QR code and its upload by now) went above them and most of
    // the template's resident heap is still one copy shared with it. Without the plugging a
    // worker had written into nearly every one of those pages.
    let (start, template_rss, _) = heap(template.pid, None);
    let (_, _, shared) = heap(first, Some(&start));
    assert!(
        shared * 2 >= template_rss,
        "the worker shares {shared} of the template's {template_rss} resident heap KiB"
    );
    assert_eq!(
        std::fs::read_link(format!("/proc/{first}/exe")).unwrap(),
        std::fs::read_link(format!("/proc/{}/exe", sup.pid())).unwrap(),
        "the same binary"
    );

    // The template dies: the worker it made keeps running, the template is reaped (no zombie),
    // and the next session gets a new template.
    assert!(signal_pid(template.pid, libc::SIGKILL));
    wait_until("the dead template to be reaped", || {
        (!process_exists(template.pid)).then_some(())
    });
    assert!(process_alive(first), "the worker outlives its template");
    let second = start_session(&sim, &sup, "fk-b");
    let line = sup.wait_log("the second worker's start", &["worker started", "fk-b"]);
    assert!(line.contains("forked=true"), "{line}");
    let replacement = sup.fork_server().expect("a new template");
    assert_ne!(replacement.pid, template.pid);
    assert_eq!(cmdline(second)[1..4], ["worker", "--session", "fk-b"]);

    // SIGTERM: every worker and the template are gone, nothing is left a zombie.
    sup.signal(libc::SIGTERM);
    let status = sup.wait_exit();
    assert!(status.success(), "{status:?}");
    wait_until("every process to be gone", || {
        [first, second, replacement.pid]
            .iter()
            .all(|p| !process_exists(*p))
            .then_some(())
    });
    assert_no_process_left(&[first, second, replacement.pid]);
}

#[test]
fn fork_server_off_executes_each_worker() {
    let sim = Sim::start();
    let cfg = TestConfig::supervisor(
        &sim,
        &SupervisorSettings {
            agent: "fork_server = false".into(),
            ..SupervisorSettings::default()
        },
    );
    let mut sup = Supervisor::start(&cfg.path);
    let pid = start_session(&sim, &sup, "ex-a");
    let line = sup.wait_log("the worker's start", &["worker started", "ex-a"]);
    assert!(line.contains("forked=false"), "executed: {line}");
    assert!(
        sup.fork_server().is_none(),
        "no template without fork_server"
    );
    assert_eq!(cmdline(pid)[1..4], ["worker", "--session", "ex-a"]);
    assert!(
        tunables(pid).is_some_and(|t| t.contains("glibc.malloc.tcache_count=")),
        "an executed worker runs with the allocator tuning: {:?}",
        tunables(pid)
    );
    sup.signal(libc::SIGTERM);
    assert!(sup.wait_exit().success());
    assert_no_process_left(&[pid]);
}
