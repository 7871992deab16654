//! A reusable one-shot timer for the long, repeating waits of an idle worker (the `pull_task`
//! poll interval), which wakes the process exactly once per wait.
//!
//! Why not `tokio::time::sleep`: tokio's timer wheel files a 5 s deadline in a 4.096 s slot, so
//! the runtime wakes at the slot boundary, again at a 64 ms boundary, and only then at the
//! deadline — three wake-ups where one would do. With a thousand idle workers on two cores each
//! wake-up of a cold process is the expensive part of idling. On Linux a `timerfd` armed for
//! the deadline is one epoll event; elsewhere, or if the timerfd cannot be had, it is
//! `tokio::time::sleep` (same result, more wake-ups). Not for waits tests drive with
//! `tokio::time::pause()`: a timerfd follows the real clock.

use std::time::Duration;

/// One timer, re-armed for each wait.
pub struct Alarm {
    #[cfg(target_os = "linux")]
    fd: Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>,
}

impl Alarm {
    pub fn new() -> Alarm {
        Alarm {
            #[cfg(target_os = "linux")]
            fd: linux::timerfd().ok(),
        }
    }

    /// Waits `d` (cancel-safe: dropping the future just leaves the timer to be re-armed).
    pub async fn sleep(&mut self, d: Duration) {
        let deadline = tokio::time::Instant::now() + d;
        #[cfg(target_os = "linux")]
        if let Some(fd) = &self.fd {
            match linux::wait(fd, d).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "timerfd failed; using the runtime's timer");
                    self.fd = None;
                }
            }
        }
        tokio::time::sleep_until(deadline).await;
    }
}

impl Default for Alarm {
    fn default() -> Self {
        Alarm::new()
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::time::Duration;
    use tokio::io::unix::AsyncFd;

    pub fn timerfd() -> io::Result<AsyncFd<OwnedFd>> {
        // SAFETY: timerfd_create takes a clock id and flags and returns a new fd or -1.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the fd is new and ours.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: the AsyncFd owns the fd, which stays open and the same until it drops.
        unsafe { AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE) }
            .map_err(io::Error::from)
    }

    /// Arms the timer for `d` from now (replacing any earlier arming) and waits for it.
    pub async fn wait(fd: &AsyncFd<OwnedFd>, d: Duration) -> io::Result<()> {
        // A zero it_value would disarm the timer instead: wait at least a nanosecond.
        let d = d.max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: d.as_secs() as libc::time_t,
                tv_nsec: d.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: timerfd_settime on our timerfd with a valid itimerspec; no old value wanted.
        if unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        loop {
            let mut ready = fd.readable().await?;
            let mut expirations = [0u8; 8];
            // SAFETY: reading the 8-byte expiration count into a buffer of that size.
            let n = unsafe { libc::read(fd.as_raw_fd(), expirations.as_mut_ptr().cast(), 8) };
            if n == 8 {
                // One read drains the timer and it stays disarmed until the next settime, so
                // it is not readable any more: saying so spares the next wait a read that
                // would only fail with EAGAIN (one syscall per poll of an idle worker).
                ready.clear_ready();
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::WouldBlock {
                return Err(e);
            }
            ready.clear_ready();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_at_least_the_duration_and_can_be_reused() {
        let mut alarm = Alarm::new();
        for ms in [30u64, 5, 0] {
            let start = std::time::Instant::now();
            alarm.sleep(Duration::from_millis(ms)).await;
            assert!(start.elapsed() >= Duration::from_millis(ms), "{ms} ms");
        }
    }

    #[tokio::test]
    async fn a_cancelled_wait_does_not_fire_into_the_next() {
        let mut alarm = Alarm::new();
        // Armed for 20 ms, abandoned after 1 ms; the next wait of 200 ms must not end at 20 ms.
        let _ = tokio::time::timeout(
            Duration::from_millis(1),
            alarm.sleep(Duration::from_millis(20)),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(40)).await;
        let start = std::time::Instant::now();
        alarm.sleep(Duration::from_millis(200)).await;
        assert!(start.elapsed() >= Duration::from_millis(200));
    }
}
