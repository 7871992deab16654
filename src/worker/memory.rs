//! Keeps an idle worker small. A worker's steady state is a contact book and a few buffers, but
//! logging in parses contact lists of hundreds of KiB, and glibc keeps freed heap pages (and a
//! separate arena per thread that ever allocated) resident. With hundreds of workers per
//! machine that slack dominates, so the worker tells glibc to use one arena and fixed
//! thresholds, and gives free pages back once the login burst is over. Other C libraries: no-op.

use std::time::Duration;

/// Free heap bytes worth a `malloc_trim` (it walks the heap; below this it is not worth it).
const TRIM_WORTH: usize = 128 << 10;

/// The glibc tunable the supervisor starts workers (and the fork-server template) with: keep
/// at most three freed blocks per size class in the thread cache (glibc's default is seven).
/// Cached blocks are never merged with their free neighbours, so `malloc_trim` cannot give back
/// a page that holds one; after a login burst the default left ~80 KiB per idle worker pinned
/// that way. Three keeps the cache's fast path: at 1,000 idle sessions one block per class cost
/// ~0.6 points of a core more than the default and three cost nothing measurable, for nearly the
/// same memory (docs/PERFORMANCE.md). Only settable through the environment, read when a
/// process starts.
pub const WORKER_TUNABLE: &str = "glibc.malloc.tcache_count=3";

/// The `GLIBC_TUNABLES` value a worker should be started with, given the supervisor's own
/// (`current`): [`WORKER_TUNABLE`] added to it, unless the operator already set the tcache
/// size there (theirs wins). `None` where there is nothing to set (not glibc, or already set).
pub fn worker_tunables(current: Option<&std::ffi::OsStr>) -> Option<std::ffi::OsString> {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return None;
    }
    let (name, _) = WORKER_TUNABLE.split_once('=')?;
    match current.filter(|c| !c.is_empty()) {
        None => Some(WORKER_TUNABLE.into()),
        Some(c) => {
            let set_already = c
                .to_string_lossy()
                .split(':')
                .any(|t| t.split_once('=').is_some_and(|(n, _)| n == name));
            if set_already {
                return None;
            }
            let mut v = c.to_owned();
            v.push(":");
            v.push(WORKER_TUNABLE);
            Some(v)
        }
    }
}

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

/// Stack kept below the caller's frame when releasing the rest: room for the calls it makes
/// (the x86-64 red zone is 128 bytes; madvise and /proc reads need far less than this).
const STACK_MARGIN: usize = 16 << 10;

/// Returns free heap pages to the kernel when enough have piled up: soon after start (the
/// login burst), then every few minutes after new work (contact reloads, message bursts; an
/// idle worker is not checked again, see [`note_activity`]); never while work goes on
/// (`check_due`). Also gives back the main thread's stack pages that the login's deep futures
/// touched once (the trim runs on the worker's only runtime thread, the main thread, from a
/// shallow frame).
pub async fn trim_loop() {
    // A login (or resume) takes from a few hundred milliseconds to tens of seconds on a busy
    // machine, and its garbage should go soon after it ends whenever that is: check often in
    // the first minute (a check that finds little new free is a `mallinfo2` call), then back off.
    let start = tokio::time::Instant::now();
    let mut pause = Duration::from_secs(10);
    // Free bytes after the last stack release. The heap is trimmed on every check (free pages
    // are dirtied and freed again by the ongoing login without the free total changing, so only
    // a trim finds them), but reading /proc/self/maps for the stack is kept for when new garbage
    // says a burst (the login's deep futures) has just ended.
    let mut after_release: Option<usize> = None;
    let mut seen = activity();
    // The work count at the last check that walked the heap.
    let mut checked: Option<u64> = None;
    loop {
        let early = start.elapsed() < EARLY;
        tokio::time::sleep(if early { EARLY_PAUSE } else { pause }).await;
        let now = activity();
        let due = check_due(early, seen, now, checked);
        seen = now;
        match due {
            // Traffic frees what the next round allocates again: looked at once it pauses.
            Due::Busy => continue,
            Due::Nothing => {
                pause = (pause * 3).min(Duration::from_secs(300));
                continue;
            }
            Due::Now => checked = Some(now),
        }
        let free = free_heap();
        trim(free);
        if !early || worth_trimming(free, after_release) {
            release_unused_stack();
            after_release = Some(free_heap());
        }
        if !early {
            pause = (pause * 3).min(Duration::from_secs(300));
        }
    }
}

/// Work that leaves garbage behind (sync rounds that brought events, re-inits, reports
/// spooled) since the worker started; see [`note_activity`].
static ACTIVITY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Counts a piece of work that allocates and frees a fair amount (parsing a sync round's
/// messages, building their reports). The trim loop skips its later checks while the count
/// stands still: an idle worker's polls free what they allocate, so a check would find
/// nothing new, and with a thousand workers the checks themselves (`mallinfo2` walks the heap's
/// free lists, the stack release reads `/proc/self/maps`; ~0.5 ms each by the profile) add up.
pub fn note_activity() {
    ACTIVITY.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

fn activity() -> u64 {
    ACTIVITY.load(std::sync::atomic::Ordering::Relaxed)
}

/// What the trim loop does at a check.
#[derive(Debug, PartialEq, Eq)]
enum Due {
    /// Walk the heap and trim it.
    Now,
    /// Work went on since the last check: look again after the same pause.
    Busy,
    /// Nothing new since the heap was last walked: look again later.
    Nothing,
}

/// Whether the trim loop checks the heap now, given the work count at the last check (`seen`),
/// now, and at the last check that walked the heap (`checked`). Never while work goes on: a
/// session receiving messages steadily reuses what the last round freed, and walking and
/// trimming its heap every few seconds only cost CPU and page faults (at 200 messages a second
/// over 100 workers, ~5 % of the workers' CPU by the profile). Once the work pauses: always in
/// the first minute (the login's or resume's own work, reading contact lists, is not counted),
/// later only if there was work since the heap was last walked.
fn check_due(early: bool, seen: u64, now: u64, checked: Option<u64>) -> Due {
    if now != seen {
        Due::Busy
    } else if early || checked != Some(now) {
        Due::Now
    } else {
        Due::Nothing
    }
}

/// Whether `free` heap bytes mean new garbage, given the free bytes after the last release.
fn worth_trimming(free: usize, after_trim: Option<usize>) -> bool {
    free >= TRIM_WORTH && after_trim.is_none_or(|last| free >= last.saturating_add(TRIM_WORTH))
}

/// How long after start the trim loop checks every [`EARLY_PAUSE`].
const EARLY: Duration = Duration::from_secs(60);
const EARLY_PAUSE: Duration = Duration::from_secs(2);

/// Drops the pages of the main thread's stack below the current frame (less a margin): a
/// stack never shrinks by itself, so the ~100 KiB one login touches would stay resident for the
/// process's life. The pages come back zero-filled if the stack grows again. Does nothing off
/// the main thread or outside Linux. Returns the bytes released.
pub fn release_unused_stack() -> usize {
    #[cfg(target_os = "linux")]
    {
        let marker = 0u8;
        let here = std::hint::black_box(&marker) as *const u8 as usize;
        let Some((low, high)) = std::fs::read_to_string("/proc/self/maps")
            .ok()
            .as_deref()
            .and_then(main_stack_range)
        else {
            return 0;
        };
        if !(low..high).contains(&here) {
            return 0;
        }
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let end = here.saturating_sub(STACK_MARGIN) & !(page - 1);
        if end <= low {
            return 0;
        }
        // SAFETY: [low, end) lies inside the main thread's stack mapping and below this frame by
        // more than any callee uses: nothing live is stored there, and MADV_DONTNEED on a private
        // anonymous mapping only makes the next touch see zeroed pages.
        let done =
            unsafe { libc::madvise(low as *mut libc::c_void, end - low, libc::MADV_DONTNEED) };
        if done == 0 { end - low } else { 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = STACK_MARGIN;
        0
    }
}

/// The `[stack]` mapping (the main thread's) in `/proc/self/maps` text.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn main_stack_range(maps: &str) -> Option<(usize, usize)> {
    let line = maps.lines().find(|l| l.trim_end().ends_with("[stack]"))?;
    let (low, high) = line.split_whitespace().next()?.split_once('-')?;
    Some((
        usize::from_str_radix(low, 16).ok()?,
        usize::from_str_radix(high, 16).ok()?,
    ))
}

/// Bytes free in the heap (0 where it cannot be known).
fn free_heap() -> usize {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 has no preconditions.
        unsafe { libc::mallinfo2() }.fordblks
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        0
    }
}

/// Gives free heap pages back to the kernel when `free` bytes are worth the walk.
fn trim(free: usize) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if free >= TRIM_WORTH {
        // SAFETY: malloc_trim has no preconditions.
        unsafe { libc::malloc_trim(0) };
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = (free, TRIM_WORTH);
}

/// Largest block [`plug_heap_holes`] asks for (below `M_MMAP_THRESHOLD`, so it comes from the heap).
const PLUG_LARGEST: usize = 32 << 10;

/// In the fork-server template, once everything the workers share is built: fills the heap's
/// free chunks (left between live blocks by the start-up's temporaries) with blocks that are
/// never freed. A forked worker's allocations then all come from fresh memory above the
/// template's heap instead of from those holes: writing into a hole (or into the free-list
/// pointers beside it) would copy the whole page, live shared data included, into every worker.
/// Before this, an idle worker (20-session bench) kept only 52 of the template's 376 resident
/// heap KiB shared. Returns the bytes plugged; does nothing (0) off glibc and off the main
/// thread (only the main arena lives in the `brk` heap this reasons about).
pub fn plug_heap_holes() -> usize {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: gettid/getpid/sbrk(0)/mallinfo2/malloc/free have no preconditions; sbrk(0) only
    // reads the break. The plugged blocks are leaked on purpose.
    unsafe {
        if libc::gettid() != libc::getpid() {
            return 0;
        }
        // Fast bins are merged into their neighbours first, and whole free pages returned.
        libc::malloc_trim(0);
        // The top chunk (the heap's unused end) starts where the break minus its size is:
        // a block from there is fresh memory, a block below it filled a hole.
        let top_start = || (libc::sbrk(0) as usize).saturating_sub(libc::mallinfo2().keepcost);
        let mut plugged = 0usize;
        // Large requests first (few calls for the big holes; what they leave over is split by
        // the smaller ones), then every small size class once more: glibc keeps a few freed
        // blocks of each class aside (tcache: seven by default, three under WORKER_TUNABLE)
        // where only that exact class finds them.
        let large = (0..).map(|k| PLUG_LARGEST >> k).take_while(|&n| n >= 32);
        let classes = (24..=1032).step_by(16);
        for size in large.chain(classes) {
            // Bounded: the heap holds at most so many holes of this size.
            for _ in 0..=PLUG_ROUNDS {
                let fresh_from = top_start();
                let p = libc::malloc(size);
                if p.is_null() {
                    break;
                }
                if p as usize >= fresh_from {
                    // From the top: no hole of this size is left. Freed, it goes back to the
                    // top (or the class's tcache, next to the top).
                    libc::free(p);
                    break;
                }
                plugged += size;
            }
        }
        plugged
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    0
}

/// Most blocks of one size [`plug_heap_holes`] takes (at 24 bytes: 1.5 MiB of holes).
const PLUG_ROUNDS: usize = 64 << 10;

/// One check (and trim when worth it); returns the bytes that were free in the heap.
pub fn trim_if_worth_it() -> usize {
    let free = free_heap();
    trim(free);
    free
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

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn worker_tunables_add_the_cache_size_unless_the_operator_set_one() {
        use std::ffi::OsStr;
        assert_eq!(worker_tunables(None).unwrap(), WORKER_TUNABLE);
        assert_eq!(
            worker_tunables(Some(OsStr::new(""))).unwrap(),
            WORKER_TUNABLE
        );
        assert_eq!(
            worker_tunables(Some(OsStr::new("glibc.malloc.mxfast=0"))).unwrap(),
            format!("glibc.malloc.mxfast=0:{WORKER_TUNABLE}").as_str()
        );
        assert_eq!(
            worker_tunables(Some(OsStr::new(
                "glibc.malloc.mxfast=0:glibc.malloc.tcache_count=7"
            ))),
            None,
            "the operator's own cache size stays"
        );
        // A longer name that starts the same is another tunable.
        assert!(
            worker_tunables(Some(OsStr::new("glibc.malloc.tcache_count_x=3")))
                .unwrap()
                .to_string_lossy()
                .ends_with(WORKER_TUNABLE)
        );
    }

    #[test]
    fn checks_wait_for_a_pause_in_work() {
        assert_eq!(
            check_due(true, 5, 5, Some(5)),
            Due::Now,
            "the first minute checks whenever the worker is quiet"
        );
        assert_eq!(
            check_due(false, 5, 5, Some(5)),
            Due::Nothing,
            "an idle worker is not checked again"
        );
        assert_eq!(
            check_due(false, 5, 5, Some(3)),
            Due::Now,
            "work since the last walk is, once it pauses"
        );
        assert_eq!(check_due(false, 5, 5, None), Due::Now);
        for early in [true, false] {
            assert_eq!(
                check_due(early, 5, 6, Some(3)),
                Due::Busy,
                "not while messages keep coming"
            );
        }
        let before = activity();
        note_activity();
        assert!(activity() > before);
    }

    #[test]
    fn trims_again_only_after_new_garbage() {
        assert!(
            !worth_trimming(TRIM_WORTH - 1, None),
            "too little to bother"
        );
        assert!(worth_trimming(TRIM_WORTH, None), "the first time");
        // Pages given back stay counted as free: the same amount again is not new.
        assert!(!worth_trimming(3 * TRIM_WORTH, Some(3 * TRIM_WORTH)));
        assert!(!worth_trimming(4 * TRIM_WORTH - 1, Some(3 * TRIM_WORTH)));
        assert!(worth_trimming(4 * TRIM_WORTH, Some(3 * TRIM_WORTH)));
        assert!(worth_trimming(TRIM_WORTH, Some(0)));
    }

    #[test]
    fn finds_the_main_stack_mapping() {
        let maps = "55d0c0a00000-55d0c0a21000 rw-p 00000000 00:00 0                          [heap]\n\
                    7ffd1c3e0000-7ffd1c401000 rw-p 00000000 00:00 0                          [stack]\n\
                    7ffd1c5f0000-7ffd1c5f4000 r--p 00000000 00:00 0                          [vvar]\n";
        assert_eq!(
            main_stack_range(maps),
            Some((0x7ffd1c3e0000, 0x7ffd1c401000))
        );
        assert_eq!(main_stack_range("7f00-7f10 rw-p 0 00:00 0 [heap]"), None);
    }

    #[test]
    fn releasing_the_stack_keeps_the_caller_working() {
        // Touch some stack in a deep call, release, and touch it again.
        #[inline(never)]
        fn deep(n: usize) -> usize {
            let buf = std::hint::black_box([n as u8; 4096]);
            if n == 0 {
                buf[0] as usize
            } else {
                deep(n - 1) + buf[1] as usize
            }
        }
        let before = deep(16);
        // Test threads are not the main thread: nothing is released there.
        assert_eq!(release_unused_stack(), 0);
        assert_eq!(deep(16), before);
        // On the main thread (a spawned process would be needed to check the amount), the
        // function must at least not fault; the worker integration tests run it for real.
    }
}
