//! Busy polling (`--busy-poll-microseconds`): after a request starts or ends, a serving thread
//! keeps checking its sockets for a short window before it goes to sleep.
//!
//! Waking a sleeping thread costs a scheduler round trip, and on a busy or virtualised CPU the
//! woken thread can wait its turn for tens of microseconds. When requests come back to back (a
//! client that calls tools in a loop, a fast upstream), the next event usually arrives within the
//! window, so the thread is still running when it does. The price is CPU time: a thread polls
//! for up to the window after every request, even when nothing comes. Each round yields the CPU
//! to any other thread waiting for it, so polling only takes time nothing else wanted; under a
//! CPU limit it still counts against the quota. Off by default, like HAProxy's `busy-polling`.
//!
//! A thread that has just served two requests at once does not poll: under load its sockets
//! are rarely quiet, the wake-up it would save is rare, and the CPU time a polling round takes
//! is what the clients and the server on the same CPUs need (at 32 clients on two CPUs, polling
//! regardless put the gateway's p99 from 1.7 to 2.7 ms).

use std::cell::Cell;
use std::time::{Duration, Instant};

/// Longest window `--busy-poll-microseconds` accepts: beyond this, polling costs far more CPU
/// time than the wake-up it saves.
pub const MAX_BUSY_POLL_MICROSECONDS: u16 = 10_000;

/// How long a thread that served two requests at once goes without polling.
pub const NO_POLLING_AFTER_OVERLAP: Duration = Duration::from_millis(10);

thread_local! {
    /// This thread's window; zero (the default, and on every thread but a serving one) is off.
    static WINDOW: Cell<Duration> = const { Cell::new(Duration::ZERO) };
    /// When a request last started or ended on this thread.
    static LAST_ACTIVITY: Cell<Option<Instant>> = const { Cell::new(None) };
    /// Whether this thread's polling task is running.
    static POLLING: Cell<bool> = const { Cell::new(false) };
    /// Requests being handled on this thread.
    static IN_FLIGHT: Cell<u32> = const { Cell::new(0) };
    /// When a request last started while another was in flight on this thread.
    static LAST_OVERLAP: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Turn busy polling on for the serving thread this is called on.
pub(super) fn enable_on_this_thread(window: Duration) {
    WINDOW.with(|w| w.set(window));
}

/// Held while a request is handled: starting and ending it each restart the window.
pub(super) struct Activity(());

impl Activity {
    pub(super) fn begin() -> Self {
        if !WINDOW.with(Cell::get).is_zero() {
            let others = IN_FLIGHT.with(|n| n.replace(n.get().saturating_add(1)));
            if others > 0 {
                LAST_OVERLAP.with(|last| last.set(Some(Instant::now())));
            }
            note_activity();
        }
        Self(())
    }
}

impl Drop for Activity {
    fn drop(&mut self) {
        if !WINDOW.with(Cell::get).is_zero() {
            IN_FLIGHT.with(|n| n.set(n.get().saturating_sub(1)));
            note_activity();
        }
    }
}

fn note_activity() {
    let window = WINDOW.with(Cell::get);
    if window.is_zero() {
        return;
    }
    let now = Instant::now();
    LAST_ACTIVITY.with(|last| last.set(Some(now)));
    if POLLING.with(Cell::get) || overlapped_lately(LAST_OVERLAP.with(Cell::get), now) {
        return;
    }
    // Outside a runtime (a request dropped while its thread shuts down) there is nothing to poll.
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        POLLING.with(|polling| polling.set(true));
        runtime.spawn(poll_until_quiet(window));
    }
}

/// Whether a thread whose last request started or ended at `last` still polls at `now`.
fn still_polling(last: Option<Instant>, now: Instant, window: Duration) -> bool {
    last.is_some_and(|last| now.saturating_duration_since(last) < window)
}

/// Whether a thread that last served two requests at once at `overlap` stays off polling at `now`.
fn overlapped_lately(overlap: Option<Instant>, now: Instant) -> bool {
    overlap.is_some_and(|at| now.saturating_duration_since(at) < NO_POLLING_AFTER_OVERLAP)
}

/// Keep this thread's runtime from sleeping until no request has started or ended for `window`,
/// or until requests overlap.
async fn poll_until_quiet(window: Duration) {
    loop {
        let now = Instant::now();
        if !still_polling(LAST_ACTIVITY.with(Cell::get), now, window)
            || overlapped_lately(LAST_OVERLAP.with(Cell::get), now)
        {
            break;
        }
        // Any other thread waiting for this CPU runs first.
        std::thread::yield_now();
        // A task that yields makes tokio check its sockets without waiting, then run whatever
        // became ready, instead of sleeping in epoll_wait.
        tokio::task::yield_now().await;
    }
    POLLING.with(|polling| polling.set(false));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polling_lasts_the_window_after_the_last_activity_and_not_without_one() {
        let window = Duration::from_micros(100);
        let start = Instant::now();
        assert!(still_polling(Some(start), start, window));
        assert!(still_polling(
            Some(start),
            start + Duration::from_micros(99),
            window
        ));
        assert!(!still_polling(Some(start), start + window, window));
        assert!(!still_polling(None, start, window));
        // A clock read before the activity was noted (another core's earlier reading) polls.
        assert!(still_polling(
            Some(start + Duration::from_micros(5)),
            start,
            window
        ));
    }

    #[test]
    fn an_overlap_keeps_polling_off_for_a_while() {
        let at = Instant::now();
        assert!(!overlapped_lately(None, at));
        assert!(overlapped_lately(Some(at), at));
        assert!(overlapped_lately(
            Some(at),
            at + NO_POLLING_AFTER_OVERLAP - Duration::from_micros(1)
        ));
        assert!(!overlapped_lately(Some(at), at + NO_POLLING_AFTER_OVERLAP));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn two_requests_at_once_stop_polling_and_a_quiet_spell_lets_it_start_again() {
        let window = Duration::from_secs(1);
        enable_on_this_thread(window);
        let first = Activity::begin();
        assert!(POLLING.with(Cell::get), "one request at a time polls");
        let overlap = Instant::now();
        let second = Activity::begin();
        // The polling task sees the overlap on its next round and stops, well before its window.
        polling_stops("two requests at once").await;
        assert!(
            overlap.elapsed() < window / 2,
            "polling ran on for {:?} after the overlap",
            overlap.elapsed()
        );
        drop((first, second));
        assert!(
            !POLLING.with(Cell::get),
            "requests ending right after an overlap do not start polling"
        );
        assert_eq!(IN_FLIGHT.with(Cell::get), 0);
        // Once no two requests have overlapped for a while, a request polls again.
        LAST_OVERLAP.with(|last| {
            last.set(
                last.get()
                    .and_then(|at| at.checked_sub(NO_POLLING_AFTER_OVERLAP)),
            );
        });
        let third = Activity::begin();
        assert!(
            POLLING.with(Cell::get),
            "polling resumes after the quiet spell"
        );
        drop(third);
        enable_on_this_thread(Duration::ZERO);
        LAST_ACTIVITY.with(|last| last.set(None));
        polling_stops("no activity").await;
    }

    /// Yield until this thread's polling task has ended; `reason` is what should end it.
    async fn polling_stops(reason: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while POLLING.with(Cell::get) {
            assert!(
                Instant::now() < deadline,
                "polling went on despite {reason}"
            );
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_request_starts_one_polling_task_that_ends_when_the_thread_is_quiet() {
        enable_on_this_thread(Duration::from_millis(2));
        let first = Activity::begin();
        assert!(POLLING.with(Cell::get), "a request starts polling");
        drop(first);
        // One request after another, never two at once: the same polling task carries on.
        let second = Activity::begin();
        drop(second);
        assert!(
            POLLING.with(Cell::get),
            "back-to-back requests keep polling"
        );
        // The polling task yields on every round, so this task gets to run between them and
        // sees it stop once two milliseconds pass with no request.
        polling_stops("two quiet milliseconds").await;
        assert!(
            LAST_OVERLAP.with(Cell::get).is_none(),
            "requests one after another are no overlap"
        );
        enable_on_this_thread(Duration::ZERO);
        let _off = Activity::begin();
        assert!(!POLLING.with(Cell::get), "no window, no polling");
    }
}
