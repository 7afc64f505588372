//! Busy polling (`--busy-poll-microseconds`): after a request starts or ends, a serving thread
//! keeps checking its sockets for a short window before it goes to sleep.
//!
//! Waking a sleeping thread costs a scheduler round trip, and on a busy or virtualised CPU the
//! woken thread can wait its turn for tens of microseconds. When requests come back to back (a
//! client that calls tools in a loop, a fast upstream), the next event usually arrives within the
//! window, so the thread is still running when it does. The price is CPU time. Each round yields
//! the CPU to any other thread waiting for it, so polling only takes time nothing else wanted;
//! under a CPU limit it still counts against the quota.
//!
//! The window adapts, as the kernel's halt polling does for virtual CPUs: it starts at zero,
//! grows (doubling from [`FIRST_WINDOW`]) each time the thread slept for no longer than the
//! ceiling, so that polling would have caught the event, and halves each time it slept longer.
//! A thread keeps two windows, one for waiting on the server's answer and one for waiting on the
//! next request, because the two gaps differ (a slow server behind a fast client). Waits longer
//! than the ceiling (a slow server, calls seconds apart) therefore cost next to no polling;
//! back-to-back traffic polls for up to the ceiling.
//!
//! A thread that has just served two requests at once does not poll: under load its sockets
//! are rarely quiet, the wake-up it would save is rare, and the CPU time a polling round takes
//! is what the clients and the server on the same CPUs need (at 32 clients on two CPUs, polling
//! regardless put the gateway's p99 from 1.7 to 2.7 ms).

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use super::metrics::SecondsCounter;

/// Longest ceiling `--busy-poll-microseconds` accepts: beyond this, polling costs far more CPU
/// time than the wake-up it saves.
pub const MAX_BUSY_POLL_MICROSECONDS: u16 = 10_000;

/// How long a thread that served two requests at once goes without polling.
pub const NO_POLLING_AFTER_OVERLAP: Duration = Duration::from_millis(10);

/// The window a thread polls for after its first short sleep; shorter windows become zero.
pub const FIRST_WINDOW: Duration = Duration::from_micros(10);

/// The ceiling when `--busy-poll-microseconds` is not given and the CPU quota allows polling.
/// A sleep's length includes the thread's own wake-up (20–30 µs on a virtual machine whose idle
/// CPUs halt), so a ceiling much below 100 µs never learns the gap to a fast client's next call.
pub const AUTOMATIC_CEILING: Duration = Duration::from_micros(100);

/// The ceiling when none is given: [`AUTOMATIC_CEILING`] unless a CPU quota (`cpus`, see
/// [`super::cpu_quota`]) is too small for every serving thread to poll a whole CPU with one to
/// spare, and zero (off) then, since polling time counts against the quota.
pub fn automatic_ceiling(cpus: Option<f64>, serving_threads: usize) -> Duration {
    match cpus {
        // Thread counts are small; the conversion is exact.
        #[allow(clippy::cast_precision_loss)]
        Some(cpus) if cpus < serving_threads as f64 + 1.0 => Duration::ZERO,
        _ => AUTOMATIC_CEILING,
    }
}

thread_local! {
    /// This thread's ceiling; zero (the default, and on every thread but a serving one) is off.
    static CEILING: Cell<Duration> = const { Cell::new(Duration::ZERO) };
    /// This thread's current windows, between zero and the ceiling, by [`Wait`].
    static WINDOWS: Cell<[Duration; 2]> = const { Cell::new([Duration::ZERO; 2]) };
    /// When this thread last went to sleep, and what it was waiting for.
    static ASLEEP_SINCE: Cell<Option<(Instant, Wait)>> = const { Cell::new(None) };
    /// When a request last started or ended on this thread.
    static LAST_ACTIVITY: Cell<Option<Instant>> = const { Cell::new(None) };
    /// Where this thread adds the time it spends polling.
    static POLLED: RefCell<Option<SecondsCounter>> = const { RefCell::new(None) };
    /// Whether this thread's polling task is running.
    static POLLING: Cell<bool> = const { Cell::new(false) };
    /// Requests being handled on this thread.
    static IN_FLIGHT: Cell<u32> = const { Cell::new(0) };
    /// When a request last started while another was in flight on this thread.
    static LAST_OVERLAP: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// What a quiet serving thread is waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    /// A request is in flight: the server's answer.
    Answer = 0,
    /// Nothing is in flight: the next request.
    Request = 1,
}

impl Wait {
    fn now() -> Self {
        if IN_FLIGHT.with(Cell::get) > 0 {
            Self::Answer
        } else {
            Self::Request
        }
    }
}

fn window(wait: Wait) -> Duration {
    WINDOWS.with(Cell::get)[wait as usize]
}

/// Turn busy polling on for the serving thread this is called on, with windows up to `ceiling`;
/// the time it polls is added to `polled`.
pub(super) fn enable_on_this_thread(ceiling: Duration, polled: Option<SecondsCounter>) {
    CEILING.with(|c| c.set(ceiling));
    POLLED.with(|p| p.replace(polled));
    WINDOWS.with(|w| w.set([Duration::ZERO; 2]));
}

/// Called by a serving thread's runtime just before it sleeps.
pub(super) fn going_to_sleep() {
    if !CEILING.with(Cell::get).is_zero() {
        ASLEEP_SINCE.with(|since| since.set(Some((Instant::now(), Wait::now()))));
    }
}

/// Called by a serving thread's runtime just after it wakes: how long it waited adapts the
/// window of what it waited for. The wait counts from the last request start or end, where
/// polling starts too, not from when the thread fell asleep after polling ran out.
pub(super) fn woke_up() {
    let ceiling = CEILING.with(Cell::get);
    if let Some((since, wait)) = ASLEEP_SINCE.with(Cell::take) {
        let now = Instant::now();
        let from = LAST_ACTIVITY
            .with(Cell::get)
            .map_or(since, |last| last.min(since));
        let slept = now.saturating_duration_since(from);
        WINDOWS.with(|windows| {
            let mut w = windows.get();
            w[wait as usize] = adapted_window(w[wait as usize], slept, ceiling);
            windows.set(w);
        });
    }
}

/// The window after a sleep of `slept`: polling for that long would have caught the event that
/// ended a sleep shorter than the ceiling, so the window grows towards it; a longer sleep means
/// polling would only have burnt CPU, so the window halves.
fn adapted_window(window: Duration, slept: Duration, ceiling: Duration) -> Duration {
    if slept <= ceiling {
        if window >= slept && !window.is_zero() {
            // Polling already covered it (the thread slept for another reason, such as an
            // overlap); no reason to grow.
            return window;
        }
        (window * 2).max(FIRST_WINDOW).min(ceiling)
    } else {
        let halved = window / 2;
        if halved < FIRST_WINDOW {
            Duration::ZERO
        } else {
            halved
        }
    }
}

/// Held while a request is handled: starting and ending it each restart the window.
pub(super) struct Activity(());

impl Activity {
    pub(super) fn begin() -> Self {
        if !CEILING.with(Cell::get).is_zero() {
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
        if !CEILING.with(Cell::get).is_zero() {
            IN_FLIGHT.with(|n| n.set(n.get().saturating_sub(1)));
            note_activity();
        }
    }
}

fn note_activity() {
    let now = Instant::now();
    LAST_ACTIVITY.with(|last| last.set(Some(now)));
    if window(Wait::now()).is_zero()
        || POLLING.with(Cell::get)
        || overlapped_lately(LAST_OVERLAP.with(Cell::get), now)
    {
        return;
    }
    // Outside a runtime (a request dropped while its thread shuts down) there is nothing to poll.
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        POLLING.with(|polling| polling.set(true));
        runtime.spawn(poll_until_quiet());
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

/// Keep this thread's runtime from sleeping until no request has started or ended for the
/// current window, or until requests overlap.
async fn poll_until_quiet() {
    let started = Instant::now();
    loop {
        let now = Instant::now();
        if !still_polling(LAST_ACTIVITY.with(Cell::get), now, window(Wait::now()))
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
    POLLED.with(|polled| {
        if let Some(polled) = &*polled.borrow() {
            polled.inc_by(started.elapsed().as_secs_f64());
        }
    });
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

    #[test]
    fn polling_is_on_by_default_only_when_the_cpu_quota_leaves_room_for_it() {
        assert_eq!(automatic_ceiling(None, 2), AUTOMATIC_CEILING);
        assert_eq!(automatic_ceiling(Some(3.0), 2), AUTOMATIC_CEILING);
        assert_eq!(automatic_ceiling(Some(2.9), 2), Duration::ZERO);
        assert_eq!(automatic_ceiling(Some(0.5), 1), Duration::ZERO);
    }

    #[test]
    fn short_sleeps_grow_the_window_to_the_ceiling_and_long_ones_halve_it_to_nothing() {
        let ceiling = Duration::from_micros(100);
        let us = Duration::from_micros;
        // A sleep polling could have covered grows the window by doubling, up to the ceiling.
        let mut window = Duration::ZERO;
        let mut grown = Vec::new();
        for _ in 0..6 {
            window = adapted_window(window, us(95), ceiling);
            grown.push(window.as_micros());
        }
        assert_eq!(grown, [10, 20, 40, 80, 100, 100]);
        // It grows only while it is shorter than the sleeps it would have to cover.
        assert_eq!(adapted_window(us(80), us(70), ceiling), us(80));
        // A sleep at the ceiling still counts as one polling would have caught.
        assert_eq!(adapted_window(us(80), ceiling, ceiling), ceiling);
        // A sleep already within the window (the thread slept while polling was off) changes
        // nothing.
        assert_eq!(adapted_window(us(40), us(30), ceiling), us(40));
        // Sleeps longer than the ceiling halve the window; below the first window it is off.
        let mut shrunk = Vec::new();
        for _ in 0..5 {
            window = adapted_window(window, us(101), ceiling);
            shrunk.push(window.as_micros());
        }
        assert_eq!(shrunk, [50, 25, 12, 0, 0]);
        // No ceiling, no window.
        assert_eq!(
            adapted_window(Duration::ZERO, us(5), Duration::ZERO),
            Duration::ZERO
        );
    }

    #[test]
    fn each_sleep_adapts_the_window_of_what_the_thread_waited_for() {
        let ceiling = Duration::from_millis(500);
        enable_on_this_thread(ceiling, None);
        // Waiting for the next request, a short sleep: that window grows, the other does not.
        going_to_sleep();
        woke_up();
        assert_eq!(window(Wait::Request), FIRST_WINDOW);
        assert_eq!(window(Wait::Answer), Duration::ZERO);
        // With a request in flight, the sleep counts for the answer's window.
        IN_FLIGHT.with(|n| n.set(1));
        going_to_sleep();
        woke_up();
        assert_eq!(window(Wait::Answer), FIRST_WINDOW);
        // A sleep longer than the ceiling halves it (to nothing, from the first window).
        ASLEEP_SINCE.with(|since| {
            since.set(
                Instant::now()
                    .checked_sub(ceiling * 2)
                    .map(|at| (at, Wait::Answer)),
            );
        });
        woke_up();
        assert_eq!(window(Wait::Answer), Duration::ZERO);
        assert_eq!(window(Wait::Request), FIRST_WINDOW);
        IN_FLIGHT.with(|n| n.set(0));
        // The wait counts from the last request start or end: a short sleep after polling ran
        // out on a long gap is a long wait.
        LAST_ACTIVITY.with(|last| last.set(Instant::now().checked_sub(ceiling * 2)));
        going_to_sleep();
        woke_up();
        assert_eq!(window(Wait::Request), Duration::ZERO);
        LAST_ACTIVITY.with(|last| last.set(None));
        enable_on_this_thread(Duration::ZERO, None);
        // Off, sleeps are not even timed.
        going_to_sleep();
        assert!(ASLEEP_SINCE.with(Cell::get).is_none());
    }

    /// Turn polling on for this thread with both windows already at `window`.
    fn enable_with_windows(window: Duration) {
        enable_on_this_thread(window, None);
        WINDOWS.with(|w| w.set([window; 2]));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn two_requests_at_once_stop_polling_and_a_quiet_spell_lets_it_start_again() {
        let window = Duration::from_secs(1);
        enable_with_windows(window);
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
        enable_on_this_thread(Duration::ZERO, None);
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
        enable_on_this_thread(Duration::from_millis(2), None);
        let unlearned = Activity::begin();
        assert!(
            !POLLING.with(Cell::get),
            "a thread that has not yet slept briefly does not poll"
        );
        drop(unlearned);
        enable_with_windows(Duration::from_millis(2));
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
        enable_on_this_thread(Duration::ZERO, None);
        let _off = Activity::begin();
        assert!(!POLLING.with(Cell::get), "no window, no polling");
    }
}
