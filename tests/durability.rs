//! Issue 5 ("nothing lost, nothing stuck") through the real binaries: `wxagent run` with its
//! workers against `wxagent sim` and its reference control plane.
//!
//! - a SIGKILLed worker is restarted, resumes its saved session without a scan and reports every
//!   message, including those injected while it was dead; its neighbours are untouched;
//! - a SIGKILLed supervisor: the workers drain and save on their own, a new `wxagent run` with
//!   the same config resumes every session without a scan and nothing is lost;
//! - a 60 s control-plane outage: everything is reported afterwards, in injection order per
//!   session, any repeat with the event id of its first copy;
//! - a full spool: the documented error, a small spool directory, and the messages that did not
//!   fit are fetched again later (the SyncKey did not move past them);
//! - a saved session the server rejects is deleted and replaced by a fresh QR code under the same
//!   `qr_session_id`.
//!
//! Messages are numbered texts from Bob ([`Ledger`]); "delivered" means the control plane
//! answered the `report_new_msg` with HTTP 200.

mod common;

use common::*;
use serde_json::json;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// The reason a resume from the saved session reports (`report_qr_status`, B.2).
const RESUMED: &str = "resume webwxinit: saved session accepted";

/// After an outage the delivery backoff may have grown to its 30 s cap; give it room.
const DRAIN: Duration = Duration::from_secs(150);

/// `n` accounts logged in as sessions `<prefix>-0`…; returns (session id, uin, worker pid).
fn online_sessions(sim: &Sim, sup: &Supervisor, prefix: &str, n: usize) -> Vec<(String, u64, u32)> {
    (0..n)
        .map(|i| {
            let id = format!("{prefix}-{i}");
            let uin = sim.account_with_bob(&format!("Owner {i}"));
            let pid = sim.log_in_session(sup, uin, &id);
            (id, uin, pid)
        })
        .collect()
}

/// The session resumed from its saved state: the control plane heard the resume, and it saw
/// no QR code after the first one.
fn assert_resumed_without_scan(sim: &Sim, id: &str) {
    let s = sim.qr_session(id).expect("qr session listed");
    assert_eq!(s["uploads"], 1, "no new QR code for {id}: {s}");
    let history = sim.qr_history(id);
    assert!(
        history
            .iter()
            .any(|(status, reason)| status == "confirmed" && reason == RESUMED),
        "{id} reported its resume: {history:?}"
    );
    assert_eq!(
        history.iter().filter(|(s, _)| s == "uploaded").count(),
        1,
        "one QR code in {id}'s history: {history:?}"
    );
}

/// Per session, the messages were first accepted in the order they were injected.
fn assert_order(ledger: &Ledger, sessions: &[&str], delivered: &[Delivered]) {
    for &id in sessions {
        let order = ledger.first_acceptance_order(id, delivered);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(order, sorted, "{id}: messages accepted out of order");
        let injected = ledger.sent.iter().filter(|m| m.session == id).count();
        assert_eq!(order.len(), injected, "{id}: every message accepted");
    }
}

/// A message accepted more than once was the same spooled report sent again: every copy has
/// the event id of the first.
fn assert_repeats_keep_their_event_id(ledger: &Ledger, delivered: &[Delivered]) {
    for (msg_id, copies) in ledger.copies(delivered) {
        let first = &copies[0].event_id;
        for c in &copies[1..] {
            assert_eq!(
                &c.event_id, first,
                "a repeat of {msg_id} carries the event id of its first copy"
            );
        }
    }
}

/// The `login` reports for `wxid` that the control plane accepted.
fn logins(sim: &Sim, wxid: &str) -> Vec<serde_json::Value> {
    sim.get(&format!(
        "/__cp/requests?action=login&wxid={wxid}&status=200"
    ))["requests"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn killed_worker_resumes_without_a_scan_and_loses_nothing() {
    let sim = Sim::start();
    let cfg = TestConfig::supervisor(&sim, &SupervisorSettings::default());
    let sup = Supervisor::start(&cfg.path);
    let sessions = online_sessions(&sim, &sup, "dk", 3);
    let mut ledger = Ledger::default();
    for (id, uin, _) in &sessions {
        for _ in 0..3 {
            ledger.inject(&sim, id, *uin);
        }
    }
    ledger.wait_all_delivered(&sim, WAIT);

    let (victim, victim_uin, old) = sessions[1].clone();
    // A burst still in flight when the worker dies: fetched, maybe spooled, maybe not.
    for _ in 0..5 {
        ledger.inject(&sim, &victim, victim_uin);
    }
    assert!(signal_pid(old, libc::SIGKILL), "worker {old} was alive");
    wait_until("the killed worker to be reaped", || {
        (!process_exists(old)).then_some(())
    });
    // While no worker polls for the account, the server keeps queuing.
    for _ in 0..5 {
        ledger.inject(&sim, &victim, victim_uin);
    }
    for (id, uin, _) in [&sessions[0], &sessions[2]] {
        ledger.inject(&sim, id, *uin);
    }
    let restarted = sup.wait_session("the restarted worker online", &victim, |s| {
        s["state"] == "online" && s["restarts"] == 1 && s["pid"].as_u64() != Some(u64::from(old))
    });
    assert!(
        restarted["last_exit"]
            .as_str()
            .is_some_and(|e| e.contains("crashed")),
        "{restarted}"
    );
    let new = restarted["pid"].as_u64().expect("pid") as u32;
    for _ in 0..3 {
        ledger.inject(&sim, &victim, victim_uin);
    }

    let delivered = ledger.wait_all_delivered(&sim, WAIT);
    ledger.assert_content(&sim, &delivered);
    let ids: Vec<&str> = sessions.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_order(&ledger, &ids, &delivered);

    assert_resumed_without_scan(&sim, &victim);
    let wxid = victim_uin.to_string();
    let logins = logins(&sim, &wxid);
    assert_eq!(logins.len(), 2, "one login per worker: {logins:?}");
    assert_eq!(logins[1]["data"]["qr_session_id"], victim.as_str());
    assert_eq!(
        logins[1]["data"]["machine_id"],
        format!("{MACHINE_ID}_{new}")
    );
    // The neighbours never noticed.
    for (id, _, pid) in [&sessions[0], &sessions[2]] {
        let s = sup.session(id).expect("listed");
        assert_eq!(s["pid"], *pid, "{s}");
        assert_eq!(s["restarts"], 0, "{s}");
    }
    sup.assert_reaped(&[old]);
    let children: BTreeSet<u32> = sup.children().iter().map(|c| c.pid).collect();
    let expected = BTreeSet::from([sessions[0].2, new, sessions[2].2]);
    assert_eq!(
        children, expected,
        "the supervisor's children are its sessions"
    );
}

#[test]
fn restarted_supervisor_resumes_every_session_without_a_scan() {
    let sim = Sim::start();
    let cfg = TestConfig::supervisor(&sim, &SupervisorSettings::default());
    let mut sup = Supervisor::start(&cfg.path);
    let sessions = online_sessions(&sim, &sup, "ds", 3);
    let mut ledger = Ledger::default();
    for (id, uin, _) in &sessions {
        for _ in 0..2 {
            ledger.inject(&sim, id, *uin);
        }
    }
    ledger.wait_all_delivered(&sim, WAIT);
    let first_sup = sup.pid();

    sup.signal(libc::SIGKILL);
    sup.wait_exit();
    // Injected while the workers notice and drain.
    for (id, uin, _) in &sessions {
        ledger.inject(&sim, id, *uin);
    }
    let old: Vec<u32> = sessions.iter().map(|(_, _, pid)| *pid).collect();
    for &pid in &old {
        wait_until(&format!("orphaned worker {pid} to exit"), || {
            (!process_alive(pid)).then_some(())
        });
    }
    for (id, uin, _) in &sessions {
        let saved = cfg.state_dir().join(format!("sessions/{id}/session.json"));
        assert!(saved.is_file(), "{id} saved its session on the way out");
        // Each drained with `logout` reason shutdown and kept its web session.
        let wxid = uin.to_string();
        let logout = sim.wait_request("the drain logout", "logout", |r| r["wxid"] == wxid);
        assert_eq!(logout["data"]["reason"], "shutdown", "{logout}");
        assert_eq!(sim.session(*uin).expect("web session")["alive"], true);
    }
    // And while nothing runs at all.
    for (id, uin, _) in &sessions {
        for _ in 0..3 {
            ledger.inject(&sim, id, *uin);
        }
    }

    drop(sup);
    let mut sup = Supervisor::start(&cfg.path);
    let mut new = Vec::new();
    for (id, uin, _) in &sessions {
        sup.wait_log(
            &format!("the resume of {id}"),
            &["resuming a saved session", &format!("session={id}")],
        );
        let s = sup.wait_session(&format!("{id} online again"), id, |s| {
            s["state"] == "online"
        });
        assert_eq!(s["account"], uin.to_string().as_str(), "{s}");
        new.push(s["pid"].as_u64().expect("pid") as u32);
    }
    for (id, uin, _) in &sessions {
        ledger.inject(&sim, id, *uin);
    }
    let delivered = ledger.wait_all_delivered(&sim, WAIT);
    ledger.assert_content(&sim, &delivered);
    let ids: Vec<&str> = sessions.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_order(&ledger, &ids, &delivered);

    for ((id, uin, _), pid) in sessions.iter().zip(&new) {
        assert_resumed_without_scan(&sim, id);
        let logins = logins(&sim, &uin.to_string());
        assert_eq!(logins.len(), 2, "{id}: {logins:?}");
        assert_eq!(logins[1]["data"]["qr_session_id"], id.as_str());
        assert_eq!(
            logins[1]["data"]["machine_id"],
            format!("{MACHINE_ID}_{pid}")
        );
    }
    let waiting: Vec<serde_json::Value> = sim.get("/__sim/qr")["pending"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|q| q["state"] == "waiting")
        .collect();
    assert!(waiting.is_empty(), "nobody asked for a scan: {waiting:?}");
    let children: BTreeSet<u32> = sup.children().iter().map(|c| c.pid).collect();
    assert_eq!(children, new.iter().copied().collect::<BTreeSet<u32>>());

    let second_sup = sup.pid();
    sup.signal(libc::SIGTERM);
    assert_eq!(sup.wait_exit().code(), Some(0));
    let mut ours = new.clone();
    ours.push(second_sup);
    assert_no_process_left(&ours);
    // The first run's workers were orphans: whoever adopted them reaps them, in its own time.
    for pid in old.into_iter().chain([first_sup]) {
        let live: Vec<ProcStat> = processes_in_group(pid)
            .into_iter()
            .filter(|p| p.state != 'Z')
            .collect();
        assert!(live.is_empty(), "left from the first run: {live:?}");
    }
}

/// Linux may send a child its parent-death signal more than once: the signal follows the parent
/// *thread*, and a dying multi-threaded supervisor hands its children from thread to thread,
/// signalling them at each hand-over. A worker drains once however many come: it tells the
/// control plane (`logout`, reason `shutdown`), keeps its web session, and ends as asked, not
/// cut short by a "second signal" (that made the test above flaky).
#[cfg(target_os = "linux")]
#[test]
fn repeated_parent_death_signals_drain_the_worker_once() {
    let sim = Sim::start();
    let cfg = TestConfig::supervisor(&sim, &SupervisorSettings::default());
    let sup = Supervisor::start(&cfg.path);
    let sessions = online_sessions(&sim, &sup, "dh", 1);
    let (id, uin, pid) = &sessions[0];
    let mut ledger = Ledger::default();
    ledger.inject(&sim, id, *uin);
    ledger.wait_all_delivered(&sim, WAIT);

    assert!(
        signal_pid(*pid, libc::SIGHUP),
        "worker {pid} is there to signal"
    );
    // The drain takes a few milliseconds: these land during it (or find the worker gone).
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(2));
        signal_pid(*pid, libc::SIGHUP);
    }
    let wxid = uin.to_string();
    let logout = sim.wait_request("the drain logout", "logout", |r| r["wxid"] == wxid);
    assert_eq!(logout["data"]["reason"], "shutdown", "{logout}");
    sup.wait_log(
        "the drained worker's end",
        &["session ended", "exited: ok (exit code 0)"],
    );
    let log = sup.err.all();
    assert!(
        log.iter()
            .any(|l| l.contains("hang-up: the parent process")),
        "the worker took the hang-up for a stop"
    );
    assert!(
        log.iter().all(|l| !l.contains("second signal")),
        "no hang-up counted as a second signal"
    );
    assert_eq!(sim.session(*uin).expect("web session")["alive"], true);
    let logouts = sim.requests("logout");
    assert_eq!(logouts.len(), 1, "one drain: {logouts:?}");
}

#[test]
fn sixty_second_control_plane_outage_loses_nothing_and_keeps_order() {
    const OUTAGE: Duration = Duration::from_secs(60);
    let sim = Sim::start();
    let cfg = TestConfig::supervisor(&sim, &SupervisorSettings::default());
    let sup = Supervisor::start(&cfg.path);
    let sessions = online_sessions(&sim, &sup, "do", 2);
    let mut ledger = Ledger::default();
    for (id, uin, _) in &sessions {
        for _ in 0..3 {
            ledger.inject(&sim, id, *uin);
        }
    }
    let before = ledger.wait_all_delivered(&sim, WAIT).len();

    sim.set_mode(json!({"down": true}));
    let down_at = Instant::now();
    // The outage must last (the issue asks for 60 s): one message per second per session
    // meanwhile, each tick waited for, not slept blindly past.
    let mut tick = 0u32;
    while down_at.elapsed() < OUTAGE {
        for (id, uin, _) in &sessions {
            ledger.inject(&sim, id, *uin);
        }
        tick += 1;
        let next = down_at + Duration::from_secs(u64::from(tick));
        while Instant::now() < next {
            std::thread::sleep(next - Instant::now());
        }
    }
    // Nothing got through, yet the workers kept trying.
    assert_eq!(
        sim.delivered_messages().len(),
        before,
        "nothing is accepted while the control plane is down"
    );
    let refused = sim.get("/__cp/requests?action=report_new_msg&status=503")["requests"]
        .as_array()
        .map_or(0, Vec::len);
    assert!(refused > 0, "delivery was attempted during the outage");
    sim.set_mode(json!({"down": false}));
    assert!(down_at.elapsed() >= OUTAGE);
    for (id, uin, _) in &sessions {
        for _ in 0..3 {
            ledger.inject(&sim, id, *uin);
        }
    }

    let delivered = ledger.wait_all_delivered(&sim, DRAIN);
    ledger.assert_content(&sim, &delivered);
    let ids: Vec<&str> = sessions.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_order(&ledger, &ids, &delivered);
    assert_repeats_keep_their_event_id(&ledger, &delivered);
    // Event ids follow the spool, which follows the injection order.
    for (id, uin, _) in &sessions {
        let wxid = uin.to_string();
        let seqs: Vec<u64> = delivered
            .iter()
            .filter(|d| d.wxid == wxid)
            .filter_map(|d| d.event_id.as_deref()?.rsplit(':').next()?.parse().ok())
            .collect();
        assert!(
            seqs.windows(2).all(|w| w[0] <= w[1]),
            "{id}: event ids in spool order: {seqs:?}"
        );
    }
    for (id, _, pid) in &sessions {
        let s = sup.session(id).expect("listed");
        assert_eq!(s["pid"], *pid, "the outage cost no worker: {s}");
        assert_eq!(s["state"], "online", "{s}");
    }
    assert!(sim.requests("logout").is_empty(), "nobody logged out");
}

#[test]
fn full_spool_reports_the_documented_error_and_loses_nothing() {
    let sim = Sim::start();
    let cfg = TestConfig::supervisor(
        &sim,
        &SupervisorSettings {
            extra: "[spool]\nmax_events = 5\n".into(),
            ..SupervisorSettings::default()
        },
    );
    let sup = Supervisor::start(&cfg.path);
    let sessions = online_sessions(&sim, &sup, "df", 1);
    let (id, uin, pid) = sessions[0].clone();
    let mut ledger = Ledger::default();
    ledger.inject(&sim, &id, uin);
    ledger.wait_all_delivered(&sim, WAIT);

    sim.set_mode(json!({"down": true}));
    let down = sim.delivered_messages().len();
    for _ in 0..12 {
        ledger.inject(&sim, &id, uin);
    }
    sup.wait_log(
        "the spool-full error",
        &[
            "ERROR",
            "spool full: the [spool] max_events limit of 5 events is reached",
        ],
    );
    // The worker holds its position and asks again later, still refused while the control
    // plane is down: the SyncKey stays before the messages that did not fit.
    let held = |l: &str| l.contains("WARN") && l.contains("events were not confirmed safe");
    sup.err.wait_for_nth("a second refused batch", 2, held);
    for _ in 0..3 {
        ledger.inject(&sim, &id, uin);
    }
    // A contact change in a refused batch is reported once the batch is taken again.
    let friend = sim.contacts_op(
        uin,
        json!({"op": "add_friend", "nickname": "Late Friend", "sex": 2}),
    )["user_name"]
        .as_str()
        .expect("user_name")
        .to_owned();
    sup.err.wait_for_nth("a third refused batch", 3, held);
    let spool = cfg.state_dir().join(format!("sessions/{id}/spool"));
    let (bytes, files) = dir_usage(&spool);
    assert!(
        bytes < 64 * 1024 && files <= 3,
        "the spool stays small: {bytes} bytes in {files} files"
    );
    assert_eq!(
        sim.delivered_messages().len(),
        down,
        "nothing accepted while down"
    );

    sim.set_mode(json!({"down": false}));
    let delivered = ledger.wait_all_delivered(&sim, DRAIN);
    ledger.assert_content(&sim, &delivered);
    assert_order(&ledger, &[id.as_str()], &delivered);
    assert_repeats_keep_their_event_id(&ledger, &delivered);
    sim.wait_request("the new friend's report", "report_new_friend", |r| {
        r["data"]["fans_wxid"] == friend.as_str()
    });
    let s = sup.session(&id).expect("listed");
    assert_eq!(s["pid"], pid, "no restart was needed: {s}");
    let (bytes, _) = dir_usage(&spool);
    assert!(bytes < 64 * 1024, "{bytes} bytes left in the spool");
}

#[test]
fn rejected_saved_session_is_replaced_by_a_fresh_qr_under_the_same_id() {
    let sim = Sim::start();
    let cfg = TestConfig::supervisor(&sim, &SupervisorSettings::default());
    let sup = Supervisor::start(&cfg.path);
    let sessions = online_sessions(&sim, &sup, "dr", 1);
    let (id, uin, old) = sessions[0].clone();
    let saved = cfg.state_dir().join(format!("sessions/{id}/session.json"));
    assert!(saved.is_file(), "the session was saved");

    // The web session dies while the worker is down: frozen first, so it cannot see the kick,
    // then killed; the supervisor restarts it with credentials the server no longer takes.
    assert!(signal_pid(old, libc::SIGSTOP));
    sim.post(
        &format!("/__sim/sessions/{uin}/kick"),
        json!({"retcode": 1101}),
    );
    assert!(signal_pid(old, libc::SIGKILL));
    let restarted = sup.wait_session("the restarted worker", &id, |s| {
        s["restarts"] == 1 && s["pid"].as_u64().is_some_and(|p| p != u64::from(old))
    });
    let new = restarted["pid"].as_u64().expect("pid") as u32;
    // webwxinit refuses; the phone does not confirm the push login.
    let push = wait_until("the push login", || {
        sim.get("/__sim/qr")["pending"]
            .as_array()?
            .iter()
            .find(|q| q["push_uin"].as_u64() == Some(uin))
            .and_then(|q| q["uuid"].as_str().map(str::to_owned))
    });
    sim.post(&format!("/__sim/qr/{push}/expire"), json!({}));

    sim.wait_qr_session("a fresh QR code", &id, |s| s["uploads"] == 2);
    let uuid = sim.uploaded_qr_uuid(&id);
    assert!(!saved.exists(), "the rejected session was removed");
    assert_eq!(sim.qr_sessions().len(), 1, "under the same qr_session_id");
    let history = sim.qr_history(&id);
    let has = |status: &str, reason: &str| {
        history
            .iter()
            .any(|(s, r)| s == status && r.starts_with(reason))
    };
    assert!(
        has("failed", "resume webwxinit: saved session rejected"),
        "{history:?}"
    );
    assert!(has("failed", "resume push_login: "), "{history:?}");
    assert!(
        has("confirmed", "resume qr: falling back to a new QR code"),
        "{history:?}"
    );
    assert_eq!(
        history.last().map(|(s, _)| s.as_str()),
        Some("uploaded"),
        "{history:?}"
    );
    assert_eq!(sup.worker_pid(&id), new, "the same worker shows the code");

    // Scanning it brings the account back under the same id.
    let pid = sim.confirm_qr(&sup, uin, &uuid, &id);
    assert_eq!(pid, new);
    let logins = logins(&sim, &uin.to_string());
    assert_eq!(logins.len(), 2, "{logins:?}");
    assert_eq!(logins[1]["data"]["qr_session_id"], id.as_str());
    wait_until("the new session saved", || saved.is_file().then_some(()));
    let mut ledger = Ledger::default();
    ledger.inject(&sim, &id, uin);
    let delivered = ledger.wait_all_delivered(&sim, WAIT);
    ledger.assert_content(&sim, &delivered);
    sup.assert_reaped(&[old]);
}
