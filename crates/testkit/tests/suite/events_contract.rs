//! The outbox contract: every change the services commit is an event, written in the same
//! transaction as the change and its audit record, read back in commit order, once per
//! position, from a cursor that survives restarts and holds back pruning; and what one
//! replica commits reaches another replica's subscribers through the outbox.
//!
//! A reader sees an event only once its position is final (on PostgreSQL, once no older
//! transaction of the cluster is still running, and tests of other schemas run beside
//! these), so the cases read until what they committed has appeared, never for a fixed
//! time.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use domain::api_keys::NewApiKey;
use domain::audit::{AuditContext, AuditQuery};
use domain::code::{Code, Kind};
use domain::events::{event_type, Event, Position};
use domain::page::PageSize;
use domain::time::now;
use domain::users::UserPatch;
use domain::values::{DisplayName, Label};
use domain::{Error, Store, TenantId};
use portcullis_services::RequestMeta;
use portcullis_testkit::fixtures::{new_tenant, new_user};
use portcullis_testkit::rig::Rig;
use portcullis_testkit::{rig_tests, MemoryMailer};

rig_tests!(
    every_change_writes_its_event_with_the_audit_records_id,
    a_refused_change_writes_no_event,
    concurrent_changes_are_read_back_once_in_one_order,
    cursors_persist_and_hold_back_pruning,
    another_replica_hears_a_revocation_through_the_outbox,
    a_replica_that_has_not_heard_refuses_a_revoked_key_once_its_cache_expires,
);

/// How long a case waits for committed events to become final before it fails.
const PATIENCE: Duration = Duration::from_secs(30);

fn ctx() -> AuditContext {
    AuditContext::system()
}

async fn tenant(rig: &Rig, slug: &str) -> TenantId {
    rig.create_tenant(new_tenant(slug), &ctx())
        .await
        .unwrap()
        .id
}

/// Every event after `after`, read `page` at a time, checking that positions only grow.
async fn read_all(store: &dyn Store, after: Position, page: u32) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::new();
    let mut at = after;
    loop {
        let batch = store.read_outbox(at, page).await.unwrap();
        assert!(
            batch.len() <= page as usize,
            "a page holds at most its limit"
        );
        for e in &batch {
            let p = e.position.expect("events read back have a position");
            assert!(p > at, "positions grow: {p} after {at}");
            at = p;
        }
        let done = batch.len() < page as usize;
        out.extend(batch);
        if done {
            return out;
        }
    }
}

/// Reads from `after` until `tenant` has at least `n` events, and answers that tenant's.
async fn wait_for(store: &dyn Store, after: Position, tenant: TenantId, n: usize) -> Vec<Event> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let mine: Vec<Event> = read_all(store, after, 500)
            .await
            .into_iter()
            .filter(|e| e.tenant_id == tenant)
            .collect();
        if mine.len() >= n {
            return mine;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {n} events became readable",
            mine.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn every_change_writes_its_event_with_the_audit_records_id(rig: Rig) {
    let t = tenant(&rig, "events").await;
    let a = rig
        .create_user(t, new_user("a@example.com", "A"), &ctx())
        .await
        .unwrap();
    let patch = UserPatch {
        full_name: Some(DisplayName::parse("full_name", "A Renamed").unwrap()),
        ..Default::default()
    };
    rig.update_user(t, a.id, patch, None, &ctx()).await.unwrap();
    let (key, _) = rig
        .create_api_key(t, key_named("ci"), &ctx())
        .await
        .unwrap();
    rig.revoke_api_key(t, key.id, &ctx()).await.unwrap();
    rig.delete_user(t, a.id, None, &ctx()).await.unwrap();

    let mut audit = rig
        .list_audit_events(
            t,
            &AuditQuery {
                limit: PageSize::new(Some(200)).unwrap(),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .items;
    audit.reverse();
    let events = wait_for(rig.store.as_ref(), Position::START, t, audit.len()).await;

    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "tenant.created",
            "user.created",
            "user.updated",
            "api_key.created",
            "api_key.revoked",
            "user.deleted"
        ]
    );
    assert_eq!(events.len(), audit.len(), "one event per audit record");
    for (e, a) in events.iter().zip(&audit) {
        assert_eq!(
            e.id,
            a.id.into_uuid(),
            "the event's id is its audit record's"
        );
        assert_eq!(e.event_type, event_type(&a.action));
        assert_eq!(e.entity_type, a.entity_type);
        assert_eq!(e.entity_id, a.entity_id);
        assert_eq!(e.actor_type, a.actor_type);
        let data = a.after.clone().or_else(|| a.before.clone()).unwrap();
        assert_eq!(
            e.data, data,
            "the event carries the entity after the change"
        );
    }
    assert_eq!(events[2].data["full_name"], "A Renamed");
}

async fn a_refused_change_writes_no_event(rig: Rig) {
    let t = tenant(&rig, "refused").await;
    let a = rig
        .create_user(t, new_user("a@example.com", "A"), &ctx())
        .await
        .unwrap();
    wait_for(rig.store.as_ref(), Position::START, t, 2).await;
    let head = rig.outbox_head().await.unwrap();

    // Refused by a rule the store enforces (a taken email) and by one the services do
    // (a plain user may not create users), then one change that commits.
    let taken = rig
        .create_user(t, new_user("a@example.com", "Again"), &ctx())
        .await;
    assert!(
        matches!(
            taken,
            Err(Error::Refused {
                code: Code::EmailTaken,
                ..
            })
        ),
        "{taken:?}"
    );
    let as_a = AuditContext {
        actor: domain::audit::Actor::User(a.id),
        ..AuditContext::system()
    };
    let denied = rig
        .create_user(t, new_user("b@example.com", "B"), &as_a)
        .await;
    assert!(
        matches!(denied, Err(Error::Refused { code, .. }) if code.kind() == Kind::Forbidden),
        "{denied:?}"
    );
    let c = rig
        .create_user(t, new_user("c@example.com", "C"), &ctx())
        .await
        .unwrap();

    let after = wait_for(rig.store.as_ref(), head, t, 1).await;
    assert_eq!(after.len(), 1, "only the committed change: {after:?}");
    assert_eq!(after[0].event_type, "user.created");
    assert_eq!(after[0].entity_id, Some(c.id.into_uuid()));
}

async fn concurrent_changes_are_read_back_once_in_one_order(rig: Rig) {
    let t = tenant(&rig, "concurrent").await;
    let writers = 4;
    let each = 10;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let rig = rig.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..each {
                let email = format!("w{w}-{i}@example.com");
                let u = rig
                    .create_user(t, new_user(&email, "U"), &ctx())
                    .await
                    .unwrap();
                ids.push(u.id.into_uuid());
            }
            ids
        }));
    }
    let mut created = HashSet::new();
    for task in tasks {
        created.extend(task.await.unwrap());
    }
    let all = wait_for(rig.store.as_ref(), Position::START, t, 1 + writers * each).await;

    // Read again in small pages: the same events, each once, in the same order.
    let paged: Vec<Event> = read_all(rig.store.as_ref(), Position::START, 7)
        .await
        .into_iter()
        .filter(|e| e.tenant_id == t)
        .collect();
    assert_eq!(
        paged, all,
        "paging changes neither the events nor their order"
    );
    let ids: Vec<_> = all.iter().map(|e| e.id).collect();
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        ids.len(),
        "no duplicates"
    );
    let users: HashSet<_> = all
        .iter()
        .filter(|e| e.event_type == "user.created")
        .filter_map(|e| e.entity_id)
        .collect();
    assert_eq!(users, created, "every creation, once");

    // Resuming from any event's position gives exactly what followed it.
    let middle = all[all.len() / 2].position.unwrap();
    let rest: Vec<Event> = read_all(rig.store.as_ref(), middle, 500)
        .await
        .into_iter()
        .filter(|e| e.tenant_id == t)
        .collect();
    assert_eq!(rest, all[all.len() / 2 + 1..]);
}

async fn cursors_persist_and_hold_back_pruning(rig: Rig) {
    let t = tenant(&rig, "cursors").await;
    for i in 0..3 {
        let email = format!("u{i}@example.com");
        rig.create_user(t, new_user(&email, "U"), &ctx())
            .await
            .unwrap();
    }
    let events = wait_for(rig.store.as_ref(), Position::START, t, 4).await;
    let first = events[1].position.unwrap();
    let last = events[3].position.unwrap();

    assert_eq!(rig.outbox_cursor("webhooks").await.unwrap(), None);
    rig.save_outbox_cursor("webhooks", first).await.unwrap();
    rig.save_outbox_cursor("feeds", last).await.unwrap();
    assert_eq!(rig.outbox_cursor("webhooks").await.unwrap(), Some(first));
    assert_eq!(rig.outbox_cursor("feeds").await.unwrap(), Some(last));

    // Everything is old enough to prune, but "webhooks" has not read past `first`.
    let pruned = rig.prune_outbox(now() + TimeDelta::days(1)).await.unwrap();
    assert_eq!(pruned, 2, "only what every cursor passed");
    let kept = read_all(rig.store.as_ref(), Position::START, 500).await;
    assert_eq!(kept, events[2..], "the unread events are kept, in order");

    rig.save_outbox_cursor("webhooks", last).await.unwrap();
    assert_eq!(rig.outbox_cursor("webhooks").await.unwrap(), Some(last));
    let pruned = rig.prune_outbox(now() + TimeDelta::days(1)).await.unwrap();
    assert_eq!(pruned, 2);
    assert!(read_all(rig.store.as_ref(), Position::START, 500)
        .await
        .is_empty());

    // Events younger than the cut are kept whatever the cursors say.
    rig.create_user(t, new_user("late@example.com", "L"), &ctx())
        .await
        .unwrap();
    let late = wait_for(rig.store.as_ref(), last, t, 1).await;
    rig.save_outbox_cursor("webhooks", late[0].position.unwrap())
        .await
        .unwrap();
    rig.save_outbox_cursor("feeds", late[0].position.unwrap())
        .await
        .unwrap();
    assert_eq!(
        rig.prune_outbox(now() - TimeDelta::hours(1)).await.unwrap(),
        0
    );
    assert_eq!(read_all(rig.store.as_ref(), last, 500).await, late);
}

/// Replica B caches API keys for five minutes; replica A revokes a key. B refuses it
/// as soon as it has read the outbox, and not before: the revocation reaches B's cache
/// through the event, not through expiry.
async fn another_replica_hears_a_revocation_through_the_outbox(rig: Rig) {
    let t = tenant(&rig, "replicas").await;
    let b = replica(&rig, 300).await;

    let (key, secret) = rig
        .create_api_key(t, key_named("shared"), &ctx())
        .await
        .unwrap();
    let secret = secrecy::ExposeSecret::expose_secret(&secret.secret).to_owned();
    let meta = RequestMeta::default;
    b.authenticate_api_key(&secret, meta()).await.unwrap();

    rig.revoke_api_key(t, key.id, &ctx()).await.unwrap();
    rig.services
        .authenticate_api_key(&secret, meta())
        .await
        .expect_err("the revoking replica refuses the key at once");
    b.authenticate_api_key(&secret, meta())
        .await
        .expect("B still holds the key in its cache until it hears the event");

    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        b.poll_events().await.unwrap();
        match b.authenticate_api_key(&secret, meta()).await {
            Err(Error::Refused {
                code: Code::InvalidApiKey,
                ..
            }) => break,
            Err(e) => panic!("unexpected error: {e:?}"),
            Ok(_) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "B never heard of the revocation"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Replicas B and C never read the outbox; B trusts a key it authenticated for an hour, C
/// for a second. Replica A revokes the key: B goes on accepting it from its cache (a hit:
/// the database says revoked), and C refuses it once its entry has expired. (The cache's
/// own tests pin the expiry to the instant with a given clock.)
async fn a_replica_that_has_not_heard_refuses_a_revoked_key_once_its_cache_expires(rig: Rig) {
    let t = tenant(&rig, "expiry").await;
    let b = replica(&rig, 3600).await;
    let c = replica(&rig, 1).await;
    let (key, secret) = rig
        .create_api_key(t, key_named("cached"), &ctx())
        .await
        .unwrap();
    let secret = secrecy::ExposeSecret::expose_secret(&secret.secret).to_owned();
    for replica in [&b, &c] {
        replica
            .authenticate_api_key(&secret, RequestMeta::default())
            .await
            .unwrap();
    }
    rig.revoke_api_key(t, key.id, &ctx()).await.unwrap();
    b.authenticate_api_key(&secret, RequestMeta::default())
        .await
        .expect("served from B's cache");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let res = c
        .authenticate_api_key(&secret, RequestMeta::default())
        .await;
    assert!(
        matches!(
            res,
            Err(Error::Refused {
                code: Code::InvalidApiKey,
                ..
            })
        ),
        "{res:?}"
    );
}

/// A second replica over the same store, caching API keys for `ttl` seconds.
async fn replica(rig: &Rig, ttl: u64) -> Arc<portcullis_services::Services> {
    let mut config = rig.config.clone();
    config.http.api_key_cache_seconds = ttl;
    portcullis::app::start_services(
        rig.store.clone(),
        &config,
        Some(Arc::new(MemoryMailer::new())),
    )
    .await
    .unwrap()
}

fn key_named(name: &str) -> NewApiKey {
    NewApiKey {
        name: Label::parse("name", name).unwrap(),
        platform_admin: false,
    }
}
