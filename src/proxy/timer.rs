//! Coarse deadlines for the data path: hyper's header-read timeout and the upstream response
//! and gated-body timeouts.
//!
//! These deadlines are armed on every request and almost never fire: a keep-alive connection
//! pushes its header-read deadline back at each request, and an upstream answers long before
//! its timeout. tokio's timer wheel does exact work for each of them (insert, re-insert on
//! reset, remove on drop, and an eventfd write to wake the driver whenever a new deadline is
//! the earliest — measured at ~0.3 per proxied request). Here a sleep is a slot in a `slab`
//! behind one uncontended lock (no allocation once the slab has grown), arming it is a store,
//! and one ticker task per [`Deadlines`] looks at the waiting slots every [`TICK`]: a deadline
//! fires within one tick after it passes, never before.
//!
//! The ticker runs on the runtime of the first sleep that waits, and only while some sleep
//! waits (with HTTP/1.1 connections open that is always: each one's header-read deadline
//! waits between requests): with nothing waiting there is no task and no wake-up. A
//! [`Deadlines`] belongs to one runtime (one per worker, see `Proxy::fork`): should the
//! ticker's runtime end, sleeps polled on another would wait for the next poll to start one.
//!
//! The slab keeps the size of the largest number of sleeps alive at once (~48 bytes each, so
//! a flood of 100k connections leaves ~5 MB), and each tick looks at every slot: ~0.5 ms per
//! tick at 100k slots.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use slab::Slab;

/// How often the ticker looks at the waiting deadlines: a deadline fires at most this late.
pub const TICK: Duration = Duration::from_millis(100);

/// A deadline passed before the future it bounded finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("deadline elapsed")]
pub struct Elapsed;

/// One set of coarse deadlines and its ticker: one per data-path worker (one runtime).
/// Clones share it.
#[derive(Clone, Default)]
pub struct Deadlines {
    wheel: Arc<Mutex<Wheel>>,
}

impl std::fmt::Debug for Deadlines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deadlines").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Wheel {
    slots: Slab<Slot>,
    /// A ticker task is running (and will look at the slots again).
    ticking: bool,
}

struct Slot {
    deadline: Instant,
    /// The waiting task's: set when the sleep is polled, taken when it fires. While it is
    /// there, the ticker watches the deadline.
    waker: Option<Waker>,
    /// The ticker saw the deadline pass (cleared by a reset).
    fired: bool,
}

impl Deadlines {
    pub fn new() -> Deadlines {
        Deadlines::default()
    }

    fn lock(&self) -> MutexGuard<'_, Wheel> {
        // Nothing panics while holding the lock; the slab is consistent between statements.
        self.wheel.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A sleep that ends (within [`TICK`]) after `deadline`.
    pub fn sleep_until(&self, deadline: Instant) -> CoarseSleep {
        let slot = Slot {
            deadline,
            waker: None,
            fired: false,
        };
        let key = self.lock().slots.insert(slot);
        CoarseSleep {
            deadlines: self.clone(),
            key,
        }
    }

    /// `fut`, or [`Elapsed`] once `after` has passed (within [`TICK`]).
    pub async fn timeout<F: Future>(&self, after: Duration, fut: F) -> Result<F::Output, Elapsed> {
        let mut sleep = self.sleep_until(Instant::now() + after);
        let mut fut = std::pin::pin!(fut);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Ok(out));
            }
            Pin::new(&mut sleep).poll(cx).map(|()| Err(Elapsed))
        })
        .await
    }

    /// Fires the waiting slots whose deadline passed. Returns false, with `ticking` cleared,
    /// once no slot waits.
    fn tick(&self, now: Instant) -> bool {
        let mut wake = Vec::new();
        let mut wheel = self.lock();
        let mut waiting = 0;
        for (_, slot) in wheel.slots.iter_mut().filter(|(_, s)| s.waker.is_some()) {
            if slot.deadline <= now {
                slot.fired = true;
                wake.extend(slot.waker.take());
            } else {
                waiting += 1;
            }
        }
        let more = waiting > 0;
        wheel.ticking = more;
        drop(wheel);
        for w in wake {
            w.wake();
        }
        more
    }

    /// Starts the ticker task. Called without the lock (a runtime shutting down drops the
    /// task at once, and its guard takes the lock), after setting `ticking` under it.
    fn spawn_ticker(&self) {
        // Should the runtime drop this task, run or not, the next sleep to wait starts another.
        let mut guard = Ticking(Some(self.clone()));
        tokio::spawn(async move {
            while let Some(deadlines) = &guard.0 {
                tokio::time::sleep(TICK).await;
                if !deadlines.tick(Instant::now()) {
                    // `tick` cleared `ticking` under the lock; a new ticker may already run.
                    guard.0 = None;
                }
            }
        });
    }
}

/// Clears `ticking` if the ticker task is dropped before it ends by itself.
struct Ticking(Option<Deadlines>);

impl Drop for Ticking {
    fn drop(&mut self) {
        if let Some(deadlines) = &self.0 {
            deadlines.lock().ticking = false;
        }
    }
}

/// A coarse sleep (see the module doc): ends within [`TICK`] after its deadline.
pub struct CoarseSleep {
    deadlines: Deadlines,
    key: usize,
}

impl CoarseSleep {
    /// Moves the deadline (earlier or later); a sleep that had ended waits again.
    pub fn reset(&mut self, deadline: Instant) {
        let mut wheel = self.deadlines.lock();
        let slot = &mut wheel.slots[self.key];
        slot.deadline = deadline;
        slot.fired = false;
    }
}

impl Future for CoarseSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut guard = self.deadlines.lock();
        let wheel = &mut *guard;
        let slot = &mut wheel.slots[self.key];
        if slot.fired {
            return Poll::Ready(());
        }
        // A replaced waker is dropped after the lock is released, like every waker here.
        let old = match &mut slot.waker {
            Some(w) if w.will_wake(cx.waker()) => None,
            waker => waker.replace(cx.waker().clone()),
        };
        let start = !std::mem::replace(&mut wheel.ticking, true);
        drop(guard);
        drop(old);
        if start {
            self.deadlines.spawn_ticker();
        }
        Poll::Pending
    }
}

impl Drop for CoarseSleep {
    fn drop(&mut self) {
        let mut wheel = self.deadlines.lock();
        // Its waker is dropped after the lock is released.
        let slot = wheel.slots.try_remove(self.key);
        drop(wheel);
        drop(slot);
    }
}

impl hyper::rt::Sleep for CoarseSleep {}

impl hyper::rt::Timer for Deadlines {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(self.sleep_until(Instant::now() + duration))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Deadlines::sleep_until(self, deadline))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<CoarseSleep>() {
            Some(mut s) => s.reset(new_deadline),
            None => *sleep = hyper::rt::Timer::sleep_until(self, new_deadline),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Long enough for any loaded CI machine: a sleep that has not fired by then never will.
    const AT_MOST: Duration = Duration::from_secs(10);

    /// Polls `fut` once, in the test's task.
    async fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
        std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *fut).poll(cx))).await
    }

    async fn finishes<F: Future>(fut: F) -> F::Output {
        tokio::time::timeout(AT_MOST, fut)
            .await
            .expect("the deadline never fired")
    }

    #[tokio::test]
    async fn fires_after_the_deadline_not_before() {
        let deadlines = Deadlines::new();
        let deadline = Instant::now() + Duration::from_millis(150);
        finishes(deadlines.sleep_until(deadline)).await;
        assert!(Instant::now() >= deadline);
    }

    #[tokio::test]
    async fn a_reset_pushes_the_deadline_back() {
        let deadlines = Deadlines::new();
        let start = Instant::now();
        let mut sleep = deadlines.sleep_until(start + Duration::from_millis(150));
        // Polled once: armed in the wheel.
        assert!(poll_once(&mut sleep).await.is_pending());
        let later = start + Duration::from_millis(600);
        sleep.reset(later);
        finishes(&mut sleep).await;
        assert!(Instant::now() >= later, "fired at the old deadline");
    }

    #[tokio::test]
    async fn a_fired_sleep_reset_waits_again() {
        let deadlines = Deadlines::new();
        let mut sleep = deadlines.sleep_until(Instant::now() + Duration::from_millis(50));
        finishes(&mut sleep).await;
        let again = Instant::now() + Duration::from_millis(300);
        sleep.reset(again);
        assert!(poll_once(&mut sleep).await.is_pending());
        finishes(&mut sleep).await;
        assert!(Instant::now() >= again);
    }

    #[tokio::test]
    async fn timeout_answers_whichever_comes_first() {
        let deadlines = Deadlines::new();
        let fast = deadlines
            .timeout(Duration::from_secs(60), async { 7 })
            .await;
        assert_eq!(fast, Ok(7));
        let slow =
            finishes(deadlines.timeout(Duration::from_millis(200), std::future::pending::<()>()))
                .await;
        assert_eq!(slow, Err(Elapsed));
    }

    #[tokio::test]
    async fn the_ticker_stops_when_nothing_waits_and_restarts() {
        let deadlines = Deadlines::new();
        let mut sleep = Box::pin(deadlines.sleep_until(Instant::now() + Duration::from_secs(60)));
        assert!(poll_once(&mut sleep).await.is_pending());
        assert!(deadlines.lock().ticking);
        drop(sleep);
        // The next tick forgets the dropped sleep, and the ticker ends.
        finishes(async {
            while deadlines.lock().ticking {
                tokio::time::sleep(TICK / 2).await;
            }
        })
        .await;
        {
            let wheel = deadlines.lock();
            assert!(wheel.slots.is_empty(), "a dropped sleep keeps its slot");
        }
        // A new sleep starts a new ticker.
        let slow =
            finishes(deadlines.timeout(Duration::from_millis(150), std::future::pending::<()>()))
                .await;
        assert_eq!(slow, Err(Elapsed));
    }
}
