//! Users: creation (under the quota, with the tenant's `user` role, optionally a password),
//! reads and lists (narrowed to the actor's reach), updates, soft deletion and restoration,
//! bulk seeding, and one's own profile.
//!
//! Rules, each once:
//! - The attributes the policy engine reads about a principal — department, job title,
//!   manager, clearance level, email, custom attributes — and the status are *security
//!   fields*: only API keys, the system and holders of `users:update:all` (by role; a
//!   permit policy does not count) set them, on creation and on update. A department-scoped
//!   creator creates users of their own department, without a password.
//! - Reactivating a user needs `users:update:all`; changing a status needs `users:block`.
//! - Whether an actor may manage a user is judged against the rights the user would hold if
//!   active; only platform administrators manage a super administrator (`access`).
//! - The platform's last active super administrator stays active and undeleted.
//! - A manager is a non-deleted user of the tenant, and the chain has no cycle.
//! - A user who may no longer sign in loses every session in the same transaction; a new
//!   email address is not verified, and links sent to the old one stop working.
//! - Through `/me`, a user changes their name, username, phone, language and avatar, and
//!   fills in (once) the organisational fields the tenant asks for that are not security
//!   fields (employee id, cost center).

use domain::audit::{actions, AuditContext, AuditEvent, EntityRef};
use domain::auth::{AuthSettings, NewPassword, ProfileField, RevokeScope, TokenPurpose};
use domain::authz::{RoleAssignment, USER_ROLE};
use domain::page::Page;
use domain::store::Tx;
use domain::time::{now, Timestamp};
use domain::users::{NewUser, User, UserListQuery, UserPatch, UserStatus};
use domain::{Code, Error, Result, TenantId, UserId};
use serde_json::json;

use crate::access::{Reach, Target};
use crate::signin::PasswordInput;
use crate::{Actor, ActorKind, Core, Services};

/// How often an update re-reads a user that changed between its checks and its write.
const ATTEMPTS: usize = 3;

/// One's own profile, as `/me` shows it.
#[derive(Debug, Clone)]
pub struct Profile {
    pub user: User,
    /// Profile fields the tenant asks for that are still empty.
    pub missing_profile_fields: Vec<ProfileField>,
    pub email_verified: bool,
    pub mfa_enabled: bool,
    /// Unused recovery codes, when TOTP is enrolled.
    pub recovery_codes_left: Option<u32>,
    pub password_changed_at: Option<Timestamp>,
}

/// The security fields a patch changes.
fn security_fields(p: &UserPatch, before: &User) -> Vec<&'static str> {
    let mut out = Vec::new();
    if p.email
        .as_ref()
        .is_some_and(|e| e.normalized() != before.email_normalized())
    {
        out.push("email");
    }
    if !p.department.is_keep() {
        out.push("department");
    }
    if !p.job_title.is_keep() {
        out.push("job_title");
    }
    if !p.manager_id.is_keep() {
        out.push("manager_id");
    }
    if !p.clearance_level.is_keep() {
        out.push("clearance_level");
    }
    if p.custom_attributes.is_some() {
        out.push("custom_attributes");
    }
    out
}

/// The reason a status change ends the user's sessions.
fn revoke_reason(before: &User, after: &User) -> Option<&'static str> {
    if after.is_deleted() && !before.is_deleted() {
        return Some("user_deleted");
    }
    if before.status == after.status {
        return None;
    }
    match after.status {
        UserStatus::Blocked => Some("user_blocked"),
        UserStatus::Suspended => Some("user_suspended"),
        UserStatus::Inactive => Some("user_inactive"),
        UserStatus::Pending | UserStatus::Active => None,
    }
}

/// Whether the rules judge `a` and `b` alike: they agree on everything a decision about
/// the user reads (a change elsewhere, such as a new phone number, needs no new judgment).
fn judged_alike(a: &User, b: &User) -> bool {
    a.status == b.status
        && a.deleted_at == b.deleted_at
        && a.email == b.email
        && a.department == b.department
        && a.job_title == b.job_title
        && a.manager_id == b.manager_id
        && a.clearance_level == b.clearance_level
        && a.custom_attributes == b.custom_attributes
}

fn is_active(u: &User) -> bool {
    u.status == UserStatus::Active && !u.is_deleted()
}

impl Core {
    /// Inserts a new user in `tx`, with the rules of every creation: the quota, the manager,
    /// the tenant's `user` role, and the initial password (already hashed).
    pub(crate) async fn insert_user(
        &self,
        tx: &mut dyn Tx,
        user: &User,
        password: Option<&NewPassword>,
        action: &'static str,
        ctx: &AuditContext,
    ) -> Result<()> {
        let quota = tx.user_quota(user.tenant_id).await?;
        if !quota.has_room() {
            return Err(Error::refused(Code::QuotaExceeded)
                .with_reason(json!({"max_users": quota.max_users, "users": quota.live_users})));
        }
        if let Some(m) = user.manager_id {
            if !tx.user_is_live(user.tenant_id, m).await? {
                return Err(Error::rule("manager_id", Code::UnknownManager));
            }
        }
        tx.insert_user(user).await?;
        if let Some(role) = tx.role_named(user.tenant_id, USER_ROLE).await? {
            tx.put_assignment(
                user.tenant_id,
                &RoleAssignment {
                    user_id: user.id,
                    role_id: role.id,
                    role_name: role.name,
                    assigned_by_type: domain::audit::ActorType::System,
                    assigned_by: None,
                    assigned_at: user.created_at,
                    expires_at: None,
                },
            )
            .await?;
        }
        if let Some(p) = password {
            tx.insert_password(user.tenant_id, user.id, p, user.created_at)
                .await?;
        }
        tx.record(&AuditEvent::user_change(
            ctx,
            action,
            None,
            user,
            user.created_at,
        ))
        .await
    }

    /// Refuses that `user` stop being an active holder of the super administrator role when
    /// no other active user of the platform holds it.
    pub(crate) async fn keep_a_super_admin(
        &self,
        tx: &mut dyn Tx,
        tenant: TenantId,
        user: UserId,
        at: Timestamp,
    ) -> Result<()> {
        tx.lock_super_admins().await?;
        let holders = tx.super_admin_holders(at).await?;
        let holds = holders.iter().any(|h| h.tenant == tenant && h.user == user);
        if holds && holders.len() == 1 {
            return Err(Error::refused(Code::LastSuperAdmin));
        }
        Ok(())
    }

    /// Writes a changed user with every rule that follows from the change, in `tx`: the
    /// last super administrator, the manager chain, the user's sessions and emailed links.
    pub(crate) async fn write_user_change(
        &self,
        tx: &mut dyn Tx,
        before: &User,
        after: &User,
        action: &'static str,
        ctx: &AuditContext,
    ) -> Result<()> {
        let (tenant, id, at) = (after.tenant_id, after.id, after.updated_at);
        if is_active(before) && !is_active(after) {
            self.keep_a_super_admin(tx, tenant, id, at).await?;
        }
        if after.manager_id != before.manager_id {
            if let Some(m) = after.manager_id {
                if !tx.user_is_live(tenant, m).await? {
                    return Err(Error::rule("manager_id", Code::UnknownManager));
                }
                if tx.manager_chain_reaches(tenant, m, id).await? {
                    return Err(Error::rule("manager_id", Code::ManagerCycle));
                }
            }
        }
        tx.put_user(after).await?;
        tx.record(&AuditEvent::user_change(
            ctx,
            action,
            Some(before),
            after,
            at,
        ))
        .await?;
        // A user who may no longer sign in loses their sessions; the user row stays locked
        // until the commit, so no session can be created in between.
        if let Some(reason) = revoke_reason(before, after) {
            for session in tx
                .revoke_sessions(tenant, id, RevokeScope::All, reason, at)
                .await?
            {
                tx.record(&AuditEvent::record(
                    ctx,
                    tenant,
                    actions::SESSION_REVOKE,
                    EntityRef::session(session),
                    (None, Some(json!({ "reason": reason }))),
                    at,
                ))
                .await?;
            }
        }
        // A verification was of the old address, and links sent there stop working.
        if after.email_normalized() != before.email_normalized() {
            tx.set_email_verified(tenant, id, None).await?;
            tx.void_tokens(
                tenant,
                id,
                &[
                    TokenPurpose::MagicLink,
                    TokenPurpose::PasswordReset,
                    TokenPurpose::EmailVerification,
                ],
                at,
            )
            .await?;
        }
        Ok(())
    }
}

impl Services {
    /// Creates a user, with an initial password or an imported hash when given.
    pub async fn create_user(
        &self,
        actor: &Actor,
        new: NewUser,
        status_given: bool,
        password: Option<(PasswordInput, bool)>,
    ) -> Result<User> {
        let reach = self
            .authorize(actor, "users", "create", Target::Collection)
            .await?;
        // Below `all`, users are created in the actor's own department only.
        let own_department = match &reach {
            Reach::All => None,
            Reach::Department(Some(d)) => Some(d.clone()),
            Reach::Department(None) | Reach::Own(_) => {
                return Err(Error::refused(Code::Forbidden)
                    .with_reason(json!({"needs": "users:create at scope department or all"})))
            }
        };
        if let Some(d) = &own_department {
            if new.department.as_ref().map(|l| l.as_str()) != Some(d.as_str()) {
                return Err(Error::refused_field(Code::Forbidden, "department")
                    .with_reason(json!({"department": d})));
            }
        }
        let mut security = Vec::new();
        if new.manager_id.is_some() {
            security.push("manager_id");
        }
        if new.clearance_level.is_some() {
            security.push("clearance_level");
        }
        if new.job_title.is_some() {
            security.push("job_title");
        }
        if !new.custom_attributes.as_map().is_empty() {
            security.push("custom_attributes");
        }
        if status_given {
            security.push("status");
        }
        if !security.is_empty() && !self.updates_all(actor).await? {
            return Err(Error::refused_fields(Code::SecurityField, security));
        }
        // A known password is an administrator's to set: the creator would know it.
        if let Some((input, _)) = &password {
            if reach != Reach::All {
                return Err(Error::refused_field(Code::Forbidden, "password")
                    .with_reason(json!({"needs": "users:create at scope all"})));
            }
            if matches!(input, PasswordInput::Imported(_)) {
                self.may_import_hashes(actor).await?;
            }
        }
        let at = now();
        let user = new.into_user(actor.tenant, at);
        let password = match password {
            Some((input, must_change)) => {
                let settings = self.core.store.get_auth_settings(actor.tenant).await?;
                Some(
                    self.signin
                        .admin_password(&user, &settings, input, must_change, false)
                        .await?,
                )
            }
            None => None,
        };
        let mut tx = self.core.begin().await?;
        self.core
            .insert_user(
                tx.as_mut(),
                &user,
                password.as_ref(),
                actions::USER_CREATE,
                &actor.audit(),
            )
            .await?;
        self.core.commit(tx).await?;
        Ok(user)
    }

    /// Creates a user with a password already hashed (an importer's: the hash is stored as
    /// given, without the policy check), recorded as `action` (`user.create`, or
    /// `user.register` for an account its owner created elsewhere). Only those who may
    /// store hashes may; every other rule of a creation applies.
    pub async fn create_user_with_password(
        &self,
        actor: &Actor,
        new: NewUser,
        password: Option<NewPassword>,
        action: &'static str,
    ) -> Result<User> {
        self.authorize(actor, "users", "create", Target::Collection)
            .await?;
        self.may_import_hashes(actor).await?;
        let user = new.into_user(actor.tenant, now());
        let mut tx = self.core.begin().await?;
        self.core
            .insert_user(
                tx.as_mut(),
                &user,
                password.as_ref(),
                action,
                &actor.audit(),
            )
            .await?;
        self.core.commit(tx).await?;
        Ok(user)
    }

    /// Only API keys, the system and holders of `users:create:all` store password hashes
    /// (a hash bypasses the password policy and history).
    pub(crate) async fn may_import_hashes(&self, actor: &Actor) -> Result<()> {
        match actor.kind {
            ActorKind::ApiKey { .. } | ActorKind::System => Ok(()),
            ActorKind::User(_) => {
                match self
                    .authorize(actor, "users", "create", Target::Collection)
                    .await
                {
                    Ok(Reach::All) => Ok(()),
                    Ok(_) | Err(Error::Refused { .. }) => Err(Error::refused_field(
                        Code::PasswordHashForbidden,
                        "password_hash",
                    )),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Whether the actor holds `users:update` over the whole tenant (by role, or as an API
    /// key or the system): what security fields need.
    async fn updates_all(&self, actor: &Actor) -> Result<bool> {
        match self
            .authorize(actor, "users", "update", Target::Collection)
            .await
        {
            Ok(reach) => Ok(reach == Reach::All),
            Err(Error::Refused { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// A user of the actor's tenant (deleted ones too), within the actor's reach.
    pub async fn get_user(&self, actor: &Actor, id: UserId) -> Result<User> {
        let user = self.core.store.get_user(actor.tenant, id).await?;
        self.authorize(actor, "users", "read", Target::User(&user))
            .await?;
        Ok(user)
    }

    /// A page of users, narrowed to the actor's reach: a department-wide reader lists their
    /// department only (a filter naming another finds nothing); without a department, or
    /// with `own` scope, the actor sees only themself.
    pub async fn list_users(&self, actor: &Actor, mut query: UserListQuery) -> Result<Page<User>> {
        let reach = self
            .authorize(actor, "users", "read", Target::Collection)
            .await?;
        match reach {
            Reach::All => {}
            Reach::Department(Some(department)) => {
                if query.department.as_ref().is_some_and(|d| *d != department) {
                    return Ok(Page {
                        items: Vec::new(),
                        next_cursor: None,
                    });
                }
                query.department = Some(department);
            }
            Reach::Department(None) | Reach::Own(_) => {
                query.id = actor.user_id();
            }
        }
        self.core.store.list_users(actor.tenant, &query).await
    }

    /// The user as the actor may see them before a change: not deleted, within reach of
    /// `users:update` (and `users:block` and the reactivation rule for a status change),
    /// with security fields only for those who may set them, and not outranking the actor.
    async fn check_update(&self, actor: &Actor, current: &User, patch: &UserPatch) -> Result<()> {
        let reach = self
            .authorize(actor, "users", "update", Target::User(current))
            .await?;
        if let Some(status) = patch.status.filter(|s| *s != current.status) {
            self.authorize(actor, "users", "block", Target::User(current))
                .await?;
            if status == UserStatus::Active && reach != Reach::All {
                return Err(Error::refused_field(Code::SecurityField, "status"));
            }
        }
        let security = security_fields(patch, current);
        if !security.is_empty() && reach != Reach::All {
            return Err(Error::refused_fields(Code::SecurityField, security));
        }
        self.core.may_manage(actor, current).await
    }

    /// Updates a user partially. With `expected_version` (`If-Match`), only if the user is
    /// still at that version.
    pub async fn update_user(
        &self,
        actor: &Actor,
        id: UserId,
        patch: UserPatch,
        expected_version: Option<i64>,
    ) -> Result<User> {
        for _ in 0..ATTEMPTS {
            let current = self.live_user(actor.tenant, id).await?;
            check_version(expected_version, current.version)?;
            self.check_update(actor, &current, &patch).await?;
            let at = now();
            let mut tx = self.core.begin().await?;
            // A user's status, department and manager feed decisions.
            tx.lock_authz(actor.tenant).await?;
            let before = live(tx.user_for_update(actor.tenant, id).await?)?;
            check_version(expected_version, before.version)?;
            if !judged_alike(&before, &current) {
                // What the judgment read changed since: judge it again.
                continue;
            }
            let after = patch.clone().apply(before.clone(), at)?;
            self.core
                .write_user_change(
                    tx.as_mut(),
                    &before,
                    &after,
                    actions::USER_UPDATE,
                    &actor.audit(),
                )
                .await?;
            self.core.commit(tx).await?;
            return Ok(after);
        }
        Err(Error::Busy {
            retry_after: std::time::Duration::from_secs(1),
        })
    }

    /// Soft-deletes a user (a deleted user is `NotFound`).
    pub async fn delete_user(
        &self,
        actor: &Actor,
        id: UserId,
        expected_version: Option<i64>,
    ) -> Result<User> {
        for _ in 0..ATTEMPTS {
            let current = self.live_user(actor.tenant, id).await?;
            check_version(expected_version, current.version)?;
            self.authorize(actor, "users", "delete", Target::User(&current))
                .await?;
            self.core.may_manage(actor, &current).await?;
            let at = now();
            let mut tx = self.core.begin().await?;
            tx.lock_authz(actor.tenant).await?;
            let before = live(tx.user_for_update(actor.tenant, id).await?)?;
            check_version(expected_version, before.version)?;
            if !judged_alike(&before, &current) {
                continue;
            }
            let after = before.soft_deleted(at);
            self.core
                .write_user_change(
                    tx.as_mut(),
                    &before,
                    &after,
                    actions::USER_DELETE,
                    &actor.audit(),
                )
                .await?;
            self.core.commit(tx).await?;
            return Ok(after);
        }
        Err(Error::Busy {
            retry_after: std::time::Duration::from_secs(1),
        })
    }

    /// Undoes a soft delete (`not_deleted` for a user who is not deleted), within the quota.
    pub async fn restore_user(&self, actor: &Actor, id: UserId) -> Result<User> {
        let current = self.core.store.get_user(actor.tenant, id).await?;
        self.authorize(actor, "users", "delete", Target::User(&current))
            .await?;
        self.core.may_manage(actor, &current).await?;
        let at = now();
        let mut tx = self.core.begin().await?;
        tx.lock_authz(actor.tenant).await?;
        let quota = tx.user_quota(actor.tenant).await?;
        let before = tx
            .user_for_update(actor.tenant, id)
            .await?
            .ok_or(Error::NotFound { entity: "user" })?;
        let after = before.restored(at)?;
        if !quota.has_room() {
            return Err(Error::refused(Code::QuotaExceeded)
                .with_reason(json!({"max_users": quota.max_users, "users": quota.live_users})));
        }
        self.core
            .write_user_change(
                tx.as_mut(),
                &before,
                &after,
                actions::USER_RESTORE,
                &actor.audit(),
            )
            .await?;
        self.core.commit(tx).await?;
        Ok(after)
    }

    /// Inserts many users at once for the data generator (the operator only), each with the
    /// tenant's `user` role; one audit event records the batch. The quota is not enforced.
    pub async fn seed_users(&self, actor: &Actor, users: Vec<User>) -> Result<u64> {
        if !matches!(actor.kind, ActorKind::System) {
            return Err(Error::refused(Code::PlatformAdminRequired));
        }
        let at = now();
        let mut tx = self.core.begin().await?;
        tx.tenant_for_update(actor.tenant).await?;
        let role = tx.role_named(actor.tenant, USER_ROLE).await?.map(|r| r.id);
        let inserted = tx.insert_users(actor.tenant, &users, role, at).await?;
        tx.record(&AuditEvent::record(
            &actor.audit(),
            actor.tenant,
            actions::USER_SEED,
            EntityRef::none("user"),
            (None, Some(json!({ "count": inserted }))),
            at,
        ))
        .await?;
        self.core.commit(tx).await?;
        Ok(inserted)
    }

    // ---------------------------------------------------------------------------------
    // One's own profile
    // ---------------------------------------------------------------------------------

    /// The signed-in user's profile.
    pub async fn profile(&self, actor: &Actor) -> Result<Profile> {
        let id = signed_in(actor)?;
        let settings = self.core.store.get_auth_settings(actor.tenant).await?;
        self.profile_of(actor.tenant, id, &settings).await
    }

    async fn profile_of(
        &self,
        tenant: TenantId,
        id: UserId,
        settings: &AuthSettings,
    ) -> Result<Profile> {
        let store = &self.core.store;
        let user = store.get_user(tenant, id).await?;
        let creds = store.get_credentials(tenant, id).await?;
        let recovery_codes_left = if creds.totp_enabled {
            Some(store.count_recovery_codes(tenant, id).await?)
        } else {
            None
        };
        Ok(Profile {
            missing_profile_fields: settings.missing_profile_fields(&user),
            email_verified: creds.email_verified_at.is_some(),
            mfa_enabled: creds.totp_enabled,
            recovery_codes_left,
            password_changed_at: creds.password_changed_at,
            user,
        })
    }

    /// Changes one's own profile: name, username, phone, language and avatar always;
    /// employee id and cost center only when the tenant asks for them and they are empty;
    /// nothing else (`field_not_self_service`, naming the fields).
    pub async fn update_profile(&self, actor: &Actor, patch: UserPatch) -> Result<Profile> {
        let id = signed_in(actor)?;
        let settings = self.core.store.get_auth_settings(actor.tenant).await?;
        let current = self.live_user(actor.tenant, id).await?;
        let mut refused = security_fields(&patch, &current);
        if patch.status.is_some() {
            refused.push("status");
        }
        let asks = |f: ProfileField| settings.profile_fields.contains(&f);
        // Profile completion: a field the tenant asks for, empty, given a value.
        let fills_employee_id = asks(ProfileField::EmployeeId)
            && current.employee_id.is_none()
            && patch.employee_id.is_set();
        if !patch.employee_id.is_keep() && !fills_employee_id {
            refused.push("employee_id");
        }
        let fills_cost_center = asks(ProfileField::CostCenter)
            && current.cost_center.is_none()
            && patch.cost_center.is_set();
        if !patch.cost_center.is_keep() && !fills_cost_center {
            refused.push("cost_center");
        }
        if !refused.is_empty() {
            return Err(Error::refused_fields(Code::FieldNotSelfService, refused));
        }
        let at = now();
        let mut tx = self.core.begin().await?;
        let before = live(tx.user_for_update(actor.tenant, id).await?)?;
        let after = patch.apply(before.clone(), at)?;
        self.core
            .write_user_change(
                tx.as_mut(),
                &before,
                &after,
                actions::USER_UPDATE,
                &actor.audit(),
            )
            .await?;
        self.core.commit(tx).await?;
        self.profile_of(actor.tenant, id, &settings).await
    }

    /// A user of the tenant who is not deleted.
    pub(crate) async fn live_user(&self, tenant: TenantId, id: UserId) -> Result<User> {
        live(Some(self.core.store.get_user(tenant, id).await?))
    }
}

/// The signed-in user an actor is (`user_session_required` for keys and the system).
pub(crate) fn signed_in(actor: &Actor) -> Result<UserId> {
    actor
        .user_id()
        .ok_or(Error::refused(Code::UserSessionRequired))
}

fn live(user: Option<User>) -> Result<User> {
    user.filter(|u| !u.is_deleted())
        .ok_or(Error::NotFound { entity: "user" })
}

fn check_version(expected: Option<i64>, current: i64) -> Result<()> {
    match expected {
        Some(expected) if expected != current => Err(Error::PreconditionFailed {
            entity: "user",
            expected,
            current,
        }),
        _ => Ok(()),
    }
}
