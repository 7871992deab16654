//! The synccheck / webwxsync loop (spec §3.9–§3.10): long-poll for news, fetch it, hand it to the
//! caller with the new keys still pending, and turn every retcode into either data, a retry or a
//! typed [`LogoutReason`]. Never spins: empty answers back off and finally re-init, and network
//! trouble backs off with jitter until `network_give_up`, after which the session ends.

use super::client::{InitData, PendingKeys, SyncData, WebClient};
use super::error::WechatError;
use crate::backoff::Backoff;
use crate::worker::state::LogoutReason;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct SyncSettings {
    /// Continuous failure for this long ends the session with reason `network`.
    pub network_give_up: Duration,
    /// No successful webwxsync for this long while synccheck says "nothing new": force one.
    pub deaf_after: Duration,
    /// Empty webwxsync answers (selector set, nothing new, key unchanged) in a row before backing off.
    pub empty_before_backoff: u32,
    /// Empty answers in a row before a re-init (webwxinit) to get a fresh key.
    pub empty_before_reinit: u32,
}

impl SyncSettings {
    pub fn new(network_give_up: Duration, deaf_after: Duration) -> SyncSettings {
        SyncSettings {
            network_give_up,
            deaf_after,
            empty_before_backoff: 3,
            empty_before_reinit: 8,
        }
    }
}

/// What one turn of the loop produced.
#[derive(Debug)]
pub enum SyncStep {
    /// New data. Make it durable, then call [`WebClient::commit_sync_keys`] with the keys.
    Data(SyncData, PendingKeys),
    /// The sync key was stuck; webwxinit gave a fresh one and these contacts.
    Reinit(Box<InitData>),
    /// The session is over.
    LoggedOut(LogoutReason),
    /// The cancellation token fired.
    Cancelled,
}

/// Counters for status and metrics.
#[derive(Debug, Clone, Default)]
pub struct SyncStats {
    pub checks: u64,
    pub syncs: u64,
    pub empty_syncs: u64,
    pub reinits: u64,
    /// Times a probe found data synccheck had not announced (the "deaf" state).
    pub deaf: u64,
    pub errors: u64,
    /// Last non-zero retcode seen, if any.
    pub last_retcode: Option<i64>,
}

pub struct SyncLoop {
    settings: SyncSettings,
    backoff: Backoff,
    idle_backoff: Backoff,
    empty_streak: u32,
    fast_zero_streak: u32,
    failing_since: Option<Instant>,
    last_success: Option<Instant>,
    created: Instant,
    /// The current webwxsync is a deafness probe.
    probing: bool,
    /// The probe found data synccheck never announced: re-init before the next poll.
    reinit_pending: bool,
    /// The last webwxsync brought events and said more are waiting (`ContinueFlag`): the next
    /// round fetches them without asking synccheck first.
    more_waiting: bool,
    pub stats: SyncStats,
}

/// What one synccheck means for the round ([`SyncLoop::check`]).
enum Checked {
    /// Fetch with webwxsync; the synccheck's selector.
    Go(i64),
    /// Poll again.
    Again,
    Done(SyncStep),
}

/// A selector-0 answer faster than this is not a real long poll; several in a row are throttled.
const FAST_ANSWER: Duration = Duration::from_millis(300);

impl SyncLoop {
    pub fn new(settings: SyncSettings) -> SyncLoop {
        SyncLoop {
            settings,
            backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(30)),
            idle_backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(30)),
            empty_streak: 0,
            fast_zero_streak: 0,
            failing_since: None,
            last_success: None,
            created: Instant::now(),
            probing: false,
            reinit_pending: false,
            more_waiting: false,
            stats: SyncStats::default(),
        }
    }

    /// When the last webwxsync succeeded.
    pub fn last_success(&self) -> Option<Instant> {
        self.last_success
    }

    /// Runs until there is something for the caller.
    pub async fn next(&mut self, client: &WebClient, cancel: &CancellationToken) -> SyncStep {
        loop {
            if std::mem::take(&mut self.reinit_pending) {
                self.stats.reinits += 1;
                let delay = self.idle_backoff.next_delay();
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = cancel.cancelled() => return SyncStep::Cancelled,
                }
                if let Some(step) = self.reinit(client, cancel).await {
                    return step;
                }
            }
            // A burst comes in batches; asking synccheck between them would only hear "more"
            // again, one loopback or internet round trip per batch. Only after a batch that
            // had events, so a flag that stays set cannot make a loop of empty syncs.
            let selector = if std::mem::take(&mut self.more_waiting) {
                None
            } else {
                match self.check(client, cancel).await {
                    Checked::Go(selector) => Some(selector),
                    Checked::Again => continue,
                    Checked::Done(step) => return step,
                }
            };
            self.stats.syncs += 1;
            let synced = tokio::select! {
                r = client.sync() => r,
                () = cancel.cancelled() => return SyncStep::Cancelled,
            };
            match synced {
                Ok((data, keys)) => {
                    self.succeeded();
                    self.last_success = Some(Instant::now());
                    if std::mem::take(&mut self.probing) && !data.is_empty() {
                        self.stats.deaf += 1;
                        self.reinit_pending = true;
                        tracing::warn!(
                            deaf = self.stats.deaf,
                            "synccheck kept saying nothing new while data was waiting; re-initialising after this batch"
                        );
                    }
                    if !data.is_empty() || data.key_changed {
                        self.more_waiting = data.continue_flag != 0 && !data.is_empty();
                        self.empty_streak = 0;
                        self.idle_backoff.reset();
                        return SyncStep::Data(data, keys);
                    }
                    client.commit_sync_keys(keys);
                    self.stats.empty_syncs += 1;
                    self.empty_streak += 1;
                    if self.empty_streak >= self.settings.empty_before_reinit {
                        tracing::warn!(
                            empty = self.empty_streak,
                            selector = ?selector,
                            "sync key stuck; re-initialising"
                        );
                        self.empty_streak = 0;
                        self.stats.reinits += 1;
                        if let Some(step) = self.reinit(client, cancel).await {
                            return step;
                        }
                    } else if self.empty_streak >= self.settings.empty_before_backoff {
                        tracing::debug!(
                            empty = self.empty_streak,
                            selector = ?selector,
                            "selector set but nothing new; backing off"
                        );
                        if let Some(step) = self.idle(cancel).await {
                            return step;
                        }
                    }
                }
                Err(e) => {
                    if let Some(ret) = e.ret() {
                        self.stats.last_retcode = Some(ret);
                        if let Some(reason) = LogoutReason::from_retcode(ret) {
                            crate::stats::sync_error(Some(ret));
                            return SyncStep::LoggedOut(reason);
                        }
                    }
                    if let Some(step) = self.failed(e, cancel).await {
                        return step;
                    }
                }
            }
        }
    }

    /// One synccheck, and what it means for the round: go on to webwxsync (with the selector),
    /// poll again (after waiting out a failure or a too-fast "nothing new"), or end with a step.
    async fn check(&mut self, client: &WebClient, cancel: &CancellationToken) -> Checked {
        let started = Instant::now();
        self.stats.checks += 1;
        let check = tokio::select! {
            r = client.sync_check() => r,
            () = cancel.cancelled() => return Checked::Done(SyncStep::Cancelled),
        };
        let check = match check {
            Ok(c) => c,
            Err(e) => {
                if let Some(step) = self.failed(e, cancel).await {
                    return Checked::Done(step);
                }
                return Checked::Again;
            }
        };
        if check.retcode != 0 {
            self.stats.last_retcode = Some(check.retcode);
            if let Some(reason) = LogoutReason::from_retcode(check.retcode) {
                crate::stats::sync_error(Some(check.retcode));
                return Checked::Done(SyncStep::LoggedOut(reason));
            }
            let e = WechatError::Ret {
                endpoint: "synccheck",
                ret: check.retcode,
                message: String::new(),
            };
            if let Some(step) = self.failed(e, cancel).await {
                return Checked::Done(step);
            }
            return Checked::Again;
        }
        self.succeeded();
        let deaf = check.selector == 0
            && self.last_success.unwrap_or(self.created).elapsed() >= self.settings.deaf_after;
        if deaf {
            // A quiet session looks the same as a deaf one; a probe tells them apart.
            tracing::debug!("no sync for a while; probing with a webwxsync");
            self.probing = true;
        } else if check.selector == 0 {
            if started.elapsed() < FAST_ANSWER {
                self.fast_zero_streak += 1;
                if self.fast_zero_streak >= 3 {
                    tracing::debug!(
                        streak = self.fast_zero_streak,
                        "synccheck answers without holding; slowing down"
                    );
                    if let Some(step) = self.idle(cancel).await {
                        return Checked::Done(step);
                    }
                }
            } else {
                self.fast_zero_streak = 0;
            }
            return Checked::Again;
        }
        self.fast_zero_streak = 0;
        Checked::Go(check.selector)
    }

    fn succeeded(&mut self) {
        crate::stats::sync_ok();
        self.failing_since = None;
        self.backoff.reset();
    }

    /// A fresh webwxinit: the step it leads to, or `None` to go on polling after a recoverable
    /// failure (already waited out by `failed`).
    async fn reinit(&mut self, client: &WebClient, cancel: &CancellationToken) -> Option<SyncStep> {
        match client.init(false).await {
            Ok(init) => Some(SyncStep::Reinit(Box::new(init))),
            Err(e) => match e.ret().and_then(LogoutReason::from_retcode) {
                Some(reason) => Some(SyncStep::LoggedOut(reason)),
                None => self.failed(e, cancel).await,
            },
        }
    }

    /// Records a failure and waits before the next try; ends the session when the failure has
    /// lasted past `network_give_up`.
    async fn failed(&mut self, e: WechatError, cancel: &CancellationToken) -> Option<SyncStep> {
        self.stats.errors += 1;
        crate::stats::sync_error(e.ret());
        let since = *self.failing_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= self.settings.network_give_up {
            tracing::error!(error = %e, "sync failing for too long; giving up");
            return Some(SyncStep::LoggedOut(LogoutReason::Network {
                detail: e.to_string(),
            }));
        }
        let delay = self.backoff.next_delay();
        tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "sync failed; retrying");
        tokio::select! {
            () = tokio::time::sleep(delay) => None,
            () = cancel.cancelled() => Some(SyncStep::Cancelled),
        }
    }

    async fn idle(&mut self, cancel: &CancellationToken) -> Option<SyncStep> {
        let delay = self.idle_backoff.next_delay();
        tokio::select! {
            () = tokio::time::sleep(delay) => None,
            () = cancel.cancelled() => Some(SyncStep::Cancelled),
        }
    }
}
