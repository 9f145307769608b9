//! The in-process side of the transactional outbox: the [`Dispatcher`] hands committed
//! events to the subscribers of this replica. It has two sources:
//! - [`Dispatcher::committed`]: the events of a change this replica just committed, handed
//!   on at once, before the change's response, so that this replica's caches are right for
//!   the very next request;
//! - [`Dispatcher::poll`]: the outbox read from a position kept in memory, in commit order,
//!   for what other replicas and the CLI committed (the events handed on already are
//!   skipped by id).
//!
//! Delivery to subscribers is at least once; subscribers are idempotent. The position
//! starts at the outbox's head when the services start (caches start empty, so earlier
//! events do not matter to them). Consumers that must not miss events across restarts
//! (webhooks, feeds, NATS) keep theirs in `outbox_cursors`, which pruning respects.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock};

use domain::events::{Event, Position};
use domain::{Result, Store, TenantId};
use portcullis_authz::Engine;
use uuid::Uuid;

/// Events read from the outbox per query.
const BATCH: u32 = 500;
/// At most this many ids of events handed on at commit are remembered until the poll
/// passes them; beyond it they are forgotten (the poll then hands them on again, which
/// idempotent subscribers shrug off).
const MAX_REMEMBERED: usize = 100_000;

/// Something in this process that reacts to changes.
pub trait Subscriber: Send + Sync {
    fn name(&self) -> &'static str;
    /// Called with committed events, in commit order within one call.
    fn deliver(&self, events: &[Event]);
}

pub struct Dispatcher {
    store: Arc<dyn Store>,
    subscribers: RwLock<Vec<Arc<dyn Subscriber>>>,
    position: tokio::sync::Mutex<Position>,
    handed_on: Mutex<HashSet<Uuid>>,
}

impl Dispatcher {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            subscribers: RwLock::default(),
            position: tokio::sync::Mutex::new(Position::START),
            handed_on: Mutex::default(),
        }
    }

    pub fn subscribe(&self, s: Arc<dyn Subscriber>) {
        self.subscribers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(s);
    }

    /// Reads from now on: what is committed after this call is polled.
    pub async fn start_position(&self) -> Result<()> {
        *self.position.lock().await = self.store.outbox_head().await?;
        Ok(())
    }

    /// Hands the events of a change committed by this replica to every subscriber.
    pub fn committed(&self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        {
            let mut seen = self.handed_on.lock().unwrap_or_else(|e| e.into_inner());
            if seen.len() + events.len() > MAX_REMEMBERED {
                seen.clear();
            }
            seen.extend(events.iter().map(|e| e.id));
        }
        self.deliver(events);
    }

    /// Reads what was committed since the last poll and hands on what this replica has
    /// not; answers how many events were read.
    pub async fn poll(&self) -> Result<usize> {
        let mut position = self.position.lock().await;
        let mut read = 0;
        loop {
            let batch = self.store.read_outbox(*position, BATCH).await?;
            let Some(last) = batch.last().and_then(|e| e.position) else {
                break;
            };
            *position = last;
            let full = batch.len() == BATCH as usize;
            read += batch.len();
            let fresh: Vec<Event> = {
                let mut seen = self.handed_on.lock().unwrap_or_else(|e| e.into_inner());
                batch.into_iter().filter(|e| !seen.remove(&e.id)).collect()
            };
            self.deliver(&fresh);
            if !full {
                break;
            }
        }
        Ok(read)
    }

    fn deliver(&self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        let subscribers = self
            .subscribers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for s in subscribers {
            tracing::trace!(
                subscriber = s.name(),
                events = events.len(),
                "delivering events"
            );
            s.deliver(events);
        }
    }
}

/// The decision engine's cache: a change that can alter a decision drops its tenant.
pub struct DecisionCache(pub Arc<Engine>);

impl Subscriber for DecisionCache {
    fn name(&self) -> &'static str {
        "decision-cache"
    }

    fn deliver(&self, events: &[Event]) {
        let mut done: Vec<TenantId> = Vec::new();
        for e in events.iter().filter(|e| e.affects_authorization()) {
            if !done.contains(&e.tenant_id) {
                self.0.invalidate(e.tenant_id);
                done.push(e.tenant_id);
            }
        }
    }
}
