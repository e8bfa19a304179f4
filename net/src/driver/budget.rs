//! A connection's share of one of its shard's byte budgets (a glommio
//! [`Semaphore`] of bytes, owned by the shard's dispatcher: its request
//! buffers, in-flight requests, responses): grown before
//! memory is allocated (waiting while the shard's budget is used up, which
//! is the backpressure), shrunk when memory is freed, returned on drop.

use glommio::sync::Semaphore;

/// Bytes held of one shard budget; all of them are returned on drop.
#[derive(Debug)]
pub struct BudgetHold<'a> {
    budget: &'a Semaphore,
    /// The budget's size, to refuse a wait that could never end.
    budget_max: usize,
    held: usize,
}

impl<'a> BudgetHold<'a> {
    pub fn new(budget: &'a Semaphore, budget_max: usize) -> BudgetHold<'a> {
        BudgetHold {
            budget,
            budget_max,
            held: 0,
        }
    }

    /// Bytes held.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Holds at least `bytes`, waiting until the shard has them; `false`
    /// when the budget is closed (the shard is stopping). Cancel-safe: a
    /// dropped wait takes nothing.
    pub async fn grow_to(&mut self, bytes: usize) -> bool {
        assert!(
            bytes <= self.budget_max,
            "a hold of {bytes} bytes can never fit a budget of {}",
            self.budget_max
        );
        if bytes <= self.held {
            return true;
        }
        if self
            .budget
            .acquire((bytes - self.held) as u64)
            .await
            .is_err()
        {
            return false;
        }
        self.held = bytes;
        true
    }

    /// Holds at least `bytes` if the shard has them now, without waiting.
    pub fn try_grow_to(&mut self, bytes: usize) -> bool {
        if bytes <= self.held {
            return true;
        }
        if bytes > self.budget_max {
            return false;
        }
        match self.budget.try_acquire((bytes - self.held) as u64) {
            Ok(true) => {
                self.held = bytes;
                true
            }
            Ok(false) | Err(_) => false,
        }
    }

    /// Returns what is held beyond `bytes`.
    pub fn shrink_to(&mut self, bytes: usize) {
        if bytes < self.held {
            self.budget.signal((self.held - bytes) as u64);
            self.held = bytes;
        }
    }
}

impl Drop for BudgetHold<'_> {
    fn drop(&mut self) {
        self.shrink_to(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Growing takes only the difference, shrinking and dropping give it
    /// back, and a grow that does not fit waits until another hold shrinks.
    #[test]
    fn holds_take_give_back_and_wait() {
        let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(1 << 20)
            .make()
            .expect("executor");
        executor.run(async {
            let budget = Semaphore::new(100);
            let mut a = BudgetHold::new(&budget, 100);
            assert!(a.grow_to(60).await);
            assert!(a.grow_to(40).await, "already held");
            assert_eq!((a.held(), budget.available()), (60, 40));
            let mut b = BudgetHold::new(&budget, 100);
            assert!(!b.try_grow_to(50), "only 40 left");
            assert!(b.try_grow_to(40));
            a.shrink_to(10);
            assert_eq!(budget.available(), 50);
            let waiter = async {
                let mut c = BudgetHold::new(&budget, 100);
                assert!(c.grow_to(90).await);
                c.held()
            };
            let release = async {
                drop(b);
                drop(a);
            };
            let (held, ()) = futures_lite::future::zip(waiter, release).await;
            assert_eq!(held, 90);
            assert_eq!(budget.available(), 100, "every hold returned on drop");
        });
    }
}
