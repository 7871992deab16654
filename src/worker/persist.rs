//! Session persistence (DESIGN §3.3): `state_dir/sessions/<id>/session.json` holds what a
//! restarted worker needs to resume without a scan — credentials, cookies, hosts, SyncKey, the
//! own account, desktop-mode flag — written atomically (temp file, fsync, rename, fsync of the
//! directory), mode 0600 in a 0700 directory, with a format version.

use crate::wechat::session::WebSession;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The current format. Version 1 is the first; older files do not exist yet, newer ones are
/// refused (a downgrade must not misread credentials).
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedSession {
    pub version: u32,
    pub session_id: String,
    pub saved_at_ms: u64,
    /// The account's wxid (Uin) and names, for logs and the status page.
    pub wxid: String,
    pub nickname: String,
    pub web: WebSession,
}

impl SavedSession {
    /// True when `other` holds the same as this apart from the sync keys (and the time it was
    /// made): then writing it only moves where a resume continues, which may wait a little
    /// (src/worker/saver.rs). Spelled out field by field so a new field must be placed.
    pub fn same_but_sync_keys(&self, other: &SavedSession) -> bool {
        let SavedSession {
            version,
            session_id,
            saved_at_ms: _,
            wxid,
            nickname,
            web,
        } = self;
        let WebSession {
            credentials,
            cookies,
            main_origin,
            file_origin,
            webpush_origin,
            sync_key: _,
            sync_check_key: _,
            self_user_name,
            desktop_mode,
        } = web;
        *version == other.version
            && *session_id == other.session_id
            && *wxid == other.wxid
            && *nickname == other.nickname
            && *credentials == other.web.credentials
            && *cookies == other.web.cookies
            && *main_origin == other.web.main_origin
            && *file_origin == other.web.file_origin
            && *webpush_origin == other.web.webpush_origin
            && *self_user_name == other.web.self_user_name
            && *desktop_mode == other.web.desktop_mode
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a saved session ({detail}); it is ignored and will be replaced")]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "{path}: saved by a newer wxagent (format {found}, this build reads up to {FORMAT_VERSION}); \
         upgrade wxagent or delete the file to log in again"
    )]
    TooNew { path: PathBuf, found: u32 },
}

pub fn session_dir(state_dir: &Path, session_id: &str) -> PathBuf {
    state_dir.join("sessions").join(session_id)
}

fn file(dir: &Path) -> PathBuf {
    dir.join("session.json")
}

/// Creates the session directory with mode 0700 (and its parents).
pub fn ensure_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Writes `session.json` atomically with mode 0600.
pub fn save(dir: &Path, s: &SavedSession) -> Result<(), PersistError> {
    let path = file(dir);
    let io = |source| PersistError::Io {
        path: path.clone(),
        source,
    };
    ensure_dir(dir).map_err(io)?;
    let tmp = dir.join("session.json.tmp");
    let body = serde_json::to_vec_pretty(s).expect("a saved session serialises");
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp).map_err(io)?;
        f.write_all(&body).map_err(io)?;
        f.sync_data().map_err(io)?;
    }
    std::fs::rename(&tmp, &path).map_err(io)?;
    #[cfg(unix)]
    {
        // Make the rename itself durable.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Reads `session.json`: `Ok(None)` when there is none.
pub fn load(dir: &Path) -> Result<Option<SavedSession>, PersistError> {
    let path = file(dir);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(PersistError::Io { path, source }),
    };
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| PersistError::Corrupt {
            path: path.clone(),
            detail: e.to_string(),
        })?;
    let version = v
        .get("version")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| PersistError::Corrupt {
            path: path.clone(),
            detail: "no format version".into(),
        })?;
    let version = u32::try_from(version).unwrap_or(u32::MAX);
    if version > FORMAT_VERSION {
        return Err(PersistError::TooNew {
            path,
            found: version,
        });
    }
    // Version 1 is the only format so far; a migration for older versions goes here.
    serde_json::from_value(v)
        .map(Some)
        .map_err(|e| PersistError::Corrupt {
            path,
            detail: e.to_string(),
        })
}

/// Deletes the saved session (the server rejected it); a missing file is fine.
pub fn delete(dir: &Path) -> Result<(), PersistError> {
    let path = file(dir);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(PersistError::Io { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SavedSession {
        let mut web = WebSession::default();
        web.credentials.uin = "42".into();
        web.credentials.sid = "SECRET_SID".into();
        web.main_origin = "http://127.0.0.1:1/".into();
        web.sync_key = crate::wechat::session::SyncKey(vec![(1, 7)]);
        SavedSession {
            version: FORMAT_VERSION,
            session_id: "q1".into(),
            saved_at_ms: 1,
            wxid: "42".into(),
            nickname: "A".into(),
            web,
        }
    }

    #[test]
    fn round_trip_with_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = session_dir(tmp.path(), "q1");
        assert!(load(&dir).unwrap().is_none());
        save(&dir, &sample()).unwrap();
        assert_eq!(load(&dir).unwrap(), Some(sample()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(dir.join("session.json"))
                    .unwrap()
                    .permissions()
                    .mode()
                    & 0o777,
                0o600
            );
            assert_eq!(
                std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
                0o700
            );
        }
        assert!(!dir.join("session.json.tmp").exists());
        delete(&dir).unwrap();
        delete(&dir).unwrap();
        assert!(load(&dir).unwrap().is_none());
    }

    #[test]
    fn only_sync_keys_and_time_may_differ_for_same_but_sync_keys() {
        let a = sample();
        let mut b = sample();
        b.saved_at_ms = 99;
        b.web.sync_key = crate::wechat::session::SyncKey(vec![(1, 8), (201, 5)]);
        b.web.sync_check_key = crate::wechat::session::SyncKey(vec![(1, 8)]);
        assert!(a.same_but_sync_keys(&b) && b.same_but_sync_keys(&a));
        let mut c = b.clone();
        c.web.credentials.skey = "NEW_SKEY".into();
        assert!(!a.same_but_sync_keys(&c), "a new skey is saved at once");
        let mut c = b.clone();
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::SET_COOKIE,
            reqwest::header::HeaderValue::from_static("webwx_data_ticket=T2; Path=/"),
        );
        c.web.cookies.store_from_headers(&headers);
        assert!(!a.same_but_sync_keys(&c), "a new cookie is saved at once");
        let mut c = b.clone();
        c.nickname = "B".into();
        assert!(!a.same_but_sync_keys(&c));
        let mut c = b;
        c.web.self_user_name = "@other".into();
        assert!(!a.same_but_sync_keys(&c));
    }

    #[test]
    fn newer_and_corrupt_files_are_refused_clearly() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        std::fs::write(dir.join("session.json"), r#"{"version": 99}"#).unwrap();
        let e = load(&dir).unwrap_err().to_string();
        assert!(e.contains("format 99") && e.contains("newer"), "{e}");
        std::fs::write(dir.join("session.json"), "{garbage").unwrap();
        assert!(matches!(load(&dir), Err(PersistError::Corrupt { .. })));
        std::fs::write(dir.join("session.json"), r#"{"version": 1}"#).unwrap();
        let e = load(&dir).unwrap_err().to_string();
        assert!(e.contains("not a saved session"), "{e}");
        assert!(!e.contains("SECRET"), "{e}");
    }
}
