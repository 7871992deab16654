//! `GET /cp/`: a self-contained page (no scripts, no external assets) that shows the QR codes
//! waiting for a scan and reloads itself every 2 s, so a person can log in from a browser.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::state::WehubState;
use super::store::QrSession;

pub async fn page(State(state): State<WehubState>) -> Response {
    let entries: Vec<Entry> = state
        .lock()
        .qr_sessions()
        .into_iter()
        .map(Entry::of)
        .collect();
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        render(&entries),
    )
        .into_response()
}

/// What the page shows of one QR session (copied out so the lock is not held while rendering).
#[derive(Debug, Clone)]
pub struct Entry {
    pub qr_session_id: String,
    pub status: String,
    pub uploads: u64,
    pub machine_id: String,
    pub wxid: Option<String>,
    pub has_png: bool,
    pub awaiting_scan: bool,
}

impl Entry {
    fn of(session: &QrSession) -> Entry {
        Entry {
            qr_session_id: session.qr_session_id.clone(),
            status: session.status.clone(),
            uploads: session.uploads,
            machine_id: session.machine_id.clone(),
            wxid: session.wxid.clone(),
            has_png: session.png.is_some(),
            awaiting_scan: session.awaiting_scan(),
        }
    }
}

/// The page for these sessions (oldest first).
pub fn render(sessions: &[Entry]) -> String {
    let mut html = String::from(concat!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta http-equiv=\"refresh\" content=\"2\">",
        "<title>wxagent control plane: QR logins</title>",
        "<style>body{font-family:sans-serif;margin:2em}",
        ".qr{display:inline-block;margin:1em;padding:1em;border:1px solid #ccc;text-align:center}",
        ".qr img{width:240px;height:240px;image-rendering:pixelated}",
        "table{border-collapse:collapse}td,th{padding:.2em .8em;text-align:left}</style>",
        "</head><body>\n<h1>QR logins waiting for a scan</h1>\n",
    ));
    let (waiting, done): (Vec<&Entry>, Vec<&Entry>) =
        sessions.iter().partition(|session| session.awaiting_scan);
    if waiting.is_empty() {
        html.push_str("<p>No QR session is waiting for a scan.</p>\n");
    }
    for session in waiting {
        let id = escape(&session.qr_session_id);
        let _ = write!(html, "<div class=\"qr\"><h2>{id}</h2>");
        if session.has_png {
            let _ = write!(
                html,
                "<img src=\"/__cp/qr_sessions/{}/png\" alt=\"QR code for {id}\">",
                escape(&path_segment(&session.qr_session_id))
            );
        } else {
            html.push_str("<p>waiting for the first QR code…</p>");
        }
        let _ = writeln!(
            html,
            "<p>status: {} · uploads: {} · machine: {}</p></div>",
            escape(&session.status),
            session.uploads,
            escape(&session.machine_id),
        );
    }
    if !done.is_empty() {
        html.push_str(
            "<h2>Finished</h2>\n<table><tr><th>session</th><th>status</th><th>uploads</th>\
             <th>wxid</th></tr>\n",
        );
        for session in done {
            let _ = writeln!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&session.qr_session_id),
                escape(&session.status),
                session.uploads,
                escape(session.wxid.as_deref().unwrap_or("")),
            );
        }
        html.push_str("</table>\n");
    }
    html.push_str("</body></html>\n");
    html
}

/// HTML text/attribute escaping.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes everything but RFC 3986 unreserved characters, for one path segment.
fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_encodes_untrusted_ids() {
        assert_eq!(
            escape("<a href='x'>&\""),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;"
        );
        assert_eq!(path_segment("a b/c~"), "a%20b%2Fc~");
    }
}
