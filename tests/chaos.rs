//! Issue 5 item 6, chaos through the real binaries: four sessions under one `wxagent run` for
//! over a minute while the simulator garbles, fails and drops synccheck / webwxsync / webwxinit
//! answers, the control plane is down for 20 s in the middle and workers are SIGKILLed at random
//! moments; numbered messages are injected throughout. Afterwards every message reached the
//! control plane with the right content, in order per session; a repeat carries its first copy's
//! event id unless a kill of that worker explains a re-fetch (DESIGN §3.3: the server dedupes by
//! msg_id); every worker process ever seen is reaped and none is left behind.
//!
//! The random choices come from a seed printed at the start; `WXAGENT_CHAOS_SEED=<n>` replays
//! them (the timing of the processes does not replay).

mod common;

use common::*;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const SESSIONS: usize = 4;
/// The issue asks for at least 60 s of chaos.
const RUN: Duration = Duration::from_secs(65);
const OUTAGE_FROM: Duration = Duration::from_secs(22);
const OUTAGE_FOR: Duration = Duration::from_secs(20);
/// Kills at random moments over the run, plus one inside the outage.
const RANDOM_KILLS: usize = 4;
/// One message per tick, to the sessions in turn: one per second per session.
const TICK: Duration = Duration::from_millis(250);
/// After the run: resumes, the delivery backoff grown during the outage, the last kills.
const SETTLE: Duration = Duration::from_secs(180);

/// xorshift64*: enough randomness to pick moments and victims, and replayable from its seed.
struct Rng(u64);

impl Rng {
    /// Spreads a seed's bits (splitmix64), so nearby seeds such as clock readings differ.
    fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)).max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A moment in [from, to).
    fn between(&mut self, from: Duration, to: Duration) -> Duration {
        let span = (to - from).as_millis() as u64;
        from + Duration::from_millis(self.next() % span.max(1))
    }
}

#[derive(Debug)]
struct Kill {
    session: String,
    pid: u32,
    at_ms: u64,
}

enum Outage {
    Before,
    Down,
    Over,
}

/// Remembers every worker pid the supervisor ever listed or had as a child.
fn note_pids(sup: &Supervisor, seen: &mut BTreeSet<u32>) {
    seen.extend(
        sup.sessions()
            .iter()
            .filter_map(|s| s["pid"].as_u64().map(|p| p as u32)),
    );
    seen.extend(sup.children().iter().map(|c| c.pid));
}

#[test]
fn a_minute_of_faults_outages_and_kills_loses_nothing() {
    let seed = std::env::var("WXAGENT_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(now_ms);
    eprintln!("chaos seed {seed} (WXAGENT_CHAOS_SEED={seed} replays the choices)");
    let mut rng = Rng::new(seed);

    let sim = Sim::start();
    let cfg = TestConfig::supervisor(&sim, &SupervisorSettings::default());
    let mut sup = Supervisor::start(&cfg.path);
    let sup_pid = sup.pid();
    let sessions: Vec<(String, u64)> = (0..SESSIONS)
        .map(|i| {
            let id = format!("chaos-{i}");
            let uin = sim.account_with_bob(&format!("Chaos {i}"));
            sim.log_in_session(&sup, uin, &id);
            (id, uin)
        })
        .collect();
    let mut seen = BTreeSet::new();
    note_pids(&sup, &mut seen);

    let mut kill_at: Vec<Duration> = (0..RANDOM_KILLS)
        .map(|_| rng.between(Duration::from_secs(3), RUN - Duration::from_secs(5)))
        .collect();
    kill_at.push(rng.between(OUTAGE_FROM, OUTAGE_FROM + OUTAGE_FOR));
    kill_at.sort();
    eprintln!("chaos kills at {kill_at:?}");
    for route in ["synccheck", "webwxsync", "webwxinit"] {
        sim.post(
            "/__sim/faults",
            json!({"route": route, "http500": 0.10, "malformed": 0.05, "drop": 0.05}),
        );
    }

    let mut ledger = Ledger::default();
    let mut kills: Vec<Kill> = Vec::new();
    let mut outage = Outage::Before;
    let start = Instant::now();
    let mut tick = 0u32;
    while start.elapsed() < RUN {
        let t = start.elapsed();
        outage = match outage {
            Outage::Before if t >= OUTAGE_FROM => {
                sim.set_mode(json!({"down": true}));
                Outage::Down
            }
            Outage::Down if t >= OUTAGE_FROM + OUTAGE_FOR => {
                sim.set_mode(json!({"down": false}));
                Outage::Over
            }
            o => o,
        };
        let (id, uin) = &sessions[tick as usize % SESSIONS];
        ledger.inject(&sim, id, *uin);
        if kill_at.first().is_some_and(|k| t >= *k) {
            kill_at.remove(0);
            // A worker that runs right now, whatever it is doing (resuming, syncing, draining).
            let running: Vec<(String, u32)> = sup
                .sessions()
                .iter()
                .filter_map(|s| Some((s["id"].as_str()?.to_owned(), s["pid"].as_u64()? as u32)))
                .collect();
            if !running.is_empty() {
                let (session, pid) = running[rng.next() as usize % running.len()].clone();
                if signal_pid(pid, libc::SIGKILL) {
                    eprintln!("chaos: SIGKILL {session} worker {pid} at {t:?}");
                    kills.push(Kill {
                        session,
                        pid,
                        at_ms: now_ms(),
                    });
                }
            }
        }
        note_pids(&sup, &mut seen);
        tick += 1;
        // Pacing: the run must last (the issue asks for elapsed time), one message per tick.
        let next = start + TICK * tick;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
    }
    assert!(
        matches!(outage, Outage::Over),
        "the outage ended in the run"
    );
    assert!(kills.len() >= 3, "workers were killed: {kills:?}");

    sim.delete("/__sim/faults");
    let stats = sim.get("/__sim/stats");
    for fault in ["http500", "drop", "malformed"] {
        assert!(
            stats["faults_injected"][fault].as_u64() > Some(0),
            "{fault} faults fired: {stats}"
        );
    }

    // Everything arrives, with its content, in order per session.
    let delivered = ledger.wait_all_delivered(&sim, SETTLE);
    ledger.assert_content(&sim, &delivered);
    for (id, _) in &sessions {
        let order = ledger.first_acceptance_order(id, &delivered);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(order, sorted, "{id}: messages first accepted out of order");
    }
    // A repeat is the same spooled report sent again, or (after a kill between spooling and
    // saving the SyncKey) the message fetched again by the next worker.
    let injected: BTreeMap<&str, &Injected> =
        ledger.sent.iter().map(|m| (m.msg_id.as_str(), m)).collect();
    let (mut same_id, mut refetched) = (0, 0);
    for (msg_id, copies) in ledger.copies(&delivered) {
        let m = injected[msg_id.as_str()];
        for c in &copies[1..] {
            if c.event_id == copies[0].event_id {
                same_id += 1;
                continue;
            }
            let explained = kills
                .iter()
                .any(|k| k.session == m.session && k.at_ms >= m.at_ms && k.at_ms <= c.time_ms);
            assert!(
                explained,
                "{} was accepted again under another event id ({:?} then {:?}) with no kill of \
                 its worker in between; kills: {kills:?}",
                m.text, copies[0].event_id, c.event_id
            );
            refetched += 1;
        }
    }
    eprintln!(
        "chaos: {} messages, {} accepted reports, {same_id} repeats with the same event id, \
         {refetched} re-fetched after a kill; {} kills",
        ledger.sent.len(),
        delivered.len(),
        kills.len()
    );

    // Every session is back, restarted once per kill, never for another reason.
    for (id, _) in &sessions {
        let killed = kills.iter().filter(|k| &k.session == id).count();
        let s = sup.wait_session(&format!("{id} online"), id, |s| s["state"] == "online");
        assert_eq!(
            s["restarts"].as_u64(),
            Some(killed as u64),
            "{id} restarted once per kill: {s}"
        );
    }
    note_pids(&sup, &mut seen);

    // Processes: the killed workers were reaped by the supervisor, its children are exactly its
    // sessions' workers, and after a SIGTERM nothing of any worker ever seen is left.
    let killed: Vec<u32> = kills.iter().map(|k| k.pid).collect();
    wait_until("the killed workers reaped", || {
        killed.iter().all(|&p| !process_exists(p)).then_some(())
    });
    sup.assert_reaped(&killed);
    let current: BTreeSet<u32> = sup
        .sessions()
        .iter()
        .filter_map(|s| s["pid"].as_u64().map(|p| p as u32))
        .collect();
    assert_eq!(current.len(), SESSIONS, "one worker per session");
    let children: BTreeSet<u32> = sup.children().iter().map(|c| c.pid).collect();
    assert_eq!(
        children, current,
        "the supervisor's children are its workers"
    );
    for pid in seen.difference(&current) {
        assert!(!process_exists(*pid), "earlier worker {pid} is gone");
    }
    sup.signal(libc::SIGTERM);
    assert_eq!(sup.wait_exit().code(), Some(0));
    let mut all: Vec<u32> = seen.into_iter().collect();
    all.push(sup_pid);
    assert_no_process_left(&all);
}
