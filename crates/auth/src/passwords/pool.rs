//! The bounded pool of OS threads that runs password hashing.
//!
//! Not tokio's `spawn_blocking`: its pool is shared with every other blocking call and its
//! queue is unbounded, so a login flood would queue without limit and starve file and DNS
//! work. Here `workers` threads take jobs from a channel; at most `workers + queue` jobs are
//! admitted at once and the next caller gets [`HashError::Busy`] at once, with an estimate of
//! when to retry.

use std::fmt;
use std::num::NonZeroUsize;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rand::distributions::{Alphanumeric, DistString as _};
use secrecy::{ExposeSecret as _, SecretString};
use tokio::sync::oneshot;

use super::{hash_password, verify_password, Argon2Params, HashError, Verification};

/// Largest queue we build; the channel allocates its slots up front.
const MAX_QUEUE: usize = 1_000_000;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// A bounded pool of OS threads (not tokio's spawn_blocking) that runs argon2 work.
/// Cheap to clone; the threads stop once the last clone is dropped and the queue is drained.
#[derive(Clone)]
pub struct PasswordHasher {
    inner: Arc<Inner>,
}

struct Inner {
    sender: SyncSender<Job>,
    params: Argon2Params,
    /// An argon2id hash of a random password with `params`, to spend the same work on
    /// unknown users as on known ones.
    dummy: String,
    workers: usize,
    /// Most jobs admitted at once: the workers' plus the queue's.
    capacity: usize,
    stats: Arc<Stats>,
}

/// Counters shared with the workers.
struct Stats {
    /// Jobs admitted and not finished (queued or running).
    pending: AtomicUsize,
    /// Jobs running now.
    running: AtomicUsize,
    /// Moving average of a job's duration, in microseconds.
    average_micros: AtomicU64,
}

impl Stats {
    fn record(&self, took: Duration) {
        let sample = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        // Exponential moving average with weight 1/8: follows a change of load in a few dozen
        // jobs without jumping on one slow outlier. The update cannot fail.
        let _ = self
            .average_micros
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |avg| {
                Some(avg - avg / 8 + sample / 8)
            });
    }
}

/// An admitted job's place in the pool; freed when the job finishes, panics or is dropped
/// unrun.
struct Ticket {
    stats: Arc<Stats>,
}

impl Ticket {
    fn finish(self, took: Duration) {
        self.stats.record(took);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.stats.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

impl fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("params", &self.inner.params)
            .field("workers", &self.inner.workers)
            .field("capacity", &self.inner.capacity)
            .field("queue_len", &self.queue_len())
            .finish_non_exhaustive()
    }
}

impl PasswordHasher {
    /// `threads` workers (0 = number of cores), queue of `queue` waiting jobs beyond them.
    /// Computes the dummy hash here, so this takes one hash's time.
    pub fn new(params: Argon2Params, threads: usize, queue: usize) -> Result<Self, HashError> {
        if queue > MAX_QUEUE {
            return Err(HashError::Internal(format!(
                "the password hashing queue holds at most {MAX_QUEUE} jobs"
            )));
        }
        let workers = match threads {
            0 => thread::available_parallelism().map_or(1, NonZeroUsize::get),
            n => n,
        };
        let started = Instant::now();
        let dummy_password = Alphanumeric.sample_string(&mut rand::thread_rng(), 32);
        let dummy = hash_password(&params, &dummy_password)?;
        let first = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);

        let capacity = workers.saturating_add(queue);
        let (sender, receiver) = mpsc::sync_channel::<Job>(capacity);
        let receiver = Arc::new(Mutex::new(receiver));
        let stats = Arc::new(Stats {
            pending: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            average_micros: AtomicU64::new(first),
        });
        for index in 0..workers {
            let receiver = Arc::clone(&receiver);
            let stats = Arc::clone(&stats);
            thread::Builder::new()
                .name(format!("argon2-{index}"))
                .spawn(move || work(&receiver, &stats))
                .map_err(|e| {
                    HashError::Internal(format!("cannot start a password hashing thread: {e}"))
                })?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                sender,
                params,
                dummy,
                workers,
                capacity,
                stats,
            }),
        })
    }

    pub fn params(&self) -> Argon2Params {
        self.inner.params
    }

    /// Hashes `password` with argon2id and the pool's params.
    pub async fn hash(&self, password: SecretString) -> Result<String, HashError> {
        let params = self.inner.params;
        self.run(move || hash_password(&params, password.expose_secret()))
            .await
    }

    /// `stored: None` (unknown user / no password) verifies against a dummy argon2id hash made
    /// at construction with the same params, and returns matched=false: the same work, so
    /// timing does not tell.
    pub async fn verify(
        &self,
        password: SecretString,
        stored: Option<String>,
    ) -> Result<Verification, HashError> {
        let params = self.inner.params;
        match stored {
            Some(stored) => {
                let dummy = self.inner.dummy.clone();
                self.run(move || {
                    match verify_password(&params, password.expose_secret(), &stored) {
                        // Stored before the bound existed: never run it, but spend the same
                        // work as any other failure so that timing does not tell.
                        Err(HashError::TooCostly) => {
                            tracing::warn!("refusing to verify a password hash above the cost bounds; set a new password for this user");
                            verify_password(&params, password.expose_secret(), &dummy).map(|_| {
                                Verification {
                                    matched: false,
                                    needs_rehash: false,
                                }
                            })
                        }
                        other => other,
                    }
                })
                .await
            }
            None => {
                let dummy = self.inner.dummy.clone();
                self.run(move || {
                    verify_password(&params, password.expose_secret(), &dummy).map(|_| {
                        Verification {
                            matched: false,
                            needs_rehash: false,
                        }
                    })
                })
                .await
            }
        }
    }

    /// Checks `password` against several stored hashes in one job (history check); true if
    /// any matches. Entries in no supported format are skipped (and logged), so that one bad
    /// history row cannot block a password change.
    pub async fn matches_any(
        &self,
        password: SecretString,
        stored: Vec<String>,
    ) -> Result<bool, HashError> {
        let params = self.inner.params;
        self.run(move || {
            for entry in &stored {
                match verify_password(&params, password.expose_secret(), entry) {
                    Ok(v) if v.matched => return Ok(true),
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(%error, "skipping an unusable password history entry");
                    }
                }
            }
            Ok(false)
        })
        .await
    }

    /// Jobs waiting now (admitted, not yet picked up by a worker).
    pub fn queue_len(&self) -> usize {
        let stats = &self.inner.stats;
        stats
            .pending
            .load(Ordering::Acquire)
            .saturating_sub(stats.running.load(Ordering::Acquire))
    }

    /// Worker threads.
    pub fn workers(&self) -> usize {
        self.inner.workers
    }

    async fn run<T, F>(&self, work: F) -> Result<T, HashError>
    where
        F: FnOnce() -> Result<T, HashError> + Send + 'static,
        T: Send + 'static,
    {
        let reply = self.submit(work)?;
        // The sender is dropped without a reply only if the job panicked.
        reply.await.map_err(|_| {
            HashError::Internal("the password hashing job failed unexpectedly".to_owned())
        })?
    }

    /// Queues `work`, or refuses with `Busy` when `workers + queue` jobs are already admitted.
    fn submit<T, F>(&self, work: F) -> Result<oneshot::Receiver<T>, HashError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let inner = &self.inner;
        let admitted = inner
            .stats
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < inner.capacity).then_some(n + 1)
            });
        if admitted.is_err() {
            return Err(self.busy());
        }
        let ticket = Ticket {
            stats: Arc::clone(&inner.stats),
        };
        let (reply, receiver) = oneshot::channel();
        let job: Job = Box::new(move || {
            // Locals drop in reverse order: should `work` panic, the place is freed before
            // the caller learns of the failure, so its retry is not refused.
            let reply = reply;
            let ticket = ticket;
            if reply.is_closed() {
                // The caller has gone (client disconnected, request timed out): skip the work.
                return;
            }
            let started = Instant::now();
            let output = work();
            // Free the place before answering, so that a caller who submits again right
            // after its answer is not refused because of its own finished job.
            ticket.finish(started.elapsed());
            // The caller may have gone meanwhile; nobody is left to tell.
            let _ = reply.send(output);
        });
        // The admission count keeps the channel (of the same capacity) from filling up, so
        // `Full` is only a safety net.
        match inner.sender.try_send(job) {
            Ok(()) => Ok(receiver),
            Err(TrySendError::Full(job)) => {
                drop(job);
                Err(self.busy())
            }
            Err(TrySendError::Disconnected(_)) => Err(HashError::Internal(
                "the password hashing workers have stopped".to_owned(),
            )),
        }
    }

    /// `Busy`, with the time the jobs ahead should take: queue length × average job duration
    /// ÷ workers, rounded up to whole seconds (what Retry-After carries), at least 1 s.
    fn busy(&self) -> HashError {
        let waiting = u64::try_from(self.queue_len()).unwrap_or(u64::MAX);
        let average = self.inner.stats.average_micros.load(Ordering::Relaxed);
        let workers = u64::try_from(self.inner.workers).unwrap_or(1).max(1);
        let micros = waiting.saturating_mul(average) / workers;
        let seconds = micros.div_ceil(1_000_000).max(1);
        HashError::Busy {
            retry_after: Duration::from_secs(seconds),
        }
    }
}

/// A worker's loop: take a job, run it, carry on even if it panicked; stop when every
/// `PasswordHasher` clone is gone and the queue is empty.
fn work(receiver: &Mutex<Receiver<Job>>, stats: &Stats) {
    loop {
        // Only the receiving is under the lock; the job runs outside it. A poisoned lock only
        // means another worker panicked while waiting, which leaves the receiver intact.
        let next = match receiver.lock() {
            Ok(guard) => guard.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        let Ok(job) = next else {
            return;
        };
        stats.running.fetch_add(1, Ordering::AcqRel);
        let outcome = panic::catch_unwind(AssertUnwindSafe(job));
        stats.running.fetch_sub(1, Ordering::AcqRel);
        if outcome.is_err() {
            tracing::error!("a password hashing job panicked; the worker carries on");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    const FAST: Argon2Params = Argon2Params {
        m_cost_kib: 1024,
        t_cost: 1,
        p_cost: 1,
    };

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    /// Occupies a place in the pool until the returned sender is dropped or sent to.
    fn block(hasher: &PasswordHasher) -> (mpsc::Sender<()>, oneshot::Receiver<()>) {
        let (release, wait) = channel::<()>();
        let done = hasher
            .submit(move || {
                let _ = wait.recv();
            })
            .unwrap();
        (release, done)
    }

    #[tokio::test]
    async fn hash_and_verify_through_the_pool() {
        let hasher = PasswordHasher::new(FAST, 2, 4).unwrap();
        assert_eq!(hasher.workers(), 2);
        assert_eq!(hasher.params(), FAST);
        let hash = hasher.hash(secret("correct horse")).await.unwrap();
        let ok = hasher
            .verify(secret("correct horse"), Some(hash.clone()))
            .await
            .unwrap();
        assert_eq!(
            ok,
            Verification {
                matched: true,
                needs_rehash: false
            }
        );
        let bad = hasher
            .verify(secret("correct horsf"), Some(hash))
            .await
            .unwrap();
        assert!(!bad.matched);
    }

    #[tokio::test]
    async fn zero_threads_means_one_per_core() {
        let hasher = PasswordHasher::new(FAST, 0, 0).unwrap();
        let cores = thread::available_parallelism().map_or(1, NonZeroUsize::get);
        assert_eq!(hasher.workers(), cores);
        assert!(hasher.hash(secret("x")).await.is_ok());
    }

    #[tokio::test]
    async fn unknown_user_verifies_against_the_dummy_and_fails() {
        let hasher = PasswordHasher::new(FAST, 1, 1).unwrap();
        assert!(hasher
            .inner
            .dummy
            .starts_with("$argon2id$v=19$m=1024,t=1,p=1$"));
        for password in ["", "password", "anything at all"] {
            let v = hasher.verify(secret(password), None).await.unwrap();
            assert_eq!(
                v,
                Verification {
                    matched: false,
                    needs_rehash: false
                }
            );
        }
    }

    #[tokio::test]
    async fn verify_reports_foreign_hashes_for_rehash() {
        let hasher = PasswordHasher::new(FAST, 1, 1).unwrap();
        let django =
            "pbkdf2_sha256$10000$seasalt$FQCNpiZpTb0zub+HBsH6TOwyRxJ19FwvjbweatNmK/Y=".to_owned();
        let v = hasher
            .verify(secret("letmein"), Some(django))
            .await
            .unwrap();
        assert_eq!(
            v,
            Verification {
                matched: true,
                needs_rehash: true
            }
        );
        let broken = hasher
            .verify(secret("letmein"), Some("letmein".to_owned()))
            .await;
        assert!(matches!(broken, Err(HashError::Internal(_))));
    }

    #[tokio::test]
    async fn history_check_matches_any() {
        let hasher = PasswordHasher::new(FAST, 1, 0).unwrap();
        let old1 = hasher.hash(secret("first old password")).await.unwrap();
        let old2 = hasher.hash(secret("second old password")).await.unwrap();
        let history = vec![
            "not a hash".to_owned(),
            old1,
            bcrypt::hash("third old password", 4).unwrap(),
            old2,
        ];
        for reused in ["second old password", "third old password"] {
            assert!(hasher
                .matches_any(secret(reused), history.clone())
                .await
                .unwrap());
        }
        assert!(!hasher
            .matches_any(secret("brand new password"), history)
            .await
            .unwrap());
        assert!(!hasher
            .matches_any(secret("anything"), Vec::new())
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn full_queue_answers_busy_at_once_then_recovers() {
        let hasher = PasswordHasher::new(FAST, 1, 1).unwrap();
        let (release_running, running) = block(&hasher);
        let (release_queued, queued) = block(&hasher);
        let started = Instant::now();
        let refused = hasher.hash(secret("x")).await;
        assert!(started.elapsed() < Duration::from_secs(1), "not a timeout");
        match refused {
            Err(HashError::Busy { retry_after }) => {
                assert!(retry_after >= Duration::from_secs(1), "{retry_after:?}");
            }
            other => panic!("expected Busy, got {other:?}"),
        }
        assert!(matches!(
            hasher.verify(secret("x"), None).await,
            Err(HashError::Busy { .. })
        ));
        release_running.send(()).unwrap();
        release_queued.send(()).unwrap();
        running.await.unwrap();
        queued.await.unwrap();
        assert!(hasher.hash(secret("x")).await.is_ok());
        assert_eq!(hasher.queue_len(), 0);
    }

    #[tokio::test]
    async fn slow_hashes_overflow_a_tiny_queue() {
        // Real work this time: one worker, no queue, hashes that take a while.
        let slow = Argon2Params {
            m_cost_kib: 16 * 1024,
            t_cost: 2,
            p_cost: 1,
        };
        let hasher = PasswordHasher::new(slow, 1, 0).unwrap();
        let (first, second) = tokio::join!(hasher.hash(secret("a")), hasher.hash(secret("b")));
        assert!(first.is_ok());
        assert!(matches!(second, Err(HashError::Busy { .. })), "{second:?}");
    }

    #[tokio::test]
    async fn retry_after_grows_with_the_queue() {
        let hasher = PasswordHasher::new(FAST, 1, 3).unwrap();
        // Pretend jobs take 2 s each.
        hasher
            .inner
            .stats
            .average_micros
            .store(2_000_000, Ordering::Relaxed);
        let blockers: Vec<_> = (0..4).map(|_| block(&hasher)).collect();
        // Let the worker pick up the first blocker, so three are waiting.
        let deadline = Instant::now() + Duration::from_secs(5);
        while hasher.inner.stats.running.load(Ordering::Acquire) == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(hasher.queue_len(), 3);
        match hasher.hash(secret("x")).await {
            Err(HashError::Busy { retry_after }) => assert_eq!(retry_after, Duration::from_secs(6)),
            other => panic!("expected Busy, got {other:?}"),
        }
        for (release, done) in blockers {
            release.send(()).unwrap();
            done.await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_panicking_job_fails_alone_and_the_pool_keeps_working() {
        let hasher = PasswordHasher::new(FAST, 1, 0).unwrap();
        let outcome = hasher
            .run(|| -> Result<(), HashError> { panic!("boom inside a job") })
            .await;
        assert!(
            matches!(outcome, Err(HashError::Internal(_))),
            "{outcome:?}"
        );
        // Its place was given back and the single worker is still alive.
        assert_eq!(hasher.inner.stats.pending.load(Ordering::Acquire), 0);
        assert!(hasher.hash(secret("still works")).await.is_ok());
    }

    #[tokio::test]
    async fn a_cancelled_caller_frees_its_place() {
        let hasher = PasswordHasher::new(FAST, 1, 1).unwrap();
        let (release, running) = block(&hasher);
        // Queue a hash and give up on it before it runs.
        {
            let abandoned = hasher.hash(secret("never mind"));
            tokio::pin!(abandoned);
            assert!(futures_poll_once(abandoned.as_mut()).await.is_none());
        }
        release.send(()).unwrap();
        running.await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while hasher.inner.stats.pending.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(hasher.inner.stats.pending.load(Ordering::Acquire), 0);
        assert!(hasher.hash(secret("next")).await.is_ok());
    }

    /// Polls a future once; `None` if it is still pending.
    async fn futures_poll_once<F: std::future::Future + Unpin>(mut f: F) -> Option<F::Output> {
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut f).poll(cx) {
                std::task::Poll::Ready(v) => Some(v),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }

    #[tokio::test]
    async fn hashing_does_not_block_the_runtime() {
        // A single-threaded runtime: if hashing ran on it, the ticker could not tick.
        let params = Argon2Params {
            m_cost_kib: 16 * 1024,
            t_cost: 2,
            p_cost: 1,
        };
        let hasher = PasswordHasher::new(params, 1, 8).unwrap();
        let ticks = Arc::new(AtomicUsize::new(0));
        let ticker = {
            let ticks = Arc::clone(&ticks);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    ticks.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        tokio::task::yield_now().await;
        let before = ticks.load(Ordering::Relaxed);
        let started = Instant::now();
        let (a, b, c, d) = tokio::join!(
            hasher.hash(secret("one")),
            hasher.hash(secret("two")),
            hasher.hash(secret("three")),
            hasher.hash(secret("four")),
        );
        let took = started.elapsed();
        let ticked = ticks.load(Ordering::Relaxed) - before;
        ticker.abort();
        for hash in [a, b, c, d] {
            assert!(hash.is_ok());
        }
        // Four serialised hashes take tens of milliseconds at least; the ticker kept going.
        assert!(
            took >= Duration::from_millis(20),
            "{took:?} is too quick to tell"
        );
        assert!(ticked >= 5, "only {ticked} ticks in {took:?}");
    }

    #[test]
    fn workers_are_named_and_stop_with_the_last_handle() {
        use std::cell::RefCell;

        /// Sends on drop, i.e. when the thread that holds it exits.
        struct OnExit(mpsc::Sender<()>);
        impl Drop for OnExit {
            fn drop(&mut self) {
                let _ = self.0.send(());
            }
        }
        thread_local! {
            static ON_EXIT: RefCell<Option<OnExit>> = const { RefCell::new(None) };
        }

        let hasher = PasswordHasher::new(FAST, 2, 0).unwrap();
        let (name_tx, name_rx) = channel();
        let (exit_tx, exit_rx) = channel();
        let _done = hasher
            .submit(move || {
                ON_EXIT.with(|slot| *slot.borrow_mut() = Some(OnExit(exit_tx)));
                let _ = name_tx.send(thread::current().name().map(str::to_owned));
            })
            .unwrap();
        let name = name_rx.recv().unwrap().unwrap();
        assert!(name == "argon2-0" || name == "argon2-1", "{name}");

        let clone = hasher.clone();
        drop(hasher);
        // A clone keeps the pool alive.
        assert_eq!(
            exit_rx.recv_timeout(Duration::from_millis(200)),
            Err(mpsc::RecvTimeoutError::Timeout)
        );
        drop(clone);
        // The last one closes the channel and the worker thread ends.
        assert_eq!(exit_rx.recv_timeout(Duration::from_secs(10)), Ok(()));
    }

    #[test]
    fn absurd_queue_is_refused() {
        assert!(matches!(
            PasswordHasher::new(FAST, 1, MAX_QUEUE + 1),
            Err(HashError::Internal(_))
        ));
    }
}
