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

use std::cell::Cell;
use std::time::{Duration, Instant};

/// Longest window `--busy-poll-microseconds` accepts: beyond this, polling costs far more CPU
/// time than the wake-up it saves.
pub const MAX_BUSY_POLL_MICROSECONDS: u16 = 10_000;

thread_local! {
    /// This thread's window; zero (the default, and on every thread but a serving one) is off.
    static WINDOW: Cell<Duration> = const { Cell::new(Duration::ZERO) };
    /// When a request last started or ended on this thread.
    static LAST_ACTIVITY: Cell<Option<Instant>> = const { Cell::new(None) };
    /// Whether this thread's polling task is running.
    static POLLING: Cell<bool> = const { Cell::new(false) };
}

/// Turn busy polling on for the serving thread this is called on.
pub(super) fn enable_on_this_thread(window: Duration) {
    WINDOW.with(|w| w.set(window));
}

/// Held while a request is handled: starting and ending it each restart the window.
pub(super) struct Activity(());

impl Activity {
    pub(super) fn begin() -> Self {
        note_activity();
        Self(())
    }
}

impl Drop for Activity {
    fn drop(&mut self) {
        note_activity();
    }
}

fn note_activity() {
    let window = WINDOW.with(Cell::get);
    if window.is_zero() {
        return;
    }
    LAST_ACTIVITY.with(|last| last.set(Some(Instant::now())));
    if POLLING.with(Cell::get) {
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

/// Keep this thread's runtime from sleeping until no request has started or ended for `window`.
async fn poll_until_quiet(window: Duration) {
    while still_polling(LAST_ACTIVITY.with(Cell::get), Instant::now(), window) {
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

    #[tokio::test(flavor = "current_thread")]
    async fn a_request_starts_one_polling_task_that_ends_when_the_thread_is_quiet() {
        enable_on_this_thread(Duration::from_millis(2));
        let first = Activity::begin();
        assert!(POLLING.with(Cell::get), "a request starts polling");
        let second = Activity::begin();
        drop((first, second));
        // The polling task yields on every round, so this task gets to run between them and
        // sees it stop once two milliseconds pass with no request.
        let deadline = Instant::now() + Duration::from_secs(10);
        while POLLING.with(Cell::get) {
            assert!(Instant::now() < deadline, "polling never stopped");
            tokio::task::yield_now().await;
        }
        enable_on_this_thread(Duration::ZERO);
        let _off = Activity::begin();
        assert!(!POLLING.with(Cell::get), "no window, no polling");
    }
}
