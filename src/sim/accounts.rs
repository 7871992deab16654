//! Simulated accounts: the contact book (friends, strangers met in groups, official and special
//! accounts, groups with members), how an account is built from a test-control spec, and the
//! contact JSON shapes of spec §6.2/§6.3.
//!
//! UserNames are generated once per account and stay stable across its logins (the real server
//! changes them at every login; clients must not rely on either behaviour).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use serde_json::{Value, json};

use super::content::emoji_spans;
use super::ids;
use super::media::MediaStore;
use super::state::Session;

/// VerifyFlag of an ordinary official account.
pub(crate) const VERIFY_OFFICIAL: u32 = 8;
/// ContactFlag bit of a pinned ("top") contact.
pub(crate) const FLAG_TOP: u32 = 2048;

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Me,
    Friend,
    /// Known only as a group member or a pending friend request.
    Stranger,
    Official,
    Special,
    Group(Group),
}

impl Kind {
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Kind::Me => "self",
            Kind::Friend => "friend",
            Kind::Stranger => "stranger",
            Kind::Official => "official",
            Kind::Special => "special",
            Kind::Group(_) => "group",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub members: Vec<Member>,
    /// UserName of the owner; empty when unknown or the owner left.
    pub owner: String,
    pub encry_id: String,
    /// Saved to the contact book: listed by webwxgetcontact.
    pub saved: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub user_name: String,
    pub display_name: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Contact {
    pub user_name: String,
    pub wxid: String,
    pub nickname: String,
    pub remark: String,
    pub sex: u32,
    pub alias: String,
    pub province: String,
    pub city: String,
    pub signature: String,
    pub verify_flag: u32,
    pub pinned: bool,
    pub head_seq: u64,
    pub attr_status: u64,
    pub kind: Kind,
}

impl Contact {
    pub(crate) fn person(nickname: &str, kind: Kind) -> Self {
        Contact {
            user_name: ids::person_user_name(),
            wxid: ids::wxid(),
            nickname: nickname.to_string(),
            remark: String::new(),
            sex: 0,
            alias: String::new(),
            province: String::new(),
            city: String::new(),
            signature: String::new(),
            verify_flag: 0,
            pinned: false,
            head_seq: rand::random_range(100_000_000..999_999_999u64),
            attr_status: rand::random_range(1_000_000..200_000_000u64),
            kind,
        }
    }

    pub(crate) fn group(name: &str, members: Vec<Member>, owner: String, saved: bool) -> Self {
        Contact {
            user_name: ids::group_user_name(),
            wxid: ids::chatroom_id(),
            nickname: name.to_string(),
            attr_status: 0,
            kind: Kind::Group(Group {
                members,
                owner,
                encry_id: format!("@{}", ids::hex(32)),
                saved,
            }),
            ..Contact::person(name, Kind::Stranger)
        }
    }

    fn special(user_name: &str, nickname: &str, verify_flag: u32) -> Self {
        Contact {
            user_name: user_name.to_string(),
            wxid: user_name.to_string(),
            verify_flag,
            attr_status: 0,
            ..Contact::person(nickname, Kind::Special)
        }
    }

    pub(crate) fn is_group(&self) -> bool {
        matches!(self.kind, Kind::Group(_))
    }

    pub(crate) fn group_data(&self) -> Option<&Group> {
        match &self.kind {
            Kind::Group(g) => Some(g),
            _ => None,
        }
    }

    pub(crate) fn group_data_mut(&mut self) -> Option<&mut Group> {
        match &mut self.kind {
            Kind::Group(g) => Some(g),
            _ => None,
        }
    }

    pub(crate) fn contact_flag(&self) -> u32 {
        let base = match &self.kind {
            Kind::Me => 7,
            Kind::Friend | Kind::Official | Kind::Special => 3,
            Kind::Stranger => 0,
            Kind::Group(g) if g.saved => 3,
            Kind::Group(_) => 2,
        };
        if self.pinned { base | FLAG_TOP } else { base }
    }

    pub(crate) fn head_img_url(&self, skey: &str) -> String {
        if self.is_group() {
            format!(
                "/cgi-bin/mmwebwx-bin/webwxgetheadimg?seq={}&username={}&skey=",
                self.head_seq, self.user_name
            )
        } else {
            format!(
                "/cgi-bin/mmwebwx-bin/webwxgeticon?seq={}&username={}&skey={}",
                self.head_seq, self.user_name, skey
            )
        }
    }
}

/// Which subset of contact fields a response carries (spec §6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    /// webwxinit ContactList and webwxbatchgetcontact: every field, groups with members.
    Full,
    /// webwxgetcontact: every field, groups with `MemberCount` 0 and an empty `MemberList`.
    Listing,
    /// webwxsync ModContactList: the smaller subset, groups with members.
    Mod,
}

fn py_initial(s: &str) -> String {
    s.split_whitespace()
        .filter_map(|w| w.chars().next())
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

fn py_quanpin(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// The contact book of one account. `order` keeps creation order for listings.
#[derive(Debug, Default)]
pub(crate) struct Book {
    contacts: HashMap<String, Contact>,
    order: Vec<String>,
    /// The account's own UserName.
    me: String,
}

impl Book {
    pub(crate) fn insert(&mut self, c: Contact) -> String {
        let name = c.user_name.clone();
        if matches!(c.kind, Kind::Me) {
            self.me = name.clone();
        }
        if self.contacts.insert(name.clone(), c).is_none() {
            self.order.push(name.clone());
        }
        name
    }

    pub(crate) fn remove(&mut self, user_name: &str) -> Option<Contact> {
        let c = self.contacts.remove(user_name)?;
        self.order.retain(|n| n != user_name);
        Some(c)
    }

    pub(crate) fn get(&self, user_name: &str) -> Option<&Contact> {
        self.contacts.get(user_name)
    }

    pub(crate) fn get_mut(&mut self, user_name: &str) -> Option<&mut Contact> {
        self.contacts.get_mut(user_name)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Contact> {
        self.order.iter().filter_map(|n| self.contacts.get(n))
    }

    /// Looks a contact up by UserName, else by nickname (friends, groups and officials before
    /// strangers).
    pub(crate) fn find(&self, name: &str) -> Option<&Contact> {
        if let Some(c) = self.contacts.get(name) {
            return Some(c);
        }
        // Scanned without a lookup per contact (a bench injects every message from a sender
        // named this way); creation order only decides between namesakes.
        let namesakes: Vec<&Contact> = self
            .contacts
            .values()
            .filter(|c| c.nickname == name)
            .collect();
        let first = |wanted: &dyn Fn(&Contact) -> bool| -> Option<&Contact> {
            let mut found = namesakes.iter().copied().filter(|c| wanted(c));
            let one = found.next()?;
            if found.next().is_none() {
                return Some(one);
            }
            self.order.iter().find_map(|n| {
                namesakes
                    .iter()
                    .copied()
                    .find(|c| &c.user_name == n && wanted(c))
            })
        };
        first(&|c| !matches!(c.kind, Kind::Stranger | Kind::Me)).or_else(|| first(&|_| true))
    }

    /// Finds a member of `group` by UserName, nickname or group display name.
    pub(crate) fn find_member<'a>(&'a self, group: &'a Group, name: &str) -> Option<&'a Member> {
        group
            .members
            .iter()
            .find(|m| m.user_name == name)
            .or_else(|| {
                group.members.iter().find(|m| {
                    m.display_name == name
                        || self
                            .contacts
                            .get(&m.user_name)
                            .is_some_and(|c| c.nickname == name)
                })
            })
    }

    pub(crate) fn nickname_of(&self, user_name: &str) -> String {
        self.contacts
            .get(user_name)
            .map(|c| c.nickname.clone())
            .unwrap_or_default()
    }

    pub(crate) fn member_json(&self, m: &Member) -> Value {
        let nick = self.nickname_of(&m.user_name);
        json!({
            "Uin": 0,
            "UserName": m.user_name,
            "NickName": emoji_spans(&nick),
            "AttrStatus": self.contacts.get(&m.user_name).map(|c| c.attr_status).unwrap_or(0),
            "PYInitial": py_initial(&nick),
            "PYQuanPin": py_quanpin(&nick),
            "RemarkPYInitial": "",
            "RemarkPYQuanPin": "",
            "MemberStatus": 0,
            "DisplayName": emoji_spans(&m.display_name),
            "KeyWord": "",
        })
    }

    pub(crate) fn contact_json(&self, c: &Contact, skey: &str, form: Form) -> Value {
        let (member_count, members, owner) = match (&c.kind, form) {
            (Kind::Group(_), Form::Listing) => (0, Vec::new(), String::new()),
            (Kind::Group(g), _) => (
                g.members.len(),
                g.members.iter().map(|m| self.member_json(m)).collect(),
                g.owner.clone(),
            ),
            _ => (0, Vec::new(), String::new()),
        };
        let key_word = match c.kind {
            Kind::Official => "gh_".to_string(),
            Kind::Special => c.user_name.chars().take(3).collect(),
            _ => String::new(),
        };
        let remark = &c.remark;
        if form == Form::Mod {
            return json!({
                "UserName": c.user_name,
                "NickName": emoji_spans(&c.nickname),
                "Sex": c.sex,
                "HeadImgUpdateFlag": 1,
                "ContactType": 0,
                "Alias": c.alias,
                "ChatRoomOwner": owner,
                "HeadImgUrl": c.head_img_url(skey),
                "ContactFlag": c.contact_flag(),
                "MemberCount": member_count,
                "MemberList": members,
                "HideInputBarFlag": 0,
                "Signature": c.signature,
                "VerifyFlag": c.verify_flag,
                "RemarkName": emoji_spans(remark),
                "Statues": 0,
                "AttrStatus": c.attr_status,
                "Province": c.province,
                "City": c.city,
                "SnsFlag": if c.is_group() { 0 } else { 17 },
                "KeyWord": key_word,
            });
        }
        let mut v = json!({
            "Uin": 0,
            "UserName": c.user_name,
            "NickName": emoji_spans(&c.nickname),
            "HeadImgUrl": c.head_img_url(skey),
            "ContactFlag": c.contact_flag(),
            "MemberCount": member_count,
            "MemberList": members,
            "RemarkName": emoji_spans(remark),
            "HideInputBarFlag": 0,
            "Sex": c.sex,
            "Signature": c.signature,
            "VerifyFlag": c.verify_flag,
            "OwnerUin": 0,
            "PYInitial": py_initial(&c.nickname),
            "PYQuanPin": py_quanpin(&c.nickname),
            "RemarkPYInitial": py_initial(remark),
            "RemarkPYQuanPin": py_quanpin(remark),
            "StarFriend": 0,
            "AppAccountFlag": 0,
            "Statues": 0,
            "AttrStatus": c.attr_status,
            "Province": c.province,
            "City": c.city,
            "Alias": c.alias,
            "SnsFlag": if c.is_group() { 0 } else { 17 },
            "UniFriend": 0,
            "DisplayName": "",
            "ChatRoomId": 0,
            "KeyWord": key_word,
            "EncryChatRoomId": "",
            "IsOwner": 0,
        });
        if let Kind::Group(g) = &c.kind
            && form == Form::Full
        {
            v["EncryChatRoomId"] = json!(g.encry_id);
            v["ChatRoomOwner"] = json!(g.owner);
            v["IsOwner"] = json!(u32::from(g.owner == self.me_name()));
        }
        v
    }

    fn me_name(&self) -> &str {
        &self.me
    }
}

/// What the sim recorded for every request that changes something on the server side.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct OutboxEntry {
    pub endpoint: String,
    pub msg_type: u32,
    pub from: String,
    pub to: String,
    pub to_nickname: String,
    pub content: String,
    pub media_id: String,
    pub msg_id: String,
    pub local_id: String,
    pub time_ms: u64,
    #[serde(skip_serializing_if = "Value::is_null")]
    pub detail: Value,
}

/// A message this account's web client sent (for the revoke 2-minute rule).
#[derive(Debug, Clone)]
pub(crate) struct SentRecord {
    pub at: std::time::Instant,
    pub to: String,
}

/// Where a message shown to this account came from (for `recall` injection).
#[derive(Debug, Clone)]
pub(crate) struct MsgMeta {
    /// Chat the message belongs to (peer or group UserName).
    pub chat: String,
    /// Sender UserName (the member in groups; self for messages the account sent).
    pub sender: String,
    pub group: bool,
}

/// A map that forgets its oldest entries past `cap`.
#[derive(Debug)]
pub(crate) struct Bounded<V> {
    map: HashMap<u64, V>,
    order: VecDeque<u64>,
    cap: usize,
}

impl<V> Bounded<V> {
    pub(crate) fn new(cap: usize) -> Self {
        Bounded {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    pub(crate) fn insert(&mut self, k: u64, v: V) {
        if self.map.insert(k, v).is_none() {
            self.order.push_back(k);
            while self.order.len() > self.cap {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }

    pub(crate) fn get(&self, k: u64) -> Option<&V> {
        self.map.get(&k)
    }
}

pub(crate) const OUTBOX_CAP: usize = 10_000;

pub(crate) struct Account {
    pub uin: u64,
    pub inner: Mutex<AccountInner>,
}

pub(crate) struct AccountInner {
    pub nickname: String,
    /// The account's own UserName (stable per account).
    pub me: String,
    pub book: Book,
    pub web_forbidden: bool,
    pub desktop_forbidden: bool,
    pub session: Option<Arc<Session>>,
    pub logins: u64,
    pub outbox: VecDeque<OutboxEntry>,
    pub media: MediaStore,
    pub sent: Bounded<SentRecord>,
    pub messages: Bounded<MsgMeta>,
    /// Pending friend requests: requester UserName → ticket.
    pub pending_requests: HashMap<String, String>,
}

impl AccountInner {
    pub(crate) fn record(&mut self, entry: OutboxEntry) {
        self.outbox.push_back(entry);
        while self.outbox.len() > OUTBOX_CAP {
            self.outbox.pop_front();
        }
    }

    pub(crate) fn me_contact(&self) -> &Contact {
        self.book
            .get(&self.me)
            .expect("the account's own contact is created with the account and never removed")
    }

    /// The name shown for `user_name` in `group` (display name, else nickname).
    pub(crate) fn shown_name(&self, group: Option<&Group>, user_name: &str) -> String {
        group
            .and_then(|g| g.members.iter().find(|m| m.user_name == user_name))
            .map(|m| m.display_name.clone())
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| self.book.nickname_of(user_name))
    }

    /// The account's recent chats in the order the login StatusNotify lists them.
    pub(crate) fn recent_chats(&self, limit: usize) -> Vec<&Contact> {
        let mut out: Vec<&Contact> = self.book.get("filehelper").into_iter().collect();
        out.extend(
            self.book
                .iter()
                .filter(|c| matches!(c.kind, Kind::Friend | Kind::Group(_)))
                .take(limit.saturating_sub(1)),
        );
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Test-control specs

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AccountSpec {
    pub nickname: String,
    pub uin: Option<u64>,
    #[serde(default)]
    pub alias: String,
    #[serde(default)]
    pub sex: u32,
    #[serde(default)]
    pub signature: String,
    #[serde(default)]
    pub friends: Vec<PersonSpec>,
    #[serde(default)]
    pub friend_count: usize,
    #[serde(default)]
    pub groups: Vec<GroupSpec>,
    #[serde(default)]
    pub group_count: usize,
    #[serde(default)]
    pub group_size: usize,
    /// Fill the `group_count` groups with strangers (as real groups mostly are) rather than
    /// with the account's friends.
    #[serde(default)]
    pub stranger_members: bool,
    #[serde(default)]
    pub officials: Vec<OfficialSpec>,
    #[serde(default)]
    pub web_forbidden: bool,
    #[serde(default)]
    pub desktop_forbidden: bool,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct PersonSpec {
    pub nickname: String,
    #[serde(default)]
    pub remark: String,
    #[serde(default)]
    pub sex: u32,
    #[serde(default)]
    pub alias: String,
    #[serde(default)]
    pub province: String,
    #[serde(default)]
    pub city: String,
    #[serde(default)]
    pub signature: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GroupSpec {
    pub name: String,
    #[serde(default)]
    pub members: Vec<String>,
    #[serde(default)]
    pub extra_members: usize,
    /// `"self"` (default) or a member's nickname.
    pub owner: Option<String>,
    #[serde(default)]
    pub display_names: HashMap<String, String>,
    #[serde(default)]
    pub self_display_name: String,
    /// Saved to the contact book (listed by webwxgetcontact); default true.
    pub saved: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OfficialSpec {
    pub nickname: String,
    /// 8 (default) or 24 (verified service account).
    pub verify_flag: Option<u32>,
    #[serde(default)]
    pub signature: String,
}

const MAX_FRIENDS: usize = 50_000;
const MAX_GROUPS: usize = 10_000;
const MAX_GROUP_SIZE: usize = 2_000;

impl PersonSpec {
    fn to_contact(&self, kind: Kind) -> Contact {
        Contact {
            remark: self.remark.clone(),
            sex: self.sex,
            alias: self.alias.clone(),
            province: self.province.clone(),
            city: self.city.clone(),
            signature: self.signature.clone(),
            ..Contact::person(&self.nickname, kind)
        }
    }
}

/// Builds a new account from a spec; errors name the offending part of the spec.
pub(crate) fn build_account(spec: &AccountSpec) -> Result<AccountInner, String> {
    if spec.nickname.is_empty() {
        return Err("nickname must not be empty".into());
    }
    if spec.friends.len() + spec.friend_count > MAX_FRIENDS {
        return Err(format!("at most {MAX_FRIENDS} friends"));
    }
    if spec.groups.len() + spec.group_count > MAX_GROUPS {
        return Err(format!("at most {MAX_GROUPS} groups"));
    }
    if spec.group_size > MAX_GROUP_SIZE {
        return Err(format!("group_size must be at most {MAX_GROUP_SIZE}"));
    }
    let mut book = Book::default();
    let me = Contact {
        alias: spec.alias.clone(),
        sex: spec.sex,
        signature: spec.signature.clone(),
        ..Contact::person(&spec.nickname, Kind::Me)
    };
    let me_name = book.insert(me);
    book.insert(Contact::special("filehelper", "文件传输助手", 0));
    book.insert(Contact::special("fmessage", "朋友推荐消息", 0));
    book.insert(Contact::special("weixin", "微信团队", 56));
    book.insert(Contact::special("newsapp", "腾讯新闻", 0));

    let mut friends = Vec::new();
    for f in &spec.friends {
        if f.nickname.is_empty() {
            return Err("friend nickname must not be empty".into());
        }
        friends.push(book.insert(f.to_contact(Kind::Friend)));
    }
    for i in 1..=spec.friend_count {
        let c = Contact {
            sex: if i % 2 == 0 { 2 } else { 1 },
            ..Contact::person(&format!("Friend {i}"), Kind::Friend)
        };
        friends.push(book.insert(c));
    }
    for o in &spec.officials {
        let flag = o.verify_flag.unwrap_or(VERIFY_OFFICIAL);
        if flag & VERIFY_OFFICIAL == 0 {
            return Err(format!(
                "official {:?}: verify_flag must have bit 8 set",
                o.nickname
            ));
        }
        book.insert(Contact {
            verify_flag: flag,
            signature: o.signature.clone(),
            attr_status: 0,
            ..Contact::person(&o.nickname, Kind::Official)
        });
    }

    for g in &spec.groups {
        if g.extra_members > MAX_GROUP_SIZE || g.members.len() > MAX_GROUP_SIZE {
            return Err(format!(
                "group {:?}: at most {MAX_GROUP_SIZE} members",
                g.name
            ));
        }
        let mut members = vec![Member {
            user_name: me_name.clone(),
            display_name: g.self_display_name.clone(),
        }];
        let mut seen = HashSet::new();
        seen.insert(me_name.clone());
        for nick in &g.members {
            let user_name = match book.find(nick) {
                Some(c) if matches!(c.kind, Kind::Friend | Kind::Stranger) => c.user_name.clone(),
                Some(c) if matches!(c.kind, Kind::Me) => continue,
                _ => book.insert(Contact::person(nick, Kind::Stranger)),
            };
            if seen.insert(user_name.clone()) {
                members.push(Member {
                    display_name: g.display_names.get(nick).cloned().unwrap_or_default(),
                    user_name,
                });
            }
        }
        for k in 1..=g.extra_members {
            let nick = format!("{} Member {k}", g.name);
            let user_name = book.insert(Contact::person(&nick, Kind::Stranger));
            members.push(Member {
                display_name: g.display_names.get(&nick).cloned().unwrap_or_default(),
                user_name,
            });
        }
        let owner = match g.owner.as_deref() {
            None | Some("self") => me_name.clone(),
            Some(nick) => {
                let probe = Group {
                    members: members.clone(),
                    owner: String::new(),
                    encry_id: String::new(),
                    saved: true,
                };
                match book.find_member(&probe, nick) {
                    Some(m) => m.user_name.clone(),
                    None => {
                        return Err(format!(
                            "group {:?}: owner {nick:?} is not a member",
                            g.name
                        ));
                    }
                }
            }
        };
        book.insert(Contact::group(
            &g.name,
            members,
            owner,
            g.saved.unwrap_or(true),
        ));
    }
    for i in 1..=spec.group_count {
        let name = format!("Group {i}");
        let mut members = vec![Member {
            user_name: me_name.clone(),
            display_name: String::new(),
        }];
        let want = spec.group_size.max(3);
        for k in 0..want - 1 {
            let user_name = if !spec.stranger_members && friends.len() >= want - 1 {
                friends[(i + k) % friends.len()].clone()
            } else {
                book.insert(Contact::person(
                    &format!("{name} Member {}", k + 1),
                    Kind::Stranger,
                ))
            };
            members.push(Member {
                user_name,
                display_name: String::new(),
            });
        }
        book.insert(Contact::group(&name, members, me_name.clone(), true));
    }

    Ok(AccountInner {
        nickname: spec.nickname.clone(),
        me: me_name,
        book,
        web_forbidden: spec.web_forbidden,
        desktop_forbidden: spec.desktop_forbidden,
        session: None,
        logins: 0,
        outbox: VecDeque::new(),
        media: MediaStore::default(),
        sent: Bounded::new(10_000),
        messages: Bounded::new(10_000),
        pending_requests: HashMap::new(),
    })
}

impl AccountInner {
    /// The test-control view of the account (`GET /__sim/accounts/<uin>`).
    pub(crate) fn view(&self, uin: u64) -> Value {
        let contacts: Vec<Value> = self
            .book
            .iter()
            .map(|c| {
                let mut v = json!({
                    "user_name": c.user_name,
                    "nickname": c.nickname,
                    "kind": c.kind.label(),
                    "remark": c.remark,
                    "pinned": c.pinned,
                    "verify_flag": c.verify_flag,
                });
                if let Kind::Group(g) = &c.kind {
                    v["owner"] = json!(g.owner);
                    v["saved"] = json!(g.saved);
                    v["members"] = g
                        .members
                        .iter()
                        .map(|m| {
                            json!({
                                "user_name": m.user_name,
                                "nickname": self.book.nickname_of(&m.user_name),
                                "display_name": m.display_name,
                            })
                        })
                        .collect();
                }
                v
            })
            .collect();
        json!({
            "uin": uin,
            "nickname": self.nickname,
            "user_name": self.me,
            "web_forbidden": self.web_forbidden,
            "desktop_forbidden": self.desktop_forbidden,
            "logins": self.logins,
            "contacts": contacts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: Value) -> AccountSpec {
        serde_json::from_value(json).expect("valid spec")
    }

    #[test]
    fn builds_friends_groups_and_specials() {
        let s = spec(json!({
            "nickname": "Alice",
            "friends": [{"nickname": "Bob", "sex": 1}],
            "friend_count": 2,
            "groups": [{"name": "Team", "members": ["Bob", "Zed"], "extra_members": 1,
                        "owner": "Bob", "display_names": {"Bob": "Bobby"}, "self_display_name": "Al"}],
            "officials": [{"nickname": "News"}],
        }));
        let a = build_account(&s).expect("builds");
        let bob = a.book.find("Bob").expect("bob");
        assert!(matches!(bob.kind, Kind::Friend));
        assert!(a.book.find("Friend 2").is_some());
        assert!(a.book.get("filehelper").is_some());
        let team = a.book.find("Team").expect("team");
        let g = team.group_data().expect("group");
        assert_eq!(g.members.len(), 4, "self, Bob, Zed, one extra");
        assert_eq!(g.owner, bob.user_name);
        assert_eq!(g.members[0].display_name, "Al");
        assert_eq!(g.members[1].display_name, "Bobby");
        assert!(matches!(
            a.book.find("Zed").expect("zed").kind,
            Kind::Stranger
        ));
        assert_eq!(a.book.find("News").expect("news").verify_flag, 8);
        assert!(team.user_name.starts_with("@@") && team.user_name.len() == 66);
    }

    /// Between namesakes a friend wins over a stranger, and the first created over later ones.
    #[test]
    fn find_by_nickname_prefers_friends_then_the_first_created() {
        let mut book = Book::default();
        let stranger = book.insert(Contact::person("Sam", Kind::Stranger));
        assert_eq!(book.find("Sam").unwrap().user_name, stranger);
        let friends: Vec<String> = (0..20)
            .map(|_| book.insert(Contact::person("Sam", Kind::Friend)))
            .collect();
        for _ in 0..3 {
            assert_eq!(book.find("Sam").unwrap().user_name, friends[0]);
        }
        book.remove(&friends[0]);
        assert_eq!(book.find("Sam").unwrap().user_name, friends[1]);
        for f in &friends[1..] {
            book.remove(f);
        }
        assert_eq!(book.find("Sam").unwrap().user_name, stranger);
        assert!(book.find("Nobody").is_none());
        assert_eq!(book.find(&stranger).unwrap().nickname, "Sam");
    }

    #[test]
    fn rejects_bad_owner_and_unknown_fields() {
        let s = spec(json!({"nickname": "A", "groups": [{"name": "G", "owner": "Nobody"}]}));
        assert!(build_account(&s).is_err());
        let bad: Result<AccountSpec, _> =
            serde_json::from_value(json!({"nickname": "A", "frends": []}));
        assert!(bad.is_err());
    }

    #[test]
    fn group_json_forms() {
        let s = spec(json!({"nickname": "A", "friends": [{"nickname": "B"}],
                            "groups": [{"name": "G", "members": ["B"]}]}));
        let a = build_account(&s).expect("builds");
        let g = a.book.find("G").expect("g");
        let full = a.book.contact_json(g, "@crypt_x", Form::Full);
        assert_eq!(full["MemberCount"], 2);
        assert_eq!(full["MemberList"].as_array().map(Vec::len), Some(2));
        assert_eq!(full["ChatRoomOwner"], a.me.as_str());
        assert!(
            full["EncryChatRoomId"]
                .as_str()
                .is_some_and(|s| s.len() == 33)
        );
        let listing = a.book.contact_json(g, "@crypt_x", Form::Listing);
        assert_eq!(listing["MemberCount"], 0);
        assert_eq!(listing["MemberList"], json!([]));
        let m = a.book.contact_json(g, "@crypt_x", Form::Mod);
        assert!(m.get("Uin").is_none() && m.get("EncryChatRoomId").is_none());
        assert!(
            full["HeadImgUrl"]
                .as_str()
                .is_some_and(|u| u.starts_with("/cgi-bin/mmwebwx-bin/webwxgetheadimg?"))
        );
    }
}
