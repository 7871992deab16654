//! The pipe between a supervised worker and its supervisor: one JSON object per line on the
//! worker's stdout. (stderr carries the worker's logs; stdin stays open, and its EOF tells the
//! worker that the supervisor is gone.) Unknown lines are ignored by the reader, so either side
//! can be newer.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum WorkerMessage {
    /// The session changed state (`SessionState::name`).
    State {
        state: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wxid: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nickname: Option<String>,
    },
    /// A QR code was shown (count from 1).
    Qr { refresh: u32 },
    /// The control plane sent task 200 to this account; the supervisor starts the session
    /// (control-plane spec B.1).
    StartSession {
        qr_session_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task_id: Option<String>,
    },
    /// The session is over; the exit code follows.
    Ended { exit_code: u8, outcome: String },
}

impl WorkerMessage {
    pub fn to_line(&self) -> String {
        // Serialising this enum of strings and integers cannot fail.
        serde_json::to_string(self).expect("worker message serialises")
    }

    /// Parses one stdout line; `None` for anything that is not a message (a stray print).
    pub fn from_line(line: &str) -> Option<WorkerMessage> {
        serde_json::from_str(line.trim()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tolerance() {
        let m = WorkerMessage::State {
            state: "online".into(),
            wxid: Some("42".into()),
            nickname: None,
        };
        let line = m.to_line();
        assert_eq!(line, r#"{"event":"state","state":"online","wxid":"42"}"#);
        assert_eq!(WorkerMessage::from_line(&line), Some(m));
        assert_eq!(WorkerMessage::from_line("hello"), None);
        assert_eq!(
            WorkerMessage::from_line(r#"{"event":"future_thing"}"#),
            None
        );
        let s = WorkerMessage::StartSession {
            qr_session_id: "q".into(),
            task_id: None,
        };
        assert_eq!(WorkerMessage::from_line(&s.to_line()), Some(s));
    }
}
