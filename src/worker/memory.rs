//! Keeps an idle worker small. A worker's steady state is a contact book and a few buffers, but
//! logging in parses contact lists of hundreds of KiB, and glibc keeps freed heap pages (and a
//! separate arena per thread that ever allocated) resident. With hundreds of workers per
//! machine that slack dominates, so the worker tells glibc to use one arena and fixed
//! thresholds, and gives free pages back once the login burst is over. Other C libraries: no-op.

use std::time::Duration;

/// Free heap bytes worth a `malloc_trim` (it walks the heap; below this it is not worth it).
const TRIM_WORTH: usize = 128 << 10;

/// Allocator settings for a worker process; call before any thread is started.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before other threads exist.
    unsafe {
        // One arena: the blocking pool's threads would otherwise each get a 64 MiB-reserved
        // arena whose touched pages stay resident.
        libc::mallopt(libc::M_ARENA_MAX, 1);
        // Fixed thresholds (setting them turns off glibc's dynamic raise after the first large
        // free): large response bodies stay in mmap and go back to the kernel when freed, and
        // the top of the heap is returned sooner.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 10);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 10);
    }
}

/// Returns free heap pages to the kernel when enough have piled up: soon after start (the
/// login burst), then every few minutes (contact reloads, message bursts).
pub async fn trim_loop() {
    let mut pause = Duration::from_secs(5);
    loop {
        tokio::time::sleep(pause).await;
        trim_if_worth_it();
        pause = (pause * 3).min(Duration::from_secs(300));
    }
}

/// One check (and trim when worth it); returns the bytes that were free in the heap.
pub fn trim_if_worth_it() -> usize {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 and malloc_trim have no preconditions.
        let free = unsafe { libc::mallinfo2() }.fordblks;
        if free >= TRIM_WORTH {
            // SAFETY: as above.
            unsafe { libc::malloc_trim(0) };
        }
        free
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = TRIM_WORTH;
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimming_is_safe_to_call_any_time() {
        let big: Vec<Vec<u8>> = (0..64).map(|_| vec![1u8; 16 << 10]).collect();
        drop(big);
        trim_if_worth_it();
        trim_if_worth_it();
    }
}
