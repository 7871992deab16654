//! Uploads to the upload URL (spec A.6): QR codes and received files, as `multipart/form-data`
//! bodies built here in full so the exact bytes sent can be signed (B.6).

use crate::control::client::ControlClient;
use crate::control::error::ControlError;
use crate::control::lenient;
use rand::RngExt;
use serde_json::Value;

/// A `multipart/form-data` body under construction. Parts keep their order.
#[derive(Debug, Clone)]
pub struct Multipart {
    boundary: String,
    body: Vec<u8>,
}

impl Default for Multipart {
    fn default() -> Self {
        Multipart::new()
    }
}

impl Multipart {
    /// A body with a random boundary. 32 random alphanumerics make a collision with the
    /// content practically impossible, and the content cannot be chosen to match it.
    pub fn new() -> Multipart {
        let random: String = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(32)
            .map(char::from)
            .collect();
        Multipart::with_boundary(format!("wxagent-{random}"))
    }

    /// A body with a given boundary (1–70 characters of RFC 2046 `bchars`, no trailing space).
    pub fn with_boundary(boundary: String) -> Multipart {
        Multipart {
            boundary,
            body: Vec::new(),
        }
    }

    pub fn boundary(&self) -> &str {
        &self.boundary
    }

    /// The `Content-Type` header value for this body.
    pub fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }

    /// A text field.
    pub fn text(mut self, name: &str, value: &str) -> Multipart {
        self.open_part();
        self.body.extend_from_slice(
            format!(
                "Content-Disposition: form-data; name=\"{}\"\r\n\r\n",
                escape(name)
            )
            .as_bytes(),
        );
        self.body.extend_from_slice(value.as_bytes());
        self.body.extend_from_slice(b"\r\n");
        self
    }

    /// A file field. A `content_type` with control characters is replaced by
    /// `application/octet-stream` rather than breaking the header block.
    pub fn file(
        mut self,
        name: &str,
        filename: &str,
        content_type: &str,
        bytes: &[u8],
    ) -> Multipart {
        let content_type = if content_type.is_empty() || content_type.chars().any(char::is_control)
        {
            "application/octet-stream"
        } else {
            content_type
        };
        self.open_part();
        self.body.extend_from_slice(
            format!(
                "Content-Disposition: form-data; name=\"{}\"; filename=\"{}\"\r\nContent-Type: {content_type}\r\n\r\n",
                escape(name),
                escape(filename)
            )
            .as_bytes(),
        );
        self.body.extend_from_slice(bytes);
        self.body.extend_from_slice(b"\r\n");
        self
    }

    /// The finished body and its `Content-Type`.
    pub fn finish(mut self) -> (String, Vec<u8>) {
        self.body
            .extend_from_slice(format!("--{}--\r\n", self.boundary).as_bytes());
        (self.content_type(), self.body)
    }

    fn open_part(&mut self) {
        self.body
            .extend_from_slice(format!("--{}\r\n", self.boundary).as_bytes());
    }
}

/// Quotes a field or file name the way browsers do (WHATWG `multipart/form-data` encoding):
/// `"` and line breaks are percent-encoded; other characters (UTF-8 included) stay as they are.
fn escape(s: &str) -> String {
    s.replace('"', "%22")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// The flat answer to a file upload:
/// `{"error_code":0,"error_reason":"","ack_type":"upload_file_ack","file_index":"..."}`.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadAck {
    pub error_code: i64,
    pub error_reason: String,
    pub ack_type: String,
    /// Echoed by the server (also read from a `data` wrapper, which some servers add).
    pub file_index: Option<String>,
}

impl UploadAck {
    /// Reads the flat ack leniently; `None` when the body is not a JSON object.
    pub fn parse(body: &[u8]) -> Option<UploadAck> {
        let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
            return None;
        };
        let error_code = match map.get("error_code") {
            None | Some(Value::Null) => 0,
            Some(Value::String(s)) if s.trim().is_empty() => 0,
            Some(v) => lenient::as_i64(v).unwrap_or(-1),
        };
        let text = |key: &str| {
            map.get(key)
                .and_then(lenient::as_string)
                .unwrap_or_default()
        };
        let file_index = map
            .get("file_index")
            .and_then(lenient::as_string)
            .or_else(|| {
                map.get("data")
                    .and_then(lenient::as_object)
                    .and_then(|d| d.get("file_index").and_then(lenient::as_string))
            });
        Some(UploadAck {
            error_code,
            error_reason: text("error_reason"),
            ack_type: text("ack_type"),
            file_index,
        })
    }
}

/// File extension for an upload's content type, for callers naming a file.
pub fn extension_for(content_type: &str) -> &'static str {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "image/jpeg" | "image/jpg" => "jpg",
        "image/png" => "png",
        "image/gif" => "gif",
        "audio/mpeg" | "audio/mp3" => "mp3",
        "video/mp4" => "mp4",
        "application/pdf" => "pdf",
        _ => "bin",
    }
}

impl ControlClient {
    /// Uploads a login QR code (spec A.6, A.9): parts `qr_session_id`, `file`
    /// (`<qr_session_id>.png`, `image/png`), `machine_id`. Any 2xx answer is accepted.
    pub async fn upload_qr(
        &self,
        qr_session_id: &str,
        png: Vec<u8>,
        machine_id: &str,
    ) -> Result<(), ControlError> {
        let url = self.upload_url()?;
        let (content_type, body) = Multipart::new()
            .text("qr_session_id", qr_session_id)
            .file("file", &format!("{qr_session_id}.png"), "image/png", &png)
            .text("machine_id", machine_id)
            .finish();
        let answer = self
            .send("upload_qr", url, &content_type, body, None)
            .await?;
        if serde_json::from_slice::<Value>(&answer).is_err() {
            tracing::debug!(
                bytes = answer.len(),
                "QR upload answer is not JSON; accepted anyway"
            );
        }
        crate::stats::upload();
        Ok(())
    }

    /// Uploads a received file for task 9 (spec A.6): parts `file_index`, `file`. The flat ack
    /// must be JSON with `error_code` 0.
    pub async fn upload_file(
        &self,
        file_index: &str,
        file_name: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<UploadAck, ControlError> {
        let url = self.upload_url()?;
        let (multipart_type, body) = Multipart::new()
            .text("file_index", file_index)
            .file("file", file_name, content_type, &bytes)
            .finish();
        drop(bytes);
        let answer = self
            .send("upload_file", url, &multipart_type, body, None)
            .await?;
        let ack = UploadAck::parse(&answer).ok_or_else(|| ControlError::Json {
            action: "upload_file".to_owned(),
            detail: "the answer is not a JSON object".to_owned(),
        })?;
        if ack.error_code != 0 {
            return Err(ControlError::Upload {
                what: format!("file_index {file_index}"),
                code: ack.error_code,
                reason: ack.error_reason,
            });
        }
        crate::stats::upload();
        Ok(ack)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_bytes_are_exact() {
        let (ct, body) = Multipart::with_boundary("XyZ".into())
            .text("qr_session_id", "q1")
            .file("file", "q1.png", "image/png", b"\x89PNG")
            .text("machine_id", "host_1")
            .finish();
        assert_eq!(ct, "multipart/form-data; boundary=XyZ");
        let expected: &[u8] = b"--XyZ\r\nContent-Disposition: form-data; name=\"qr_session_id\"\r\n\r\nq1\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"q1.png\"\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"machine_id\"\r\n\r\nhost_1\r\n--XyZ--\r\n";
        assert_eq!(body, expected);
    }

    #[test]
    fn names_are_escaped_and_bad_types_replaced() {
        let (_, body) = Multipart::with_boundary("b".into())
            .file("file", "a\"b\r\n.txt", "text/plain\r\nX-Evil: 1", b"")
            .finish();
        let text = String::from_utf8(body).unwrap();
        assert!(text.contains("filename=\"a%22b%0D%0A.txt\""), "{text}");
        assert!(
            text.contains("Content-Type: application/octet-stream\r\n"),
            "{text}"
        );
        assert!(!text.contains("X-Evil"));
    }

    #[test]
    fn random_boundaries_differ() {
        let (a, b) = (Multipart::new(), Multipart::new());
        assert_ne!(a.boundary(), b.boundary());
        assert!(a.boundary().len() <= 70);
    }

    #[test]
    fn upload_acks() {
        let ack = UploadAck::parse(
            br#"{"error_code":0,"error_reason":"","ack_type":"upload_file_ack","file_index":"f1"}"#,
        )
        .unwrap();
        assert_eq!((ack.error_code, ack.file_index.as_deref()), (0, Some("f1")));
        let wrapped = UploadAck::parse(
            br#"{"error_code":"2","error_reason":"too big","data":{"file_index":7}}"#,
        )
        .unwrap();
        assert_eq!(
            (
                wrapped.error_code,
                wrapped.error_reason.as_str(),
                wrapped.file_index.as_deref()
            ),
            (2, "too big", Some("7"))
        );
        assert_eq!(UploadAck::parse(b"{}").map(|a| a.error_code), Some(0));
        assert!(UploadAck::parse(b"ok").is_none());
    }

    #[test]
    fn extensions() {
        assert_eq!(extension_for("image/jpeg"), "jpg");
        assert_eq!(extension_for("Video/MP4; codecs=x"), "mp4");
        assert_eq!(extension_for("audio/mpeg"), "mp3");
        assert_eq!(extension_for("x/y"), "bin");
    }
}
