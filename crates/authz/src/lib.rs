//! Portcullis authorization decisions: may this user do `resource:action` on this resource,
//! and why. Owns the effective-permission computation over roles and nested groups, the
//! Cedar (ABAC) model of a tenant (schema, entities, policies) and the per-tenant decision
//! cache. `cedar-policy` is used nowhere else.
//!
//! # Decision rules
//!
//! 1. A principal that does not exist is denied (`PrincipalNotFound`), a deleted one
//!    `PrincipalDeleted`, one whose status is not `active` `PrincipalInactive`. No policy can
//!    override this.
//! 2. Effective permissions are the union of the permissions of
//!    (a) the user's direct role assignments that are current (`expires_at` after the time
//!    of the check: `context.now` for checks, `now` for [`Engine::effective`]) and
//!    (b) the roles of every group the user is a direct member of and of those groups'
//!    ancestors: walking up the parent chain from a direct group stops at the first
//!    inactive group (it and everything above it give nothing through that path).
//!    Inactive roles grant nothing. The super administrator role held directly and current
//!    makes the user a super admin: every permission at scope `all`.
//! 3. The tenant's active Cedar policies are evaluated: if a `forbid` applies, the check is
//!    denied (`PolicyForbid`, the first such policy by name), whatever the roles, super
//!    admins included.
//! 4. Roles: super admins are allowed (`SuperAdmin`, scope `all`). Otherwise, among the
//!    grants of `resource:action`, the widest scope that reaches the resource allows:
//!    `all` always; `department` when the resource's "department" attribute equals the
//!    principal's (non-null) department; `own` when the resource's "owner" attribute is the
//!    principal's id, or the resource is the principal (kind "users", id = theirs). For a
//!    collection (no id) any held scope allows, and `Decision::scope` is the widest held:
//!    the filter the caller applies. The explanation (`Permission`) is the grant with that
//!    scope from the role of highest priority (then role name; a direct assignment before a
//!    group).
//! 5. Otherwise a Cedar `permit` that applies allows (`PolicyPermit`, scope `all`).
//! 6. Otherwise the check is denied: `OutOfScope` when the principal holds the action at
//!    some narrower scope, else `NoPermission`.
//!
//! The Cedar schema (entity types, attributes, context and one action per catalogue entry)
//! is in [`cedar`]; [`Engine::schema_text`] gives a tenant's. Policies are evaluated only
//! for the actions their scope names (or for all, when it names none), and Cedar does not
//! run at all when no policy may apply to the action. A request gives Cedar only what the
//! action's policies can read: the context fields they mention, the resource owner's entity
//! when they look into it, and as the principal's parents the groups and roles some policy
//! names (see `cedar::Uses`).
//!
//! # Caching
//!
//! Per tenant: the compiled snapshot (roles, group tree, schema, policies by action); per
//! principal: the stored data, the rights computed from it and its Cedar entity, recomputed
//! when the time of a check crosses an assignment's expiry. [`Engine::invalidate`] drops a
//! tenant's cache (the very next check reloads from the store) and [`Engine::sync`] notices
//! changes made by other replicas through the stored authorization versions.

mod cedar;
mod decide;
mod engine;
mod fast_hash;
mod model;
mod rights;
#[cfg(test)]
mod testdata;

pub use domain::authz::{ActionKey, PermissionKey, PolicyEffect, Scope};
pub use engine::{Engine, PolicyNames};
pub use model::{Check, Context, Decision, Effective, Grant, Reason, Resource};
