//! A single-threaded, level-triggered stop signal: one owner triggers it,
//! any number of tasks on the same thread await it.
//!
//! Runtime-agnostic (plain `std` wakers), so the driver can race socket I/O
//! against it and tests can use it without an executor.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// Cloneable handle; all clones see the same signal.
#[derive(Debug, Clone, Default)]
pub struct StopSignal {
    inner: Rc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    stopped: Cell<bool>,
    wakers: RefCell<Vec<Waker>>,
}

impl StopSignal {
    pub fn new() -> StopSignal {
        StopSignal::default()
    }

    /// Triggers the signal and wakes every waiter. Idempotent.
    pub fn trigger(&self) {
        self.inner.stopped.set(true);
        let wakers = std::mem::take(&mut *self.inner.wakers.borrow_mut());
        for waker in wakers {
            waker.wake();
        }
    }

    pub fn is_triggered(&self) -> bool {
        self.inner.stopped.get()
    }

    /// Resolves once [`StopSignal::trigger`] was called.
    pub fn wait(&self) -> Wait<'_> {
        Wait { signal: self }
    }
}

/// Future returned by [`StopSignal::wait`].
#[derive(Debug)]
pub struct Wait<'a> {
    signal: &'a StopSignal,
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.is_triggered() {
            return Poll::Ready(());
        }
        let mut wakers = self.signal.inner.wakers.borrow_mut();
        // A waiter polled repeatedly registers once per distinct waker; the
        // list is bounded by the number of live waiting tasks.
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn trigger_wakes_waiters_and_stays_triggered() {
        let signal = StopSignal::new();
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let mut cx = Context::from_waker(&waker);
        let mut first = signal.wait();
        let second = signal.clone();
        assert!(Pin::new(&mut first).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut second.wait()).poll(&mut cx).is_pending());
        // Same waker twice: registered once.
        assert_eq!(signal.inner.wakers.borrow().len(), 1);
        second.trigger();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        assert!(Pin::new(&mut first).poll(&mut cx).is_ready());
        assert!(Pin::new(&mut signal.wait()).poll(&mut cx).is_ready());
    }
}
