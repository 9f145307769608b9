//! The engine: a per-tenant cache of compiled snapshots and of principals' rights over the
//! store, and the entry points that decide with them.
//!
//! Invalidation under concurrent writes: each tenant has a generation counter, bumped by
//! `invalidate`. A loader reads the generation BEFORE reading the store and tags what it
//! loaded with it; a cached value is used only while its tag equals the current generation,
//! and is kept only if the generation did not move while it was loading. A writer that
//! commits and then invalidates therefore makes every later check reload: whatever was
//! loaded before its commit carries an older generation.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use async_trait::async_trait;
use cedar_policy::{Authorizer, Entity};
use chrono::{DateTime, Utc};
use domain::authz::{PolicyEffect, PrincipalData, TenantAuthzData};
use domain::{Error, FieldError, Result, Store, TenantId, UserId};

use crate::cedar::check_policy;
use crate::decide::{decide, Principal, PrincipalState, ResourceAttrs, Snapshot};
use crate::fast_hash::FastMap;
use crate::model::{is_active, Check, Decision, Effective};

/// The groups and roles the active policies of a tenant name (see [`Engine::policy_names`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyNames {
    pub groups: std::collections::BTreeSet<String>,
    pub roles: std::collections::BTreeSet<String>,
}

/// At most this many principals are cached per tenant; the cache is emptied when full.
const MAX_PRINCIPALS: usize = 200_000;

/// What the engine reads: the part of `Store` it needs (a seam for the tests).
#[async_trait]
pub(crate) trait Source: Send + Sync + 'static {
    async fn authz_versions(&self) -> Result<Vec<(TenantId, i64)>>;
    async fn load_tenant_authz(&self, tenant: TenantId) -> Result<TenantAuthzData>;
    async fn load_principal(&self, tenant: TenantId, user: UserId)
        -> Result<Option<PrincipalData>>;
}

struct StoreSource(Arc<dyn Store>);

#[async_trait]
impl Source for StoreSource {
    async fn authz_versions(&self) -> Result<Vec<(TenantId, i64)>> {
        self.0.authz_versions().await
    }
    async fn load_tenant_authz(&self, tenant: TenantId) -> Result<TenantAuthzData> {
        self.0.load_tenant_authz(tenant).await
    }
    async fn load_principal(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<Option<PrincipalData>> {
        self.0.load_principal(tenant, user).await
    }
}

/// Decides authorization checks for every tenant, from cached data.
pub struct Engine {
    source: Arc<dyn Source>,
    tenants: RwLock<FastMap<TenantId, Arc<TenantSlot>>>,
    authorizer: Authorizer,
    max_principals: usize,
}

/// A tenant's place in the cache.
#[derive(Default)]
struct TenantSlot {
    generation: AtomicU64,
    state: RwLock<Option<Arc<TenantState>>>,
    /// One snapshot load at a time per tenant; the others wait for it.
    loading: tokio::sync::Mutex<()>,
}

/// What was loaded for a tenant at one generation.
struct TenantState {
    generation: u64,
    snapshot: Snapshot,
    principals: RwLock<FastMap<UserId, Arc<PrincipalEntry>>>,
}

/// A principal's stored data, and its state for the interval of time last asked about
/// (replaced by a recomputed entry, not reloaded, when a check's time falls outside it).
/// Immutable, so that a check reads it without taking a lock of its own: most of a role
/// check's time goes to fetching the principal's data from memory.
struct PrincipalEntry {
    data: PrincipalData,
    state: PrincipalState,
}

impl Engine {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self::with_source(Arc::new(StoreSource(store)), MAX_PRINCIPALS)
    }

    pub(crate) fn with_source(source: Arc<dyn Source>, max_principals: usize) -> Self {
        Self {
            source,
            tenants: RwLock::new(FastMap::default()),
            authorizer: Authorizer::new(),
            max_principals,
        }
    }

    /// Decides one check. Errors: `domain::Error::Validation` field "action" code
    /// "unknown_action" when `resource:action` is neither built in nor defined by the
    /// tenant, or fields "resource.attributes.<key>" for attributes of the wrong type;
    /// storage errors pass through. An unknown principal is NOT an error: a denied Decision
    /// with Reason::PrincipalNotFound.
    pub async fn check(&self, tenant: TenantId, check: &Check) -> Result<Decision> {
        let (slot, state) = self.tenant(tenant).await?;
        let snap = &state.snapshot;
        if !snap.knows(&check.action) {
            return Err(FieldError::new(
                "action",
                "unknown_action",
                format!(
                    "'{}' is neither a built-in action nor one this tenant defined",
                    check.action
                ),
            )
            .into());
        }
        let attrs = ResourceAttrs::parse(&check.resource.attributes)?;
        let now = check.context.now.with_timezone(&Utc);
        let Some(entry) = self
            .principal(tenant, &slot, &state, check.principal, now)
            .await?
        else {
            return decide(snap, &self.authorizer, None, check, &attrs, None);
        };
        let pstate = &entry.state;
        let owner = match attrs.owner_id() {
            Some(o)
                if o != check.principal
                    && is_active(&entry.data.user)
                    && snap.needs_owner_entity(&check.action) =>
            {
                self.owner_entity(tenant, &slot, &state, o, now).await?
            }
            _ => None,
        };
        decide(
            snap,
            &self.authorizer,
            Some(Principal {
                data: &entry.data,
                state: pstate,
            }),
            check,
            &attrs,
            owner.as_ref(),
        )
    }

    /// The principal's effective permissions with where each comes from (for
    /// GET /me/permissions and for scope decisions of list endpoints). None = no such user.
    pub async fn effective(
        &self,
        tenant: TenantId,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<Option<Effective>> {
        let (slot, state) = self.tenant(tenant).await?;
        let Some(entry) = self.principal(tenant, &slot, &state, user, now).await? else {
            return Ok(None);
        };
        let pstate = &entry.state;
        Ok(Some(Effective {
            user: entry.data.user.clone(),
            super_admin: pstate.rights.super_admin,
            grants: pstate.rights.grants.clone(),
        }))
    }

    /// What the user would hold if active (and not deleted), whatever their status now:
    /// whether another user may manage them is judged against these rights, so that a
    /// suspended administrator is not an easy target. `user` is the stored user, as it is;
    /// `super_admin` and `grants` are those of the active user. None = no such user.
    pub async fn potential(
        &self,
        tenant: TenantId,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<Option<Effective>> {
        let (slot, state) = self.tenant(tenant).await?;
        let Some(entry) = self.principal(tenant, &slot, &state, user, now).await? else {
            return Ok(None);
        };
        if is_active(&entry.data.user) {
            return Ok(Some(Effective {
                user: entry.data.user.clone(),
                super_admin: entry.state.rights.super_admin,
                grants: entry.state.rights.grants.clone(),
            }));
        }
        let mut active = entry.data.clone();
        active.user.status = domain::users::UserStatus::Active;
        active.user.deleted_at = None;
        let rights = crate::rights::compute(&state.snapshot.graph, &active, now);
        Ok(Some(Effective {
            user: entry.data.user.clone(),
            super_admin: rights.super_admin,
            grants: rights.grants,
        }))
    }

    /// The groups and roles (by name) that the tenant's active policies name: renaming
    /// them, or changing who belongs to or holds them, changes what the policies decide.
    pub async fn policy_names(&self, tenant: TenantId) -> Result<PolicyNames> {
        let (_, state) = self.tenant(tenant).await?;
        let mut out = PolicyNames::default();
        for uid in &state.snapshot.cedar.policies.named {
            let name = uid.id().unescaped().to_owned();
            match uid.type_name().basename() {
                "Group" => {
                    out.groups.insert(name);
                }
                "Role" => {
                    out.roles.insert(name);
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// Parses a Cedar source that must hold exactly one policy statement, validates it
    /// (strict) against the tenant's schema, and returns its effect. Errors:
    /// `domain::Error::Validation` with field "source", code "invalid_policy", message
    /// naming Cedar's error(s) (parse errors and validation errors, e.g. unknown attribute).
    pub async fn validate_policy(&self, tenant: TenantId, source: &str) -> Result<PolicyEffect> {
        let (_, state) = self.tenant(tenant).await?;
        check_policy(&state.snapshot.cedar.validator, source)
            .map_err(|message| Error::field("source", "invalid_policy", message))
    }

    /// The tenant's Cedar schema, in Cedar's human-readable schema syntax, for policy
    /// authors.
    pub async fn schema_text(&self, tenant: TenantId) -> Result<String> {
        let (_, state) = self.tenant(tenant).await?;
        Ok(state.snapshot.cedar.schema_text.clone())
    }

    /// Drops what is cached for the tenant: the very next check reloads. Called for every
    /// committed change that can affect decisions (the engine subscribes to the events of
    /// the outbox: see `services::events`).
    pub fn invalidate(&self, tenant: TenantId) {
        let slot = read(&self.tenants).get(&tenant).cloned();
        if let Some(slot) = slot {
            slot.generation.fetch_add(1, Ordering::SeqCst);
            *write(&slot.state) = None;
        }
    }

    /// Reads every tenant's stored authz version (`Store::authz_versions`) and invalidates
    /// the cached tenants whose version differs from the one their snapshot was loaded at.
    /// The server calls it every second, so that changes made by other replicas are seen.
    pub async fn sync(&self) -> Result<()> {
        let stored: HashMap<TenantId, i64> =
            self.source.authz_versions().await?.into_iter().collect();
        let cached: Vec<(TenantId, i64)> = read(&self.tenants)
            .iter()
            .filter_map(|(t, slot)| read(&slot.state).as_ref().map(|s| (*t, s.snapshot.version)))
            .collect();
        for (tenant, version) in cached {
            if stored.get(&tenant).copied().unwrap_or(0) != version {
                tracing::debug!(%tenant, "authorization data changed elsewhere; reloading");
                self.invalidate(tenant);
            }
        }
        Ok(())
    }

    fn slot(&self, tenant: TenantId) -> Arc<TenantSlot> {
        if let Some(slot) = read(&self.tenants).get(&tenant) {
            return slot.clone();
        }
        write(&self.tenants).entry(tenant).or_default().clone()
    }

    /// The tenant's current state, loaded when missing or stale.
    async fn tenant(&self, tenant: TenantId) -> Result<(Arc<TenantSlot>, Arc<TenantState>)> {
        let slot = self.slot(tenant);
        let state = match current(&slot) {
            Some(state) => state,
            None => self.load(tenant, &slot).await?,
        };
        Ok((slot, state))
    }

    async fn load(&self, tenant: TenantId, slot: &TenantSlot) -> Result<Arc<TenantState>> {
        let _one_at_a_time = slot.loading.lock().await;
        if let Some(state) = current(slot) {
            return Ok(state);
        }
        let generation = slot.generation.load(Ordering::SeqCst);
        let data = self.source.load_tenant_authz(tenant).await?;
        let state = Arc::new(TenantState {
            generation,
            snapshot: Snapshot::compile(&data)?,
            principals: RwLock::new(FastMap::default()),
        });
        let mut cached = write(&slot.state);
        if slot.generation.load(Ordering::SeqCst) == generation {
            *cached = Some(state.clone());
        }
        Ok(state)
    }

    /// The principal's cached entry, loaded when missing. None = no such user.
    async fn principal(
        &self,
        tenant: TenantId,
        slot: &TenantSlot,
        state: &TenantState,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<Option<Arc<PrincipalEntry>>> {
        let cached = read(&state.principals).get(&user).cloned();
        if let Some(entry) = cached {
            if entry.state.rights.covers(now) {
                return Ok(Some(entry));
            }
            // An assignment's expiry lies between the cached state's time and `now`.
            let fresh = Arc::new(PrincipalEntry {
                state: PrincipalState::build(&state.snapshot, &entry.data, now)?,
                data: entry.data.clone(),
            });
            self.keep(slot, state, user, &fresh);
            return Ok(Some(fresh));
        }
        // `state.generation` was current when `state` was obtained, before this load.
        let Some(data) = self.source.load_principal(tenant, user).await? else {
            return Ok(None);
        };
        let entry = Arc::new(PrincipalEntry {
            state: PrincipalState::build(&state.snapshot, &data, now)?,
            data,
        });
        self.keep(slot, state, user, &entry);
        Ok(Some(entry))
    }

    /// Caches a principal's entry, unless the tenant's data changed since `state` was
    /// obtained.
    fn keep(
        &self,
        slot: &TenantSlot,
        state: &TenantState,
        user: UserId,
        entry: &Arc<PrincipalEntry>,
    ) {
        let mut cached = write(&state.principals);
        if slot.generation.load(Ordering::SeqCst) == state.generation {
            if cached.len() >= self.max_principals {
                cached.clear();
            }
            cached.insert(user, entry.clone());
        }
    }

    /// The Cedar entity of a resource's owner, when the owner is a user of the tenant.
    async fn owner_entity(
        &self,
        tenant: TenantId,
        slot: &TenantSlot,
        state: &TenantState,
        owner: UserId,
        now: DateTime<Utc>,
    ) -> Result<Option<Entity>> {
        Ok(self
            .principal(tenant, slot, state, owner, now)
            .await?
            .map(|entry| entry.state.cedar.entity.clone()))
    }
}

/// The slot's state if it belongs to the current generation.
fn current(slot: &TenantSlot) -> Option<Arc<TenantState>> {
    let state = read(&slot.state).clone()?;
    (state.generation == slot.generation.load(Ordering::SeqCst)).then_some(state)
}

// A panic while a lock is held cannot leave these maps half-updated (every update is one
// insert, clear or replacement), so a poisoned lock is used as is.
fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;

    use super::*;
    use crate::model::{Context, Reason, Resource};
    use crate::testdata::*;
    use domain::authz::{ActionKey, Scope};

    #[derive(Default)]
    struct Db {
        tenant: TenantAuthzData,
        principals: HashMap<UserId, PrincipalData>,
        version: i64,
    }

    type Hook = Box<dyn FnOnce() + Send>;

    /// A store in memory that counts its loads and can run a hook in the middle of one.
    #[derive(Default)]
    struct Fake {
        db: Arc<Mutex<Db>>,
        tenant_loads: AtomicUsize,
        principal_loads: AtomicUsize,
        during_principal_load: Mutex<Option<Hook>>,
    }

    #[async_trait]
    impl Source for Fake {
        async fn authz_versions(&self) -> Result<Vec<(TenantId, i64)>> {
            let db = self.db.lock().unwrap();
            Ok(vec![(db.tenant_id(), db.version)])
        }
        async fn load_tenant_authz(&self, _: TenantId) -> Result<TenantAuthzData> {
            self.tenant_loads.fetch_add(1, Ordering::SeqCst);
            let db = self.db.lock().unwrap();
            Ok(TenantAuthzData {
                version: db.version,
                ..db.tenant.clone()
            })
        }
        async fn load_principal(&self, _: TenantId, user: UserId) -> Result<Option<PrincipalData>> {
            self.principal_loads.fetch_add(1, Ordering::SeqCst);
            let data = self.db.lock().unwrap().principals.get(&user).cloned();
            let hook = self.during_principal_load.lock().unwrap().take();
            if let Some(hook) = hook {
                hook();
            }
            Ok(data)
        }
    }

    impl Db {
        fn tenant_id(&self) -> TenantId {
            self.tenant
                .roles
                .iter()
                .find_map(|r| r.tenant_id)
                .unwrap_or_else(TenantId::new)
        }
    }

    struct Setup {
        tenant: TenantId,
        fake: Arc<Fake>,
        engine: Arc<Engine>,
        ann: UserId,
    }

    fn setup(max_principals: usize) -> Setup {
        let mut t = Tenant::new();
        let reader = t.role("reader", 1, &["users:read:all"]);
        let mut ann = t.user("ann", None);
        ann.assignments
            .push(assignment(&ann, &t.role_of(reader), None));
        let fake = Arc::new(Fake::default());
        {
            let mut db = fake.db.lock().unwrap();
            db.tenant = t.data();
            db.principals.insert(ann.user.id, ann.clone());
        }
        let engine = Arc::new(Engine::with_source(fake.clone(), max_principals));
        Setup {
            tenant: t.id,
            fake,
            engine,
            ann: ann.user.id,
        }
    }

    fn read_users(principal: UserId) -> Check {
        Check {
            principal,
            action: ActionKey::parse("action", "users:read").unwrap(),
            resource: Resource::new("users", Some("someone".into())),
            context: Context::at(Utc::now().fixed_offset()),
        }
    }

    impl Setup {
        async fn allowed(&self) -> bool {
            self.engine
                .check(self.tenant, &read_users(self.ann))
                .await
                .unwrap()
                .allowed
        }

        fn loads(&self) -> (usize, usize) {
            (
                self.fake.tenant_loads.load(Ordering::SeqCst),
                self.fake.principal_loads.load(Ordering::SeqCst),
            )
        }

        fn unassign(&self) {
            let mut db = self.fake.db.lock().unwrap();
            db.principals
                .get_mut(&self.ann)
                .unwrap()
                .assignments
                .clear();
            db.version += 1;
        }
    }

    /// The resource owner's entity is loaded when a policy of the action looks into it, and
    /// only then.
    #[tokio::test]
    async fn the_owner_is_loaded_when_a_policy_looks_into_it() {
        let mut t = Tenant::new();
        t.permission("docs:approve:all");
        t.permission("docs:read:all");
        t.policy(
            "approve-reports",
            r#"permit(principal, action == Action::"docs:approve", resource)
               when { resource has owner && resource.owner has manager
                      && resource.owner.manager == principal };"#,
        );
        t.policy(
            "read-own",
            r#"permit(principal, action == Action::"docs:read", resource)
               when { resource has owner && resource.owner == principal };"#,
        );
        let boss = t.user("boss", None);
        let mut report = t.user("report", None);
        report.user.manager_id = Some(boss.user.id);
        report.manager_chain = vec![boss.user.id];
        let fake = Arc::new(Fake::default());
        {
            let mut db = fake.db.lock().unwrap();
            db.tenant = t.data();
            db.principals.insert(boss.user.id, boss.clone());
            db.principals.insert(report.user.id, report.clone());
        }
        let engine = Engine::with_source(fake.clone(), 100);
        let check = |action: &str, owner: &PrincipalData| Check {
            principal: boss.user.id,
            action: ActionKey::parse("action", action).unwrap(),
            resource: Resource {
                kind: "docs".into(),
                id: Some("d1".into()),
                attributes: serde_json::json!({ "owner": owner.user.id.to_string() })
                    .as_object()
                    .cloned()
                    .unwrap(),
            },
            context: Context::at(Utc::now().fixed_offset()),
        };
        let d = engine
            .check(t.id, &check("docs:read", &report))
            .await
            .unwrap();
        assert!(!d.allowed);
        assert_eq!(
            fake.principal_loads.load(Ordering::SeqCst),
            1,
            "comparing the owner's id needs no entity"
        );
        let d = engine
            .check(t.id, &check("docs:approve", &report))
            .await
            .unwrap();
        assert!(
            matches!(d.reason, Reason::PolicyPermit { .. }),
            "{:?}",
            d.reason
        );
        assert_eq!(fake.principal_loads.load(Ordering::SeqCst), 2);
        let d = engine
            .check(t.id, &check("docs:read", &boss))
            .await
            .unwrap();
        assert!(d.allowed, "the owner reads");
    }

    #[tokio::test]
    async fn checks_use_the_cache_until_invalidated() {
        let s = setup(100);
        assert!(s.allowed().await);
        assert!(s.allowed().await);
        assert_eq!(s.loads(), (1, 1));
        s.unassign();
        assert!(s.allowed().await, "not invalidated yet");
        s.engine.invalidate(s.tenant);
        assert!(!s.allowed().await, "the very next check reloads");
        assert_eq!(s.loads(), (2, 2));
    }

    #[tokio::test]
    async fn a_load_that_races_a_write_is_not_kept() {
        let s = setup(100);
        // The write and its invalidation land while the principal is being read.
        let engine = s.engine.clone();
        let db = s.fake.db.clone();
        let (tenant, ann) = (s.tenant, s.ann);
        *s.fake.during_principal_load.lock().unwrap() = Some(Box::new(move || {
            db.lock()
                .unwrap()
                .principals
                .get_mut(&ann)
                .unwrap()
                .assignments
                .clear();
            engine.invalidate(tenant);
        }));
        assert!(s.allowed().await, "read before the write");
        assert!(!s.allowed().await, "the stale read was not kept");
    }

    #[tokio::test]
    async fn sync_reloads_tenants_changed_elsewhere() {
        let s = setup(100);
        assert!(s.allowed().await);
        s.engine.sync().await.unwrap();
        assert!(s.allowed().await);
        assert_eq!(s.loads(), (1, 1), "nothing changed");
        s.unassign();
        s.engine.sync().await.unwrap();
        assert!(!s.allowed().await);
        assert_eq!(s.loads(), (2, 2));
    }

    #[tokio::test]
    async fn expiry_is_judged_at_the_time_of_each_check_without_reloading() {
        let s = setup(100);
        let soon = Utc::now() + chrono::TimeDelta::minutes(5);
        s.fake
            .db
            .lock()
            .unwrap()
            .principals
            .get_mut(&s.ann)
            .unwrap()
            .assignments[0]
            .expires_at = Some(soon);
        let at = |t: DateTime<Utc>| {
            let mut c = read_users(s.ann);
            c.context = Context::at(t.fixed_offset());
            c
        };
        let e = &s.engine;
        assert!(e.check(s.tenant, &at(Utc::now())).await.unwrap().allowed);
        assert!(!e.check(s.tenant, &at(soon)).await.unwrap().allowed);
        assert!(e.check(s.tenant, &at(Utc::now())).await.unwrap().allowed);
        assert_eq!(s.loads(), (1, 1));
        let eff = e
            .effective(s.tenant, s.ann, Utc::now())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(eff.grants.len(), 1);
        assert_eq!(eff.grants[0].expires_at, Some(soon));
        assert_eq!(eff.scope_for("users", "read"), Some(Scope::All));
        assert_eq!(eff.scope_for("users", "update"), None);
        let later = e.effective(s.tenant, s.ann, soon).await.unwrap().unwrap();
        assert!(later.grants.is_empty());
    }

    #[tokio::test]
    async fn unknown_actions_fail_and_unknown_principals_are_denied() {
        let s = setup(100);
        let mut c = read_users(s.ann);
        c.action = ActionKey::parse("a", "users:fly").unwrap();
        let Err(Error::Validation(errors)) = s.engine.check(s.tenant, &c).await else {
            panic!("expected a validation error");
        };
        assert_eq!(
            (errors[0].field.as_str(), errors[0].code.as_str()),
            ("action", "unknown_action")
        );
        let d = s
            .engine
            .check(s.tenant, &read_users(UserId::new()))
            .await
            .unwrap();
        assert_eq!(d.reason, Reason::PrincipalNotFound);
        assert!(s
            .engine
            .effective(s.tenant, UserId::new(), Utc::now())
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn policies_are_validated_against_the_tenant_schema() {
        let s = setup(100);
        let e = s
            .engine
            .validate_policy(
                s.tenant,
                r#"forbid(principal, action == Action::"users:read", resource);"#,
            )
            .await
            .unwrap();
        assert_eq!(e, PolicyEffect::Forbid);
        let Err(Error::Validation(errors)) = s
            .engine
            .validate_policy(
                s.tenant,
                r#"permit(principal, action == Action::"docs:read", resource);"#,
            )
            .await
        else {
            panic!("expected a validation error");
        };
        assert_eq!(
            (errors[0].field.as_str(), errors[0].code.as_str()),
            ("source", "invalid_policy")
        );
        assert!(
            errors[0].message.contains("docs:read"),
            "{}",
            errors[0].message
        );
        let text = s.engine.schema_text(s.tenant).await.unwrap();
        assert!(text.contains("entity User in [Group, Role]"));
    }

    #[tokio::test]
    async fn the_principal_cache_is_bounded() {
        let s = setup(2);
        let others: Vec<UserId> = {
            let mut db = s.fake.db.lock().unwrap();
            let t = Tenant::new();
            (0..3)
                .map(|i| {
                    let u = t.user(&format!("u{i}"), None);
                    let id = u.user.id;
                    db.principals.insert(id, u);
                    id
                })
                .collect()
        };
        for u in &others {
            s.engine.check(s.tenant, &read_users(*u)).await.unwrap();
        }
        assert_eq!(s.loads().1, 3);
        // After u0 and u1 the cache was full: u2's load emptied it.
        s.engine
            .check(s.tenant, &read_users(others[2]))
            .await
            .unwrap();
        assert_eq!(s.loads().1, 3);
        s.engine
            .check(s.tenant, &read_users(others[0]))
            .await
            .unwrap();
        assert_eq!(s.loads().1, 4);
    }
}
