//! Configuration: a TOML file → raw table → validated [`Config`]. Every problem in the file is
//! collected and reported together, each naming the file and the `[section] key`.
//!
//! Lookup order: `--config FILE` > `WXAGENT_CONFIG` > the platform default path (a missing file
//! at the default path means "all defaults"; a missing file that was named explicitly is an error).
//! Settings that are legal but doubtful (a long-poll timeout under 30 s) are warnings: logged at
//! WARN on load and shown by `wxagent check-config`.

use std::ffi::OsString;
use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::{Table, Value};
use url::{Host, Url};

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
    pub spool: SpoolConfig,
    pub media: MediaConfig,
    pub pacing: PacingConfig,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// `[agent] machine_id`; default: the host name.
    pub machine_id: String,
    /// `[agent] state_dir`; default `/var/lib/wxagent` (Windows: `%ProgramData%\wxagent`).
    pub state_dir: PathBuf,
    /// `[agent] max_sessions`; default 100. Must be ≥ 1.
    pub max_sessions: usize,
    /// `[agent] admin_listen`; default `127.0.0.1:7878`. Not loopback only with `admin_token`.
    pub admin_listen: SocketAddr,
    /// `[agent] admin_token`; default none. When set, the admin API wants
    /// `Authorization: Bearer <token>` on everything but `/healthz`.
    pub admin_token: Option<Secret>,
    /// `[agent] healthz_max_sync_age`; default 5m: `/healthz` fails when an online session has
    /// not synced for longer.
    pub healthz_max_sync_age: Duration,
    /// `[agent] fork_server`; default true. Linux: workers are forked from one prepared
    /// template process (shared start-up memory) instead of executing the binary each time.
    pub fork_server: bool,
}

#[derive(Debug, Clone, PartialEq)]
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
    /// `[control] ws_window`; default 64, 1..=1024: report frames sent ahead of their answers
    /// on a WebSocket whose server echoes event ids.
    pub ws_window: usize,
    /// `[control] http_batch`; default 256, 1..=1024: the most reports one HTTP post carries
    /// when the server's `login_ack` offers `report_batch` (and never more than it offers).
    pub http_batch: usize,
}

#[derive(Debug, Clone, PartialEq)]
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
    /// `[wechat] deaf_after`; default 10m: no successful webwxsync for this long while synccheck
    /// keeps answering "nothing new" (the "deaf" state) forces a sync and then a re-init.
    pub deaf_after: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QrConfig {
    /// `[qr] max_refreshes`; default 5: how many QR codes are shown before giving up.
    pub max_refreshes: u32,
    /// `[qr] max_wait`; default 10m: total time allowed from the first QR to the login.
    pub max_wait: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SpoolConfig {
    /// `[spool] max_bytes`; default 268435456 (256 MiB): bytes of not-yet-acknowledged reports
    /// per session. At least 64 KiB.
    pub max_bytes: u64,
    /// `[spool] max_events`; default 1 000 000: not-yet-acknowledged reports per session.
    pub max_events: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MediaConfig {
    /// `[media] allow_private_urls`; default false: task URLs on loopback/private addresses are refused.
    pub allow_private_urls: bool,
    /// `[media] max_download_bytes`; default 25 MiB: the most a task URL may return. Must be ≥ 1.
    pub max_download_bytes: u64,
    /// `[media] fetch_timeout`; default 30s: the whole fetch of a task URL, redirects and body included.
    pub fetch_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PacingConfig {
    /// `[pacing] messages_per_second`; default 1.0. Must be > 0.
    pub messages_per_second: f64,
    /// `[pacing] burst`; default 3. Must be ≥ 1.
    pub burst: u32,
    /// `[pacing] daily_friend_adds`; default 20: friend adds and accepts per account in any
    /// 24 hours. 0 = none allowed.
    pub daily_friend_adds: u32,
    /// `[pacing] daily_group_creates`; default 5: groups created per account in any 24 hours.
    /// 0 = none allowed.
    pub daily_group_creates: u32,
}

// ---------------------------------------------------------------------------------------------
// Names, defaults and lookup
// ---------------------------------------------------------------------------------------------

/// The environment variable that names the configuration file when `--config` is absent.
pub const CONFIG_ENV: &str = "WXAGENT_CONFIG";

/// Every `(section, key)` the loader accepts. `config/wxagent.toml` documents exactly these
/// (a test compares both ways), and an unknown key in a file is reported as a problem.
/// Keys are only ever added here: old files must keep parsing.
pub const KNOWN_KEYS: &[(&str, &str)] = &[
    ("agent", "machine_id"),
    ("agent", "state_dir"),
    ("agent", "max_sessions"),
    ("agent", "admin_listen"),
    ("agent", "admin_token"),
    ("agent", "healthz_max_sync_age"),
    ("agent", "fork_server"),
    ("control", "callback_url"),
    ("control", "upload_url"),
    ("control", "appid"),
    ("control", "secret_key"),
    ("control", "poll_interval"),
    ("control", "timeout"),
    ("control", "sign_requests"),
    ("control", "ws_window"),
    ("control", "http_batch"),
    ("wechat", "login_url"),
    ("wechat", "desktop_mode"),
    ("wechat", "request_timeout"),
    ("wechat", "longpoll_timeout"),
    ("wechat", "network_give_up"),
    ("wechat", "deaf_after"),
    ("qr", "max_refreshes"),
    ("qr", "max_wait"),
    ("spool", "max_bytes"),
    ("spool", "max_events"),
    ("media", "allow_private_urls"),
    ("media", "max_download_bytes"),
    ("media", "fetch_timeout"),
    ("pacing", "messages_per_second"),
    ("pacing", "burst"),
    ("pacing", "daily_friend_adds"),
    ("pacing", "daily_group_creates"),
];

/// The sections of [`KNOWN_KEYS`], in file order.
pub const KNOWN_SECTIONS: &[&str] = &[
    "agent", "control", "wechat", "qr", "spool", "media", "pacing",
];

const DEFAULT_MAX_SESSIONS: usize = 100;
const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:7878";
const DEFAULT_HEALTHZ_MAX_SYNC_AGE: Duration = Duration::from_secs(5 * 60);
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_CONTROL_TIMEOUT: Duration = Duration::from_secs(30);
/// `[control] ws_window` when unset.
pub const DEFAULT_WS_WINDOW: usize = 64;
/// `[control] http_batch` when unset.
pub const DEFAULT_HTTP_BATCH: usize = 256;
const DEFAULT_LOGIN_URL: &str = "https://login.wx.qq.com";
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_LONGPOLL_TIMEOUT: Duration = Duration::from_secs(40);
const DEFAULT_NETWORK_GIVE_UP: Duration = Duration::from_secs(10 * 60);
const DEFAULT_DEAF_AFTER: Duration = Duration::from_secs(10 * 60);
const DEFAULT_MAX_REFRESHES: u32 = 5;
const DEFAULT_QR_MAX_WAIT: Duration = Duration::from_secs(10 * 60);
const DEFAULT_SPOOL_MAX_BYTES: u64 = 256 * 1024 * 1024;
const DEFAULT_SPOOL_MAX_EVENTS: u64 = 1_000_000;
/// A spool smaller than this could not hold one large report.
const SPOOL_MIN_BYTES: u64 = 64 * 1024;
const DEFAULT_MESSAGES_PER_SECOND: f64 = 1.0;
const DEFAULT_BURST: u32 = 3;
const DEFAULT_MAX_DOWNLOAD_BYTES: u64 = 25 * 1024 * 1024;
const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_DAILY_FRIEND_ADDS: u32 = 20;
const DEFAULT_DAILY_GROUP_CREATES: u32 = 5;

/// Below this a long poll cannot work at all (the server holds an idle poll for ≈25 s).
const LONGPOLL_MINIMUM: Duration = Duration::from_secs(1);
/// Below this every idle long poll ends in a client-side timeout instead of the server's
/// answer: legal, but worth a warning.
const LONGPOLL_RECOMMENDED: Duration = Duration::from_secs(30);

/// The platform default configuration path: `/etc/wxagent/wxagent.toml` on Unix,
/// `%ProgramData%\wxagent\wxagent.toml` on Windows.
pub fn default_config_path() -> PathBuf {
    #[cfg(windows)]
    {
        program_data().join("wxagent").join("wxagent.toml")
    }
    #[cfg(not(windows))]
    {
        PathBuf::from("/etc/wxagent/wxagent.toml")
    }
}

/// The platform default `[agent] state_dir`.
pub fn default_state_dir() -> PathBuf {
    #[cfg(windows)]
    {
        program_data().join("wxagent")
    }
    #[cfg(not(windows))]
    {
        PathBuf::from("/var/lib/wxagent")
    }
}

#[cfg(windows)]
fn program_data() -> PathBuf {
    std::env::var_os("ProgramData")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(r"C:\ProgramData"))
}

/// The default `[agent] machine_id`: the host name, or `unknown-host` when the OS will not say.
pub fn default_machine_id() -> String {
    hostname::get()
        .ok()
        .map(|h| h.to_string_lossy().into_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_owned())
}

/// Where to read from: `--config` > `WXAGENT_CONFIG` > platform default (`/etc/wxagent/wxagent.toml` on Unix,
/// `%ProgramData%\wxagent\wxagent.toml` on Windows). A missing file at the default path = built-in defaults;
/// a missing file named explicitly is an error. An empty `WXAGENT_CONFIG` counts as unset.
pub fn resolve_path(flag: Option<&Path>, env: Option<OsString>) -> ConfigSource {
    resolve_with_default(flag, env, default_config_path())
}

fn resolve_with_default(
    flag: Option<&Path>,
    env: Option<OsString>,
    default: PathBuf,
) -> ConfigSource {
    if let Some(path) = flag {
        return ConfigSource::Flag(path.to_path_buf());
    }
    if let Some(path) = env.filter(|e| !e.is_empty()) {
        return ConfigSource::Env(PathBuf::from(path));
    }
    // Only a definite "not there" means defaults: a file we may not stat (permissions) is
    // still the operator's file, and reading it will report why it cannot be used.
    match default.try_exists() {
        Ok(false) => ConfigSource::Defaults { looked_at: default },
        Ok(true) | Err(_) => ConfigSource::DefaultPath(default),
    }
}

impl ConfigSource {
    /// The file this source names (for `Defaults`, the default path that was not there).
    pub fn path(&self) -> &Path {
        match self {
            ConfigSource::Flag(p) | ConfigSource::Env(p) | ConfigSource::DefaultPath(p) => p,
            ConfigSource::Defaults { looked_at } => looked_at,
        }
    }
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::Flag(p) => write!(f, "config from --config {}", p.display()),
            ConfigSource::Env(p) => write!(f, "config from {CONFIG_ENV}={}", p.display()),
            ConfigSource::DefaultPath(p) => write!(f, "config from {} (default path)", p.display()),
            ConfigSource::Defaults { looked_at } => {
                write!(f, "built-in defaults (no file at {})", looked_at.display())
            }
        }
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Why no configuration could be produced.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (missing when named explicitly, permissions, not UTF-8).
    #[error("cannot read configuration file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid configuration. Every problem is listed, each line
    /// naming the file and the `[section] key`.
    #[error("{}", invalid_message(problems))]
    Invalid { path: String, problems: Vec<String> },
    /// The file holds a secret but every user on the machine may read it (Unix).
    #[error(
        "{} holds a secret ({}) but is readable by every user (mode {mode:04o}); run `chmod 600 {}` (or 640 with the service's group) and start again",
        path.display(), secrets.join(", "), path.display()
    )]
    WorldReadable {
        path: PathBuf,
        mode: u32,
        /// The `[section] key`s that hold secrets (never their values).
        secrets: Vec<&'static str>,
    },
}

fn invalid_message(problems: &[String]) -> String {
    let count = problems.len();
    let mut text = format!("invalid configuration ({count} problem{})", plural(count));
    for problem in problems {
        text.push_str("\n  ");
        text.push_str(problem);
    }
    text
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

/// A parsed configuration plus the advisory notes (legal but questionable settings), each
/// formatted like a problem line.
struct Loaded {
    config: Config,
    warnings: Vec<String>,
}

impl Loaded {
    fn log_warnings(self) -> Config {
        for warning in &self.warnings {
            tracing::warn!("{warning}");
        }
        self.config
    }
}

impl Config {
    /// Resolves the file (`--config` > `WXAGENT_CONFIG` > default path) and loads it.
    pub fn load(flag: Option<&Path>) -> Result<Config, ConfigError> {
        Config::from_source(resolve_path(flag, std::env::var_os(CONFIG_ENV)))
    }

    /// Reads and validates the file `source` names; `Defaults` (or a default path that vanished
    /// since it was resolved) gives the built-in defaults.
    pub fn from_source(source: ConfigSource) -> Result<Config, ConfigError> {
        load_source(source).map(Loaded::log_warnings)
    }

    /// Validates TOML text; `source` says where it came from (for messages and the INFO line).
    pub fn from_toml_str(text: &str, source: ConfigSource) -> Result<Config, ConfigError> {
        parse(text, source).map(Loaded::log_warnings)
    }

    /// The built-in defaults (`ConfigSource::Defaults` at the platform default path).
    pub fn defaults() -> Config {
        Config::defaults_from(ConfigSource::Defaults {
            looked_at: default_config_path(),
        })
    }

    fn defaults_from(source: ConfigSource) -> Config {
        Config {
            source,
            agent: AgentConfig {
                machine_id: default_machine_id(),
                state_dir: default_state_dir(),
                max_sessions: DEFAULT_MAX_SESSIONS,
                admin_listen: DEFAULT_ADMIN_LISTEN
                    .parse()
                    .expect("built-in admin address is valid"),
                admin_token: None,
                healthz_max_sync_age: DEFAULT_HEALTHZ_MAX_SYNC_AGE,
                fork_server: true,
            },
            control: ControlConfig {
                callback_url: None,
                upload_url: None,
                appid: String::new(),
                secret_key: None,
                poll_interval: DEFAULT_POLL_INTERVAL,
                timeout: DEFAULT_CONTROL_TIMEOUT,
                sign_requests: false,
                ws_window: DEFAULT_WS_WINDOW,
                http_batch: DEFAULT_HTTP_BATCH,
            },
            wechat: WechatConfig {
                login_url: Url::parse(DEFAULT_LOGIN_URL).expect("built-in login URL is valid"),
                desktop_mode: true,
                request_timeout: DEFAULT_REQUEST_TIMEOUT,
                longpoll_timeout: DEFAULT_LONGPOLL_TIMEOUT,
                network_give_up: DEFAULT_NETWORK_GIVE_UP,
                deaf_after: DEFAULT_DEAF_AFTER,
            },
            qr: QrConfig {
                max_refreshes: DEFAULT_MAX_REFRESHES,
                max_wait: DEFAULT_QR_MAX_WAIT,
            },
            spool: SpoolConfig {
                max_bytes: DEFAULT_SPOOL_MAX_BYTES,
                max_events: DEFAULT_SPOOL_MAX_EVENTS,
            },
            media: MediaConfig {
                allow_private_urls: false,
                max_download_bytes: DEFAULT_MAX_DOWNLOAD_BYTES,
                fetch_timeout: DEFAULT_FETCH_TIMEOUT,
            },
            pacing: PacingConfig {
                messages_per_second: DEFAULT_MESSAGES_PER_SECOND,
                burst: DEFAULT_BURST,
                daily_friend_adds: DEFAULT_DAILY_FRIEND_ADDS,
                daily_group_creates: DEFAULT_DAILY_GROUP_CREATES,
            },
        }
    }

    /// Where this configuration came from, for the INFO line at start-up, e.g.
    /// `config from --config /x.toml` or `built-in defaults (no file at /etc/wxagent/wxagent.toml)`.
    pub fn describe_source(&self) -> String {
        self.source.to_string()
    }

    /// The effective settings, one `key = value` line per option grouped by `[section]`, values
    /// as TOML would write them except the secret ("set" / "not set") and unset URLs
    /// ("(not set)"); URL passwords are redacted.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let mut section = |name: &str, rows: Vec<(&str, String)>| {
            if !out.is_empty() {
                out.push('\n');
            }
            let _ = writeln!(out, "[{name}]");
            for (key, value) in rows {
                let _ = writeln!(out, "{key} = {value}");
            }
        };
        let (a, c, w) = (&self.agent, &self.control, &self.wechat);
        section(
            "agent",
            vec![
                ("machine_id", quoted(&a.machine_id)),
                ("state_dir", quoted(&a.state_dir.display().to_string())),
                ("max_sessions", a.max_sessions.to_string()),
                ("admin_listen", quoted(&a.admin_listen.to_string())),
                (
                    "admin_token",
                    if a.admin_token.is_some() {
                        "set"
                    } else {
                        "not set"
                    }
                    .to_owned(),
                ),
                (
                    "healthz_max_sync_age",
                    duration_text(a.healthz_max_sync_age),
                ),
                ("fork_server", a.fork_server.to_string()),
            ],
        );
        section(
            "control",
            vec![
                ("callback_url", optional_url(c.callback_url.as_ref())),
                ("upload_url", optional_url(c.upload_url.as_ref())),
                ("appid", quoted(&c.appid)),
                (
                    "secret_key",
                    if c.secret_key.is_some() {
                        "set"
                    } else {
                        "not set"
                    }
                    .to_owned(),
                ),
                ("poll_interval", duration_text(c.poll_interval)),
                ("timeout", duration_text(c.timeout)),
                ("sign_requests", c.sign_requests.to_string()),
                ("ws_window", c.ws_window.to_string()),
                ("http_batch", c.http_batch.to_string()),
            ],
        );
        section(
            "wechat",
            vec![
                ("login_url", quoted(redacted_url(&w.login_url).as_str())),
                ("desktop_mode", w.desktop_mode.to_string()),
                ("request_timeout", duration_text(w.request_timeout)),
                ("longpoll_timeout", duration_text(w.longpoll_timeout)),
                ("network_give_up", duration_text(w.network_give_up)),
                ("deaf_after", duration_text(w.deaf_after)),
            ],
        );
        section(
            "qr",
            vec![
                ("max_refreshes", self.qr.max_refreshes.to_string()),
                ("max_wait", duration_text(self.qr.max_wait)),
            ],
        );
        section(
            "spool",
            vec![
                ("max_bytes", self.spool.max_bytes.to_string()),
                ("max_events", self.spool.max_events.to_string()),
            ],
        );
        section(
            "media",
            vec![
                (
                    "allow_private_urls",
                    self.media.allow_private_urls.to_string(),
                ),
                (
                    "max_download_bytes",
                    self.media.max_download_bytes.to_string(),
                ),
                ("fetch_timeout", duration_text(self.media.fetch_timeout)),
            ],
        );
        section(
            "pacing",
            vec![
                (
                    "messages_per_second",
                    self.pacing.messages_per_second.to_string(),
                ),
                ("burst", self.pacing.burst.to_string()),
                (
                    "daily_friend_adds",
                    self.pacing.daily_friend_adds.to_string(),
                ),
                (
                    "daily_group_creates",
                    self.pacing.daily_group_creates.to_string(),
                ),
            ],
        );
        out
    }
}

fn quoted(s: &str) -> String {
    format!("{s:?}")
}

fn duration_text(d: Duration) -> String {
    quoted(&humantime::format_duration(d).to_string())
}

fn optional_url(url: Option<&Url>) -> String {
    url.map_or_else(
        || "(not set)".to_owned(),
        |u| quoted(redacted_url(u).as_str()),
    )
}

/// A URL may carry a password (`https://user:pw@host/`); summaries never show it.
fn redacted_url(url: &Url) -> Url {
    let mut shown = url.clone();
    if shown.password().is_some() {
        // Only fails for URLs that cannot have credentials, which then have no password.
        let _ = shown.set_password(Some("redacted"));
    }
    shown
}

fn load_source(source: ConfigSource) -> Result<Loaded, ConfigError> {
    if let ConfigSource::Defaults { .. } = source {
        return Ok(Loaded {
            config: Config::defaults_from(source),
            warnings: Vec::new(),
        });
    }
    let path = source.path().to_path_buf();
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let loaded = parse(&text, source)?;
            check_not_world_readable(&path, &loaded.config)?;
            Ok(loaded)
        }
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                && matches!(source, ConfigSource::DefaultPath(_)) =>
        {
            let config = Config::defaults_from(ConfigSource::Defaults { looked_at: path });
            Ok(Loaded {
                config,
                warnings: Vec::new(),
            })
        }
        Err(e) => Err(ConfigError::Read { path, source: e }),
    }
}

/// The `[section] key`s of `config` that hold a secret: the control-plane secret, the admin
/// API's token and any password inside a URL.
pub fn secret_keys(config: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if config.control.secret_key.is_some() {
        keys.push("[control] secret_key");
    }
    if config.agent.admin_token.is_some() {
        keys.push("[agent] admin_token");
    }
    if config
        .control
        .callback_url
        .as_ref()
        .is_some_and(|u| u.password().is_some())
    {
        keys.push("[control] callback_url (password)");
    }
    if config
        .control
        .upload_url
        .as_ref()
        .is_some_and(|u| u.password().is_some())
    {
        keys.push("[control] upload_url (password)");
    }
    keys
}

/// Refuses a config file that holds a secret and that every local user may read (DESIGN §3.7:
/// secrets live only in private files). Other users' read access through the group is the
/// operator's choice (the .deb installs the file 0640 root:wxagent).
#[cfg(unix)]
fn check_not_world_readable(path: &Path, config: &Config) -> Result<(), ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let secrets = secret_keys(config);
    if secrets.is_empty() {
        return Ok(());
    }
    let mode = std::fs::metadata(path)
        .map_err(|e| ConfigError::Read {
            path: path.to_owned(),
            source: e,
        })?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o004 != 0 {
        return Err(ConfigError::WorldReadable {
            path: path.to_owned(),
            mode,
            secrets,
        });
    }
    Ok(())
}

/// Windows files carry ACLs, not modes: the installer's directory permissions apply.
#[cfg(not(unix))]
fn check_not_world_readable(_path: &Path, _config: &Config) -> Result<(), ConfigError> {
    Ok(())
}

/// The text `wxagent check-config` prints, and whether the configuration is usable. Success:
/// where the configuration came from, any warnings and the effective settings. Failure: every
/// problem found.
pub fn check_config_report(flag: Option<&Path>) -> (bool, String) {
    report_for(resolve_path(flag, std::env::var_os(CONFIG_ENV)))
}

fn report_for(source: ConfigSource) -> (bool, String) {
    let described = source.to_string();
    match load_source(source) {
        Ok(Loaded { config, warnings }) => {
            let mut text = format!(
                "configuration is valid, using {}\n",
                config.describe_source()
            );
            for warning in &warnings {
                let _ = writeln!(text, "warning: {warning}");
            }
            text.push('\n');
            text.push_str(&config.summary());
            (true, text)
        }
        Err(ConfigError::Invalid { problems, .. }) => {
            let count = problems.len();
            let mut text = format!(
                "configuration is invalid, {count} problem{} ({described}):\n",
                plural(count)
            );
            for problem in &problems {
                let _ = writeln!(text, "{problem}");
            }
            (false, text)
        }
        Err(e @ ConfigError::WorldReadable { .. }) => (false, format!("{e}\n")),
        Err(e @ ConfigError::Read { .. }) => {
            let cause = std::error::Error::source(&e)
                .map(|c| format!(": {c}"))
                .unwrap_or_default();
            (false, format!("{e}{cause}\n"))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Validation: raw table → Config, every problem collected
// ---------------------------------------------------------------------------------------------

fn parse(text: &str, source: ConfigSource) -> Result<Loaded, ConfigError> {
    let origin = source.path().display().to_string();
    let table = match text.parse::<Table>() {
        Ok(table) => table,
        Err(e) => {
            let problem = format!("{origin}: {}", syntax_problem(text, &e));
            return Err(ConfigError::Invalid {
                path: origin,
                problems: vec![problem],
            });
        }
    };
    let mut r = Reader {
        origin,
        table: &table,
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    r.check_shape();

    let mut config = Config::defaults_from(source);

    let agent = &mut config.agent;
    r.take("agent", "machine_id", non_empty_string)
        .set(&mut agent.machine_id);
    r.take("agent", "state_dir", non_empty_string)
        .map_set(&mut agent.state_dir, PathBuf::from);
    r.take("agent", "max_sessions", count)
        .map_set(&mut agent.max_sessions, |n| n as usize);
    let admin_listen = r.take("agent", "admin_listen", socket_addr);
    let admin_token = r.take("agent", "admin_token", secret);
    r.take("agent", "healthz_max_sync_age", duration(Floor::AboveZero))
        .set(&mut agent.healthz_max_sync_age);
    r.take("agent", "fork_server", boolean)
        .set(&mut agent.fork_server);
    if let Got::Valid(addr) = &admin_listen {
        let has_token = matches!(&admin_token, Got::Valid(Some(_)));
        if let Some(why) = admin_listen_refusal(*addr, has_token) {
            r.problem("agent", "admin_listen", &why);
        }
    }
    admin_listen.set(&mut agent.admin_listen);
    admin_token.set(&mut agent.admin_token);

    let control = &mut config.control;
    let callback = r.take("control", "callback_url", optional(http_url));
    let upload = r.take("control", "upload_url", optional(http_url));
    let secret = r.take("control", "secret_key", secret);
    let sign = r.take("control", "sign_requests", boolean);
    r.take("control", "appid", string).set(&mut control.appid);
    r.take("control", "poll_interval", duration(Floor::Zero))
        .set(&mut control.poll_interval);
    r.take("control", "timeout", duration(Floor::AboveZero))
        .set(&mut control.timeout);
    r.take("control", "ws_window", reports_at_once)
        .set(&mut control.ws_window);
    r.take("control", "http_batch", reports_at_once)
        .set(&mut control.http_batch);
    if matches!(sign, Got::Valid(true)) && matches!(secret, Got::Absent | Got::Valid(None)) {
        r.problem(
            "control",
            "sign_requests",
            "is true but [control] secret_key is not set; set the secret or turn signing off",
        );
    }
    if matches!(upload, Got::Valid(Some(_))) && matches!(callback, Got::Absent | Got::Valid(None)) {
        r.problem(
            "control",
            "upload_url",
            "is set but [control] callback_url is not; uploads only happen for a control plane",
        );
    }
    callback.set(&mut control.callback_url);
    upload.set(&mut control.upload_url);
    secret.set(&mut control.secret_key);
    sign.set(&mut control.sign_requests);

    let wechat = &mut config.wechat;
    r.take("wechat", "login_url", login_url)
        .set(&mut wechat.login_url);
    r.take("wechat", "desktop_mode", boolean)
        .set(&mut wechat.desktop_mode);
    r.take("wechat", "request_timeout", duration(Floor::AboveZero))
        .set(&mut wechat.request_timeout);
    let longpoll = r.take(
        "wechat",
        "longpoll_timeout",
        duration(Floor::AtLeast(LONGPOLL_MINIMUM)),
    );
    if let Got::Valid(d) = longpoll
        && d < LONGPOLL_RECOMMENDED
    {
        r.warning(
            "wechat",
            "longpoll_timeout",
            format!(
                "{} is shorter than the ≈25s the server holds an idle poll, so idle polls end in timeouts; {} or more is recommended",
                humantime::format_duration(d),
                humantime::format_duration(LONGPOLL_RECOMMENDED),
            ),
        );
    }
    longpoll.set(&mut wechat.longpoll_timeout);
    r.take("wechat", "network_give_up", duration(Floor::AboveZero))
        .set(&mut wechat.network_give_up);
    r.take("wechat", "deaf_after", duration(Floor::AboveZero))
        .set(&mut wechat.deaf_after);

    let qr = &mut config.qr;
    r.take("qr", "max_refreshes", count)
        .set(&mut qr.max_refreshes);
    r.take("qr", "max_wait", duration(Floor::AboveZero))
        .set(&mut qr.max_wait);

    r.take("spool", "max_bytes", spool_bytes)
        .set(&mut config.spool.max_bytes);
    r.take("spool", "max_events", count)
        .map_set(&mut config.spool.max_events, u64::from);

    let media = &mut config.media;
    r.take("media", "allow_private_urls", boolean)
        .set(&mut media.allow_private_urls);
    r.take("media", "max_download_bytes", byte_count)
        .set(&mut media.max_download_bytes);
    r.take("media", "fetch_timeout", duration(Floor::AboveZero))
        .set(&mut media.fetch_timeout);

    let pacing = &mut config.pacing;
    r.take("pacing", "messages_per_second", rate)
        .set(&mut pacing.messages_per_second);
    r.take("pacing", "burst", count).set(&mut pacing.burst);
    r.take("pacing", "daily_friend_adds", limit)
        .set(&mut pacing.daily_friend_adds);
    r.take("pacing", "daily_group_creates", limit)
        .set(&mut pacing.daily_group_creates);

    if r.problems.is_empty() {
        Ok(Loaded {
            config,
            warnings: r.warnings,
        })
    } else {
        Err(ConfigError::Invalid {
            path: r.origin,
            problems: r.problems,
        })
    }
}

/// A TOML syntax error as `line L, column C: message`. The parser's own rendering quotes the
/// offending source line, which could be the secret's line, so it is rebuilt from the span.
fn syntax_problem(text: &str, e: &toml::de::Error) -> String {
    let message = e
        .message()
        .trim()
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ");
    match e.span() {
        Some(span) => {
            // Spans fall on character boundaries; the search only guards against a parser bug.
            let end = (0..=span.start.min(text.len()))
                .rev()
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(0);
            let before = &text[..end];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: invalid TOML: {message}")
        }
        None => format!("invalid TOML: {message}"),
    }
}

/// What a key's lookup produced. `Invalid` means a problem has already been recorded, so
/// cross-key rules skip it rather than report the same mistake twice.
enum Got<T> {
    Absent,
    Valid(T),
    Invalid,
}

impl<T> Got<T> {
    fn set(self, slot: &mut T) {
        self.map_set(slot, |v| v);
    }

    fn map_set<U>(self, slot: &mut U, f: impl FnOnce(T) -> U) {
        if let Got::Valid(v) = self {
            *slot = f(v);
        }
    }
}

struct Reader<'t> {
    origin: String,
    table: &'t Table,
    problems: Vec<String>,
    warnings: Vec<String>,
}

impl<'t> Reader<'t> {
    fn problem(&mut self, section: &str, key: &str, message: impl fmt::Display) {
        self.problems
            .push(format!("{}: [{section}] {key}: {message}", self.origin));
    }

    fn warning(&mut self, section: &str, key: &str, message: impl fmt::Display) {
        self.warnings
            .push(format!("{}: [{section}] {key}: {message}", self.origin));
    }

    fn take<T>(
        &mut self,
        section: &str,
        key: &str,
        convert: impl FnOnce(&Value) -> Result<T, String>,
    ) -> Got<T> {
        let Some(value) = self
            .table
            .get(section)
            .and_then(Value::as_table)
            .and_then(|s| s.get(key))
        else {
            return Got::Absent;
        };
        match convert(value) {
            Ok(v) => Got::Valid(v),
            Err(message) => {
                self.problem(section, key, message);
                Got::Invalid
            }
        }
    }

    /// Unknown sections and keys, keys outside any section, sections that are not tables.
    fn check_shape(&mut self) {
        for (name, value) in self.table {
            let Value::Table(section) = value else {
                let message = match sections_with_key(name).first() {
                    Some(home) => {
                        format!("settings belong inside a section; did you mean [{home}] {name}?")
                    }
                    None if KNOWN_SECTIONS.contains(&name.as_str()) => {
                        format!(
                            "expected a section ([{name}] followed by its keys), got {}",
                            kind(value)
                        )
                    }
                    None => "unknown key outside any section".to_owned(),
                };
                self.problems
                    .push(format!("{}: {name}: {message}", self.origin));
                continue;
            };
            if !KNOWN_SECTIONS.contains(&name.as_str()) {
                let hint = nearest(name, KNOWN_SECTIONS.iter().copied())
                    .map(|s| format!("did you mean [{s}]?"))
                    .unwrap_or_else(|| format!("known sections: {}", KNOWN_SECTIONS.join(", ")));
                self.problems.push(format!(
                    "{}: [{name}]: unknown section; {hint}",
                    self.origin
                ));
                continue;
            }
            for key in section.keys() {
                if is_known(name, key) {
                    continue;
                }
                let homes = sections_with_key(key);
                let hint = if let Some(home) = homes.first() {
                    format!("; it belongs in [{home}]")
                } else if let Some(near) = nearest(key, keys_of(name)) {
                    format!("; did you mean {near:?}?")
                } else {
                    format!(
                        "; known keys in [{name}]: {}",
                        keys_of(name).collect::<Vec<_>>().join(", ")
                    )
                };
                self.problem(name, key, format!("unknown key{hint}"));
            }
        }
    }
}

fn is_known(section: &str, key: &str) -> bool {
    KNOWN_KEYS.iter().any(|&(s, k)| s == section && k == key)
}

fn keys_of(section: &str) -> impl Iterator<Item = &'static str> + '_ {
    KNOWN_KEYS
        .iter()
        .filter(move |(s, _)| *s == section)
        .map(|&(_, k)| k)
}

fn sections_with_key(key: &str) -> Vec<&'static str> {
    KNOWN_KEYS
        .iter()
        .filter(|&&(_, k)| k == key)
        .map(|&(s, _)| s)
        .collect()
}

/// The candidate a typo most likely meant, if any is close enough to be worth suggesting.
fn nearest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let word = word.to_lowercase();
    candidates
        .map(|c| (strsim::jaro_winkler(&word, c), c))
        .filter(|&(score, _)| score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// A value as the operator wrote it, for "got …" in messages.
fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => quoted(s),
        Value::Integer(n) => n.to_string(),
        Value::Float(x) => x.to_string(),
        Value::Boolean(b) => b.to_string(),
        Value::Datetime(d) => d.to_string(),
        Value::Array(_) | Value::Table(_) => kind(value).to_owned(),
    }
}

/// A value's TOML type, for messages that must not echo the value itself (the secret).
fn kind(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a number",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date-time",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

// Converters: one per kind of setting. Each returns the message that follows `[section] key: `.

fn string(value: &Value) -> Result<String, String> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("expected a string, got {}", shown(value)))
}

fn non_empty_string(value: &Value) -> Result<String, String> {
    match string(value)? {
        s if s.trim().is_empty() => Err("must not be empty".to_owned()),
        s => Ok(s),
    }
}

fn boolean(value: &Value) -> Result<bool, String> {
    value
        .as_bool()
        .ok_or_else(|| format!("expected true or false, got {}", shown(value)))
}

/// A count: a whole number from 1 to `u32::MAX`.
fn count(value: &Value) -> Result<u32, String> {
    match value.as_integer() {
        None => Err(format!("expected a whole number ≥ 1, got {}", shown(value))),
        Some(n) if n < 1 => Err(format!("must be at least 1, got {n}")),
        Some(n) => u32::try_from(n).map_err(|_| format!("must be at most {}, got {n}", u32::MAX)),
    }
}

/// `[control] ws_window` and `http_batch`: 1 to the most frames a link keeps waiting
/// ([`MAX_WINDOW`](crate::control::ws::MAX_WINDOW)), the most reports a post carries too.
fn reports_at_once(value: &Value) -> Result<usize, String> {
    let max = crate::control::ws::MAX_WINDOW;
    match value.as_integer() {
        None => Err(format!(
            "expected a whole number from 1 to {max}, got {}",
            shown(value)
        )),
        Some(n) if n < 1 || n > max as i64 => Err(format!(
            "must be from 1 (one report at a time) to {max}, got {n}"
        )),
        Some(n) => Ok(n as usize),
    }
}

/// A limit: a whole number from 0 (nothing allowed) to `u32::MAX`.
fn limit(value: &Value) -> Result<u32, String> {
    match value.as_integer() {
        None => Err(format!("expected a whole number ≥ 0, got {}", shown(value))),
        Some(n) if n < 0 => Err(format!("must be 0 or more, got {n}")),
        Some(n) => u32::try_from(n).map_err(|_| format!("must be at most {}, got {n}", u32::MAX)),
    }
}

/// A size in bytes: a whole number ≥ 1 (`26214400` is 25 MiB).
fn byte_count(value: &Value) -> Result<u64, String> {
    match value.as_integer() {
        None => Err(format!(
            "expected a number of bytes such as 26214400 (25 MiB), got {}",
            shown(value)
        )),
        Some(n) if n < 1 => Err(format!("must be at least 1, got {n}")),
        // Positive i64 always fits.
        Some(n) => Ok(n as u64),
    }
}

/// `[spool] max_bytes`: a [`byte_count`] large enough for one large report.
fn spool_bytes(value: &Value) -> Result<u64, String> {
    match byte_count(value)? {
        n if n < SPOOL_MIN_BYTES => Err(format!(
            "must be at least {SPOOL_MIN_BYTES} (64 KiB), got {n}"
        )),
        n => Ok(n),
    }
}

/// A rate: a finite number above 0 (integers accepted: `messages_per_second = 2`).
fn rate(value: &Value) -> Result<f64, String> {
    let x = match value {
        Value::Float(x) => *x,
        // `messages_per_second = 2` is a TOML integer; the f64 rounding of huge values is harmless.
        Value::Integer(n) => *n as f64,
        other => {
            return Err(format!(
                "expected a number such as 1 or 0.5, got {}",
                shown(other)
            ));
        }
    };
    if x.is_finite() && x > 0.0 {
        Ok(x)
    } else {
        Err(format!("must be a number above 0, got {}", shown(value)))
    }
}

/// The least value a duration setting accepts.
#[derive(Clone, Copy)]
enum Floor {
    /// 0 is allowed (it disables the feature).
    Zero,
    AboveZero,
    AtLeast(Duration),
}

fn duration(floor: Floor) -> impl FnOnce(&Value) -> Result<Duration, String> {
    move |value| {
        let expected = "expected a duration such as \"5s\" or \"2m\"";
        let d = match value {
            Value::String(s) => humantime::parse_duration(s.trim())
                .map_err(|_| format!("{expected}, got {}", shown(value)))?,
            Value::Integer(n) => {
                return Err(format!(
                    "{expected}, got {n} (a number without a unit; write \"{n}s\")"
                ));
            }
            other => return Err(format!("{expected}, got {}", shown(other))),
        };
        match floor {
            Floor::AboveZero if d.is_zero() => {
                Err(format!("must be more than 0, got {}", shown(value)))
            }
            Floor::AtLeast(min) if d < min => Err(format!(
                "must be at least {}, got {}",
                humantime::format_duration(min),
                shown(value)
            )),
            _ => Ok(d),
        }
    }
}

/// Why the admin API may not listen on `addr`, if it may not: anything but loopback needs an
/// `admin_token`, because the API shows accounts and QR codes that log them in.
pub fn admin_listen_refusal(addr: SocketAddr, has_token: bool) -> Option<String> {
    if addr.ip().to_canonical().is_loopback() || has_token {
        return None;
    }
    Some(format!(
        "{addr} is not a loopback address and [agent] admin_token is not set; set a token or listen on 127.0.0.1 / [::1]"
    ))
}

fn socket_addr(value: &Value) -> Result<SocketAddr, String> {
    string(value)?.trim().parse().map_err(|_| {
        format!(
            "expected an address and port such as \"127.0.0.1:7878\" or \"[::1]:7878\", got {}",
            shown(value)
        )
    })
}

fn url(value: &Value) -> Result<Url, String> {
    let text = string(value)?;
    Url::parse(text.trim()).map_err(|e| {
        format!(
            "expected a URL such as \"https://example.com/wehub\", got {} ({e})",
            shown(value)
        )
    })
}

/// An `http://` or `https://` URL (the control plane may run on a LAN without TLS).
fn http_url(value: &Value) -> Result<Url, String> {
    let url = url(value)?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        _ => Err(format!(
            "must be an http:// or https:// URL, got {}",
            shown(value)
        )),
    }
}

/// An `https://` URL, or `http://` when the host is loopback (the simulator, tests).
fn login_url(value: &Value) -> Result<Url, String> {
    let url = url(value)?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err(format!(
            "must be an https:// URL (plain http:// is accepted only for loopback hosts such as 127.0.0.1), got {}",
            shown(value)
        )),
        _ => Err(format!("must be an https:// URL, got {}", shown(value))),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// `""` means "not set", so a template can carry the key with an empty value.
fn optional<T>(
    convert: impl FnOnce(&Value) -> Result<T, String>,
) -> impl FnOnce(&Value) -> Result<Option<T>, String> {
    move |value| match value.as_str() {
        Some(s) if s.trim().is_empty() => Ok(None),
        _ => convert(value).map(Some),
    }
}

/// The secret: never echoed in a message, whatever was written. `""` means "not set".
fn secret(value: &Value) -> Result<Option<Secret>, String> {
    match value {
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) => Ok(Some(Secret::new(s.clone()))),
        other => Err(format!("expected a string, got {}", kind(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN: &str = "/etc/wxagent.toml";

    fn source() -> ConfigSource {
        ConfigSource::Flag(PathBuf::from(ORIGIN))
    }

    fn valid(text: &str) -> Config {
        match Config::from_toml_str(text, source()) {
            Ok(config) => config,
            Err(e) => panic!("expected a valid configuration, got {e:#}"),
        }
    }

    fn problems(text: &str) -> Vec<String> {
        match Config::from_toml_str(text, source()) {
            Ok(config) => panic!("expected problems, got {config:#?}"),
            Err(ConfigError::Invalid { path, problems }) => {
                assert_eq!(path, ORIGIN);
                assert!(!problems.is_empty());
                problems
            }
            Err(e) => panic!("expected Invalid, got {e:?}"),
        }
    }

    /// The single problem `text` produces.
    fn problem(text: &str) -> String {
        let mut all = problems(text);
        assert_eq!(all.len(), 1, "expected exactly one problem, got {all:#?}");
        all.remove(0)
    }

    #[cfg(unix)]
    fn file_with_mode(text: &str, mode: u32) -> (tempfile::TempDir, PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wxagent.toml");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        (dir, path)
    }

    #[cfg(unix)]
    #[test]
    fn a_world_readable_file_with_a_secret_is_refused() {
        let text = "[control]\nsecret_key = \"hush-7788\"\n";
        let (_dir, path) = file_with_mode(text, 0o644);
        let e = Config::from_source(ConfigSource::Flag(path.clone())).unwrap_err();
        let shown = e.to_string();
        assert!(
            matches!(&e, ConfigError::WorldReadable { mode: 0o644, secrets, .. } if secrets == &["[control] secret_key"]),
            "{e:?}"
        );
        assert!(shown.contains(&path.display().to_string()), "{shown}");
        assert!(shown.contains("mode 0644"), "{shown}");
        assert!(
            shown.contains(&format!("chmod 600 {}", path.display())),
            "{shown}"
        );
        assert!(!shown.contains("hush-7788"), "{shown}");
        // check-config says the same and fails.
        let (ok, report) = report_for(ConfigSource::Flag(path.clone()));
        assert!(!ok);
        assert!(report.contains("chmod 600"), "{report}");

        // A password in a URL is a secret too.
        let text = "[control]\ncallback_url = \"http://u:pw-1@127.0.0.1:9/cb\"\n";
        let (_dir, path) = file_with_mode(text, 0o604);
        let e = Config::from_source(ConfigSource::Flag(path)).unwrap_err();
        assert!(
            matches!(&e, ConfigError::WorldReadable { secrets, .. } if secrets == &["[control] callback_url (password)"]),
            "{e:?}"
        );
        assert!(!e.to_string().contains("pw-1"), "{e}");

        // So is the admin API's token.
        let text = "[agent]\nadmin_token = \"tok-9911\"\n";
        let (_dir, path) = file_with_mode(text, 0o644);
        let e = Config::from_source(ConfigSource::Flag(path)).unwrap_err();
        assert!(
            matches!(&e, ConfigError::WorldReadable { secrets, .. } if secrets == &["[agent] admin_token"]),
            "{e:?}"
        );
        assert!(!e.to_string().contains("tok-9911"), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn private_files_and_files_without_secrets_are_accepted() {
        let secret = "[control]\nsecret_key = \"hush\"\n";
        for mode in [0o600, 0o640, 0o400] {
            let (_dir, path) = file_with_mode(secret, mode);
            let c = Config::from_source(ConfigSource::Flag(path)).unwrap();
            assert!(c.control.secret_key.is_some(), "mode {mode:o}");
        }
        let (_dir, path) = file_with_mode("[agent]\nmax_sessions = 3\n", 0o644);
        let c = Config::from_source(ConfigSource::Flag(path)).unwrap();
        assert_eq!(c.agent.max_sessions, 3);
        // An empty secret means "not set".
        let (_dir, path) = file_with_mode("[control]\nsecret_key = \"\"\n", 0o644);
        assert!(Config::from_source(ConfigSource::Flag(path)).is_ok());
    }

    fn warnings(text: &str) -> Vec<String> {
        match parse(text, source()) {
            Ok(loaded) => loaded.warnings,
            Err(e) => panic!("expected a valid configuration, got {e:#}"),
        }
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let c = Config::defaults();
        assert_eq!(
            c.source,
            ConfigSource::Defaults {
                looked_at: default_config_path()
            }
        );
        assert_eq!(c.agent.machine_id, default_machine_id());
        assert!(!c.agent.machine_id.is_empty());
        assert_eq!(c.agent.state_dir, default_state_dir());
        assert_eq!(c.agent.max_sessions, 100);
        assert_eq!(
            c.agent.admin_listen,
            "127.0.0.1:7878".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(c.control.callback_url, None);
        assert_eq!(c.control.upload_url, None);
        assert_eq!(c.control.appid, "");
        assert_eq!(c.control.secret_key, None);
        assert_eq!(c.control.poll_interval, Duration::from_secs(5));
        assert_eq!(c.control.timeout, Duration::from_secs(30));
        assert!(!c.control.sign_requests);
        assert_eq!(c.wechat.login_url.as_str(), "https://login.wx.qq.com/");
        assert!(c.wechat.desktop_mode);
        assert_eq!(c.wechat.request_timeout, Duration::from_secs(30));
        assert_eq!(c.wechat.longpoll_timeout, Duration::from_secs(40));
        assert_eq!(c.wechat.network_give_up, Duration::from_secs(600));
        assert_eq!(c.qr.max_refreshes, 5);
        assert_eq!(c.qr.max_wait, Duration::from_secs(600));
        assert_eq!(c.spool.max_bytes, 256 * 1024 * 1024);
        assert_eq!(c.spool.max_events, 1_000_000);
        assert!(!c.media.allow_private_urls);
        assert_eq!(c.media.max_download_bytes, 25 * 1024 * 1024);
        assert_eq!(c.media.fetch_timeout, Duration::from_secs(30));
        assert_eq!(c.pacing.messages_per_second, 1.0);
        assert_eq!(c.pacing.burst, 3);
        assert_eq!(c.pacing.daily_friend_adds, 20);
        assert_eq!(c.pacing.daily_group_creates, 5);
    }

    #[test]
    fn an_empty_file_means_all_defaults_and_keeps_its_source() {
        let c = valid("");
        let d = Config::defaults();
        assert_eq!(c.source, source());
        assert_eq!(
            (c.agent, c.control, c.wechat),
            (d.agent, d.control, d.wechat)
        );
        assert_eq!((c.qr, c.media, c.pacing), (d.qr, d.media, d.pacing));
        // Empty sections are fine too.
        valid("[agent]\n[control]\n[wechat]\n[qr]\n[media]\n[pacing]\n");
    }

    #[test]
    fn every_key_is_read() {
        let c = valid(
            r#"
            [agent]
            machine_id = "box-7"
            state_dir = "/srv/wx"
            max_sessions = 12
            admin_listen = "[::1]:9000"
            [control]
            callback_url = "http://10.0.0.5:8080/wehub"
            upload_url = "https://cp.example.com/upload"
            appid = "tenant-1"
            secret_key = "s3cr3t-value"
            poll_interval = "0s"
            timeout = "2m"
            sign_requests = true
            [wechat]
            login_url = "http://127.0.0.1:9100"
            desktop_mode = false
            request_timeout = "500ms"
            longpoll_timeout = "45s"
            network_give_up = "1h"
            [qr]
            max_refreshes = 2
            max_wait = "90s"
            [media]
            allow_private_urls = true
            max_download_bytes = 1048576
            fetch_timeout = "2m"
            [pacing]
            messages_per_second = 0.5
            burst = 10
            daily_friend_adds = 0
            daily_group_creates = 2
            "#,
        );
        assert_eq!(c.agent.machine_id, "box-7");
        assert_eq!(c.agent.state_dir, PathBuf::from("/srv/wx"));
        assert_eq!(c.agent.max_sessions, 12);
        assert_eq!(
            c.agent.admin_listen,
            "[::1]:9000".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            c.control.callback_url.unwrap().as_str(),
            "http://10.0.0.5:8080/wehub"
        );
        assert_eq!(
            c.control.upload_url.unwrap().as_str(),
            "https://cp.example.com/upload"
        );
        assert_eq!(c.control.appid, "tenant-1");
        assert_eq!(
            c.control.secret_key.as_ref().map(Secret::expose),
            Some("s3cr3t-value")
        );
        assert_eq!(c.control.poll_interval, Duration::ZERO);
        assert_eq!(c.control.timeout, Duration::from_secs(120));
        assert!(c.control.sign_requests);
        assert_eq!(c.wechat.login_url.as_str(), "http://127.0.0.1:9100/");
        assert!(!c.wechat.desktop_mode);
        assert_eq!(c.wechat.request_timeout, Duration::from_millis(500));
        assert_eq!(c.wechat.longpoll_timeout, Duration::from_secs(45));
        assert_eq!(c.wechat.network_give_up, Duration::from_secs(3600));
        assert_eq!(c.qr.max_refreshes, 2);
        assert_eq!(c.qr.max_wait, Duration::from_secs(90));
        assert!(c.media.allow_private_urls);
        assert_eq!(c.media.max_download_bytes, 1_048_576);
        assert_eq!(c.media.fetch_timeout, Duration::from_secs(120));
        assert_eq!(c.pacing.messages_per_second, 0.5);
        assert_eq!(c.pacing.burst, 10);
        assert_eq!(c.pacing.daily_friend_adds, 0);
        assert_eq!(c.pacing.daily_group_creates, 2);
    }

    #[test]
    fn bad_duration_names_file_section_key_and_value() {
        assert_eq!(
            problem("[control]\npoll_interval = \"fast\"\n"),
            r#"/etc/wxagent.toml: [control] poll_interval: expected a duration such as "5s" or "2m", got "fast""#
        );
    }

    #[test]
    fn spool_limits_take_bytes_and_counts() {
        assert_eq!(valid("").spool, Config::defaults().spool);
        let c = valid("[spool]\nmax_bytes = 67108864\nmax_events = 5000\n");
        assert_eq!(c.spool.max_bytes, 64 * 1024 * 1024);
        assert_eq!(c.spool.max_events, 5000);
        assert_eq!(
            problem("[spool]\nmax_bytes = 1000\n"),
            "/etc/wxagent.toml: [spool] max_bytes: must be at least 65536 (64 KiB), got 1000"
        );
        for bad in ["-1", "0", "\"256 MiB\"", "1.5"] {
            let p = problem(&format!("[spool]\nmax_bytes = {bad}\n"));
            assert!(p.contains("[spool] max_bytes: "), "{p}");
        }
        let p = problem("[spool]\nmax_events = 0\n");
        assert!(p.contains("[spool] max_events: must be at least 1"), "{p}");
        assert!(
            Config::defaults()
                .summary()
                .contains("[spool]\nmax_bytes = 268435456\nmax_events = 1000000\n")
        );
    }

    #[test]
    fn duration_without_unit_suggests_one() {
        let p = problem("[qr]\nmax_wait = 30\n");
        assert!(
            p.starts_with("/etc/wxagent.toml: [qr] max_wait: expected a duration"),
            "{p}"
        );
        assert!(p.contains("write \"30s\""), "{p}");
        let p = problem("[qr]\nmax_wait = true\n");
        assert!(p.ends_with("got true"), "{p}");
    }

    #[test]
    fn poll_interval_zero_disables_polling() {
        assert_eq!(
            valid("[control]\npoll_interval = \"0s\"")
                .control
                .poll_interval,
            Duration::ZERO
        );
        assert_eq!(
            valid("[control]\npoll_interval = \"0\"")
                .control
                .poll_interval,
            Duration::ZERO
        );
    }

    #[test]
    fn durations_that_must_be_positive_reject_zero() {
        for (section, key) in [
            ("control", "timeout"),
            ("wechat", "request_timeout"),
            ("wechat", "network_give_up"),
            ("qr", "max_wait"),
        ] {
            let p = problem(&format!("[{section}]\n{key} = \"0s\"\n"));
            assert_eq!(
                p,
                format!("{ORIGIN}: [{section}] {key}: must be more than 0, got \"0s\"")
            );
        }
    }

    #[test]
    fn longpoll_timeout_below_one_second_is_an_error_below_thirty_a_warning() {
        let p = problem("[wechat]\nlongpoll_timeout = \"500ms\"\n");
        assert!(
            p.contains("[wechat] longpoll_timeout: must be at least 1s, got \"500ms\""),
            "{p}"
        );
        let w = warnings("[wechat]\nlongpoll_timeout = \"10s\"\n");
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("/etc/wxagent.toml: [wechat] longpoll_timeout: 10s is shorter"),
            "{w:?}"
        );
        assert_eq!(
            valid("[wechat]\nlongpoll_timeout = \"1s\"")
                .wechat
                .longpoll_timeout,
            Duration::from_secs(1)
        );
        assert!(warnings("[wechat]\nlongpoll_timeout = \"30s\"\n").is_empty());
        assert!(warnings("").is_empty());
    }

    #[test]
    fn counts_must_be_at_least_one() {
        for (section, key) in [
            ("agent", "max_sessions"),
            ("qr", "max_refreshes"),
            ("pacing", "burst"),
        ] {
            let p = problem(&format!("[{section}]\n{key} = 0\n"));
            assert_eq!(
                p,
                format!("{ORIGIN}: [{section}] {key}: must be at least 1, got 0")
            );
            let p = problem(&format!("[{section}]\n{key} = -3\n"));
            assert!(p.ends_with("must be at least 1, got -3"), "{p}");
            let p = problem(&format!("[{section}]\n{key} = \"5\"\n"));
            assert!(p.ends_with("expected a whole number ≥ 1, got \"5\""), "{p}");
            let p = problem(&format!("[{section}]\n{key} = 1.5\n"));
            assert!(p.ends_with("got 1.5"), "{p}");
        }
        let p = problem("[pacing]\nburst = 5000000000\n");
        assert!(
            p.ends_with("must be at most 4294967295, got 5000000000"),
            "{p}"
        );
    }

    #[test]
    fn ws_window_and_http_batch_are_one_to_the_link_limit() {
        assert_eq!(valid("").control.ws_window, 64);
        assert_eq!(valid("").control.http_batch, 256);
        for key in ["ws_window", "http_batch"] {
            let read = |text: &str| {
                let c = valid(text).control;
                if key == "ws_window" {
                    c.ws_window
                } else {
                    c.http_batch
                }
            };
            assert_eq!(read(&format!("[control]\n{key} = 1\n")), 1);
            assert_eq!(read(&format!("[control]\n{key} = 1024\n")), 1024);
            for bad in ["0", "-1", "1025"] {
                let p = problem(&format!("[control]\n{key} = {bad}\n"));
                assert_eq!(
                    p,
                    format!(
                        "{ORIGIN}: [control] {key}: must be from 1 (one report at a time) to 1024, got {bad}"
                    )
                );
            }
            let p = problem(&format!("[control]\n{key} = \"64\"\n"));
            assert!(
                p.ends_with("expected a whole number from 1 to 1024, got \"64\""),
                "{p}"
            );
        }
    }

    #[test]
    fn daily_caps_accept_zero_but_not_negatives() {
        for key in ["daily_friend_adds", "daily_group_creates"] {
            let c = valid(&format!("[pacing]\n{key} = 0\n"));
            let got = match key {
                "daily_friend_adds" => c.pacing.daily_friend_adds,
                _ => c.pacing.daily_group_creates,
            };
            assert_eq!(got, 0, "{key}");
            let p = problem(&format!("[pacing]\n{key} = -1\n"));
            assert_eq!(
                p,
                format!("{ORIGIN}: [pacing] {key}: must be 0 or more, got -1")
            );
            let p = problem(&format!("[pacing]\n{key} = \"ten\"\n"));
            assert!(
                p.ends_with("expected a whole number ≥ 0, got \"ten\""),
                "{p}"
            );
            let p = problem(&format!("[pacing]\n{key} = 5000000000\n"));
            assert!(
                p.ends_with("must be at most 4294967295, got 5000000000"),
                "{p}"
            );
        }
    }

    #[test]
    fn media_download_limits_are_checked() {
        let p = problem("[media]\nmax_download_bytes = 0\n");
        assert_eq!(
            p,
            format!("{ORIGIN}: [media] max_download_bytes: must be at least 1, got 0")
        );
        let p = problem("[media]\nmax_download_bytes = \"25MiB\"\n");
        assert!(
            p.ends_with("expected a number of bytes such as 26214400 (25 MiB), got \"25MiB\""),
            "{p}"
        );
        let p = problem("[media]\nfetch_timeout = \"0s\"\n");
        assert!(
            p.contains("[media] fetch_timeout: must be more than 0"),
            "{p}"
        );
        let c = valid("[media]\nmax_download_bytes = 1\nfetch_timeout = \"250ms\"\n");
        assert_eq!(c.media.max_download_bytes, 1);
        assert_eq!(c.media.fetch_timeout, Duration::from_millis(250));
    }

    #[test]
    fn messages_per_second_must_be_a_positive_finite_number() {
        assert_eq!(
            valid("[pacing]\nmessages_per_second = 2")
                .pacing
                .messages_per_second,
            2.0
        );
        assert_eq!(
            valid("[pacing]\nmessages_per_second = 0.25")
                .pacing
                .messages_per_second,
            0.25
        );
        for bad in ["0", "0.0", "-1.5", "nan", "inf"] {
            let p = problem(&format!("[pacing]\nmessages_per_second = {bad}\n"));
            assert!(
                p.contains("[pacing] messages_per_second: must be a number above 0"),
                "{bad}: {p}"
            );
        }
        let p = problem("[pacing]\nmessages_per_second = \"fast\"\n");
        assert!(
            p.ends_with("expected a number such as 1 or 0.5, got \"fast\""),
            "{p}"
        );
    }

    #[test]
    fn booleans_and_strings_are_type_checked() {
        let p = problem("[wechat]\ndesktop_mode = \"yes\"\n");
        assert_eq!(
            p,
            format!("{ORIGIN}: [wechat] desktop_mode: expected true or false, got \"yes\"")
        );
        let p = problem("[control]\nappid = 7\n");
        assert_eq!(
            p,
            format!("{ORIGIN}: [control] appid: expected a string, got 7")
        );
        let p = problem("[agent]\nmachine_id = \"  \"\n");
        assert_eq!(
            p,
            format!("{ORIGIN}: [agent] machine_id: must not be empty")
        );
        let p = problem("[agent]\nstate_dir = \"\"\n");
        assert_eq!(p, format!("{ORIGIN}: [agent] state_dir: must not be empty"));
        let p = problem("[media]\nallow_private_urls = [true]\n");
        assert!(p.ends_with("expected true or false, got an array"), "{p}");
    }

    #[test]
    fn admin_listen_must_be_an_address_with_port() {
        let p = problem("[agent]\nadmin_listen = \"localhost\"\n");
        assert!(
            p.starts_with("/etc/wxagent.toml: [agent] admin_listen: expected an address and port"),
            "{p}"
        );
        assert!(p.ends_with("got \"localhost\""), "{p}");
        let c = valid("[agent]\nadmin_listen = \"0.0.0.0:80\"\nadmin_token = \"t0ken\"");
        assert_eq!(c.agent.admin_listen.port(), 80);
        assert_eq!(
            c.agent.admin_token.as_ref().map(Secret::expose),
            Some("t0ken")
        );
    }

    #[test]
    fn admin_api_off_loopback_needs_a_token() {
        // Only the decision is tested: nothing binds to these addresses.
        for addr in [
            "0.0.0.0:7878",
            "[::]:7878",
            "192.168.1.5:80",
            "[::ffff:10.0.0.1]:80",
        ] {
            let addr: SocketAddr = addr.parse().expect("test address");
            let why = admin_listen_refusal(addr, false).expect("refused without a token");
            assert!(why.contains("admin_token"), "{why}");
            assert_eq!(admin_listen_refusal(addr, true), None);
        }
        for addr in [
            "127.0.0.1:7878",
            "127.0.0.2:1",
            "[::1]:7878",
            "[::ffff:127.0.0.1]:80",
        ] {
            let addr: SocketAddr = addr.parse().expect("test address");
            assert_eq!(admin_listen_refusal(addr, false), None, "{addr}");
        }
        let p = problem("[agent]\nadmin_listen = \"0.0.0.0:7878\"\n");
        assert!(
            p.starts_with(
                "/etc/wxagent.toml: [agent] admin_listen: 0.0.0.0:7878 is not a loopback address and [agent] admin_token is not set"
            ),
            "{p}"
        );
        let p = problem("[agent]\nhealthz_max_sync_age = \"0s\"\n");
        assert!(p.contains("[agent] healthz_max_sync_age"), "{p}");
        assert_eq!(
            valid("[agent]\nhealthz_max_sync_age = \"90s\"")
                .agent
                .healthz_max_sync_age,
            Duration::from_secs(90)
        );
        assert!(!format!("{:?}", valid("[agent]\nadmin_token = \"t0ken\"")).contains("t0ken"));
    }

    #[test]
    fn control_urls_must_parse_and_be_http() {
        let p = problem("[control]\ncallback_url = \"not a url\"\n");
        assert!(
            p.starts_with("/etc/wxagent.toml: [control] callback_url: expected a URL"),
            "{p}"
        );
        assert!(p.contains("got \"not a url\""), "{p}");
        let p = problem("[control]\ncallback_url = \"ftp://example.com/x\"\n");
        assert!(
            p.ends_with("must be an http:// or https:// URL, got \"ftp://example.com/x\""),
            "{p}"
        );
        let p = problem(
            "[control]\ncallback_url = \"http://cp.lan/wehub\"\nupload_url = \"file:///tmp/x\"\n",
        );
        assert!(
            p.contains("[control] upload_url: must be an http:// or https:// URL"),
            "{p}"
        );
        // Plain http is fine for the control plane, on any host.
        let c = valid("[control]\ncallback_url = \"http://192.168.1.20:8080/wehub\"");
        assert_eq!(
            c.control.callback_url.unwrap().host_str(),
            Some("192.168.1.20")
        );
        // "" is the template spelling of "not set".
        assert_eq!(
            valid("[control]\ncallback_url = \"\"\nupload_url = \"\"")
                .control
                .callback_url,
            None
        );
    }

    #[test]
    fn upload_url_needs_callback_url() {
        let p = problem("[control]\nupload_url = \"http://127.0.0.1:1/upload\"\n");
        assert!(
            p.starts_with(
                "/etc/wxagent.toml: [control] upload_url: is set but [control] callback_url is not"
            ),
            "{p}"
        );
        let p =
            problem("[control]\ncallback_url = \"\"\nupload_url = \"http://127.0.0.1:1/upload\"\n");
        assert!(p.contains("upload_url: is set but"), "{p}");
        // A broken callback_url is reported once, not again as "missing".
        let all = problems(
            "[control]\ncallback_url = \"::\"\nupload_url = \"http://127.0.0.1:1/upload\"\n",
        );
        assert_eq!(all.len(), 1, "{all:#?}");
        assert!(all[0].contains("callback_url: expected a URL"), "{all:#?}");
    }

    #[test]
    fn login_url_must_be_https_unless_loopback() {
        let p = problem("[wechat]\nlogin_url = \"http://login.example.com\"\n");
        assert!(p.starts_with("/etc/wxagent.toml: [wechat] login_url: must be an https:// URL (plain http:// is accepted only for loopback"), "{p}");
        for ok in [
            "http://127.0.0.1:8000",
            "http://127.8.0.1",
            "http://[::1]:8000/",
            "http://localhost:1",
            "https://login.example.com",
        ] {
            let c = valid(&format!("[wechat]\nlogin_url = \"{ok}\""));
            assert_eq!(c.wechat.login_url, Url::parse(ok).unwrap());
        }
        let p = problem("[wechat]\nlogin_url = \"ws://127.0.0.1/\"\n");
        assert!(
            p.ends_with("must be an https:// URL, got \"ws://127.0.0.1/\""),
            "{p}"
        );
        let p = problem("[wechat]\nlogin_url = \"login.wx.qq.com\"\n");
        assert!(p.contains("expected a URL"), "{p}");
    }

    #[test]
    fn sign_requests_needs_a_secret() {
        let p = problem("[control]\nsign_requests = true\n");
        assert!(p.starts_with("/etc/wxagent.toml: [control] sign_requests: is true but [control] secret_key is not set"), "{p}");
        let p = problem("[control]\nsign_requests = true\nsecret_key = \"\"\n");
        assert!(p.contains("sign_requests: is true but"), "{p}");
        let c = valid("[control]\nsign_requests = true\nsecret_key = \"k\"\n");
        assert!(c.control.sign_requests);
        assert!(
            !valid("[control]\nsign_requests = false\n")
                .control
                .sign_requests
        );
    }

    #[test]
    fn the_secret_never_appears_in_messages_or_debug_output() {
        let secret_text = "very-secret-424242";
        // Wrong type: the message names the type only.
        let p = problem("[control]\nsecret_key = 424242\n");
        assert_eq!(
            p,
            format!("{ORIGIN}: [control] secret_key: expected a string, got an integer")
        );
        // A syntax error on the secret's line must not quote the line.
        let text = format!("[control]\nsecret_key = \"{secret_text}\nappid = \"x\"\n");
        let p = problem(&text);
        assert!(!p.contains(secret_text), "{p}");
        assert!(p.starts_with("/etc/wxagent.toml: line 2, column"), "{p}");
        // A valid secret stays out of Debug, Display of the secret, summary and report.
        let c = valid(&format!("[control]\nsecret_key = \"{secret_text}\""));
        let secret = c.control.secret_key.clone().unwrap();
        assert_eq!(secret.expose(), secret_text);
        for shown in [
            format!("{c:?}"),
            format!("{c:#?}"),
            secret.to_string(),
            c.summary(),
        ] {
            assert!(!shown.contains(secret_text), "{shown}");
        }
        assert!(c.summary().contains("secret_key = set"));
        assert!(
            Config::defaults()
                .summary()
                .contains("secret_key = not set")
        );
    }

    #[test]
    fn syntax_errors_give_line_and_column() {
        let p = problem("[agent]\nmax_sessions = = 3\n");
        assert!(p.starts_with("/etc/wxagent.toml: line 2, column"), "{p}");
        assert!(p.contains("invalid TOML"), "{p}");
        assert!(!p.contains('\n'), "{p}");
    }

    #[test]
    fn unknown_sections_and_keys_are_named_with_a_suggestion() {
        let p = problem("[contrl]\ntimeout = \"5s\"\n");
        assert_eq!(
            p,
            format!("{ORIGIN}: [contrl]: unknown section; did you mean [control]?")
        );
        let p = problem("[zebra]\nx = 1\n");
        assert_eq!(
            p,
            format!(
                "{ORIGIN}: [zebra]: unknown section; known sections: agent, control, wechat, qr, spool, media, pacing"
            )
        );
        let p = problem("[control]\npoll_intervall = \"5s\"\n");
        assert_eq!(
            p,
            format!(
                "{ORIGIN}: [control] poll_intervall: unknown key; did you mean \"poll_interval\"?"
            )
        );
        let p = problem("[qr]\ncolour = \"red\"\n");
        assert_eq!(
            p,
            format!(
                "{ORIGIN}: [qr] colour: unknown key; known keys in [qr]: max_refreshes, max_wait"
            )
        );
        // A real key in the wrong section says where it belongs.
        let p = problem("[agent]\npoll_interval = \"5s\"\n");
        assert_eq!(
            p,
            format!("{ORIGIN}: [agent] poll_interval: unknown key; it belongs in [control]")
        );
        // Keys before any section.
        let p = problem("max_sessions = 3\n");
        assert_eq!(
            p,
            format!(
                "{ORIGIN}: max_sessions: settings belong inside a section; did you mean [agent] max_sessions?"
            )
        );
        let p = problem("debug = true\n");
        assert_eq!(
            p,
            format!("{ORIGIN}: debug: unknown key outside any section")
        );
        let p = problem("agent = 5\n");
        assert!(p.contains("agent: expected a section"), "{p}");
    }

    #[test]
    fn every_problem_in_a_file_is_reported() {
        let all = problems(
            r#"
            [agent]
            max_sessions = 0
            admin_listen = "nowhere"
            [control]
            poll_interval = "fast"
            timeout = "0s"
            sign_requests = true
            upload_url = "http://127.0.0.1:1/u"
            [wechat]
            login_url = "http://wx.example.com"
            longpoll_timeout = "100ms"
            [pacing]
            burst = 0
            messages_per_second = -1
            [extra]
            "#,
        );
        let expect = [
            "[agent] max_sessions:",
            "[agent] admin_listen:",
            "[control] poll_interval:",
            "[control] timeout:",
            "[control] sign_requests:",
            "[control] upload_url:",
            "[wechat] login_url:",
            "[wechat] longpoll_timeout:",
            "[pacing] burst:",
            "[pacing] messages_per_second:",
            "[extra]:",
        ];
        assert_eq!(all.len(), expect.len(), "{all:#?}");
        for needle in expect {
            assert!(
                all.iter().any(|p| p.contains(needle)),
                "missing {needle} in {all:#?}"
            );
        }
        assert!(
            all.iter().all(|p| p.starts_with("/etc/wxagent.toml: ")),
            "{all:#?}"
        );
        // The error's Display carries every line, so `{:#}` at the edge shows them all.
        let e = Config::from_toml_str(
            "[agent]\nmax_sessions = 0\n[qr]\nmax_wait = \"x\"\n",
            source(),
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("invalid configuration (2 problems)"),
            "{text}"
        );
        assert!(
            text.contains("[agent] max_sessions") && text.contains("[qr] max_wait"),
            "{text}"
        );
    }

    #[test]
    fn every_known_key_is_read_by_the_loader() {
        // A wrong-typed value for each known key must be reported: proves none is silently ignored.
        for &(section, key) in KNOWN_KEYS {
            let all = problems(&format!("[{section}]\n{key} = {{ nested = 1 }}\n"));
            assert!(
                all.iter()
                    .any(|p| p.contains(&format!("[{section}] {key}: "))),
                "{section}.{key}: {all:#?}"
            );
        }
        let sections: Vec<_> = KNOWN_KEYS.iter().map(|(s, _)| *s).collect();
        for s in KNOWN_SECTIONS {
            assert!(sections.contains(s), "{s}");
        }
    }

    #[test]
    fn resolve_order_is_flag_then_env_then_default() {
        let dir = tempfile::tempdir().unwrap();
        let present = dir.path().join("present.toml");
        std::fs::write(&present, "").unwrap();
        let missing = dir.path().join("missing.toml");
        let flag = Path::new("/a.toml");
        let env = || Some(OsString::from("/b.toml"));

        assert_eq!(
            resolve_with_default(Some(flag), env(), present.clone()),
            ConfigSource::Flag(flag.into())
        );
        assert_eq!(
            resolve_with_default(None, env(), present.clone()),
            ConfigSource::Env("/b.toml".into())
        );
        assert_eq!(
            resolve_with_default(None, Some(OsString::new()), present.clone()),
            ConfigSource::DefaultPath(present.clone())
        );
        assert_eq!(
            resolve_with_default(None, None, present.clone()),
            ConfigSource::DefaultPath(present)
        );
        assert_eq!(
            resolve_with_default(None, None, missing.clone()),
            ConfigSource::Defaults { looked_at: missing }
        );
        assert_eq!(
            resolve_path(Some(flag), None),
            ConfigSource::Flag(flag.into())
        );
        assert_eq!(resolve_path(None, None).path(), default_config_path());
    }

    #[test]
    fn from_source_reads_files_and_tells_missing_explicit_from_missing_default() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("w.toml");
        std::fs::write(&file, "[agent]\nmax_sessions = 7\n").unwrap();
        let c = Config::from_source(ConfigSource::Env(file.clone())).unwrap();
        assert_eq!(c.agent.max_sessions, 7);
        assert_eq!(c.source, ConfigSource::Env(file.clone()));

        let missing = dir.path().join("nope.toml");
        for source in [
            ConfigSource::Flag(missing.clone()),
            ConfigSource::Env(missing.clone()),
        ] {
            match Config::from_source(source) {
                Err(ConfigError::Read { path, source }) => {
                    assert_eq!(path, missing);
                    assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
                }
                other => panic!("expected a read error, got {other:?}"),
            }
        }
        // The default path vanished between resolve and read: defaults, and the source says so.
        let c = Config::from_source(ConfigSource::DefaultPath(missing.clone())).unwrap();
        assert_eq!(
            c.source,
            ConfigSource::Defaults {
                looked_at: missing.clone()
            }
        );
        let c = Config::from_source(ConfigSource::Defaults {
            looked_at: missing.clone(),
        })
        .unwrap();
        assert_eq!(c.agent.max_sessions, 100);

        std::fs::write(&file, "[agent]\nmax_sessions = 0\n").unwrap();
        match Config::from_source(ConfigSource::Flag(file.clone())) {
            Err(ConfigError::Invalid { path, problems }) => {
                assert_eq!(path, file.display().to_string());
                assert_eq!(
                    problems,
                    vec![format!(
                        "{}: [agent] max_sessions: must be at least 1, got 0",
                        file.display()
                    )]
                );
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn describe_source_names_where_the_settings_came_from() {
        let with = |source: ConfigSource| Config::defaults_from(source).describe_source();
        assert_eq!(
            with(ConfigSource::Flag("/x.toml".into())),
            "config from --config /x.toml"
        );
        assert_eq!(
            with(ConfigSource::Env("/y.toml".into())),
            "config from WXAGENT_CONFIG=/y.toml"
        );
        assert_eq!(
            with(ConfigSource::DefaultPath("/etc/w.toml".into())),
            "config from /etc/w.toml (default path)"
        );
        assert_eq!(
            with(ConfigSource::Defaults {
                looked_at: "/etc/w.toml".into()
            }),
            "built-in defaults (no file at /etc/w.toml)"
        );
    }

    #[test]
    fn check_report_lists_settings_or_problems() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("w.toml");
        std::fs::write(
            &file,
            "[control]\ncallback_url = \"http://u:pw-123@127.0.0.1:9/cb\"\nsecret_key = \"hush-999\"\n[wechat]\nlongpoll_timeout = \"5s\"\n",
        )
        .unwrap();
        // It holds secrets: only its owner may read it.
        #[cfg(unix)]
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let (ok, text) = report_for(ConfigSource::Flag(file.clone()));
        assert!(ok, "{text}");
        assert!(
            text.starts_with(&format!(
                "configuration is valid, using config from --config {}\n",
                file.display()
            )),
            "{text}"
        );
        assert!(text.contains("secret_key = set"), "{text}");
        assert!(
            !text.contains("hush-999") && !text.contains("pw-123"),
            "{text}"
        );
        assert!(
            text.contains("callback_url = \"http://u:redacted@127.0.0.1:9/cb\""),
            "{text}"
        );
        assert!(
            text.contains("warning: ") && text.contains("longpoll_timeout: 5s is shorter"),
            "{text}"
        );
        assert!(
            text.contains("\n[pacing]\nmessages_per_second = 1\nburst = 3\n"),
            "{text}"
        );
        assert!(text.contains("poll_interval = \"5s\""), "{text}");

        std::fs::write(
            &file,
            "[agent]\nmax_sessions = 0\n[qr]\nmax_wait = \"soon\"\n",
        )
        .unwrap();
        let (ok, text) = report_for(ConfigSource::Flag(file.clone()));
        assert!(!ok);
        assert!(
            text.starts_with(&format!(
                "configuration is invalid, 2 problems (config from --config {}):\n",
                file.display()
            )),
            "{text}"
        );
        assert!(
            text.contains("[agent] max_sessions: must be at least 1, got 0"),
            "{text}"
        );
        assert!(
            text.contains("[qr] max_wait: expected a duration"),
            "{text}"
        );

        let (ok, text) = report_for(ConfigSource::Flag(dir.path().join("none.toml")));
        assert!(!ok);
        assert!(
            text.starts_with("cannot read configuration file "),
            "{text}"
        );
        assert!(text.contains("none.toml: "), "{text}");

        let (ok, text) = check_config_report(Some(&dir.path().join("none.toml")));
        assert!(!ok, "{text}");
    }
}
