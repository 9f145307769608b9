//! Nested groups of users, their members (added in bulk with an outcome per user), and the
//! roles a group confers on its members and on the members of every group below it.
//!
//! Rules, each once: names are unique in the tenant; a parent is a group of the tenant and
//! the tree has no cycle; a group with children is not deleted; `max_members` bounds the
//! members (whatever their status); granting is bounded by holding here too — whoever adds
//! a member, moves a group under a new parent or re-activates it hands the members every
//! role of the group and of the groups above it, so a user may do so only if they could
//! give each of those roles directly; nobody changes their own memberships; removing a
//! member needs the right to manage them, and revoking a group's role the right to give it;
//! a group a policy names (or one below it) changes its members, name or place only with
//! `policies:update`; the super administrator role is given to users, not groups.

use std::collections::HashMap;

use domain::audit::{actions, AuditEvent, EntityRef};
use domain::authz::{
    check_no_cycle, AvailableUsersQuery, Group, GroupMember, GroupMemberRole, GroupPatch,
    GroupSummary, MemberAddFailure, MemberAddResult, NewGroup, Role, SUPER_ADMIN_ROLE_ID,
};
use domain::store::{Named, Tx};
use domain::time::now;
use domain::users::User;
use domain::{Code, Error, GroupId, Patch, Result, RoleId, TenantId, UserId};
use serde_json::json;

use crate::access::Target;
use crate::{Actor, Core, Services};

/// What may hand the members of a group roles they did not hold through it.
enum Conferral {
    /// New members get every role of the group and of the groups above it.
    NewMembers,
    /// Moving the group under another parent hands its members the roles above the new
    /// parent; re-activating it hands them every role of the group and above.
    Change {
        parent: Patch<GroupId>,
        active: Option<bool>,
    },
}

fn group_not_found() -> Error {
    Error::NotFound { entity: "group" }
}

impl Core {
    /// Refuses to let the members of `group` gain roles the actor could not give directly.
    /// API keys and super administrators may give any role, so nothing is read for them.
    async fn may_confer(&self, actor: &Actor, group: GroupId, conferral: Conferral) -> Result<()> {
        match self.effective(actor).await? {
            None => return Ok(()),
            Some(e) if e.super_admin => return Ok(()),
            Some(_) => {}
        }
        let groups = self.store.list_groups(actor.tenant).await?;
        let mut parents: HashMap<GroupId, Option<GroupId>> = groups
            .iter()
            .map(|g| (g.group.id, g.group.parent_id))
            .collect();
        let current = groups
            .iter()
            .find(|g| g.group.id == group)
            .ok_or_else(group_not_found)?;
        let start = match conferral {
            Conferral::NewMembers => Some(group),
            Conferral::Change { parent, active } => {
                let new_parent = parent.apply(current.group.parent_id);
                parents.insert(group, new_parent);
                if active == Some(true) && !current.group.active {
                    Some(group)
                } else if new_parent != current.group.parent_id {
                    new_parent
                } else {
                    None
                }
            }
        };
        for g in Core::group_chain(&parents, start) {
            for role in self.store.list_group_roles(actor.tenant, g).await? {
                let until = self.may_grant_role(actor, &role).await?;
                // Membership does not expire: nor may what allows giving it.
                Core::within(until, None)?;
            }
        }
        Ok(())
    }

    /// Refuses a change that takes from the members of `group` the roles it confers
    /// (itself and every group above it: deleting, deactivating or moving it) unless the
    /// actor could give each of those roles.
    async fn may_withdraw(&self, actor: &Actor, group: GroupId) -> Result<()> {
        if self.effective(actor).await?.is_none_or(|e| e.super_admin) {
            return Ok(());
        }
        let groups = self.store.list_groups(actor.tenant).await?;
        let parents: HashMap<GroupId, Option<GroupId>> = groups
            .iter()
            .map(|g| (g.group.id, g.group.parent_id))
            .collect();
        for g in Core::group_chain(&parents, Some(group)) {
            for role in self.store.list_group_roles(actor.tenant, g).await? {
                self.may_grant_role(actor, &role).await?;
            }
        }
        Ok(())
    }

    /// Refuses, unless the actor may update policies, a change of the members of `group`
    /// (and so of every group above it) when a policy names one of them; `also` adds the
    /// groups above a new parent.
    async fn guard_named_chain(
        &self,
        actor: &Actor,
        group: GroupId,
        also: Option<GroupId>,
    ) -> Result<()> {
        if actor.user_id().is_none() {
            return Ok(());
        }
        let groups = self.store.list_groups(actor.tenant).await?;
        let parents: HashMap<GroupId, Option<GroupId>> = groups
            .iter()
            .map(|g| (g.group.id, g.group.parent_id))
            .collect();
        let mut ids = Core::group_chain(&parents, Some(group));
        ids.extend(Core::group_chain(&parents, also));
        let chain: Vec<&Group> = groups
            .iter()
            .filter(|g| ids.contains(&g.group.id))
            .map(|g| &g.group)
            .collect();
        self.guard_named_groups(actor, &chain).await
    }

    async fn group_name_free(
        &self,
        tx: &mut dyn Tx,
        tenant: TenantId,
        name: &str,
        except: Option<GroupId>,
    ) -> Result<()> {
        if tx
            .name_taken(Named::Group, tenant, name, except.map(GroupId::into_uuid))
            .await?
        {
            return Err(Error::refused_field(Code::GroupNameTaken, "name"));
        }
        Ok(())
    }

    /// A parent is a group of the same tenant that does not descend from `group`.
    async fn check_parent(
        &self,
        tx: &mut dyn Tx,
        tenant: TenantId,
        group: GroupId,
        parent: Option<GroupId>,
    ) -> Result<()> {
        let Some(p) = parent else {
            return Ok(());
        };
        let parents = tx.group_parents(tenant).await?;
        if !parents.contains_key(&p) {
            return Err(Error::rule("parent_id", Code::UnknownGroup));
        }
        check_no_cycle(group, Some(p), |g| parents.get(&g).copied().flatten())
    }
}

impl Services {
    /// The tenant's groups with their member counts, by name.
    pub async fn list_groups(&self, actor: &Actor) -> Result<Vec<GroupSummary>> {
        self.authorize(actor, "groups", "read", Target::Collection)
            .await?;
        self.core.store.list_groups(actor.tenant).await
    }

    pub async fn get_group(&self, actor: &Actor, id: GroupId) -> Result<GroupSummary> {
        self.authorize(actor, "groups", "read", Target::Collection)
            .await?;
        self.core.store.get_group(actor.tenant, id).await
    }

    pub async fn create_group(&self, actor: &Actor, new: NewGroup) -> Result<Group> {
        self.authorize(actor, "groups", "create", Target::Collection)
            .await?;
        let at = now();
        let g = new.into_group(actor.tenant, at);
        // A new group has no member yet: nesting it confers nothing until members are added.
        let mut tx = self.core.begin().await?;
        tx.lock_authz(actor.tenant).await?;
        tx.tenant_for_update(actor.tenant).await?;
        self.core
            .group_name_free(tx.as_mut(), actor.tenant, &g.name, None)
            .await?;
        self.core
            .check_parent(tx.as_mut(), actor.tenant, g.id, g.parent_id)
            .await?;
        tx.insert_group(&g).await?;
        tx.record(&AuditEvent::record(
            &actor.audit(),
            actor.tenant,
            actions::GROUP_CREATE,
            EntityRef::group(g.id),
            (None, Some(g.to_audit_json())),
            at,
        ))
        .await?;
        self.core.commit(tx).await?;
        Ok(g)
    }

    /// Updates a group. Moving it under another group or re-activating it hands its members
    /// the roles above it: only an actor who could give those roles may do so.
    pub async fn update_group(
        &self,
        actor: &Actor,
        id: GroupId,
        patch: GroupPatch,
    ) -> Result<Group> {
        self.authorize(actor, "groups", "update", Target::Collection)
            .await?;
        let current = self.core.store.get_group(actor.tenant, id).await?.group;
        if matches!(patch.parent_id, Patch::Set(_)) || patch.active == Some(true) {
            let conferral = Conferral::Change {
                parent: patch.parent_id.clone(),
                active: patch.active,
            };
            self.core.may_confer(actor, id, conferral).await?;
        }
        let renamed = patch
            .name
            .as_ref()
            .is_some_and(|n| n.as_str() != current.name);
        let new_parent = patch.parent_id.clone().apply(current.parent_id);
        let moved = new_parent != current.parent_id;
        if moved || (patch.active == Some(false) && current.active) {
            self.core.may_withdraw(actor, id).await?;
        }
        if renamed || moved || patch.active.is_some_and(|a| a != current.active) {
            self.core
                .guard_named_chain(actor, id, if moved { new_parent } else { None })
                .await?;
        }
        let at = now();
        let mut tx = self.core.begin().await?;
        tx.lock_authz(actor.tenant).await?;
        let before = tx
            .group(actor.tenant, id)
            .await?
            .ok_or_else(group_not_found)?;
        let after = patch.apply(&before, at);
        if after.name != before.name {
            self.core
                .group_name_free(tx.as_mut(), actor.tenant, &after.name, Some(id))
                .await?;
        }
        if after.parent_id != before.parent_id {
            self.core
                .check_parent(tx.as_mut(), actor.tenant, id, after.parent_id)
                .await?;
        }
        tx.put_group(&after).await?;
        tx.record(&AuditEvent::record(
            &actor.audit(),
            actor.tenant,
            actions::GROUP_UPDATE,
            EntityRef::group(id),
            (Some(before.to_audit_json()), Some(after.to_audit_json())),
            at,
        ))
        .await?;
        self.core.commit(tx).await?;
        Ok(after)
    }

    /// Deletes a group without child groups; its members lose the roles it conferred.
    pub async fn delete_group(&self, actor: &Actor, id: GroupId) -> Result<Group> {
        self.authorize(actor, "groups", "delete", Target::Collection)
            .await?;
        self.core.store.get_group(actor.tenant, id).await?;
        self.core.may_withdraw(actor, id).await?;
        self.core.guard_named_chain(actor, id, None).await?;
        let at = now();
        let mut tx = self.core.begin().await?;
        tx.lock_authz(actor.tenant).await?;
        let g = tx
            .group(actor.tenant, id)
            .await?
            .ok_or_else(group_not_found)?;
        if tx.group_has_children(actor.tenant, id).await? {
            return Err(Error::refused(Code::GroupHasChildren));
        }
        tx.delete_group(actor.tenant, id).await?;
        tx.record(&AuditEvent::record(
            &actor.audit(),
            actor.tenant,
            actions::GROUP_DELETE,
            EntityRef::group(id),
            (Some(g.to_audit_json()), None),
            at,
        ))
        .await?;
        self.core.commit(tx).await?;
        Ok(g)
    }

    /// The direct members of a group, by join time.
    pub async fn list_members(&self, actor: &Actor, group: GroupId) -> Result<Vec<GroupMember>> {
        self.authorize(actor, "groups", "read", Target::Collection)
            .await?;
        self.core
            .store
            .list_group_members(actor.tenant, group)
            .await
    }

    /// Adds users to a group, each on its own: one that cannot be added is reported and
    /// does not stop the others. Answers an outcome per user, in order.
    pub async fn add_members(
        &self,
        actor: &Actor,
        group: GroupId,
        users: Vec<UserId>,
        role_in_group: GroupMemberRole,
    ) -> Result<Vec<MemberAddResult>> {
        self.authorize(actor, "groups", "assign", Target::Collection)
            .await?;
        if let Some(me) = actor.user_id() {
            if users.contains(&me) {
                return Err(Error::refused_field(Code::OwnAssignment, "user_ids"));
            }
        }
        self.core
            .may_confer(actor, group, Conferral::NewMembers)
            .await?;
        self.core.guard_named_chain(actor, group, None).await?;
        let at = now();
        let mut tx = self.core.begin().await?;
        tx.lock_authz(actor.tenant).await?;
        let g = tx
            .group(actor.tenant, group)
            .await?
            .ok_or_else(group_not_found)?;
        // Every item is decided from three reads, then the additions are written together:
        // a refused item writes nothing and the others stand.
        let live = tx.live_users(actor.tenant, &users).await?;
        let mut members = tx.members_among(actor.tenant, group, &users).await?;
        let mut count = tx.count_members(actor.tenant, group).await?;
        let mut decided = Vec::with_capacity(users.len());
        let mut adding = Vec::new();
        for &user in &users {
            let outcome = if !live.contains(&user) {
                Err(MemberAddFailure::UserNotFound)
            } else if members.contains(&user) {
                Err(MemberAddFailure::AlreadyMember)
            } else if g.max_members.is_some_and(|max| count >= i64::from(max)) {
                Err(MemberAddFailure::GroupFull)
            } else {
                members.insert(user);
                count += 1;
                adding.push(user);
                Ok(())
            };
            decided.push((user, outcome));
        }
        let mut added = tx
            .insert_members(
                actor.tenant,
                group,
                &adding,
                role_in_group,
                actor.audit_actor(),
                at,
            )
            .await?;
        let mut results = Vec::with_capacity(decided.len());
        let mut records = Vec::with_capacity(adding.len());
        for (user_id, outcome) in decided {
            let outcome = match outcome {
                Ok(()) => {
                    let member = added
                        .remove(&user_id)
                        .ok_or_else(|| Error::internal("a membership just written is missing"))?;
                    records.push(AuditEvent::record(
                        &actor.audit(),
                        actor.tenant,
                        actions::GROUP_MEMBER_ADD,
                        EntityRef::group(group),
                        (None, Some(member.to_audit_json())),
                        at,
                    ));
                    Ok(member)
                }
                Err(failure) => Err(failure),
            };
            results.push(MemberAddResult { user_id, outcome });
        }
        tx.record_all(&records).await?;
        // Nothing added: nothing to commit (the transaction rolls back).
        if results.iter().any(|r| r.outcome.is_ok()) {
            self.core.commit(tx).await?;
        }
        Ok(results)
    }

    /// Changes a member's role in the group (owner, manager or member).
    pub async fn update_member(
        &self,
        actor: &Actor,
        group: GroupId,
        user: UserId,
        role_in_group: GroupMemberRole,
    ) -> Result<GroupMember> {
        self.authorize(actor, "groups", "assign", Target::Collection)
            .await?;
        self.core.refuse_own(actor, user)?;
        let mut tx = self.core.begin().await?;
        tx.lock_authz(actor.tenant).await?;
        tx.group(actor.tenant, group)
            .await?
            .ok_or_else(group_not_found)?;
        let before = tx
            .member(actor.tenant, group, user)
            .await?
            .ok_or(Error::NotFound {
                entity: "group_member",
            })?;
        tx.put_member_role(actor.tenant, group, user, role_in_group)
            .await?;
        let after = GroupMember {
            role_in_group,
            ..before.clone()
        };
        tx.record(&AuditEvent::record(
            &actor.audit(),
            actor.tenant,
            actions::GROUP_MEMBER_UPDATE,
            EntityRef::group(group),
            (Some(before.to_audit_json()), Some(after.to_audit_json())),
            now(),
        ))
        .await?;
        self.core.commit(tx).await?;
        Ok(after)
    }

    /// Removes a member from the group; they lose the roles it conferred.
    pub async fn remove_member(
        &self,
        actor: &Actor,
        group: GroupId,
        user: UserId,
    ) -> Result<GroupMember> {
        self.authorize(actor, "groups", "assign", Target::Collection)
            .await?;
        self.core.refuse_own(actor, user)?;
        self.core.store.get_group(actor.tenant, group).await?;
        if let Ok(target) = self.core.store.get_user(actor.tenant, user).await {
            self.core.may_manage(actor, &target).await?;
        }
        self.core.guard_named_chain(actor, group, None).await?;
        let mut tx = self.core.begin().await?;
        tx.lock_authz(actor.tenant).await?;
        tx.group(actor.tenant, group)
            .await?
            .ok_or_else(group_not_found)?;
        let member = tx
            .member(actor.tenant, group, user)
            .await?
            .ok_or(Error::NotFound {
                entity: "group_member",
            })?;
        tx.delete_member(actor.tenant, group, user).await?;
        tx.record(&AuditEvent::record(
            &actor.audit(),
            actor.tenant,
            actions::GROUP_MEMBER_REMOVE,
            EntityRef::group(group),
            (Some(member.to_audit_json()), None),
            now(),
        ))
        .await?;
        self.core.commit(tx).await?;
        Ok(member)
    }

    /// Non-deleted users of the tenant who are not members of the group, by name.
    pub async fn available_users(
        &self,
        actor: &Actor,
        group: GroupId,
        q: &AvailableUsersQuery,
    ) -> Result<Vec<User>> {
        self.authorize(actor, "groups", "assign", Target::Collection)
            .await?;
        self.core
            .store
            .available_users(actor.tenant, group, q)
            .await
    }

    /// The roles granted to the group itself.
    pub async fn list_group_roles(&self, actor: &Actor, group: GroupId) -> Result<Vec<Role>> {
        self.authorize(actor, "groups", "read", Target::Collection)
            .await?;
        self.core.store.list_group_roles(actor.tenant, group).await
    }

    /// Grants a role to a group: its members and those of every group below hold it.
    pub async fn grant_group_role(
        &self,
        actor: &Actor,
        group: GroupId,
        role: RoleId,
    ) -> Result<Role> {
        if role == SUPER_ADMIN_ROLE_ID {
            return Err(Error::rule("role_id", Code::SuperAdminNotForGroups));
        }
        self.authorize(actor, "groups", "assign", Target::Collection)
            .await?;
        self.authorize(actor, "roles", "assign", Target::Collection)
            .await?;
        let r = self
            .core
            .store
            .get_role(actor.tenant, role)
            .await
            .map_err(|e| match e {
                Error::NotFound { .. } => Error::rule("role_id", Code::UnknownRole),
                other => other,
            })?;
        let until = self.core.may_grant_role(actor, &r).await?;
        Core::within(until, None)?;
        self.core.guard_named_role(actor, &r.name).await?;
        let mut tx = self.core.begin().await?;
        tx.lock_authz(actor.tenant).await?;
        tx.group(actor.tenant, group)
            .await?
            .ok_or_else(group_not_found)?;
        let r = tx
            .role(actor.tenant, role)
            .await?
            .ok_or_else(|| Error::rule("role_id", Code::UnknownRole))?;
        if !tx
            .insert_group_role(actor.tenant, group, role, now())
            .await?
        {
            return Err(Error::refused_field(Code::AlreadyGranted, "role_id"));
        }
        tx.record(&AuditEvent::record(
            &actor.audit(),
            actor.tenant,
            actions::GROUP_ROLE_GRANT,
            EntityRef::group(group),
            (None, Some(json!({ "role_id": r.id, "role_name": r.name }))),
            now(),
        ))
        .await?;
        self.core.commit(tx).await?;
        Ok(r)
    }

    /// Takes a role away from a group (`group_role` not found when it was not granted).
    pub async fn revoke_group_role(
        &self,
        actor: &Actor,
        group: GroupId,
        role: RoleId,
    ) -> Result<Role> {
        self.authorize(actor, "groups", "assign", Target::Collection)
            .await?;
        self.authorize(actor, "roles", "assign", Target::Collection)
            .await?;
        let not_granted = || Error::NotFound {
            entity: "group_role",
        };
        self.core.store.get_group(actor.tenant, group).await?;
        let r = match self.core.store.get_role(actor.tenant, role).await {
            Ok(r) => r,
            Err(Error::NotFound { .. }) => return Err(not_granted()),
            Err(e) => return Err(e),
        };
        self.core.may_grant_role(actor, &r).await?;
        self.core.guard_named_role(actor, &r.name).await?;
        let mut tx = self.core.begin().await?;
        tx.lock_authz(actor.tenant).await?;
        tx.group(actor.tenant, group)
            .await?
            .ok_or_else(group_not_found)?;
        if !tx.delete_group_role(actor.tenant, group, role).await? {
            return Err(not_granted());
        }
        tx.record(&AuditEvent::record(
            &actor.audit(),
            actor.tenant,
            actions::GROUP_ROLE_REVOKE,
            EntityRef::group(group),
            (Some(json!({ "role_id": r.id, "role_name": r.name })), None),
            now(),
        ))
        .await?;
        self.core.commit(tx).await?;
        Ok(r)
    }
}
