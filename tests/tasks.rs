//! Reports and tasks end to end through the real binaries: `wxagent sim` (simulator and
//! reference control plane) and `wxagent run` with its worker, one of each per test.
//!
//! - every `report_new_msg` type of the mapping table in src/worker/reports.rs, the friend
//!   request report, and the contact reports (new friend, friend removed, member changes,
//!   group removed, the batched `report_contact_update`);
//! - each supported task: the control plane queues it, the simulator's outbox shows the request
//!   it caused, `report_task_result` says 1 (and the answering report where there is one);
//! - each unsupported task: result 0 with a reason that says why;
//! - pacing under a burst of 50 queued texts, and a rate-limited account failing sends without a
//!   retry loop;
//! - media: task 1 image / gif / video / file / link / mini-program units fetched from a loopback
//!   file server started here, a 3 MiB file in chunks, a loopback URL refused by default, and
//!   task 9 uploading received image / file / voice / video byte for byte.
//!
//! Simulator bytes are read back through its own download endpoints with the worker's saved
//! session cookies (`Sim::download_as`).

mod common;

use common::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

const SESSION: &str = "qs-tasks";

/// Alice: three friends (Carol with a remark and details), a small group (Team, Bob shown as
/// "Bobby"), a big one (Big, 47 members, above the 40 where invitations replace direct adds)
/// and an official account.
fn alice_spec() -> Value {
    json!({
        "nickname": "Alice",
        "friends": [
            {"nickname": "Bob"},
            {"nickname": "Carol", "remark": "Caz", "sex": 2, "province": "Zhejiang", "city": "Hangzhou"},
            {"nickname": "Dave"},
        ],
        "groups": [
            {"name": "Team", "members": ["Bob", "Carol"], "display_names": {"Bob": "Bobby"}},
            {"name": "Big", "members": ["Bob"], "extra_members": 45},
        ],
        "officials": [{"nickname": "News Daily"}],
    })
}

/// One simulator, one supervisor and one logged-in account. Fields drop in order: the
/// supervisor drains while the simulator still answers, the state directory goes last.
struct Env {
    sup: Supervisor,
    sim: Sim,
    cfg: TestConfig,
    uin: u64,
    wxid: String,
}

impl Env {
    fn start(extra: &str) -> Env {
        Env::start_with(extra, |_| {})
    }

    /// Starts everything with `extra` config sections, lets `before_login` adjust the
    /// simulator or control plane, then logs Alice in through task 200 and the uploaded QR code
    /// and waits for her `report_contact`.
    fn start_with(extra: &str, before_login: impl FnOnce(&Sim)) -> Env {
        let sim = Sim::start();
        let uin = sim.create_account(alice_spec());
        before_login(&sim);
        let cfg = TestConfig::supervisor(
            &sim,
            &SupervisorSettings {
                extra: extra.to_owned(),
                ..SupervisorSettings::default()
            },
        );
        let sup = Supervisor::start(&cfg.path);
        let task = sim.queue_qr_task(SESSION);
        assert_eq!(sim.wait_task_result(&task)["task_result"], 1);
        sim.wait_qr_session("the QR upload", SESSION, |s| {
            s["uploads"].as_u64() >= Some(1)
        });
        let uuid = sim.uploaded_qr_uuid(SESSION);
        sim.post(&format!("/__sim/qr/{uuid}/scan"), json!({"uin": uin}));
        sim.post(&format!("/__sim/qr/{uuid}/confirm"), json!({}));
        let wxid = uin.to_string();
        sim.wait_request("the login's contact report", "report_contact", |r| {
            r["wxid"] == wxid
        });
        sup.wait_session("online", SESSION, |s| s["state"] == "online");
        Env {
            sup,
            sim,
            cfg,
            uin,
            wxid,
        }
    }

    /// The UserName of a contact or group by nickname.
    fn name(&self, nickname: &str) -> String {
        self.sim.user_name(self.uin, nickname)
    }

    /// Queues a task for the account through `pull_task`; returns its id.
    fn queue(&self, task_type: i64, dict: Value) -> String {
        self.sim.queue_task(&self.wxid, task_type, dict, "pull")
    }

    /// Queues a task and waits for its result record.
    fn run(&self, task_type: i64, dict: Value) -> Value {
        let id = self.queue(task_type, dict);
        let r = self.sim.wait_task_result(&id);
        assert_eq!(r["wxid"], self.wxid.as_str(), "{r}");
        assert_eq!(r["reports"], 1, "one result per task: {r}");
        r
    }

    /// Runs a task that must succeed.
    fn ok(&self, task_type: i64, dict: Value) -> Value {
        let r = self.run(task_type, dict.clone());
        assert_eq!(r["task_result"], 1, "task {task_type} {dict}: {r}");
        assert_eq!(r["error_reason"], "", "{r}");
        r
    }

    /// The outbox entries of one endpoint, oldest first.
    fn sent(&self, endpoint: &str) -> Vec<Value> {
        self.sim
            .outbox(self.uin)
            .into_iter()
            .filter(|m| m["endpoint"] == endpoint)
            .collect()
    }

    /// The one outbox entry of `endpoint` satisfying `pred` (present once the task's result is).
    fn sent_one(&self, endpoint: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let all = self.sent(endpoint);
        let hits: Vec<&Value> = all.iter().filter(|m| pred(m)).collect();
        assert_eq!(hits.len(), 1, "one matching {endpoint} entry in {all:?}");
        hits[0].clone()
    }

    /// Waits for a report of `action` by this account whose data satisfies `pred`.
    fn report(&self, what: &str, action: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.sim
            .wait_request(what, action, |r| r["wxid"] == self.wxid && pred(&r["data"]))["data"]
            .clone()
    }

    fn inject(&self, body: Value) -> Value {
        self.sim.inject(self.uin, body)
    }

    /// Waits for the `report_new_msg` unit of the injected message `injected`.
    fn unit_of(&self, injected: &Value) -> Value {
        let id = injected["msg_id"].clone();
        let unit = self
            .sim
            .wait_reported_message(&format!("the report of message {id}"), |m| {
                m["msg_id"] == id
            });
        assert!(
            unit["msg_timestamp"].as_u64() > Some(1_000_000_000_000),
            "milliseconds: {unit}"
        );
        unit
    }

    /// Media bytes as the simulator serves them to this session.
    fn sim_media(&self, endpoint_query: &str) -> Vec<u8> {
        self.sim
            .download_as(&self.cfg.state_dir(), SESSION, endpoint_query)
    }
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

// ---------------------------------------------------------------------------------------------
// Reports

#[test]
fn every_message_type_is_reported_with_its_fields() {
    let env = Env::start("");
    let (wxid, bob, carol, team) = (
        env.wxid.as_str(),
        env.name("Bob"),
        env.name("Carol"),
        env.name("Team"),
    );
    let index =
        |web_type: u64, injected: &Value| format!("{web_type}:{}", text(&injected["msg_id"]));
    let private = |unit: &Value| {
        assert_eq!(unit["room_wxid"], "", "{unit}");
        assert_eq!(unit["wxid_from"], bob.as_str(), "{unit}");
        assert_eq!(unit["wxid_to"], wxid, "{unit}");
    };

    // 1 text: private without mentions, and in a group with them.
    let m = env.inject(json!({"type": "text", "from": "Bob", "text": "hello Alice"}));
    let u = env.unit_of(&m);
    private(&u);
    assert_eq!(
        (u["msg_type"].as_i64(), text(&u["msg"])),
        (Some(1), "hello Alice")
    );
    assert!(u.get("atUserList").is_none(), "no mentions: {u}");
    let hello = m;
    let m = env.inject(json!({"type": "text", "group": "Team", "from": "Carol", "text": "look", "mentions": ["self", "Bob"]}));
    let u = env.unit_of(&m);
    assert_eq!(u["msg_type"], 1);
    assert!(text(&u["msg"]).ends_with("look"), "{u}");
    assert_eq!(
        (&u["room_wxid"], &u["wxid_from"], &u["wxid_to"]),
        (&json!(team), &json!(carol), &json!(team))
    );
    assert_eq!(strings(&u["atUserList"]), set(&[wxid, &bob]), "{u}");

    // 1 with a Url: a location, as text.
    let m = env.inject(
        json!({"type": "location", "from": "Bob", "label": "Cafe Lu", "address": "Road 1"}),
    );
    let u = env.unit_of(&m);
    private(&u);
    assert_eq!(u["msg_type"], 1);
    let msg = text(&u["msg"]);
    assert!(
        msg.starts_with("[location] ")
            && msg.contains("Cafe Lu")
            && msg.contains("apis.map.qq.com"),
        "{u}"
    );

    // 3 image.
    let m = env.inject(json!({"type": "image", "from": "Bob"}));
    let u = env.unit_of(&m);
    private(&u);
    assert_eq!(u["msg_type"], 3);
    assert_eq!(u["file_index"], index(3, &m), "{u}");

    // 34 voice.
    let m = env.inject(json!({"type": "voice", "from": "Bob", "length_ms": 2500}));
    let u = env.unit_of(&m);
    private(&u);
    assert_eq!(u["msg_type"], 34);
    assert_eq!(u["file_index"], index(34, &m), "{u}");
    assert!(
        text(&u["raw_msg"]).contains("<voicemsg") && text(&u["raw_msg"]).contains("2500"),
        "{u}"
    );

    // 43 video and 62 micro-video: both 43.
    for (kind, web) in [("video", 43), ("microvideo", 62)] {
        let m = env.inject(json!({"type": kind, "from": "Bob", "length_ms": 4000}));
        let u = env.unit_of(&m);
        private(&u);
        assert_eq!(u["msg_type"], 43, "{kind}: {u}");
        assert_eq!(u["file_index"], index(web, &m), "{u}");
        assert!(text(&u["raw_msg"]).contains("<videomsg"), "{u}");
    }

    // 42 card.
    let m = env.inject(json!({"type": "card", "from": "Bob", "card": "Dave"}));
    let u = env.unit_of(&m);
    private(&u);
    assert_eq!(u["msg_type"], 42);
    let raw = text(&u["raw_msg"]);
    assert!(
        raw.contains("nickname=\"Dave\"") && raw.contains(&env.name("Dave")),
        "unescaped card XML: {u}"
    );

    // 47 sticker.
    let md5 = "0123456789abcdef0123456789abcdef";
    let m = env.inject(json!({"type": "emoji", "from": "Bob", "md5": md5}));
    let u = env.unit_of(&m);
    private(&u);
    assert_eq!(u["msg_type"], 47);
    assert_eq!(
        u["emoji_url"],
        format!("http://emoji.qpic.cn/wx_emoji/{md5}/"),
        "{u}"
    );
    assert!(text(&u["raw_msg"]).contains("<emoji "), "{u}");

    // 49/5 link.
    let m = env.inject(json!({"type": "link", "from": "Bob", "title": "Rust & you", "desc": "a <b> read", "url": "https://example.invalid/a?b=1&c=2"}));
    let u = env.unit_of(&m);
    private(&u);
    assert_eq!(u["msg_type"], 49);
    assert_eq!(u["link_title"], "Rust & you", "{u}");
    assert_eq!(u["link_desc"], "a <b> read", "{u}");
    assert_eq!(u["link_url"], "https://example.invalid/a?b=1&c=2", "{u}");
    assert_eq!(u["link_img_url"], "", "{u}");
    assert_eq!(u["sub_type"], 5, "{u}");
    assert!(text(&u["raw_msg"]).contains("<appmsg"), "{u}");

    // 49/33 mini-program: 4901.
    let m = env.inject(json!({"type": "mini_program", "from": "Bob", "title": "Tiny shop", "app_name": "Shop", "url": "https://example.invalid/mp"}));
    let u = env.unit_of(&m);
    private(&u);
    assert_eq!(u["msg_type"], 4901);
    assert_eq!(u["file_index"], index(49, &m), "{u}");
    let raw = text(&u["raw_msg"]);
    assert!(
        raw.contains("<weappinfo>") && raw.contains("Tiny shop"),
        "{u}"
    );

    // 49/2000 transfer: 4902.
    let m = env.inject(json!({"type": "transfer", "from": "Bob", "amount": "8.88"}));
    let u = env.unit_of(&m);
    private(&u);
    assert_eq!(u["msg_type"], 4902);
    assert_eq!(u["paysubtype"], 1, "{u}");
    assert!(u["transferid"].is_string(), "{u}");
    assert!(text(&u["raw_msg"]).contains("8.88"), "{u}");

    // 49/6 file: 4903.
    let m = env.inject(
        json!({"type": "file", "from": "Bob", "file_name": "report 2024.pdf", "size": 2048}),
    );
    let u = env.unit_of(&m);
    private(&u);
    assert_eq!(u["msg_type"], 4903);
    assert_eq!(u["file_index"], index(49, &m), "{u}");
    assert_eq!(u["file_name"], "report 2024.pdf", "{u}");
    assert_eq!(u["file_size"], 2048, "{u}");
    assert!(
        text(&u["raw_msg"]).contains(text(&m["media_id"])),
        "attachid in the XML: {u}"
    );

    // 10000 system notice and 10002 recall: 10000 with plain text.
    let m = env.inject(json!({"type": "system", "from": "Bob", "text": "Bob 拍了拍 我"}));
    let u = env.unit_of(&m);
    assert_eq!(u["msg_type"], 10000);
    assert_eq!(u["raw_msg"], "Bob 拍了拍 我", "{u}");
    let m = env.inject(json!({"type": "recall", "msg_id": hello["msg_id"]}));
    let u = env.unit_of(&m);
    assert_eq!(u["msg_type"], 10000);
    let raw = text(&u["raw_msg"]);
    assert!(
        raw.contains("撤回") && !raw.contains('<'),
        "plain text: {u}"
    );

    // 37 friend request: its own report, with what task 13 needs.
    let m = env
        .inject(json!({"type": "friend_request", "nickname": "Erin", "greeting": "hi, I'm Erin"}));
    let req = env.report("the friend request", "report_friend_add_request", |d| {
        d["v1"] == m["user_name"]
    });
    assert_eq!(req["v2"], m["ticket"], "{req}");
    assert_eq!(req["notice_word"], "hi, I'm Erin", "{req}");
    let raw = text(&req["raw_msg"]);
    assert!(
        raw.contains("fromnickname=\"Erin\""),
        "unescaped request XML: {req}"
    );

    // 51 status notify: not a chat message. Reports are in order, so once a later message is
    // reported, an earlier one would have been.
    let notify = env.inject(json!({"type": "status_notify", "to": "Bob"}));
    let marker = env.inject(json!({"type": "text", "from": "Bob", "text": "marker"}));
    env.unit_of(&marker);
    // Retried deliveries of one report carry the same event id and are flagged `duplicate`.
    let units: Vec<Value> = env
        .sim
        .requests("report_new_msg")
        .into_iter()
        .filter(|r| r["duplicate"] != true)
        .map(|r| r["data"]["msg"].clone())
        .collect();
    for skipped in [&notify["msg_id"], &m["msg_id"]] {
        assert!(
            !units.iter().any(|u| &u["msg_id"] == skipped),
            "{skipped} reported: {units:?}"
        );
    }
    // Each message once.
    let mut seen = BTreeMap::new();
    for u in &units {
        *seen.entry(u["msg_id"].to_string()).or_insert(0) += 1;
    }
    assert!(seen.values().all(|&n| n == 1), "{seen:?}");
}

#[test]
fn contact_changes_are_reported() {
    let env = Env::start("");
    let (wxid, team, big, dave, carol) = (
        env.wxid.as_str(),
        env.name("Team"),
        env.name("Big"),
        env.name("Dave"),
        env.name("Carol"),
    );
    let uin = env.uin;

    // A new friend (accepted on the phone).
    let frank = env.sim.contacts_op(
        uin,
        json!({"op": "add_friend", "nickname": "Frank", "sex": 1}),
    )["user_name"]
        .as_str()
        .expect("user_name")
        .to_owned();
    let nf = env.report("the new friend", "report_new_friend", |d| {
        d["fans_wxid"] == frank
    });
    assert_eq!(nf["nickname"], "Frank", "{nf}");
    for key in [
        "wx_alias",
        "head_img",
        "notice_word",
        "sourceusername",
        "sourcenickname",
    ] {
        assert!(nf[key].is_string(), "{key}: {nf}");
    }
    assert!(!text(&nf["head_img"]).contains("skey"), "{nf}");

    // A friend deleted.
    env.sim
        .contacts_op(uin, json!({"op": "remove_friend", "target": "Dave"}));
    let gone = env.report("the removed friend", "report_friend_removed", |d| {
        d["wxid_removed"] == dave
    });
    assert_eq!(gone.as_object().map(|o| o.len()), Some(1), "{gone}");

    // Members joining and leaving a group.
    env.sim.contacts_op(
        uin,
        json!({"op": "add_member", "group": "Team", "member": "Frank"}),
    );
    let added = env.report("the member added", "report_room_member_change", |d| {
        d["room_wxid"] == team && d["flag"] == 1
    });
    assert_eq!(strings(&added["wxid_list"]), set(&[&frank]), "{added}");
    assert_eq!(added["owner_wxid"], wxid, "owned by the account: {added}");
    env.sim.contacts_op(
        uin,
        json!({"op": "remove_member", "group": "Team", "member": "Carol"}),
    );
    let removed = env.report("the member removed", "report_room_member_change", |d| {
        d["room_wxid"] == team && d["flag"] == 0
    });
    assert_eq!(strings(&removed["wxid_list"]), set(&[&carol]), "{removed}");
    assert_eq!(removed["owner_wxid"], wxid, "{removed}");

    // A group gone.
    env.sim
        .contacts_op(uin, json!({"op": "remove_group", "group": "Big"}));
    env.report("the removed group", "report_room_removed", |d| {
        d["wxid_removed"] == big
    });

    // The batched update (about every 10 s) carries the new friend and the group's new state.
    let entries = || -> Vec<Value> {
        env.sim
            .requests("report_contact_update")
            .iter()
            .filter(|r| r["wxid"] == wxid)
            .flat_map(|r| {
                r["data"]["update_list"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .collect()
    };
    let final_team = |e: &Value| {
        e["wxid"] == team
            && e["member_wxid_list"]
                .as_array()
                .is_some_and(|l| l.contains(&json!(frank)) && !l.contains(&json!(carol)))
    };
    wait_until("a contact update with Frank and Team's members", || {
        let all = entries();
        (all.iter().any(|e| e["wxid"] == frank) && all.iter().any(final_team)).then_some(())
    });
    let all = entries();
    let f = all.iter().find(|e| e["wxid"] == frank).expect("frank");
    assert_eq!(f["is_friend"], 1, "user fields + is_friend: {f}");
    assert_eq!(f["nickname"], "Frank", "{f}");
    assert_eq!(f["sex"], 1, "{f}");
    let g = all.iter().rev().find(|e| e["wxid"] == team).expect("team");
    assert!(
        final_team(g),
        "the latest Team entry is the latest state: {g}"
    );
    assert_eq!(g["name"], "Team", "group fields: {g}");
    assert_eq!(g["owner_wxid"], wxid, "{g}");
    assert_eq!(g["member_count"], 3, "{g}");
    assert!(g.get("is_friend").is_none(), "{g}");
}

// ---------------------------------------------------------------------------------------------
// Supported tasks

#[test]
fn text_tasks_with_mentions_reach_the_outbox() {
    let env = Env::start("");
    let (bob, carol, team) = (env.name("Bob"), env.name("Carol"), env.name("Team"));

    // Two units, in order, to a friend.
    env.ok(
        1,
        json!({"wxid_to": bob, "msg_list": [
        {"msg_type": 1, "msg": "first"}, {"msg_type": 1, "msg": "second\nline"}]}),
    );
    let texts = env.sent("webwxsendmsg");
    let contents: Vec<&str> = texts.iter().map(|m| text(&m["content"])).collect();
    assert_eq!(contents, ["first", "second\nline"], "{texts:?}");
    for m in &texts {
        assert_eq!(m["to"], bob.as_str(), "{m}");
        assert_eq!(m["msg_type"], 1, "{m}");
        assert_eq!(m["detail"]["Type"], 1, "{m}");
        // Own sends are reported too, from the account's wxid.
        let u = env
            .sim
            .wait_reported_message("the own text", |u| u["msg_id"] == m["msg_id"]);
        assert_eq!(
            (&u["wxid_from"], &u["wxid_to"]),
            (&json!(env.wxid), &json!(bob)),
            "{u}"
        );
        assert_eq!(u["msg"], m["content"], "{u}");
    }

    // at_style 0: mentions before the text, by the name shown in the group.
    env.ok(1, json!({"wxid_to": team, "at_list": [bob, carol], "msg_list": [{"msg_type": 1, "msg": "standup"}]}));
    env.sent_one("webwxsendmsg", |m| {
        m["to"] == team && m["content"] == "@Bobby\u{2005}@Carol\u{2005}standup"
    });
    // at_style 1: each {$@} in turn; the own account named by its wxid.
    env.ok(
        1,
        json!({"wxid_to": team, "at_style": 1, "at_list": [carol, env.wxid],
        "msg_list": [{"msg_type": 1, "msg": "{$@} and {$@}: lunch?"}]}),
    );
    env.sent_one("webwxsendmsg", |m| {
        m["content"] == "@Carol\u{2005} and @Alice\u{2005}: lunch?"
    });

    // An unknown recipient fails the task and sends nothing.
    let before = env.sent("webwxsendmsg").len();
    let r = env.run(
        1,
        json!({"wxid_to": "Nobody", "msg_list": [{"msg_type": 1, "msg": "x"}]}),
    );
    assert_eq!(r["task_result"], 0, "{r}");
    assert!(
        text(&r["error_reason"]).contains("Nobody"),
        "names the recipient: {r}"
    );
    assert_eq!(env.sent("webwxsendmsg").len(), before);
}

#[test]
fn group_tasks_end_to_end() {
    let env = Env::start("");
    let wxid = env.wxid.as_str();
    let (bob, carol, dave, team, big) = (
        env.name("Bob"),
        env.name("Carol"),
        env.name("Dave"),
        env.name("Team"),
        env.name("Big"),
    );

    // 4: report_room_member_info for both groups.
    env.ok(4, json!({"room_wxid_list": [team, big]}));
    let info = env.report("the member info", "report_room_member_info", |_| true);
    let rooms = info["room_data_list"].as_array().expect("room_data_list");
    assert_eq!(rooms.len(), 2, "{info}");
    let room = rooms.iter().find(|r| r["room_wxid"] == team).expect("Team");
    assert_eq!(room["name"], "Team", "{room}");
    assert_eq!(room["owner_wxid"], wxid, "{room}");
    assert_eq!(room["member_count"], 3, "{room}");
    let members = room["memberInfo_list"].as_array().expect("memberInfo_list");
    let wxids: BTreeSet<String> = members
        .iter()
        .map(|m| text(&m["wxid"]).to_owned())
        .collect();
    assert_eq!(wxids, set(&[wxid, &bob, &carol]), "{room}");
    let b = members.iter().find(|m| m["wxid"] == bob).expect("bob");
    assert_eq!(
        (&b["nickname"], &b["room_nickname"]),
        (&json!("Bob"), &json!("Bobby")),
        "{b}"
    );
    let big_room = rooms.iter().find(|r| r["room_wxid"] == big).expect("Big");
    assert_eq!(big_room["member_count"], 47, "{big_room}");
    assert_eq!(
        big_room["memberInfo_list"].as_array().map(Vec::len),
        Some(47)
    );

    // 2: remove a member → delmember, and the change comes back as a report.
    env.ok(2, json!({"room_wxid": team, "wxid": carol}));
    let e = env.sent_one("webwxupdatechatroom", |m| m["detail"]["fun"] == "delmember");
    assert_eq!(
        (&e["to"], &e["content"]),
        (&json!(team), &json!(carol)),
        "{e}"
    );
    let change = env.report("Carol leaving", "report_room_member_change", |d| {
        d["room_wxid"] == team && d["flag"] == 0
    });
    assert_eq!(strings(&change["wxid_list"]), set(&[&carol]));

    // 3: a small group gets a direct add; a big one (> 40 members) an invitation; flag 0 asks
    // for an invitation whatever the size.
    env.ok(3, json!({"room_wxid": team, "wxid": dave}));
    let e = env.sent_one("webwxupdatechatroom", |m| m["detail"]["fun"] == "addmember");
    assert_eq!(
        (&e["to"], &e["content"]),
        (&json!(team), &json!(dave)),
        "{e}"
    );
    env.ok(3, json!({"room_wxid": big, "wxid": dave}));
    let e = env.sent_one("webwxupdatechatroom", |m| {
        m["detail"]["fun"] == "invitemember"
    });
    assert_eq!(
        (&e["to"], &e["content"]),
        (&json!(big), &json!(dave)),
        "{e}"
    );
    env.ok(3, json!({"room_wxid": team, "wxid": carol, "flag": 0}));
    let invites = env.sent("webwxupdatechatroom");
    assert!(
        invites.iter().any(|m| m["detail"]["fun"] == "invitemember"
            && m["to"] == team
            && m["content"] == carol),
        "{invites:?}"
    );

    // 17: a new group → webwxcreatechatroom, then report_new_room.
    env.ok(17, json!({"member_list": [bob, dave]}));
    let e = env.sent_one("webwxcreatechatroom", |_| true);
    assert_eq!(strings(&e["detail"]["members"]), set(&[&bob, &dave]), "{e}");
    let room = text(&e["to"]).to_owned();
    assert!(room.starts_with("@@"), "{e}");
    let nr = env.report("the new room", "report_new_room", |d| d["wxid"] == room);
    assert_eq!(nr["owner_wxid"], wxid, "{nr}");
    assert_eq!(nr["name"], "Bob、Dave", "{nr}");
    let wxids: BTreeSet<String> = nr["memberInfo_list"]
        .as_array()
        .expect("memberInfo_list")
        .iter()
        .map(|m| text(&m["wxid"]).to_owned())
        .collect();
    assert_eq!(wxids, set(&[wxid, &bob, &dave]), "{nr}");

    // 18: rename → modtopic; the simulator's group has the new name.
    env.ok(18, json!({"room_wxid": team, "room_name": "Team 2"}));
    let e = env.sent_one("webwxupdatechatroom", |m| m["detail"]["fun"] == "modtopic");
    assert_eq!(
        (&e["to"], &e["content"]),
        (&json!(team), &json!("Team 2")),
        "{e}"
    );
    assert_eq!(env.sim.user_name(env.uin, "Team 2"), team);

    // A group task naming a friend as the group fails with a reason.
    let r = env.run(18, json!({"room_wxid": bob, "room_name": "x"}));
    assert_eq!(r["task_result"], 0, "{r}");
    assert!(text(&r["error_reason"]).contains("not a group"), "{r}");
}

#[test]
fn friend_tasks_end_to_end() {
    // The control plane asks for groups only at login.
    let env = Env::start_with("", |sim| {
        sim.set_mode(json!({"flag_report_contact": 2}));
    });
    let wxid = env.wxid.as_str();
    let (bob, carol, team, big) = (
        env.name("Bob"),
        env.name("Carol"),
        env.name("Team"),
        env.name("Big"),
    );
    let contact_reports = || -> Vec<Value> {
        env.sim
            .requests("report_contact")
            .into_iter()
            .filter(|r| r["wxid"] == wxid && r["duplicate"] != true)
            .map(|r| r["data"].clone())
            .collect()
    };
    let lists = |d: &Value| -> Vec<&str> {
        ["friend_list", "group_list", "public_list"]
            .into_iter()
            .filter(|k| d.get(*k).is_some())
            .collect()
    };
    let login = &contact_reports()[0];
    assert_eq!(lists(login), ["group_list"], "flag 2 at login: {login}");
    let groups: BTreeSet<String> = login["group_list"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| text(&g["wxid"]).to_owned())
        .collect();
    assert_eq!(groups, set(&[&team, &big]));

    // 14 without a flag keeps the login's; with one it uses that.
    env.ok(14, json!({}));
    let again = contact_reports();
    assert_eq!(again.len(), 2, "{again:?}");
    assert_eq!(lists(&again[1]), ["group_list"], "{}", again[1]);
    env.ok(14, json!({"flag_report_contact": 5}));
    let again = contact_reports();
    assert_eq!(again.len(), 3);
    let r = &again[2];
    assert_eq!(lists(r), ["friend_list", "public_list"], "{r}");
    let friends: BTreeSet<String> = r["friend_list"]
        .as_array()
        .expect("friends")
        .iter()
        .map(|f| text(&f["nickname"]).to_owned())
        .collect();
    assert_eq!(friends, set(&["Bob", "Carol", "Dave"]), "{r}");
    assert_eq!(r["public_list"][0]["nickname"], "News Daily", "{r}");

    // 16: report_user_info.
    env.ok(16, json!({"wxid": carol}));
    let u = env.report("Carol's details", "report_user_info", |d| {
        d["wxid"] == carol
    });
    assert_eq!(u["nickname"], "Carol", "{u}");
    assert_eq!(u["remark_name"], "Caz", "{u}");
    assert_eq!(u["sex"], 2, "{u}");
    assert_eq!(
        (&u["province"], &u["city"]),
        (&json!("Zhejiang"), &json!("Hangzhou")),
        "{u}"
    );
    assert!(u["is_friend"] == 1 || u["is_friend"] == true, "{u}");
    assert_eq!(strings(&u["room_list"]), set(&[&team]), "{u}");
    assert!(!text(&u["head_img"]).contains("skey"), "{u}");

    // 6: set a remark → webwxoplog CmdId 2; a fresh 16 shows it.
    env.ok(6, json!({"wxid": bob, "remark_name": "Bob B"}));
    let e = env.sent_one("webwxoplog", |_| true);
    assert_eq!(
        (&e["to"], &e["content"]),
        (&json!(bob), &json!("Bob B")),
        "{e}"
    );
    assert_eq!(e["detail"]["CmdId"], 2, "{e}");
    assert_eq!(env.sim.contact(env.uin, "Bob")["remark"], "Bob B");
    env.ok(16, json!({"wxid": bob}));
    let u = env.report("Bob's details", "report_user_info", |d| d["wxid"] == bob);
    assert_eq!(u["remark_name"], "Bob B", "{u}");
    assert_eq!(strings(&u["room_list"]), set(&[&team, &big]), "{u}");

    // 5: a friend request to a member of a group → webwxverifyuser Opcode 2 with the greeting.
    let member = env.name("Big Member 1");
    env.ok(
        5,
        json!({"room_wxid": big, "wxid": member, "msg": "hello from Big"}),
    );
    let e = env.sent_one("webwxverifyuser", |m| m["detail"]["Opcode"] == 2);
    assert_eq!(
        (&e["to"], &e["content"]),
        (&json!(member), &json!("hello from Big")),
        "{e}"
    );

    // 13: accepting a request with the v1/v2 of its report → Opcode 3 with the ticket; the new
    // friend is reported.
    let m = env.inject(json!({"type": "friend_request", "nickname": "Erin", "greeting": "hi"}));
    let req = env.report("the request", "report_friend_add_request", |d| {
        d["v1"] == m["user_name"]
    });
    env.ok(13, json!({"v1": req["v1"], "v2": req["v2"]}));
    let e = env.sent_one("webwxverifyuser", |m| m["detail"]["Opcode"] == 3);
    assert_eq!(e["to"], req["v1"], "{e}");
    assert_eq!(e["detail"]["VerifyUserTicket"], m["ticket"], "{e}");
    let nf = env.report("Erin as a friend", "report_new_friend", |d| {
        d["fans_wxid"] == req["v1"]
    });
    assert_eq!(nf["nickname"], "Erin", "{nf}");
    assert_eq!(env.sim.contact(env.uin, "Erin")["kind"], "friend");

    // 13 with a wrong ticket: the server refuses, the task fails.
    let m = env.inject(json!({"type": "friend_request", "nickname": "Gus"}));
    let req = env.report("Gus's request", "report_friend_add_request", |d| {
        d["v1"] == m["user_name"]
    });
    let r = env.run(13, json!({"v1": req["v1"], "v2": "v2_wrong@stranger"}));
    assert_eq!(r["task_result"], 0, "{r}");
    assert!(!text(&r["error_reason"]).is_empty(), "{r}");
    assert!(
        !text(&r["error_reason"]).contains("v2_wrong"),
        "no ticket in the reason: {r}"
    );
    assert_eq!(env.sim.contact(env.uin, "Gus")["kind"], "stranger");
}

// ---------------------------------------------------------------------------------------------
// Unsupported tasks

#[test]
fn unsupported_tasks_are_answered_with_a_reason() {
    let env = Env::start("");
    let (bob, team) = (env.name("Bob"), env.name("Team"));
    let tasks = [
        (7, json!({"room_wxid": team, "room_nickname": "Al"})),
        (8, json!({"room_wxid": team})),
        (10, json!({"room_wxid": team, "msg": "notice"})),
        (11, json!({"wxid_from": bob, "transferid": "1000050001"})),
        (12, json!({"wxid_delete": bob})),
        (15, json!({"wxid": bob})),
        (
            19,
            json!({"invite_url": "https://support.weixin.qq.com/invite"}),
        ),
        (
            100,
            json!({"tag_name": "vip", "wxid_list": [bob], "op_code": 1}),
        ),
        (101, json!({"old_tag_name": "vip", "new_tag_name": "VIP"})),
        (999, json!({"anything": 1})),
    ];
    // All queued at once: each still gets its own answer.
    let ids: Vec<(i64, String)> = tasks
        .iter()
        .map(|(t, d)| (*t, env.queue(*t, d.clone())))
        .collect();
    for (t, id) in ids {
        let r = env.sim.wait_task_result(&id);
        assert_eq!(r["task_result"], 0, "task {t}: {r}");
        assert_eq!(r["reports"], 1, "{r}");
        let reason = text(&r["error_reason"]);
        assert!(reason.contains(&format!("task {t}")), "names the task: {r}");
        let why = ["web protocol", "on the phone", "unknown task type"];
        assert!(why.iter().any(|w| reason.contains(w)), "says why: {r}");
    }
    // Push units the web protocol cannot send fail their task 1 the same way.
    let r = env.run(
        1,
        json!({"wxid_to": bob, "msg_list": [{"msg_type": 42, "wxid_card": team}]}),
    );
    assert_eq!(r["task_result"], 0, "{r}");
    assert!(
        text(&r["error_reason"]).contains("cannot send contact cards"),
        "{r}"
    );
    let r = env.run(
        1,
        json!({"wxid_to": bob, "msg_list": [{"msg_type": 9999, "msg": "?"}]}),
    );
    assert_eq!(r["task_result"], 0, "{r}");
    assert!(text(&r["error_reason"]).contains("9999"), "{r}");
    // Nothing was sent or changed on the server's side.
    let outbox = env.sim.outbox(env.uin);
    assert!(outbox.is_empty(), "{outbox:?}");
    // The session carries on.
    env.ok(
        1,
        json!({"wxid_to": bob, "msg_list": [{"msg_type": 1, "msg": "still here"}]}),
    );
}

// ---------------------------------------------------------------------------------------------
// Pacing

#[test]
fn fifty_queued_texts_go_out_at_the_configured_rate() {
    const RATE: f64 = 10.0;
    const BURST: f64 = 2.0;
    const N: usize = 50;
    let env = Env::start("[pacing]\nmessages_per_second = 10\nburst = 2\n");
    let bob = env.name("Bob");
    let ids: Vec<String> = (0..N)
        .map(|i| {
            env.queue(
                1,
                json!({"wxid_to": bob, "msg_list": [{"msg_type": 1, "msg": format!("burst {i}")}]}),
            )
        })
        .collect();
    for id in &ids {
        let r = env.sim.wait_task_result(id);
        assert_eq!(r["task_result"], 1, "{r}");
    }
    let sent = env.sent("webwxsendmsg");
    assert_eq!(sent.len(), N, "{sent:?}");
    let mut times: Vec<u64> = sent
        .iter()
        .map(|m| m["time_ms"].as_u64().expect("time_ms"))
        .collect();
    times.sort_unstable();
    // In any window of the simulator's arrival times there are at most burst + rate × window
    // sends. Slack: one send can be in flight when a window opens, plus clock and scheduling
    // jitter.
    const SLACK: f64 = 3.0;
    let mut worst = (f64::NEG_INFINITY, 0, 0);
    for i in 0..N {
        for j in i + 1..N {
            let window = (times[j] - times[i]) as f64 / 1000.0;
            let count = (j - i + 1) as f64;
            let excess = count - (BURST + RATE * window);
            if excess > worst.0 {
                worst = (excess, i, j);
            }
        }
    }
    let (excess, i, j) = worst;
    assert!(
        excess <= SLACK,
        "{} sends within {} ms (sends {i}..={j}); arrival times {times:?}",
        j - i + 1,
        times[j] - times[i]
    );
    eprintln!(
        "{N} sends over {} ms; tightest window {} sends in {} ms ({excess:.1} above burst + rate)",
        times[N - 1] - times[0],
        j - i + 1,
        times[j] - times[i]
    );
}

#[test]
fn rate_limited_account_fails_sends_without_retrying() {
    let env = Env::start("");
    let bob = env.name("Bob");
    env.ok(
        1,
        json!({"wxid_to": bob, "msg_list": [{"msg_type": 1, "msg": "before"}]}),
    );
    let before = env.sim.route_requests("webwxsendmsg");
    env.sim.post(
        &format!("/__sim/sessions/{}/rate_limit", env.uin),
        json!({"on": true}),
    );
    const N: usize = 5;
    let ids: Vec<String> = (0..N)
        .map(|i| env.queue(1, json!({"wxid_to": bob, "msg_list": [{"msg_type": 1, "msg": format!("limited {i}")}]})))
        .collect();
    for id in &ids {
        let r = env.sim.wait_task_result(id);
        assert_eq!(r["task_result"], 0, "{r}");
        let reason = text(&r["error_reason"]).to_ascii_lowercase();
        assert!(
            reason.contains("rate limit"),
            "says it is rate limiting: {r}"
        );
    }
    let tried = env.sim.route_requests("webwxsendmsg") - before;
    assert!(
        (1..=N as u64).contains(&tried),
        "{tried} webwxsendmsg requests for {N} tasks: no retry loop"
    );
    eprintln!("{tried} webwxsendmsg request(s) for {N} rate-limited tasks");
    let outbox = env.sent("webwxsendmsg");
    assert_eq!(outbox.len(), 1, "only the first text went out: {outbox:?}");
    // The account stays logged in.
    assert_eq!(env.sup.session(SESSION).expect("listed")["state"], "online");
    assert!(env.sim.requests("logout").is_empty());
}

// ---------------------------------------------------------------------------------------------
// Media

/// A tiny HTTP/1.1 file server on loopback; records every requested path.
struct FileServer {
    base: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl FileServer {
    fn start(files: Vec<(&'static str, &'static str, Vec<u8>)>) -> FileServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let files = Arc::new(files);
        let log = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let files = files.clone();
                let log = log.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().expect("clone stream"));
                    let mut request = String::new();
                    if reader.read_line(&mut request).is_err() {
                        return;
                    }
                    loop {
                        let mut header = String::new();
                        match reader.read_line(&mut header) {
                            Ok(0) | Err(_) => break,
                            Ok(_) if header == "\r\n" || header == "\n" => break,
                            Ok(_) => {}
                        }
                    }
                    let path = request.split_whitespace().nth(1).unwrap_or("").to_owned();
                    log.lock().unwrap().push(path.clone());
                    let head = |status: &str, ctype: &str, len: usize| {
                        format!(
                            "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
                        )
                    };
                    let _ = match files.iter().find(|(p, _, _)| *p == path) {
                        Some((_, ctype, body)) => conn
                            .write_all(head("200 OK", ctype, body.len()).as_bytes())
                            .and_then(|()| conn.write_all(body)),
                        None => conn.write_all(head("404 Not Found", "text/plain", 0).as_bytes()),
                    };
                    let _ = conn.flush();
                });
            }
        });
        FileServer { base, seen }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

fn png() -> Vec<u8> {
    let img = image::RgbImage::from_fn(32, 24, |x, y| {
        image::Rgb([(x * 7) as u8, (y * 9) as u8, 200])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .expect("encode png");
    out.into_inner()
}

/// A 1×1 GIF89a with a two-colour table (red, blue).
fn gif() -> Vec<u8> {
    let mut g = b"GIF89a".to_vec();
    g.extend([1, 0, 1, 0, 0x80, 0, 0]);
    g.extend([0xff, 0, 0, 0, 0, 0xff]);
    g.extend([0x2c, 0, 0, 0, 0, 1, 0, 1, 0, 0]);
    g.extend([2, 2, 0x44, 1, 0, 0x3b]);
    g
}

fn patterned(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i / 5) as u8).wrapping_mul(17) ^ (i as u8) ^ seed)
        .collect()
}

/// An MP4: an `ftyp isom` box, then an `mdat` box of patterned bytes.
fn mp4() -> Vec<u8> {
    let mut v = vec![0, 0, 0, 0x18];
    v.extend(b"ftypisom");
    v.extend([0, 0, 2, 0]);
    v.extend(b"isommp41");
    let body = patterned(40_000, 3);
    v.extend(u32::try_from(body.len() + 8).expect("small").to_be_bytes());
    v.extend(b"mdat");
    v.extend(body);
    v
}

fn pdf() -> Vec<u8> {
    let mut v = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n".to_vec();
    v.extend(patterned(9_000, 5));
    v.extend(b"\ntrailer << /Root 1 0 R >>\n%%EOF\n");
    v
}

const BIG: usize = 3 * 1024 * 1024;

/// The upload of `media_id` in the outbox.
fn upload_of(env: &Env, media_id: &Value) -> Value {
    env.sent_one("webwxuploadmedia", |u| &u["media_id"] == media_id)
}

#[test]
fn media_push_units_upload_what_the_url_served() {
    let png = png();
    let gif = gif();
    let mp4 = mp4();
    let pdf = pdf();
    let big = patterned(BIG, 9);
    let files = FileServer::start(vec![
        ("/pic.png", "image/png", png.clone()),
        ("/anim.gif", "image/gif", gif.clone()),
        ("/clip.mp4", "video/mp4", mp4.clone()),
        ("/report.pdf", "application/pdf", pdf.clone()),
        ("/big.bin", "application/octet-stream", big.clone()),
        ("/cover.png", "image/png", png.clone()),
    ]);
    let env = Env::start("[media]\nallow_private_urls = true\n");
    let bob = env.name("Bob");

    let r = env.run(1, json!({"wxid_to": bob, "msg_list": [
        {"msg_type": 3, "msg": files.url("/pic.png")},
        {"msg_type": 47, "msg": files.url("/anim.gif")},
        {"msg_type": 43, "video_url": files.url("/clip.mp4")},
        {"msg_type": 43, "video_url": files.url("/report.pdf")},
        {"msg_type": 49, "link_url": "https://example.invalid/story?id=7", "link_title": "A story",
         "link_desc": "worth reading", "link_img_url": "https://example.invalid/thumb.jpg"},
    ]}));
    assert_eq!(r["task_result"], 1, "{r}");
    let to_bob = |m: &Value| m["to"] == bob;

    // The account's own media sends are reported too, once each, from its wxid (spec A.7, B.7).
    for (msg_type, what) in [
        (3, "image"),
        (47, "sticker"),
        (43, "video"),
        (4903, "file"),
        (49, "link"),
    ] {
        let unit = env
            .sim
            .wait_reported_message(&format!("the own {what} report"), |m| {
                m["msg_type"] == msg_type
                    && m["wxid_from"] == env.wxid.as_str()
                    && m["wxid_to"] == bob
            });
        assert_eq!(unit["room_wxid"], "", "{unit}");
    }
    let own: std::collections::BTreeSet<String> = env
        .sim
        .reported_messages()
        .into_iter()
        .filter(|m| m["wxid_from"] == env.wxid.as_str())
        .map(|m| m["msg_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(own.len(), 5, "one report per own send (by msg_id): {own:?}");

    // Each medium: an upload whose bytes (read back from the simulator) are the served ones,
    // sent through its endpoint with that MediaId.
    let check_upload = |media_id: &Value, served: &[u8], mediatype: &str| {
        let up = upload_of(&env, media_id);
        assert_eq!(up["detail"]["size"], served.len(), "{up}");
        assert_eq!(up["detail"]["mediatype"], mediatype, "{up}");
        let back = env.sim_media(&format!("webwxgetmedia?mediaid={}", text(media_id)));
        assert!(
            back == served,
            "upload {media_id} differs from the served bytes ({} vs {})",
            back.len(),
            served.len()
        );
        up
    };
    let img = env.sent_one("webwxsendmsgimg", to_bob);
    check_upload(&img["media_id"], &png, "pic");
    let emo = env.sent_one("webwxsendemoticon", to_bob);
    let up = check_upload(&emo["media_id"], &gif, "doc");
    assert_eq!(up["detail"]["chunks"], 1, "{up}");
    let vid = env.sent_one("webwxsendvideomsg", to_bob);
    check_upload(&vid["media_id"], &mp4, "video");
    let apps = env.sent("webwxsendappmsg");
    assert_eq!(apps.len(), 2, "a file and a link: {apps:?}");
    let file = &apps[0];
    let xml = text(&file["content"]);
    let attach = xml
        .split("<attachid>")
        .nth(1)
        .and_then(|s| s.split("</attachid>").next())
        .unwrap_or_else(|| panic!("no attachid: {file}"));
    check_upload(&json!(attach), &pdf, "doc");
    assert!(
        xml.contains(&format!("<totallen>{}</totallen>", pdf.len())),
        "{file}"
    );
    assert!(
        xml.contains("<type>6</type>") && xml.contains("report") && xml.contains("pdf"),
        "{file}"
    );
    let link = text(&apps[1]["content"]);
    for part in [
        "A story",
        "worth reading",
        "https://example.invalid/story?id=7",
        "<type>5</type>",
    ] {
        assert!(link.contains(part), "{part:?} in the link card: {link}");
    }
    // The units went out in order, and the file server saw each URL once (the link's URLs are
    // not fetched).
    let endpoints: Vec<String> = env
        .sim
        .outbox(env.uin)
        .iter()
        .filter(|m| m["endpoint"] != "webwxuploadmedia")
        .map(|m| text(&m["endpoint"]).to_owned())
        .collect();
    assert_eq!(
        endpoints,
        [
            "webwxsendmsgimg",
            "webwxsendemoticon",
            "webwxsendvideomsg",
            "webwxsendappmsg",
            "webwxsendappmsg"
        ]
    );
    assert_eq!(
        files.seen(),
        ["/pic.png", "/anim.gif", "/clip.mp4", "/report.pdf"]
    );

    // A 3 MiB file goes up in 512 KiB chunks.
    let uploads_before = env.sim.route_requests("webwxuploadmedia");
    env.ok(
        1,
        json!({"wxid_to": bob, "msg_list": [{"msg_type": 43, "video_url": files.url("/big.bin")}]}),
    );
    let chunks = env.sim.route_requests("webwxuploadmedia") - uploads_before;
    assert!(chunks >= 6, "{chunks} upload requests for 3 MiB");
    let apps = env.sent("webwxsendappmsg");
    let xml = text(&apps[2]["content"]);
    let attach = xml
        .split("<attachid>")
        .nth(1)
        .and_then(|s| s.split("</attachid>").next())
        .unwrap_or_else(|| panic!("no attachid: {xml}"));
    let up = check_upload(&json!(attach), &big, "doc");
    assert!(up["detail"]["chunks"].as_u64() >= Some(6), "{up}");

    // The bytes decide, not the unit: a PDF named as an image goes as a file.
    env.ok(
        1,
        json!({"wxid_to": bob, "msg_list": [{"msg_type": 3, "msg": files.url("/report.pdf")}]}),
    );
    let apps = env.sent("webwxsendappmsg");
    assert_eq!(apps.len(), 4, "{apps:?}");
    assert!(
        text(&apps[3]["content"]).contains("<type>6</type>"),
        "{}",
        apps[3]
    );
    assert_eq!(env.sent("webwxsendmsgimg").len(), 1);

    // A mini-program card with its cover.
    let raw = "<appmsg appid=\"wx0123456789ab\" sdkver=\"0\"><title>Tiny shop</title><type>33</type><url>https://example.invalid/mp</url></appmsg>";
    env.ok(1, json!({"wxid_to": bob, "msg_list": [{"msg_type": 4901, "raw_msg": raw, "cover_url": files.url("/cover.png")}]}));
    let apps = env.sent("webwxsendappmsg");
    assert_eq!(apps.len(), 5, "{apps:?}");
    assert!(
        text(&apps[4]["content"]).contains("Tiny shop"),
        "{}",
        apps[4]
    );
    assert_eq!(apps[4]["to"], bob.as_str());
}

#[test]
fn loopback_urls_are_refused_by_default() {
    let files = FileServer::start(vec![("/pic.png", "image/png", png())]);
    let env = Env::start("");
    let bob = env.name("Bob");
    let r = env.run(
        1,
        json!({"wxid_to": bob, "msg_list": [{"msg_type": 3, "msg": files.url("/pic.png")}]}),
    );
    assert_eq!(r["task_result"], 0, "{r}");
    let reason = text(&r["error_reason"]);
    assert!(
        reason.contains("127.0.0.1") && reason.contains("loopback"),
        "names the address: {r}"
    );
    assert!(
        files.seen().is_empty(),
        "the file server saw {:?}",
        files.seen()
    );
    assert!(env.sim.outbox(env.uin).is_empty());
}

#[test]
fn task_9_uploads_received_media_byte_for_byte() {
    let env = Env::start("");
    let image = env.inject(json!({"type": "image", "from": "Bob"}));
    let file = env
        .inject(json!({"type": "file", "from": "Bob", "file_name": "notes.pdf", "size": 700_000}));
    let image_unit = env.unit_of(&image);
    let file_unit = env.unit_of(&file);

    let index = image_unit["file_index"].clone();
    let r = env.run(9, json!({"file_index": index}));
    assert_eq!(r["task_result"], 1, "{r}");
    let uploaded = env
        .sim
        .get_bytes(&format!("/__cp/uploads/media/{}", text(&index)));
    let original = env.sim_media(&format!("webwxgetmsgimg?MsgID={}", text(&image["msg_id"])));
    assert!(!original.is_empty());
    assert!(uploaded == original, "task 9 image bytes differ");
    let uploads = env.sim.get("/__cp/uploads")["uploads"].clone();
    let rec = uploads
        .as_array()
        .and_then(|l| l.iter().find(|u| u["file_index"] == index).cloned())
        .unwrap_or_else(|| panic!("no upload record: {uploads}"));
    assert_eq!(rec["content_type"], "image/jpeg", "{rec}");
    assert!(text(&rec["file_name"]).ends_with(".jpg"), "{rec}");
    assert_eq!(rec["size"], original.len(), "{rec}");

    let index = file_unit["file_index"].clone();
    env.ok(9, json!({"file_index": index}));
    let uploaded = env
        .sim
        .get_bytes(&format!("/__cp/uploads/media/{}", text(&index)));
    let original = env.sim_media(&format!(
        "webwxgetmedia?mediaid={}",
        text(&file["media_id"])
    ));
    assert_eq!(original.len(), 700_000);
    assert!(uploaded == original, "task 9 file bytes differ");
    let uploads = env.sim.get("/__cp/uploads")["uploads"].clone();
    let rec = uploads
        .as_array()
        .and_then(|l| l.iter().find(|u| u["file_index"] == index).cloned())
        .unwrap_or_else(|| panic!("no upload record: {uploads}"));
    assert_eq!(rec["file_name"], "notes.pdf", "{rec}");

    // Voice and video, from their own download endpoints.
    for (kind, endpoint, ext) in [
        ("voice", "webwxgetvoice", ".mp3"),
        ("video", "webwxgetvideo", ".mp4"),
    ] {
        let m = env.inject(json!({"type": kind, "from": "Bob"}));
        let index = env.unit_of(&m)["file_index"].clone();
        env.ok(9, json!({"file_index": index}));
        let uploaded = env
            .sim
            .get_bytes(&format!("/__cp/uploads/media/{}", text(&index)));
        let original = env.sim_media(&format!("{endpoint}?msgid={}", text(&m["msg_id"])));
        assert!(!original.is_empty());
        assert!(
            uploaded == original,
            "task 9 {kind} bytes differ ({} vs {})",
            uploaded.len(),
            original.len()
        );
        let uploads = env.sim.get("/__cp/uploads")["uploads"].clone();
        let rec = uploads
            .as_array()
            .and_then(|l| l.iter().find(|u| u["file_index"] == index).cloned())
            .unwrap_or_else(|| panic!("no upload record: {uploads}"));
        assert!(text(&rec["file_name"]).ends_with(ext), "{rec}");
    }

    // A message without media, and an index that names nothing, fail with a reason; nothing
    // more is uploaded.
    let uploads = env.sim.get("/__cp/uploads")["uploads"]
        .as_array()
        .map(Vec::len);
    let link = env.inject(
        json!({"type": "link", "from": "Bob", "title": "t", "url": "https://example.invalid/"}),
    );
    env.unit_of(&link);
    let r = env.run(
        9,
        json!({"file_index": format!("49:{}", text(&link["msg_id"]))}),
    );
    assert_eq!(r["task_result"], 0, "{r}");
    assert!(!text(&r["error_reason"]).is_empty(), "{r}");
    assert_eq!(
        env.sim.get("/__cp/uploads")["uploads"]
            .as_array()
            .map(Vec::len),
        uploads
    );
    let r = env.run(9, json!({"file_index": "3:999999"}));
    assert_eq!(r["task_result"], 0, "{r}");
    assert!(!text(&r["error_reason"]).is_empty(), "{r}");
}
