//! Per-account send pacing: a token bucket every send of one account goes through, a cool-down
//! after the server says "too frequent", and rolling daily caps on friend adds and group creation
//! (spec/wechat-web.md §8: frequent sends get `Ret 1205`; friend adds and groups are stricter).
//!
//! One [`Pacer`] per account, shared (`Arc`) by every task that talks to that account. All
//! clocks are `tokio::time`, so tests drive them with `tokio::time::pause()`.
//!
//! Choices worth knowing:
//! - **Cool-down fails fast.** While the account is cooling down, [`Pacer::acquire`] returns
//!   [`Paced::CoolingDown`] at once instead of waiting. A cool-down can last up to 30 minutes;
//!   queueing sends behind it would hold tasks (and their reports) far longer than the control
//!   plane expects, and the messages would then go out in a burst that likely trips the limit
//!   again. Failing the task with a rate-limit reason lets the orchestrator decide.
//! - **One episode, one step.** Several sends in flight usually all fail when the limit trips;
//!   reports that arrive while a cool-down is already running do not escalate it again.
//! - **Daily caps use a rolling 24-hour window**, not the calendar day: it needs no time zone,
//!   cannot be reset by a clock change, and never lets a whole day's quota go out twice around
//!   midnight. Counts live in memory, so a restarted worker starts from zero.

use crate::config::PacingConfig;
use std::collections::VecDeque;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The first cool-down after a rate-limit report.
pub const COOLDOWN_START: Duration = Duration::from_secs(30);
/// The longest cool-down; each further report in a row doubles the last one up to this.
pub const COOLDOWN_MAX: Duration = Duration::from_secs(30 * 60);
/// After this long without a report (counted from the end of the last cool-down) the next
/// report starts again at [`COOLDOWN_START`].
pub const COOLDOWN_RESET_AFTER: Duration = Duration::from_secs(60 * 60);
/// The window the daily caps count over.
pub const DAILY_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// Actions with a daily cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DailyKind {
    /// Sending or accepting a friend request (`webwxverifyuser`).
    FriendAdd,
    /// Creating a group (`webwxcreatechatroom`).
    GroupCreate,
}

impl fmt::Display for DailyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DailyKind::FriendAdd => "friend adds",
            DailyKind::GroupCreate => "group creations",
        })
    }
}

/// Why the pacer did not let an action through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Paced {
    /// The server reported rate limiting; every send is refused until the cool-down ends.
    #[error(
        "sending paused for {} after the server reported rate limiting (Ret 1205 or a \"too frequent\" notice)",
        seconds(*remaining)
    )]
    CoolingDown { remaining: Duration },
    /// [`Pacer::try_acquire`] only: no token now; one is due in `wait`.
    #[error("send rate limit of this account reached; next send allowed in {}", seconds(*wait))]
    NoToken { wait: Duration },
    /// The daily cap for `kind` is used up. `next_in` says when the oldest counted action leaves
    /// the 24-hour window; `None` when the cap is 0 (the action is not allowed at all).
    #[error("{}", daily_message(*kind, *cap, *next_in))]
    DailyCapReached {
        kind: DailyKind,
        cap: u32,
        next_in: Option<Duration>,
    },
}

/// A duration as whole seconds, rounded up so "0 s" is never shown for a pause still running.
fn seconds(d: Duration) -> String {
    let whole = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    format!("{whole} s")
}

fn daily_message(kind: DailyKind, cap: u32, next_in: Option<Duration>) -> String {
    match next_in {
        None => format!("{kind} are not allowed for this account (daily limit is 0)"),
        Some(wait) => format!(
            "daily limit of {cap} {kind} reached (any 24 hours); the next is allowed in {}",
            seconds(wait)
        ),
    }
}

/// Whether a system notice from the server (MsgType 10000 text) says sends are too frequent.
/// Callers pass only server notices: a friend typing "too frequent" is not a rate limit.
pub fn is_rate_limit_notice(text: &str) -> bool {
    // "发送消息过于频繁，可稍后再试" and other "操作过于频繁" wordings share this part.
    text.contains("过于频繁") || text.to_ascii_lowercase().contains("too frequent")
}

/// Cool-down state: an enum so "cooling down until X" and "calm" cannot both hold.
#[derive(Debug, Clone, Copy)]
enum Cooldown {
    /// No report yet.
    Calm,
    /// A cool-down of `length` runs (or ran) until `until`; a report within
    /// [`COOLDOWN_RESET_AFTER`] of its end doubles `length`.
    Active { until: Instant, length: Duration },
}

struct State {
    /// The bucket as a "theoretical arrival time" (GCRA): the instant at which the bucket would
    /// be full again if nothing more were sent. A send is allowed once `tat - tolerance ≤ now`;
    /// each send moves `tat` on by one interval. Waiters move it when they queue, so later
    /// callers line up behind them. Integer time, so paced tests are exact.
    tat: Instant,
    /// Bumped when a cool-down starts: reservations taken before it are void (no refund).
    epoch: u64,
    cooldown: Cooldown,
    friend_adds: VecDeque<Instant>,
    group_creates: VecDeque<Instant>,
}

/// The pacing of one account. Share it with `Arc`; all methods take `&self`.
pub struct Pacer {
    /// Time one token takes to come back (1 / messages_per_second).
    interval: Duration,
    /// How far ahead of the steady rate sends may run: (burst − 1) intervals.
    tolerance: Duration,
    friend_cap: u32,
    group_cap: u32,
    state: Mutex<State>,
    /// Wakes waiting [`Pacer::acquire`] calls when a cool-down starts, so they fail at once.
    cooldown_started: Notify,
}

impl fmt::Debug for Pacer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pacer")
            .field("interval", &self.interval)
            .field("tolerance", &self.tolerance)
            .field("daily_friend_adds", &self.friend_cap)
            .field("daily_group_creates", &self.group_cap)
            .finish_non_exhaustive()
    }
}

/// What one attempt at taking a token found.
enum Take {
    Now,
    /// Reserved; the send may go at `now + wait`.
    Reserved {
        wait: Duration,
        epoch: u64,
    },
}

impl Pacer {
    /// A pacer with a full bucket (`burst` sends may go out at once).
    pub fn new(config: &PacingConfig) -> Pacer {
        // A validated config has a finite rate > 0; a hand-built one that does not falls back
        // to the documented default of 1 per second rather than dividing by zero.
        let rate = if config.messages_per_second.is_finite() && config.messages_per_second > 0.0 {
            config.messages_per_second
        } else {
            1.0
        };
        let interval = Duration::try_from_secs_f64(1.0 / rate)
            .unwrap_or(Duration::MAX)
            .max(Duration::from_nanos(1));
        let tolerance = interval.saturating_mul(config.burst.max(1) - 1);
        Pacer {
            interval,
            tolerance,
            friend_cap: config.daily_friend_adds,
            group_cap: config.daily_group_creates,
            state: Mutex::new(State {
                tat: Instant::now(),
                epoch: 0,
                cooldown: Cooldown::Calm,
                friend_adds: VecDeque::new(),
                group_creates: VecDeque::new(),
            }),
            cooldown_started: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update is a plain store, so the state is consistent even after a panic elsewhere.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cooling(s: &State, now: Instant) -> Result<(), Paced> {
        match s.cooldown {
            Cooldown::Active { until, .. } if until > now => Err(Paced::CoolingDown {
                remaining: until - now,
            }),
            _ => Ok(()),
        }
    }

    /// Takes a token now, or (when `reserve`) the next free one in the queue.
    fn take(&self, reserve: bool) -> Result<Take, Paced> {
        let mut s = self.lock();
        let now = Instant::now();
        Self::cooling(&s, now)?;
        let base = s.tat.max(now);
        let earliest = now + self.tolerance;
        if base <= earliest {
            s.tat = base + self.interval;
            return Ok(Take::Now);
        }
        let wait = base - earliest;
        if !reserve {
            return Err(Paced::NoToken { wait });
        }
        s.tat = base + self.interval;
        Ok(Take::Reserved {
            wait,
            epoch: s.epoch,
        })
    }

    /// Waits for a send token. Fails at once with [`Paced::CoolingDown`] while the account is
    /// cooling down, and wakes callers already waiting with that error when a cool-down starts.
    /// Waiters are served in the order they arrived; dropping the future gives its place back.
    pub async fn acquire(&self) -> Result<(), Paced> {
        loop {
            // Registered before the state is read, so a cool-down that starts in between
            // still wakes this waiter.
            let cooldown = self.cooldown_started.notified();
            tokio::pin!(cooldown);
            cooldown.as_mut().enable();
            let (wait, epoch) = match self.take(true)? {
                Take::Now => return Ok(()),
                Take::Reserved { wait, epoch } => (wait, epoch),
            };
            let reservation = Reservation {
                pacer: self,
                epoch,
                settled: false,
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = &mut cooldown => {}
            }
            if reservation.settle()? {
                return Ok(());
            }
            // The queue was reset by a cool-down that has already ended: queue again.
        }
    }

    /// Takes a token if one is there now; never waits and never queues.
    pub fn try_acquire(&self) -> Result<(), Paced> {
        match self.take(false)? {
            Take::Now => Ok(()),
            // `take(false)` never reserves.
            Take::Reserved { wait, .. } => Err(Paced::NoToken { wait }),
        }
    }

    /// Records that the server rate-limited this account (a send answered `Ret 1205`, or a
    /// notice for which [`is_rate_limit_notice`] holds) and returns how long sends are now
    /// paused. Cool-downs grow 30 s, 60 s, 120 s … up to 30 min for reports in a row, and start
    /// again at 30 s after an hour without one. A report during a running cool-down changes
    /// nothing (same episode).
    pub fn rate_limited(&self) -> Duration {
        let length = {
            let mut s = self.lock();
            let now = Instant::now();
            let length = match s.cooldown {
                Cooldown::Active { until, .. } if until > now => return until - now,
                Cooldown::Active { until, length } if now - until < COOLDOWN_RESET_AFTER => {
                    length.saturating_mul(2).min(COOLDOWN_MAX)
                }
                Cooldown::Active { .. } | Cooldown::Calm => COOLDOWN_START,
            };
            let until = now + length;
            s.cooldown = Cooldown::Active { until, length };
            // Resume gently: the bucket is empty when the pause ends, so the first send after
            // it waits one interval and no saved-up burst follows the server's objection.
            s.tat = until + self.tolerance + self.interval;
            s.epoch += 1;
            length
        };
        self.cooldown_started.notify_waiters();
        tracing::warn!(
            pause_secs = length.as_secs(),
            "server reported rate limiting; sends paused"
        );
        length
    }

    /// How long sends stay paused, if a cool-down is running.
    pub fn cooling_down(&self) -> Option<Duration> {
        match self.lock().cooldown {
            Cooldown::Active { until, .. } => {
                Some(until.saturating_duration_since(Instant::now())).filter(|d| !d.is_zero())
            }
            Cooldown::Calm => None,
        }
    }

    /// Counts one `kind` action against its daily cap, or refuses it when the last 24 hours
    /// already hold `cap` of them. Call it right before the action; a refused call counts
    /// nothing.
    pub fn take_daily(&self, kind: DailyKind) -> Result<(), Paced> {
        let cap = self.cap(kind);
        let mut s = self.lock();
        let now = Instant::now();
        let log = match kind {
            DailyKind::FriendAdd => &mut s.friend_adds,
            DailyKind::GroupCreate => &mut s.group_creates,
        };
        while log
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= DAILY_WINDOW)
        {
            log.pop_front();
        }
        if cap == 0 {
            return Err(Paced::DailyCapReached {
                kind,
                cap,
                next_in: None,
            });
        }
        if log.len() >= cap as usize {
            let oldest = log.front().copied().unwrap_or(now);
            return Err(Paced::DailyCapReached {
                kind,
                cap,
                next_in: Some((oldest + DAILY_WINDOW).saturating_duration_since(now)),
            });
        }
        log.push_back(now);
        Ok(())
    }

    /// How many `kind` actions are still allowed in the current 24-hour window.
    pub fn daily_remaining(&self, kind: DailyKind) -> u32 {
        let cap = self.cap(kind);
        let s = self.lock();
        let now = Instant::now();
        let log = match kind {
            DailyKind::FriendAdd => &s.friend_adds,
            DailyKind::GroupCreate => &s.group_creates,
        };
        let used = log
            .iter()
            .filter(|&&t| now.saturating_duration_since(t) < DAILY_WINDOW)
            .count();
        cap.saturating_sub(u32::try_from(used).unwrap_or(u32::MAX))
    }

    fn cap(&self, kind: DailyKind) -> u32 {
        match kind {
            DailyKind::FriendAdd => self.friend_cap,
            DailyKind::GroupCreate => self.group_cap,
        }
    }
}

/// A waiter's place in the queue, taken ahead of time. Dropped unsettled (the acquire future
/// was cancelled), it gives the interval back so later callers are not delayed by a send that
/// never happened; a cool-down voids it instead (the queue was reset).
struct Reservation<'a> {
    pacer: &'a Pacer,
    epoch: u64,
    settled: bool,
}

impl Reservation<'_> {
    /// `Ok(true)`: the reserved send may go. `Ok(false)`: the reservation was voided by a
    /// cool-down that is already over. `Err`: a cool-down is running.
    fn settle(mut self) -> Result<bool, Paced> {
        // Settled either way: the slot is used, or a cool-down reset the queue.
        self.settled = true;
        let s = self.pacer.lock();
        Pacer::cooling(&s, Instant::now())?;
        Ok(s.epoch == self.epoch)
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let mut s = self.pacer.lock();
        if s.epoch == self.epoch {
            let earlier = s.tat.checked_sub(self.pacer.interval);
            s.tat = earlier.map_or(s.tat, |t| t.max(Instant::now()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn config(rate: f64, burst: u32) -> PacingConfig {
        PacingConfig {
            messages_per_second: rate,
            burst,
            daily_friend_adds: 20,
            daily_group_creates: 5,
        }
    }

    /// How many sends a tight loop gets through in `window` of virtual time.
    async fn sends_within(pacer: Arc<Pacer>, window: Duration) -> u32 {
        let done = Arc::new(AtomicU32::new(0));
        let counter = done.clone();
        let sender = tokio::spawn(async move {
            loop {
                pacer.acquire().await.expect("no cool-down in this test");
                counter.fetch_add(1, Ordering::SeqCst);
            }
        });
        tokio::time::sleep(window).await;
        sender.abort();
        done.load(Ordering::SeqCst)
    }

    #[tokio::test(start_paused = true)]
    async fn burst_then_rate() {
        let pacer = Arc::new(Pacer::new(&config(1.0, 3)));
        // 3 at once, then one per second: at 1 s, 2 s, …, 9 s (10 s is outside the window).
        let n = sends_within(pacer.clone(), Duration::from_millis(9_999)).await;
        assert_eq!(n, 3 + 9);
    }

    #[tokio::test(start_paused = true)]
    async fn fractional_rate_and_large_burst() {
        let pacer = Arc::new(Pacer::new(&config(0.5, 10)));
        let n = sends_within(pacer, Duration::from_millis(59_999)).await;
        // 10 up front, then one every 2 s for just under a minute: at 2, 4, …, 58 s.
        assert_eq!(n, 10 + 29);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fast_rate_is_respected_over_many_acquires() {
        let pacer = Pacer::new(&config(20.0, 1));
        let start = Instant::now();
        for _ in 0..201 {
            pacer.acquire().await.unwrap();
        }
        // The first is free, the other 200 cost 50 ms each.
        assert_eq!(start.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_time_refills_only_up_to_the_burst() {
        let pacer = Pacer::new(&config(1.0, 3));
        for _ in 0..3 {
            pacer.try_acquire().unwrap();
        }
        match pacer.try_acquire() {
            Err(Paced::NoToken { wait }) => assert_eq!(wait, Duration::from_secs(1)),
            other => panic!("expected NoToken, got {other:?}"),
        }
        tokio::time::advance(Duration::from_secs(3600)).await;
        for _ in 0..3 {
            pacer.try_acquire().unwrap();
        }
        assert!(matches!(pacer.try_acquire(), Err(Paced::NoToken { .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_served_in_order_and_cancelled_waits_give_their_place_back() {
        let pacer = Arc::new(Pacer::new(&config(1.0, 1)));
        pacer.acquire().await.unwrap();
        let start = Instant::now();
        // A waiter that gives up: its reserved token must return to the bucket.
        let abandoned = tokio::time::timeout(Duration::from_millis(100), pacer.acquire()).await;
        assert!(abandoned.is_err());
        pacer.acquire().await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn cool_down_fails_fast_grows_and_resets() {
        let pacer = Pacer::new(&config(1.0, 3));
        assert_eq!(pacer.cooling_down(), None);
        assert_eq!(pacer.rate_limited(), Duration::from_secs(30));
        let start = Instant::now();
        match pacer.acquire().await {
            Err(Paced::CoolingDown { remaining }) => assert_eq!(remaining, Duration::from_secs(30)),
            other => panic!("expected CoolingDown, got {other:?}"),
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "must not wait");
        assert!(matches!(
            pacer.try_acquire(),
            Err(Paced::CoolingDown { .. })
        ));

        // Another report in the same episode changes nothing.
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(pacer.rate_limited(), Duration::from_secs(24));
        let e = pacer.acquire().await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "sending paused for 24 s after the server reported rate limiting (Ret 1205 or a \"too frequent\" notice)"
        );

        // After the pause, sends resume at the steady rate, without a burst.
        tokio::time::advance(Duration::from_secs(24)).await;
        assert_eq!(pacer.cooling_down(), None);
        let resumed = Instant::now();
        pacer.acquire().await.unwrap();
        pacer.acquire().await.unwrap();
        assert_eq!(resumed.elapsed(), Duration::from_secs(2));

        // Reports in a row double the pause up to the cap.
        let mut lengths = Vec::new();
        for _ in 0..8 {
            let length = pacer.rate_limited();
            lengths.push(length.as_secs());
            tokio::time::advance(length + Duration::from_secs(60)).await;
        }
        assert_eq!(lengths, [60, 120, 240, 480, 960, 1800, 1800, 1800]);

        // An hour of calm after the last pause ends: back to the start.
        tokio::time::advance(COOLDOWN_RESET_AFTER).await;
        assert_eq!(pacer.rate_limited(), COOLDOWN_START);
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_fail_when_a_cool_down_starts_while_they_wait() {
        let pacer = Arc::new(Pacer::new(&config(0.1, 1)));
        pacer.acquire().await.unwrap();
        let waiter = tokio::spawn({
            let pacer = pacer.clone();
            async move { pacer.acquire().await }
        });
        // Let the waiter take its reservation (10 s away), then trip the limit.
        tokio::task::yield_now().await;
        tokio::time::advance(Duration::from_secs(1)).await;
        // The waiter holds the slot at 10 s, so the next free one is at 20 s.
        assert!(
            matches!(pacer.try_acquire(), Err(Paced::NoToken { wait }) if wait == Duration::from_secs(19))
        );
        let start = Instant::now();
        pacer.rate_limited();
        match waiter.await.unwrap() {
            // Woken at once, not at its 10 s deadline.
            Err(Paced::CoolingDown { remaining }) => assert_eq!(remaining, COOLDOWN_START),
            other => panic!("expected CoolingDown, got {other:?}"),
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        // The voided reservation is not refunded: after the pause the bucket starts empty.
        tokio::time::advance(COOLDOWN_START).await;
        assert!(
            matches!(pacer.try_acquire(), Err(Paced::NoToken { wait }) if wait == Duration::from_secs(10))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn daily_caps_count_over_a_rolling_day() {
        let pacer = Pacer::new(&PacingConfig {
            daily_friend_adds: 3,
            daily_group_creates: 0,
            ..config(1.0, 3)
        });
        assert_eq!(pacer.daily_remaining(DailyKind::FriendAdd), 3);
        pacer.take_daily(DailyKind::FriendAdd).unwrap();
        tokio::time::advance(Duration::from_secs(3600)).await;
        pacer.take_daily(DailyKind::FriendAdd).unwrap();
        pacer.take_daily(DailyKind::FriendAdd).unwrap();
        assert_eq!(pacer.daily_remaining(DailyKind::FriendAdd), 0);
        let e = pacer.take_daily(DailyKind::FriendAdd).unwrap_err();
        assert_eq!(
            e,
            Paced::DailyCapReached {
                kind: DailyKind::FriendAdd,
                cap: 3,
                next_in: Some(Duration::from_secs(23 * 3600)),
            }
        );
        assert_eq!(
            e.to_string(),
            "daily limit of 3 friend adds reached (any 24 hours); the next is allowed in 82800 s"
        );
        // Refusals count nothing: the first add leaves the window after exactly 24 h.
        tokio::time::advance(Duration::from_secs(23 * 3600 - 1)).await;
        assert!(pacer.take_daily(DailyKind::FriendAdd).is_err());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(pacer.daily_remaining(DailyKind::FriendAdd), 1);
        pacer.take_daily(DailyKind::FriendAdd).unwrap();
        assert!(pacer.take_daily(DailyKind::FriendAdd).is_err());

        // A cap of 0 allows none, ever, and says so.
        let e = pacer.take_daily(DailyKind::GroupCreate).unwrap_err();
        assert_eq!(
            e.to_string(),
            "group creations are not allowed for this account (daily limit is 0)"
        );
        tokio::time::advance(DAILY_WINDOW * 2).await;
        assert!(pacer.take_daily(DailyKind::GroupCreate).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn daily_kinds_are_counted_separately() {
        let pacer = Pacer::new(&PacingConfig {
            daily_friend_adds: 1,
            daily_group_creates: 2,
            ..config(1.0, 3)
        });
        pacer.take_daily(DailyKind::FriendAdd).unwrap();
        assert!(pacer.take_daily(DailyKind::FriendAdd).is_err());
        pacer.take_daily(DailyKind::GroupCreate).unwrap();
        pacer.take_daily(DailyKind::GroupCreate).unwrap();
        assert!(matches!(
            pacer.take_daily(DailyKind::GroupCreate),
            Err(Paced::DailyCapReached {
                kind: DailyKind::GroupCreate,
                cap: 2,
                ..
            })
        ));
    }

    #[test]
    fn rate_limit_notices_are_recognised() {
        for text in [
            "发送消息过于频繁，可稍后再试",
            "操作过于频繁，请稍后再试。",
            "Sending messages too frequently, try again later",
            "TOO FREQUENT",
        ] {
            assert!(is_rate_limit_notice(text), "{text}");
        }
        for text in [
            "",
            "你已添加了张三，现在可以开始聊天了。",
            "frequent flyer",
            "频繁",
        ] {
            assert!(!is_rate_limit_notice(text), "{text}");
        }
    }

    #[test]
    fn pauses_are_shown_in_whole_seconds_rounded_up() {
        assert_eq!(seconds(Duration::from_millis(53_001)), "54 s");
        assert_eq!(seconds(Duration::from_secs(54)), "54 s");
        assert_eq!(
            Paced::NoToken {
                wait: Duration::from_millis(1)
            }
            .to_string(),
            "send rate limit of this account reached; next send allowed in 1 s"
        );
    }
}
