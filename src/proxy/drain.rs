//! Graceful shutdown of one listener's connections: the drain signal and the count of the
//! connections still open.
//!
//! Every connection is enrolled when it is accepted (so a shutdown also waits for TLS
//! handshakes in progress) and checks the signal each time its task runs: one atomic load,
//! and the task's waker is handed over (under a lock) only when it changed, i.e. once per
//! connection. The alternative, a watch channel's `changed()` polled beside the connection,
//! costs a lock and a waker comparison on every wake-up of every connection. Raising the
//! signal wakes every enrolled connection once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Waker};

use slab::Slab;
use tokio::sync::Notify;

/// One listener's drain signal and its enrolled connections.
#[derive(Default)]
pub struct Drain {
    raised: AtomicBool,
    conns: Mutex<Conns>,
    /// Notified whenever the last enrolled connection leaves.
    empty: Notify,
}

#[derive(Default)]
struct Conns {
    /// A slot per enrolled connection: its waker, once polled.
    wakers: Slab<Option<Waker>>,
}

impl Drain {
    fn lock(&self) -> MutexGuard<'_, Conns> {
        // Nothing panics while holding the lock; the slots are consistent between statements.
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Enrolls a connection: [`Drain::wait`] waits for it to be dropped.
    pub fn enroll(self: &Arc<Self>) -> Enrolled {
        let key = self.lock().wakers.insert(None);
        Enrolled {
            drain: self.clone(),
            key,
            waker: None,
        }
    }

    /// Raises the signal and wakes every enrolled connection.
    pub fn raise(&self) {
        self.raised.store(true, Ordering::SeqCst);
        let wakers: Vec<Waker> = self
            .lock()
            .wakers
            .iter_mut()
            .filter_map(|(_, w)| w.take())
            .collect();
        for w in wakers {
            w.wake();
        }
    }

    /// How many connections are enrolled.
    pub fn live(&self) -> usize {
        self.lock().wakers.len()
    }

    /// Resolves once no connection is enrolled.
    pub async fn wait(&self) {
        loop {
            let empty = self.empty.notified();
            let mut empty = std::pin::pin!(empty);
            empty.as_mut().enable();
            if self.live() == 0 {
                return;
            }
            empty.await;
        }
    }
}

/// A connection's enrollment (see [`Drain::enroll`]); dropping it leaves.
pub struct Enrolled {
    drain: Arc<Drain>,
    key: usize,
    /// The waker last handed to the drain.
    waker: Option<Waker>,
}

impl Enrolled {
    /// Whether the signal is raised; if not, the task of `cx` is woken when it is.
    pub fn raised(&mut self, cx: &Context<'_>) -> bool {
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            let w = cx.waker().clone();
            // The replaced waker is dropped after the lock is released.
            let old = self.drain.lock().wakers[self.key].replace(w.clone());
            drop(old);
            self.waker = Some(w);
        }
        // After handing the waker over: a `raise` either sees it or is seen here.
        self.drain.raised.load(Ordering::SeqCst)
    }
}

impl Drop for Enrolled {
    fn drop(&mut self) {
        let mut conns = self.drain.lock();
        let old = conns.wakers.try_remove(self.key);
        let empty = conns.wakers.is_empty();
        drop(conns);
        drop(old);
        if empty {
            self.drain.empty.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::task::Poll;
    use std::time::Duration;

    #[tokio::test]
    async fn raising_wakes_a_waiting_connection_and_wait_ends_when_all_left() {
        let drain = Arc::new(Drain::default());
        let mut first = drain.enroll();
        let second = drain.enroll();
        assert_eq!(drain.live(), 2);
        let waiting = tokio::spawn(async move {
            std::future::poll_fn(|cx| {
                if first.raised(cx) {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await;
        });
        tokio::task::yield_now().await;
        drain.raise();
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the raise woke the connection")
            .unwrap();
        assert_eq!(drain.live(), 1);
        let d = drain.clone();
        let all_gone = tokio::spawn(async move { d.wait().await });
        tokio::task::yield_now().await;
        assert!(!all_gone.is_finished());
        drop(second);
        tokio::time::timeout(Duration::from_secs(10), all_gone)
            .await
            .expect("wait ended when the last connection left")
            .unwrap();
        // A freed slot is reused.
        let again = drain.enroll();
        assert!(again.key < 2);
    }

    #[test]
    fn wait_with_nobody_enrolled_is_ready() {
        let drain = Drain::default();
        let fut = std::pin::pin!(drain.wait());
        let mut cx = Context::from_waker(Waker::noop());
        assert!(fut.poll(&mut cx).is_ready());
    }
}
