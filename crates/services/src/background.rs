//! Work a service starts after answering (emails, re-hashing a password) and that nothing
//! waits for, except whoever must know it is done: a shutting-down server, so that a
//! mail is not cut off, and tests, so that "no email was sent" is an observation and not
//! a guess.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

#[derive(Clone, Default)]
pub struct Background(Arc<Inner>);

#[derive(Default)]
struct Inner {
    running: AtomicUsize,
    idle: Notify,
}

impl Background {
    /// Runs `work` on the runtime, counted until it ends.
    pub fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        self.0.running.fetch_add(1, Ordering::SeqCst);
        let inner = Arc::clone(&self.0);
        tokio::spawn(async move {
            work.await;
            if inner.running.fetch_sub(1, Ordering::SeqCst) == 1 {
                inner.idle.notify_waiters();
            }
        });
    }

    /// Waits until no work started here is running.
    pub async fn settle(&self) {
        loop {
            let idle = self.0.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.0.running.load(Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn settle_waits_for_every_task() {
        let bg = Background::default();
        let done = Arc::new(AtomicUsize::new(0));
        for ms in [30, 10, 20] {
            let done = Arc::clone(&done);
            bg.spawn(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        bg.settle().await;
        assert_eq!(done.load(Ordering::SeqCst), 3);
        bg.settle().await;
    }
}
