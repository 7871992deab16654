//! Contact and group operations of the web protocol (spec §3.16–§3.18): add or accept a
//! friend (webwxverifyuser), set a remark (webwxoplog), create a group, rename it, add, invite
//! or remove members (webwxcreatechatroom / webwxupdatechatroom).

use super::client::{Host, WebClient, id_string, now_ms};
use super::contact::RawContact;
use super::error::WechatError;
use serde_json::{Value, json};

/// webwxverifyuser opcodes (spec §3.16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyOp {
    /// 2: send a friend request.
    SendRequest,
    /// 3: accept an incoming request.
    Accept,
}

/// How members join a group (spec §3.18).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddMethod {
    /// `addmember`: directly (small groups only).
    Direct,
    /// `invitemember`: an invitation the member must accept.
    Invite,
}

/// Groups with more members than this take invitations rather than direct adds (itchat's
/// `InviteStartCount`, 40, and OW's rule).
pub const INVITE_START_COUNT: usize = 40;

impl WebClient {
    /// Sends (`SendRequest`) or accepts (`Accept`) a friend request. `ticket` is the
    /// `RecommendInfo.Ticket` of the request message for an accept; empty for a new request.
    pub async fn verify_user(
        &self,
        op: VerifyOp,
        user_name: &str,
        ticket: &str,
        greeting: &str,
    ) -> Result<(), WechatError> {
        const EP: &str = "webwxverifyuser";
        let mut url = self.api(Host::Main, EP)?;
        url.query_pairs_mut()
            .append_pair("r", &now_ms().to_string())
            .append_pair("lang", "zh_CN")
            .append_pair("pass_ticket", &self.pass_ticket());
        let skey = self.lock().credentials.skey.clone();
        let body = json!({
            "BaseRequest": self.base_request(),
            "Opcode": match op { VerifyOp::SendRequest => 2, VerifyOp::Accept => 3 },
            "VerifyUserListSize": 1,
            "VerifyUserList": [{"Value": user_name, "VerifyUserTicket": ticket}],
            "VerifyContent": greeting,
            "SceneListCount": 1,
            "SceneList": [33],
            "skey": skey,
        });
        self.post_json(EP, url, body).await.map(|_| ())
    }

    /// Sets a contact's remark name (webwxoplog CmdId 2).
    pub async fn set_remark(&self, user_name: &str, remark: &str) -> Result<(), WechatError> {
        const EP: &str = "webwxoplog";
        let mut url = self.api(Host::Main, EP)?;
        url.query_pairs_mut()
            .append_pair("lang", "zh_CN")
            .append_pair("pass_ticket", &self.pass_ticket());
        let body = json!({
            "BaseRequest": self.base_request(),
            "UserName": user_name,
            "CmdId": 2,
            "RemarkName": remark,
        });
        self.post_json(EP, url, body).await.map(|_| ())
    }

    /// Creates a group with these members; returns its UserName (`@@…`).
    pub async fn create_group(
        &self,
        members: &[String],
        topic: &str,
    ) -> Result<String, WechatError> {
        const EP: &str = "webwxcreatechatroom";
        let mut url = self.api(Host::Main, EP)?;
        url.query_pairs_mut()
            .append_pair("r", &now_ms().to_string())
            .append_pair("lang", "zh_CN")
            .append_pair("pass_ticket", &self.pass_ticket());
        let list: Vec<Value> = members.iter().map(|m| json!({"UserName": m})).collect();
        let body = json!({
            "BaseRequest": self.base_request(),
            "MemberCount": list.len(),
            "MemberList": list,
            "Topic": topic,
        });
        let v = self.post_json(EP, url, body).await?;
        v.get("ChatRoomName")
            .map(id_string)
            .filter(|n| n.starts_with("@@"))
            .ok_or(WechatError::Missing {
                endpoint: EP,
                what: "ChatRoomName",
            })
    }

    /// Renames a group (`modtopic`).
    pub async fn rename_group(&self, room: &str, name: &str) -> Result<(), WechatError> {
        self.update_group(room, "modtopic", json!({"NewTopic": name}))
            .await
            .map(|_| ())
    }

    /// Removes members from a group (`delmember`).
    pub async fn remove_members(&self, room: &str, members: &[String]) -> Result<(), WechatError> {
        self.update_group(
            room,
            "delmember",
            json!({"DelMemberList": members.join(",")}),
        )
        .await
        .map(|_| ())
    }

    /// Adds members directly or by invitation; returns the members the server listed.
    pub async fn add_members(
        &self,
        room: &str,
        members: &[String],
        method: AddMethod,
    ) -> Result<Vec<RawContact>, WechatError> {
        let joined = members.join(",");
        let (fun, field) = match method {
            AddMethod::Direct => ("addmember", json!({"AddMemberList": joined})),
            AddMethod::Invite => ("invitemember", json!({"InviteMemberList": joined})),
        };
        let v = self.update_group(room, fun, field).await?;
        Ok(v.get("MemberList")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|m| serde_json::from_value(m.clone()).ok())
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn update_group(
        &self,
        room: &str,
        fun: &str,
        field: Value,
    ) -> Result<Value, WechatError> {
        const EP: &str = "webwxupdatechatroom";
        let mut url = self.api(Host::Main, EP)?;
        url.query_pairs_mut()
            .append_pair("fun", fun)
            .append_pair("lang", "zh_CN")
            .append_pair("pass_ticket", &self.pass_ticket());
        let mut body = json!({ "BaseRequest": self.base_request(), "ChatRoomName": room });
        if let (Some(b), Some(f)) = (body.as_object_mut(), field.as_object()) {
            for (k, v) in f {
                b.insert(k.clone(), v.clone());
            }
        }
        self.post_json(EP, url, body).await
    }
}
