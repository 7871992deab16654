//! QR login (spec §3.1–§3.4): fetch a uuid, show its QR code, long-poll until the phone scans
//! and confirms, fetch a new code when one expires — bounded by `[qr] max_refreshes` and
//! `max_wait`, after which the session is abandoned rather than looping forever.

use super::client::WebClient;
use super::error::WechatError;
use super::parse::LoginPoll;
use crate::backoff::Backoff;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What happened during a QR login, for the caller to show or report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginEvent {
    /// A new QR code to show. `refresh` counts codes from 1.
    Qr {
        uuid: String,
        content: String,
        refresh: u32,
    },
    /// The phone scanned the code; the user must confirm. `avatar` is the data URL if sent.
    Scanned { avatar: Option<String> },
    /// The user cancelled on the phone; the same code can be scanned again.
    Cancelled,
    /// The code expired (a new one follows unless the bounds are reached).
    Expired { refresh: u32 },
}

/// Receives the [`LoginEvent`]s of a QR login as they happen.
pub trait LoginObserver: Send {
    fn on_event(&mut self, ev: LoginEvent) -> impl Future<Output = ()> + Send;
}

/// How a QR login ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginEnd {
    /// Confirmed on the phone: continue with webwxnewloginpage.
    Confirmed { redirect_uri: String },
    /// Nobody logged in within the bounds.
    Abandoned { qr_count: u32 },
    /// The caller's cancellation token fired.
    Cancelled,
}

/// Bounds of one QR login.
#[derive(Debug, Clone, Copy)]
pub struct QrBounds {
    pub max_refreshes: u32,
    pub max_wait: Duration,
}

/// Runs the QR login until confirmation, abandonment or cancellation. Transient errors
/// (network, 5xx, garbled answers) are retried with jittered backoff inside the same bounds.
pub async fn qr_login(
    client: &WebClient,
    bounds: QrBounds,
    cancel: &CancellationToken,
    observer: &mut impl LoginObserver,
) -> Result<LoginEnd, WechatError> {
    let deadline = Instant::now() + bounds.max_wait;
    let mut qr_count = 0u32;
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(15));
    while qr_count < bounds.max_refreshes {
        let uuid = match bounded(cancel, deadline, client.jslogin()).await {
            Step::Done(Ok(u)) => {
                backoff.reset();
                u
            }
            Step::Done(Err(e)) if e.is_transient() => {
                tracing::warn!(error = %e, "could not get a login uuid; retrying");
                if let Some(end) = pause(cancel, deadline, backoff.next_delay(), qr_count).await {
                    return Ok(end);
                }
                continue;
            }
            Step::Done(Err(e)) => return Err(e),
            Step::Cancelled => return Ok(LoginEnd::Cancelled),
            Step::Deadline => return Ok(LoginEnd::Abandoned { qr_count }),
        };
        qr_count += 1;
        observer
            .on_event(LoginEvent::Qr {
                content: client.qr_content(&uuid),
                uuid: uuid.clone(),
                refresh: qr_count,
            })
            .await;
        let mut first = true;
        let mut scanned = false;
        loop {
            let poll = match bounded(cancel, deadline, client.poll_login(&uuid, first)).await {
                Step::Done(r) => r,
                Step::Cancelled => return Ok(LoginEnd::Cancelled),
                Step::Deadline => return Ok(LoginEnd::Abandoned { qr_count }),
            };
            first = false;
            match poll {
                Ok(LoginPoll::Waiting) => {
                    backoff.reset();
                    if scanned {
                        // A 408 after a scan means the user cancelled on the phone.
                        scanned = false;
                        observer.on_event(LoginEvent::Cancelled).await;
                    }
                }
                Ok(LoginPoll::Scanned { avatar }) => {
                    backoff.reset();
                    if !scanned {
                        scanned = true;
                        observer.on_event(LoginEvent::Scanned { avatar }).await;
                    }
                }
                Ok(LoginPoll::Confirmed { redirect_uri }) => {
                    return Ok(LoginEnd::Confirmed { redirect_uri });
                }
                Ok(LoginPoll::Expired) => {
                    observer
                        .on_event(LoginEvent::Expired { refresh: qr_count })
                        .await;
                    break;
                }
                Ok(LoginPoll::Other(code)) => {
                    tracing::warn!(code, "unexpected login poll code; fetching a new QR code");
                    observer
                        .on_event(LoginEvent::Expired { refresh: qr_count })
                        .await;
                    break;
                }
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, "login poll failed; retrying");
                    if let Some(end) = pause(cancel, deadline, backoff.next_delay(), qr_count).await
                    {
                        return Ok(end);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(LoginEnd::Abandoned { qr_count })
}

enum Step<T> {
    Done(T),
    Cancelled,
    Deadline,
}

async fn bounded<T>(
    cancel: &CancellationToken,
    deadline: Instant,
    fut: impl Future<Output = T>,
) -> Step<T> {
    tokio::select! {
        r = fut => Step::Done(r),
        () = cancel.cancelled() => Step::Cancelled,
        () = tokio::time::sleep_until(deadline) => Step::Deadline,
    }
}

/// Waits `delay`; returns how the login ends if cancellation or the deadline comes first.
async fn pause(
    cancel: &CancellationToken,
    deadline: Instant,
    delay: Duration,
    qr_count: u32,
) -> Option<LoginEnd> {
    match bounded(cancel, deadline, tokio::time::sleep(delay)).await {
        Step::Done(()) => None,
        Step::Cancelled => Some(LoginEnd::Cancelled),
        Step::Deadline => Some(LoginEnd::Abandoned { qr_count }),
    }
}
