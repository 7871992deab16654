//! `POST /wehub/upload`: QR PNGs (latest per session) and media files (spec A.6), with the B.6
//! signature checked over the exact multipart body before the form is parsed from those bytes.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;

use super::sign::SignatureCheck;
use super::state::WehubState;
use super::store::{MediaFile, UploadKind, UploadRecord, now_ms};

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Why an upload form was refused; the message names the missing or bad part.
#[derive(Debug, thiserror::Error)]
pub enum FormError {
    #[error("content type is not multipart/form-data with a boundary")]
    NotMultipart,
    #[error("malformed multipart body: {0}")]
    Malformed(String),
    #[error("missing part {0:?}")]
    Missing(&'static str),
    #[error("missing part \"qr_session_id\" (qr upload) or \"file_index\" (media upload)")]
    NoKind,
    #[error("qr upload part \"file\" is not a png image")]
    NotPng,
}

/// The `file` part of a form.
#[derive(Debug)]
struct FilePart {
    file_name: Option<String>,
    content_type: Option<String>,
    bytes: Bytes,
}

/// A multipart form: text parts by name, and the `file` part.
#[derive(Debug, Default)]
struct Form {
    text: HashMap<String, String>,
    file: Option<FilePart>,
}

impl Form {
    /// A text part that is present and not blank.
    fn text(&self, name: &str) -> Option<&str> {
        self.text
            .get(name)
            .map(|value| value.trim())
            .filter(|value| !value.is_empty())
    }
}

pub async fn upload(State(state): State<WehubState>, headers: HeaderMap, body: Bytes) -> Response {
    let time_ms = now_ms();
    let mode = state.mode();
    let (status, answer) = if mode.down {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "control plane is down (mode down)"}),
        )
    } else {
        let signature = SignatureCheck::from_headers(&headers, mode.secret.as_deref(), &body);
        if signature.refused_by(&mode) {
            let answer =
                json!({"error": "missing or invalid request signature (mode require_signature)"});
            tracing::debug!(status = 401, "control-plane upload refused: signature");
            return (StatusCode::UNAUTHORIZED, Json(answer)).into_response();
        }
        match parse_form(&headers, body).await {
            Ok(form) => match store_form(&state, form, signature.ok, time_ms) {
                Ok(file_index) => (
                    StatusCode::OK,
                    json!({
                        "error_code": 0,
                        "error_reason": "",
                        "ack_type": "upload_file_ack",
                        "file_index": file_index,
                    }),
                ),
                Err(error) => (StatusCode::BAD_REQUEST, json!({"error": error.to_string()})),
            },
            Err(error) => (StatusCode::BAD_REQUEST, json!({"error": error.to_string()})),
        }
    };
    tracing::debug!(status = status.as_u16(), "control-plane upload");
    if mode.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(mode.delay_ms)).await;
    }
    (status, Json(answer)).into_response()
}

/// Files the form as a QR or media upload; returns the `file_index` to echo ("" for a QR code).
fn store_form(
    state: &WehubState,
    form: Form,
    signature_ok: Option<bool>,
    time_ms: u64,
) -> Result<String, FormError> {
    if let Some(qr_session_id) = form.text("qr_session_id") {
        let machine_id = form
            .text("machine_id")
            .ok_or(FormError::Missing("machine_id"))?;
        let file = form.file.as_ref().ok_or(FormError::Missing("file"))?;
        if !file.bytes.starts_with(PNG_MAGIC) {
            return Err(FormError::NotPng);
        }
        let record = UploadRecord {
            kind: UploadKind::Qr,
            qr_session_id: Some(qr_session_id.to_owned()),
            file_index: None,
            machine_id: Some(machine_id.to_owned()),
            file_name: file.file_name.clone(),
            content_type: file.content_type.clone(),
            size: file.bytes.len(),
            time_ms,
            mono_us: crate::sim::clock::mono_us(),
            signature_ok,
        };
        state
            .lock()
            .qr_upload(qr_session_id, machine_id, file.bytes.clone(), record);
        return Ok(String::new());
    }
    let Some(file_index) = form.text("file_index") else {
        return Err(FormError::NoKind);
    };
    let file_index = file_index.to_owned();
    let file = form.file.ok_or(FormError::Missing("file"))?;
    let record = UploadRecord {
        kind: UploadKind::Media,
        qr_session_id: None,
        file_index: Some(file_index.clone()),
        machine_id: form.text.get("machine_id").cloned(),
        file_name: file.file_name.clone(),
        content_type: file.content_type.clone(),
        size: file.bytes.len(),
        time_ms,
        mono_us: crate::sim::clock::mono_us(),
        signature_ok,
    };
    let media = MediaFile {
        file_name: file.file_name,
        content_type: file.content_type,
        bytes: file.bytes,
    };
    state.lock().media_upload(&file_index, media, record);
    Ok(file_index)
}

/// Parses the saved body bytes as multipart/form-data.
async fn parse_form(headers: &HeaderMap, body: Bytes) -> Result<Form, FormError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .ok_or(FormError::NotMultipart)?;
    let boundary = multer::parse_boundary(content_type).map_err(|_| FormError::NotMultipart)?;
    let stream = futures::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut form = Form::default();
    let malformed = |error: multer::Error| FormError::Malformed(error.to_string());
    while let Some(field) = multipart.next_field().await.map_err(malformed)? {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "file" {
            let file_name = field.file_name().map(str::to_owned);
            let content_type = field.content_type().map(|mime| mime.to_string());
            let bytes = field.bytes().await.map_err(malformed)?;
            form.file = Some(FilePart {
                file_name,
                content_type,
                bytes,
            });
        } else {
            let text = field.text().await.map_err(malformed)?;
            form.text.insert(name, text);
        }
    }
    Ok(form)
}
