//! Configuration: a TOML file → raw table → validated [`Config`]. Every problem in the file is
//! collected and reported together, each naming the file and the `[section] key`.
//!
//! Lookup order: `--config FILE` > `WXAGENT_CONFIG` > the platform default path (a missing file
//! at the default path means "all defaults"; a missing file that was named explicitly is an error).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

/// A secret value (the control-plane secret). Never printed: `Debug` and `Display` redact it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Where the configuration came from (logged at INFO on start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// `--config FILE`.
    Flag(PathBuf),
    /// `WXAGENT_CONFIG`.
    Env(PathBuf),
    /// The platform default path, which existed.
    DefaultPath(PathBuf),
    /// No file: the platform default path did not exist, so built-in defaults apply.
    Defaults { looked_at: PathBuf },
}

/// The validated configuration. Field docs give the TOML key and default.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: ConfigSource,
    pub agent: AgentConfig,
    pub control: ControlConfig,
    pub wechat: WechatConfig,
    pub qr: QrConfig,
    pub media: MediaConfig,
    pub pacing: PacingConfig,
}

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// `[agent] machine_id`; default: the host name.
    pub machine_id: String,
    /// `[agent] state_dir`; default `/var/lib/wxagent` (Windows: `%ProgramData%\wxagent`).
    pub state_dir: PathBuf,
    /// `[agent] max_sessions`; default 100. Must be ≥ 1.
    pub max_sessions: usize,
    /// `[agent] admin_listen`; default `127.0.0.1:7878`.
    pub admin_listen: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// `[control] callback_url`; none = no control plane (foreground runs print instead).
    pub callback_url: Option<Url>,
    /// `[control] upload_url`; default: none.
    pub upload_url: Option<Url>,
    /// `[control] appid`; default "".
    pub appid: String,
    /// `[control] secret_key`; default none (no signature check).
    pub secret_key: Option<Secret>,
    /// `[control] poll_interval`; default 5s; 0 disables polling.
    pub poll_interval: Duration,
    /// `[control] timeout`; default 30s, per request.
    pub timeout: Duration,
    /// `[control] sign_requests`; default false.
    pub sign_requests: bool,
}

#[derive(Debug, Clone)]
pub struct WechatConfig {
    /// `[wechat] login_url`; default `https://login.wx.qq.com`. Replaces the login host.
    pub login_url: Url,
    /// `[wechat] desktop_mode`; default true (UOS desktop login, spec §4).
    pub desktop_mode: bool,
    /// `[wechat] request_timeout`; default 30s, for every non-long-poll request.
    pub request_timeout: Duration,
    /// `[wechat] longpoll_timeout`; default 40s, for synccheck and the login poll (server holds ≈25 s).
    pub longpoll_timeout: Duration,
    /// `[wechat] network_give_up`; default 10m: consecutive network failure for this long ends
    /// the session with reason `network`.
    pub network_give_up: Duration,
}

#[derive(Debug, Clone)]
pub struct QrConfig {
    /// `[qr] max_refreshes`; default 5: how many QR codes are shown before giving up.
    pub max_refreshes: u32,
    /// `[qr] max_wait`; default 10m: total time allowed from the first QR to the login.
    pub max_wait: Duration,
}

#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// `[media] allow_private_urls`; default false: task URLs on loopback/private addresses are refused.
    pub allow_private_urls: bool,
}

#[derive(Debug, Clone)]
pub struct PacingConfig {
    /// `[pacing] messages_per_second`; default 1.0. Must be > 0.
    pub messages_per_second: f64,
    /// `[pacing] burst`; default 3. Must be ≥ 1.
    pub burst: u32,
}
