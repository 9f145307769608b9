//! The Cedar model of a tenant: its schema (the one place that defines what policies may
//! refer to), the entities and context of a request, its compiled policies indexed by
//! action, and the validation of a policy's source.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::RwLock;

use cedar_policy::{
    Authorizer, Effect, Entities, Entity, EntityId, EntityTypeName, EntityUid, PolicySet, Request,
    RestrictedExpression, Schema, ValidationMode, Validator,
};
use chrono::{Datelike, Timelike};
use domain::authz::{ActionKey, PolicyEffect, PrincipalData, BUILT_IN_RESOURCES};
use domain::{Error, PolicyId};
use miette::Diagnostic;

use crate::decide::ResourceAttrs;
use crate::fast_hash::{FastMap, FastSet};
use crate::model::{Context, Resource};
use crate::rights::Rights;

/// The fixed part of every tenant's schema; the actions follow it.
const SCHEMA_HEAD: &str = r#"// The Cedar schema of a Portcullis tenant: what its policies may refer to.
//
// principal: the User who asks, `User::"<user id>"`. Its parents (`principal in ...`) are
//   the groups it belongs to directly or through a group's ancestors, by group NAME
//   (`principal in Group::"engineering"`), and its effective roles by role NAME
//   (`principal in Role::"admin"`). `principal.manager` is the direct manager and
//   `principal.managers` every manager up the chain (at most 64 levels):
//   `principal.managers.contains(User::"<id>")` is "in that user's org tree". Managers are
//   an attribute, not parents, so that a resource owner who reports to the principal does
//   not inherit the principal's groups and roles.
// action: `Action::"<resource>:<action>"`, e.g. `Action::"users:read"`.
// resource: the object of the check, `Resource::"<kind>/<id>"`, or `Resource::"<kind>"`
//   for a collection. Attributes other than owner, department and classification are
//   tags, always strings: `resource.hasTag("x") && resource.getTag("x") == "y"`.
// context.now: the time of the request in the caller's UTC offset (weekday 1 = Monday ...
//   7 = Sunday; date is YYYY-MM-DD; unix is seconds since 1970).

type Now = {
  hour: Long,
  minute: Long,
  weekday: Long,
  date: String,
  unix: Long,
};

type Context = {
  now: Now,
  ip?: ipaddr,
  risk_score: Long,
  mfa_level: Long,
  device_trusted: Bool,
};

entity Role;
entity Group in [Group];
entity User in [Group, Role] = {
  email: String,
  department?: String,
  job_title?: String,
  clearance_level: Long,
  gdpr_consent: Bool,
  manager?: User,
  managers: Set<User>,
  status: String,
  roles: Set<String>,
};
entity Resource = {
  kind: String,
  id?: String,
  owner?: User,
  department?: String,
  classification?: Long,
} tags String;
"#;

/// The schema text of a tenant whose own actions are `custom` (built-in ones are added).
pub(crate) fn schema_text(custom: &BTreeSet<ActionKey>) -> String {
    let mut out = String::from(SCHEMA_HEAD);
    out.push_str("\naction\n");
    let actions = all_actions(custom);
    for (i, a) in actions.iter().enumerate() {
        let sep = if i + 1 == actions.len() { "" } else { "," };
        // Action keys are lower-case identifiers and a colon: nothing to escape.
        let _ = writeln!(out, "  \"{a}\"{sep}");
    }
    out.push_str("  appliesTo {\n");
    out.push_str("    principal: [User],\n");
    out.push_str("    resource: [Resource],\n");
    out.push_str("    context: Context,\n");
    out.push_str("  };\n");
    out
}

/// Every action of a tenant whose own actions are `custom`: the built-in ones and those.
pub(crate) fn all_actions(custom: &BTreeSet<ActionKey>) -> Vec<ActionKey> {
    let mut all: BTreeSet<ActionKey> = custom.clone();
    for (resource, actions, _) in BUILT_IN_RESOURCES {
        for action in *actions {
            if let Ok(key) = ActionKey::parse("action", &format!("{resource}:{action}")) {
                all.insert(key);
            }
        }
    }
    all.into_iter().collect()
}

/// The entity type names, parsed once.
pub(crate) struct Names {
    user: EntityTypeName,
    group: EntityTypeName,
    role: EntityTypeName,
    resource: EntityTypeName,
    action: EntityTypeName,
}

impl Names {
    fn new() -> Result<Self, Error> {
        let parse = |s: &str| EntityTypeName::from_str(s).map_err(Error::internal);
        Ok(Self {
            user: parse("User")?,
            group: parse("Group")?,
            role: parse("Role")?,
            resource: parse("Resource")?,
            action: parse("Action")?,
        })
    }

    pub fn user(&self, id: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(self.user.clone(), EntityId::new(id))
    }

    fn uid(&self, ty: &EntityTypeName, id: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(id))
    }
}

/// A user as Cedar sees it: its entity, and an entity store holding it, to which a
/// request adds its resource.
pub(crate) struct CedarPrincipal {
    pub entity: Entity,
    entities: Entities,
}

/// A tenant's compiled Cedar state.
pub(crate) struct TenantCedar {
    pub schema_text: String,
    pub validator: Validator,
    pub names: Names,
    actions: FastMap<ActionKey, EntityUid>,
    pub policies: PolicyIndex,
    /// `ip` values by address (see `ip_expr`). SipHash: the addresses come from requests.
    ips: RwLock<HashMap<IpAddr, RestrictedExpression>>,
}

/// At most this many addresses are kept per tenant; the cache is emptied when full.
const MAX_CACHED_IPS: usize = 16_384;

impl TenantCedar {
    pub fn compile(
        custom: &BTreeSet<ActionKey>,
        policies: &[domain::authz::Policy],
    ) -> Result<Self, Error> {
        let names = Names::new()?;
        let schema_text = schema_text(custom);
        let (schema, _warnings) =
            Schema::from_cedarschema_str(&schema_text).map_err(Error::internal)?;
        let actions = all_actions(custom)
            .into_iter()
            .map(|a| {
                let uid = names.uid(&names.action, &a.to_string());
                (a, uid)
            })
            .collect();
        Ok(Self {
            schema_text,
            validator: Validator::new(schema),
            policies: PolicyIndex::new(policies)?,
            names,
            actions,
            ips: RwLock::new(HashMap::new()),
        })
    }

    /// The context value of an IP address. `RestrictedExpression::new_ip` parses the name of
    /// Cedar's `ip` extension function with the full policy parser at every call (more than
    /// a microsecond), and a tenant's checks come from a limited set of addresses.
    fn ip_expr(&self, ip: IpAddr) -> RestrictedExpression {
        let cached = self
            .ips
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ip)
            .cloned();
        if let Some(e) = cached {
            return e;
        }
        let e = RestrictedExpression::new_ip(ip.to_string());
        let mut cache = self.ips.write().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED_IPS {
            cache.clear();
        }
        cache.insert(ip, e.clone());
        e
    }

    /// The request and entities Cedar evaluates a check with. `owner` is the Cedar entity of
    /// the resource's owner when that is a user of the tenant other than the principal (and
    /// the policies need it); the context holds what `uses` says the policies read.
    #[allow(clippy::too_many_arguments)]
    pub fn input(
        &self,
        principal: &CedarPrincipal,
        action: &ActionKey,
        resource: &Resource,
        attrs: &ResourceAttrs,
        context: &Context,
        owner: Option<&Entity>,
        uses: Uses,
    ) -> Result<(Request, Entities), Error> {
        let action = self
            .actions
            .get(action)
            .cloned()
            .unwrap_or_else(|| self.names.uid(&self.names.action, &action.to_string()));
        let resource = self.resource_entity(resource, attrs)?;
        let request = Request::new(
            principal.entity.uid(),
            action,
            resource.uid(),
            self.context(context, uses.context)?,
            None,
        )
        .map_err(Error::internal)?;
        let mut added = vec![resource];
        if let Some(o) = owner.filter(|o| o.uid() != principal.entity.uid()) {
            added.push(o.clone());
        }
        // Adding to the principal's prepared store costs a fraction of building one anew
        // (Cedar computes the transitive closure of the whole store it builds).
        let entities = principal
            .entities
            .clone()
            .add_entities(added, None)
            .map_err(Error::internal)?;
        Ok((request, entities))
    }

    /// The Cedar entity of a user: attributes, and as parents its managers, the groups it
    /// reaches and its effective roles; with the entity store of requests it makes.
    pub fn principal(&self, p: &PrincipalData, rights: &Rights) -> Result<CedarPrincipal, Error> {
        let entity = self.principal_entity(p, rights)?;
        let entities = Entities::from_entities([entity.clone()], None).map_err(Error::internal)?;
        Ok(CedarPrincipal { entity, entities })
    }

    fn principal_entity(&self, p: &PrincipalData, rights: &Rights) -> Result<Entity, Error> {
        let n = &self.names;
        let u = &p.user;
        let mut attrs: Vec<(String, RestrictedExpression)> = vec![
            (
                "email".into(),
                RestrictedExpression::new_string(u.email.clone()),
            ),
            (
                "clearance_level".into(),
                RestrictedExpression::new_long(u.clearance_level.map_or(0, i64::from)),
            ),
            (
                "gdpr_consent".into(),
                RestrictedExpression::new_bool(gdpr_consent(u)),
            ),
            (
                "status".into(),
                RestrictedExpression::new_string(u.status.as_str().to_owned()),
            ),
            (
                "roles".into(),
                RestrictedExpression::new_set(
                    rights
                        .role_names
                        .iter()
                        .map(|r| RestrictedExpression::new_string(r.clone())),
                ),
            ),
        ];
        if let Some(d) = &u.department {
            attrs.push((
                "department".into(),
                RestrictedExpression::new_string(d.clone()),
            ));
        }
        if let Some(j) = &u.job_title {
            attrs.push((
                "job_title".into(),
                RestrictedExpression::new_string(j.clone()),
            ));
        }
        if let Some(m) = u.manager_id {
            attrs.push((
                "manager".into(),
                RestrictedExpression::new_entity_uid(n.user(&m.to_string())),
            ));
        }
        attrs.push((
            "managers".into(),
            RestrictedExpression::new_set(
                p.manager_chain
                    .iter()
                    .map(|m| RestrictedExpression::new_entity_uid(n.user(&m.to_string()))),
            ),
        ));
        // Only the groups and roles some policy names can matter: Cedar cannot make an
        // entity from a string, and no attribute holds a group or a role, so `principal in
        // X` can only be asked of a literal X. Fewer parents make every request's entity
        // store cheaper (Cedar recomputes the transitive closure for each).
        let named = &self.policies.named;
        let parents = rights
            .group_names
            .iter()
            .map(|g| n.uid(&n.group, g))
            .chain(rights.role_names.iter().map(|r| n.uid(&n.role, r)))
            .filter(|uid| named.contains(uid));
        Entity::new_with_tags(n.user(&u.id.to_string()), attrs, parents, [])
            .map_err(Error::internal)
    }

    fn resource_entity(&self, r: &Resource, attrs: &ResourceAttrs) -> Result<Entity, Error> {
        let n = &self.names;
        let id = match &r.id {
            Some(id) => format!("{}/{id}", r.kind),
            None => r.kind.clone(),
        };
        let mut fields = vec![(
            "kind".to_owned(),
            RestrictedExpression::new_string(r.kind.clone()),
        )];
        if let Some(id) = &r.id {
            fields.push(("id".into(), RestrictedExpression::new_string(id.clone())));
        }
        if let Some(o) = &attrs.owner {
            fields.push((
                "owner".into(),
                RestrictedExpression::new_entity_uid(n.user(o)),
            ));
        }
        if let Some(d) = &attrs.department {
            fields.push((
                "department".into(),
                RestrictedExpression::new_string(d.clone()),
            ));
        }
        if let Some(c) = attrs.classification {
            fields.push(("classification".into(), RestrictedExpression::new_long(c)));
        }
        let tags = attrs
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), RestrictedExpression::new_string(v.clone())));
        Entity::new_with_tags(n.uid(&n.resource, &id), fields, [], tags).map_err(Error::internal)
    }
}

/// `custom_attributes.gdpr_consent == true`, or a `gdpr_consent_at` timestamp string.
fn gdpr_consent(u: &domain::users::User) -> bool {
    let a = &u.custom_attributes;
    a.get("gdpr_consent").and_then(|v| v.as_bool()) == Some(true)
        || a.get("gdpr_consent_at").is_some_and(|v| v.is_string())
}

impl TenantCedar {
    /// The request's context, with only the fields in `fields` (a policy that does not read
    /// a field cannot tell it is missing).
    fn context(&self, c: &Context, fields: ContextFields) -> Result<cedar_policy::Context, Error> {
        let mut pairs = Vec::with_capacity(5);
        if fields.has(ContextFields::NOW) {
            pairs.push(("now".to_owned(), now_record(c)?));
        }
        if fields.has(ContextFields::RISK_SCORE) {
            pairs.push((
                "risk_score".to_owned(),
                RestrictedExpression::new_long(c.risk_score),
            ));
        }
        if fields.has(ContextFields::MFA_LEVEL) {
            pairs.push((
                "mfa_level".to_owned(),
                RestrictedExpression::new_long(c.mfa_level),
            ));
        }
        if fields.has(ContextFields::DEVICE_TRUSTED) {
            pairs.push((
                "device_trusted".to_owned(),
                RestrictedExpression::new_bool(c.device_trusted),
            ));
        }
        if let Some(ip) = c.ip.filter(|_| fields.has(ContextFields::IP)) {
            pairs.push(("ip".to_owned(), self.ip_expr(ip)));
        }
        cedar_policy::Context::from_pairs(pairs).map_err(Error::internal)
    }
}

fn now_record(c: &Context) -> Result<RestrictedExpression, Error> {
    let t = c.now;
    RestrictedExpression::new_record([
        (
            "hour".to_owned(),
            RestrictedExpression::new_long(i64::from(t.hour())),
        ),
        (
            "minute".to_owned(),
            RestrictedExpression::new_long(i64::from(t.minute())),
        ),
        (
            "weekday".to_owned(),
            RestrictedExpression::new_long(i64::from(t.weekday().number_from_monday())),
        ),
        (
            "date".to_owned(),
            RestrictedExpression::new_string(t.format("%Y-%m-%d").to_string()),
        ),
        (
            "unix".to_owned(),
            RestrictedExpression::new_long(t.timestamp()),
        ),
    ])
    .map_err(Error::internal)
}

/// Fields of the context, as a set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ContextFields(u8);

impl ContextFields {
    pub const NOW: Self = Self(1);
    pub const IP: Self = Self(2);
    pub const RISK_SCORE: Self = Self(4);
    pub const MFA_LEVEL: Self = Self(8);
    pub const DEVICE_TRUSTED: Self = Self(16);
    pub const ALL: Self = Self(31);

    fn named(name: &str) -> Self {
        match name {
            "now" => Self::NOW,
            "ip" => Self::IP,
            "risk_score" => Self::RISK_SCORE,
            "mfa_level" => Self::MFA_LEVEL,
            "device_trusted" => Self::DEVICE_TRUSTED,
            // Not in the schema: never provided, so nothing to add.
            _ => Self(0),
        }
    }

    pub fn has(self, f: Self) -> bool {
        self.0 & f.0 == f.0
    }

    fn add(&mut self, f: Self) {
        self.0 |= f.0;
    }
}

/// What a set of policies reads besides the principal and the resource: the context fields,
/// and whether it looks into the resource owner's entity (`resource.owner.manager`,
/// `resource.owner in ...`; comparing `resource.owner == principal` needs only its id).
/// A check builds only that: the context's IP address and the owner's entity (loaded, then
/// added to the entity store) are its most expensive parts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Uses {
    pub context: ContextFields,
    pub owner_entity: bool,
}

impl Uses {
    fn union(self, other: Self) -> Self {
        let mut context = self.context;
        context.add(other.context);
        Self {
            context,
            owner_entity: self.owner_entity || other.owner_entity,
        }
    }

    /// What one policy reads, from its JSON form (Cedar's EST). When that form cannot be
    /// had, everything.
    fn of(policy: &cedar_policy::Policy) -> Self {
        let Ok(est) = policy.to_json() else {
            return Self {
                context: ContextFields::ALL,
                owner_entity: true,
            };
        };
        let mut uses = Self::default();
        uses.walk(&est, false);
        uses
    }

    /// `operand_of_eq`: the node is a direct operand of `==` or `!=`.
    fn walk(&mut self, node: &serde_json::Value, operand_of_eq: bool) {
        use serde_json::Value;
        match node {
            Value::Object(map) => {
                if is_resource_owner(node) {
                    self.owner_entity |= !operand_of_eq;
                    return;
                }
                if let Some((op, inner)) = map.iter().next().filter(|_| map.len() == 1) {
                    match op.as_str() {
                        // `context.x`, `context has x` (also `context has x.y`).
                        "." | "has" => {
                            if let Some(left) = inner.get("left") {
                                if is_var(left, "context") {
                                    let attr = match inner.get("attr") {
                                        Some(Value::String(a)) => Some(a.as_str()),
                                        Some(Value::Array(path)) => {
                                            path.first().and_then(Value::as_str)
                                        }
                                        _ => None,
                                    };
                                    match attr {
                                        Some(a) => self.context.add(ContextFields::named(a)),
                                        None => self.context = ContextFields::ALL,
                                    }
                                } else {
                                    self.walk(left, false);
                                }
                                return;
                            }
                        }
                        // The context as a whole.
                        "Var" => {
                            if inner.as_str() == Some("context") {
                                self.context = ContextFields::ALL;
                            }
                            return;
                        }
                        "==" | "!=" => {
                            for side in ["left", "right"] {
                                if let Some(e) = inner.get(side) {
                                    self.walk(e, true);
                                }
                            }
                            return;
                        }
                        _ => {}
                    }
                }
                for v in map.values() {
                    self.walk(v, false);
                }
            }
            Value::Array(items) => {
                for v in items {
                    self.walk(v, false);
                }
            }
            _ => {}
        }
    }
}

fn is_var(node: &serde_json::Value, var: &str) -> bool {
    node.get("Var").and_then(serde_json::Value::as_str) == Some(var)
}

/// `resource.owner`.
fn is_resource_owner(node: &serde_json::Value) -> bool {
    node.get(".").is_some_and(|g| {
        g.get("attr").and_then(serde_json::Value::as_str) == Some("owner")
            && g.get("left").is_some_and(|l| is_var(l, "resource"))
    })
}

/// The policies that may apply to one action: the forbids, and all of them; None when there
/// are none.
#[derive(Default)]
pub(crate) struct ActionPolicies {
    /// When the roles allow, only a forbid can change the decision.
    pub forbid: Option<PolicySet>,
    /// When they do not, one evaluation tells whether a forbid or a permit applies.
    pub all: Option<PolicySet>,
    /// What they read.
    pub uses: Uses,
}

impl ActionPolicies {
    pub fn is_empty(&self) -> bool {
        self.all.is_none()
    }
}

/// A policy that applies, from an evaluation.
pub(crate) struct Satisfied {
    pub effect: Effect,
    pub id: PolicyId,
    pub name: String,
}

/// A tenant's active policies, compiled and indexed by action: a policy whose action scope
/// names actions (`action == ...`, `action in [...]`) is evaluated only for them; one
/// without an action constraint for every action.
#[derive(Default)]
pub(crate) struct PolicyIndex {
    by_action: FastMap<ActionKey, ActionPolicies>,
    any: ActionPolicies,
    /// Cedar policy id (the stored uuid) → the stored id and name.
    names: FastMap<cedar_policy::PolicyId, (PolicyId, String)>,
    /// The entities the policies name (`Group::"x"`, `Role::"y"`, ...).
    pub named: FastSet<EntityUid>,
}

impl PolicyIndex {
    fn new(stored: &[domain::authz::Policy]) -> Result<Self, Error> {
        #[derive(Default)]
        struct Lists {
            forbid: Vec<cedar_policy::Policy>,
            permit: Vec<cedar_policy::Policy>,
            uses: Uses,
        }
        impl Lists {
            fn push(&mut self, p: cedar_policy::Policy, uses: Uses) {
                self.uses = self.uses.union(uses);
                match p.effect() {
                    Effect::Forbid => self.forbid.push(p),
                    Effect::Permit => self.permit.push(p),
                }
            }
            fn compile(self) -> Result<ActionPolicies, Error> {
                let all: Vec<_> = self.forbid.iter().chain(&self.permit).cloned().collect();
                Ok(ActionPolicies {
                    forbid: set(self.forbid)?,
                    all: set(all)?,
                    uses: self.uses,
                })
            }
        }
        fn set(list: Vec<cedar_policy::Policy>) -> Result<Option<PolicySet>, Error> {
            if list.is_empty() {
                return Ok(None);
            }
            PolicySet::from_policies(list)
                .map(Some)
                .map_err(Error::internal)
        }

        let mut any = Lists::default();
        let mut specific: FastMap<ActionKey, Lists> = FastMap::default();
        let mut names = FastMap::default();
        let mut named = FastSet::default();
        for p in stored.iter().filter(|p| p.active) {
            let id = cedar_policy::PolicyId::new(p.id.to_string());
            let policy = match cedar_policy::Policy::parse(Some(id.clone()), &p.source) {
                Ok(policy) => policy,
                Err(e) => {
                    // Sources are validated when saved; a stored one that no longer parses
                    // (a Cedar upgrade? an edit behind the API's back?) cannot be evaluated.
                    // Fail closed: a broken permit allows nothing, a broken forbid forbids
                    // everything (API keys, which policies do not bind, can repair it).
                    tracing::error!(policy_id = %p.id, name = %p.name, error = %e,
                        "stored policy does not parse");
                    if p.effect != PolicyEffect::Forbid {
                        continue;
                    }
                    cedar_policy::Policy::parse(
                        Some(id.clone()),
                        "forbid (principal, action, resource);",
                    )
                    .map_err(Error::internal)?
                }
            };
            names.insert(id, (p.id, p.name.clone()));
            named.extend(policy.entity_literals());
            let uses = Uses::of(&policy);
            let actions = match policy.action_constraint() {
                cedar_policy::ActionConstraint::Any => None,
                cedar_policy::ActionConstraint::Eq(uid) => Some(vec![uid]),
                cedar_policy::ActionConstraint::In(uids) => Some(uids),
            };
            match actions {
                None => any.push(policy, uses),
                Some(uids) => {
                    let keys: HashSet<ActionKey> = uids
                        .iter()
                        .filter(|u| u.type_name().to_string() == "Action")
                        .filter_map(|u| ActionKey::parse("action", u.id().unescaped()).ok())
                        .collect();
                    // The policy is evaluated only for the actions it names, for which its
                    // action constraint holds: it is left out (Cedar would build the list of
                    // `action in [...]` anew at every evaluation).
                    let unconstrained = without_action_constraint(&policy).unwrap_or(policy);
                    for key in keys {
                        specific
                            .entry(key)
                            .or_default()
                            .push(unconstrained.clone(), uses);
                    }
                }
            }
        }
        let mut by_action = FastMap::default();
        for (key, mut lists) in specific {
            for p in any.forbid.iter().chain(&any.permit) {
                lists.push(p.clone(), any.uses);
            }
            by_action.insert(key, lists.compile()?);
        }
        Ok(Self {
            by_action,
            any: any.compile()?,
            names,
            named,
        })
    }

    pub fn for_action(&self, action: &ActionKey) -> &ActionPolicies {
        self.by_action.get(action).unwrap_or(&self.any)
    }

    /// Evaluates `set`: the policy that decided (the first by name among those that did),
    /// None when none applies.
    pub fn satisfied(
        &self,
        authorizer: &Authorizer,
        set: &PolicySet,
        (request, entities): &(Request, Entities),
    ) -> Option<Satisfied> {
        let response = authorizer.is_authorized(request, set, entities);
        for e in response.diagnostics().errors() {
            tracing::debug!(error = %e, "a policy could not be evaluated for this request");
        }
        // A satisfied forbid denies with the forbids as reasons; else satisfied permits
        // allow with theirs; else the reasons are empty.
        let effect = match response.decision() {
            cedar_policy::Decision::Allow => Effect::Permit,
            cedar_policy::Decision::Deny => Effect::Forbid,
        };
        response
            .diagnostics()
            .reason()
            .filter_map(|id| self.names.get(id))
            .min_by(|a, b| a.1.cmp(&b.1))
            .map(|(id, name)| Satisfied {
                effect,
                id: *id,
                name: name.clone(),
            })
    }
}

/// The policy with its action scope made `action` (any action), or None if Cedar cannot
/// rebuild it.
fn without_action_constraint(p: &cedar_policy::Policy) -> Option<cedar_policy::Policy> {
    let mut est = p.to_json().ok()?;
    *est.get_mut("action")? = serde_json::json!({ "op": "All" });
    cedar_policy::Policy::from_json(Some(p.id().clone()), est).ok()
}

/// Parses a source that must hold exactly one static policy and validates it (strict)
/// against the schema; the error lists Cedar's messages with their positions.
pub(crate) fn check_policy(validator: &Validator, source: &str) -> Result<PolicyEffect, String> {
    let set = PolicySet::from_str(source)
        .map_err(|errs| explain(errs.iter().map(|e| e as &dyn Diagnostic), source))?;
    if set.templates().next().is_some() {
        return Err(
            "templates (policies with ?principal or ?resource slots) are not supported".into(),
        );
    }
    let policies: Vec<_> = set.policies().collect();
    let [policy] = policies.as_slice() else {
        return Err(format!(
            "a policy holds exactly one permit or forbid statement; this source holds {}",
            policies.len()
        ));
    };
    let result = validator.validate(&set, ValidationMode::Strict);
    if !result.validation_passed() {
        return Err(explain(
            result.validation_errors().map(|e| e as &dyn Diagnostic),
            source,
        ));
    }
    Ok(match policy.effect() {
        Effect::Permit => PolicyEffect::Permit,
        Effect::Forbid => PolicyEffect::Forbid,
    })
}

/// Cedar's messages, each once (the validator repeats a message for every action a policy
/// may apply to), at most five.
fn explain<'a>(errors: impl Iterator<Item = &'a dyn Diagnostic>, source: &str) -> String {
    let mut seen = Vec::new();
    for e in errors {
        let m = describe(e, source);
        if !seen.contains(&m) {
            seen.push(m);
        }
    }
    let more = seen.len().saturating_sub(5);
    seen.truncate(5);
    let mut out = seen.join("; ");
    if more > 0 {
        let _ = write!(out, "; and {more} more");
    }
    out
}

/// `message at line L, column C (help)`, without Cedar's name for the policy (`policy0`)
/// nor the action the validator was considering.
fn describe(e: &dyn Diagnostic, source: &str) -> String {
    let mut out = e.to_string();
    if let Some(offset) = e
        .labels()
        .and_then(|mut l| l.next())
        .map(|l| l.offset())
        .filter(|o| *o <= source.len())
    {
        let before = source.get(..offset).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        let _ = write!(out, " at line {line}, column {column}");
    }
    if let Some(help) = e.help() {
        let _ = write!(out, " ({help})");
    }
    let mut out = out.replace("for policy `policy0`, ", "");
    while let Some(start) = out.find(" for Action::\"") {
        let rest = start + " for Action::\"".len();
        let Some(end) = out.get(rest..).and_then(|r| r.find('"')) else {
            break;
        };
        out.replace_range(start..rest + end + 1, "");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiled(custom: &[&str]) -> TenantCedar {
        let custom = custom
            .iter()
            .map(|a| ActionKey::parse("a", a).unwrap())
            .collect();
        TenantCedar::compile(&custom, &[]).unwrap()
    }

    #[test]
    fn the_schema_parses_and_names_every_action() {
        let c = compiled(&["docs:read", "docs:sign"]);
        assert!(c.schema_text.contains("\"users:read\""));
        assert!(c.schema_text.contains("\"docs:sign\""));
        assert!(c.schema_text.contains("\"tenants:delete\""));
        let actions: Vec<String> = c
            .validator
            .schema()
            .actions()
            .map(|a| a.id().unescaped().to_owned())
            .collect();
        assert!(actions.contains(&"docs:read".to_owned()));
        assert_eq!(
            actions.len(),
            2 + BUILT_IN_RESOURCES
                .iter()
                .map(|(_, a, _)| a.len())
                .sum::<usize>()
        );
    }

    #[test]
    fn valid_policies_give_their_effect() {
        let c = compiled(&["docs:read"]);
        let cases = [
            (
                r#"permit(principal, action == Action::"docs:read", resource)
                   when { principal has department && principal.department == "eng" };"#,
                PolicyEffect::Permit,
            ),
            (
                r#"forbid(principal, action, resource) when { context.risk_score > 80 };"#,
                PolicyEffect::Forbid,
            ),
        ];
        for (src, expected) in cases {
            let effect = check_policy(&c.validator, src);
            assert_eq!(effect.as_ref().ok(), Some(&expected), "{src}: {effect:?}");
        }
    }

    #[test]
    fn invalid_policies_are_explained() {
        let c = compiled(&[]);
        let cases = [
            ("permit(principal, action, resource", "line 1"),
            (
                "permit(principal, action, resource) when { principal.shoe_size > 3 };",
                "shoe_size",
            ),
            (
                // Optional attributes need a `has` test under strict validation.
                "permit(principal, action, resource) when { principal.department == \"x\" };",
                "department",
            ),
            (
                "permit(principal, action == Action::\"docs:read\", resource);",
                "docs:read",
            ),
            ("", "exactly one"),
            (
                "permit(principal, action, resource);\nforbid(principal, action, resource);",
                "holds 2",
            ),
            (
                "permit(principal == ?principal, action, resource);",
                "templates",
            ),
            (
                "permit(principal, action, resource) when { context.ip == \"1.2.3.4\" };",
                "ip",
            ),
        ];
        for (src, needle) in cases {
            let e = check_policy(&c.validator, src).unwrap_err();
            assert!(e.contains(needle), "{src}: {e}");
        }
    }

    #[test]
    fn what_policies_read_is_found() {
        let uses = |src: &str| Uses::of(&cedar_policy::Policy::parse(None, src).unwrap());
        let fields = |src: &str| uses(src).context;
        let c = ContextFields::named;
        assert_eq!(
            fields("forbid(principal, action, resource) when { context.risk_score > 5 };"),
            c("risk_score")
        );
        assert_eq!(
            fields(
                r#"forbid(principal, action, resource)
                   when { context has ip && context.ip.isInRange(ip("10.0.0.0/8")) };"#
            ),
            c("ip")
        );
        let mut both = c("now");
        both.add(c("mfa_level"));
        assert_eq!(
            fields(
                "permit(principal, action, resource) \
                 when { context has now.hour && context.now.hour < 9 || context.mfa_level > 1 };"
            ),
            both
        );
        assert_eq!(
            fields("permit(principal, action, resource) when { context == context };"),
            ContextFields::ALL
        );
        assert_eq!(
            fields("permit(principal, action, resource) when { principal.clearance_level > 1 };"),
            ContextFields::default()
        );

        let owner = |src: &str| uses(src).owner_entity;
        assert!(!owner(
            "permit(principal, action, resource) \
             when { resource has owner && resource.owner == principal };"
        ));
        assert!(!owner(
            "permit(principal, action, resource) when { principal != resource.owner };"
        ));
        for src in [
            "permit(principal, action, resource) \
             when { resource has owner && resource.owner has manager && resource.owner.manager == principal };",
            "permit(principal, action, resource) when { resource.owner.managers.contains(principal) };",
            r#"permit(principal, action, resource) when { resource.owner in Group::"g" };"#,
            "permit(principal, action, resource) when { [resource.owner].contains(principal) };",
        ] {
            assert!(owner(src), "{src}");
        }
    }

    #[test]
    fn ip_values_are_cached_per_address() {
        let c = compiled(&[]);
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let fresh = RestrictedExpression::new_ip("10.1.2.3");
        assert_eq!(c.ip_expr(ip), fresh);
        assert_eq!(c.ip_expr(ip), fresh);
        assert_eq!(c.ips.read().unwrap().len(), 1);
        assert_ne!(c.ip_expr("10.1.2.4".parse().unwrap()), fresh);
    }

    #[test]
    fn policies_lose_their_action_scope_only_where_it_holds() {
        let p = cedar_policy::Policy::parse(
            Some(cedar_policy::PolicyId::new("p1")),
            r#"permit(principal, action in [Action::"a:b", Action::"a:c"], resource)
               when { context.risk_score < 5 };"#,
        )
        .unwrap();
        let q = without_action_constraint(&p).unwrap();
        assert_eq!(q.id(), p.id());
        assert_eq!(q.effect(), p.effect());
        assert_eq!(q.action_constraint(), cedar_policy::ActionConstraint::Any);
        assert!(q.to_string().contains("context.risk_score"));
    }

    #[test]
    fn policies_are_indexed_by_action() {
        let stored = |name: &str, src: &str| domain::authz::Policy {
            id: PolicyId::new(),
            tenant_id: domain::TenantId::new(),
            name: name.into(),
            description: None,
            effect: PolicyEffect::Permit,
            source: src.into(),
            active: true,
            version: 1,
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        };
        let mut off = stored("off", "forbid(principal, action, resource);");
        off.active = false;
        let index = PolicyIndex::new(&[
            stored("all", "forbid(principal, action, resource) when { context.risk_score > 50 };"),
            stored("read", r#"permit(principal, action == Action::"users:read", resource);"#),
            stored(
                "two",
                r#"permit(principal, action in [Action::"users:read", Action::"users:update"], resource);"#,
            ),
            off,
        ])
        .unwrap();
        let count = |a: &str| {
            let p = index.for_action(&ActionKey::parse("a", a).unwrap());
            (
                p.forbid.as_ref().map_or(0, |s| s.policies().count()),
                p.all.as_ref().map_or(0, |s| s.policies().count())
                    - p.forbid.as_ref().map_or(0, |s| s.policies().count()),
            )
        };
        assert_eq!(count("users:read"), (1, 2));
        assert_eq!(count("users:update"), (1, 1));
        assert_eq!(count("roles:read"), (1, 0));
        assert_eq!(index.names.len(), 3);
    }

    /// The example policies of `docs/policies` stay valid against the schema.
    #[test]
    fn the_documented_example_policies_validate() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/policies");
        let c = compiled(&[]);
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("cedar") {
                continue;
            }
            let source = std::fs::read_to_string(&path).unwrap();
            assert!(source.starts_with("//"), "{path:?} explains itself");
            if let Err(e) = check_policy(&c.validator, &source) {
                panic!("{path:?}: {e}");
            }
            names.push(path.file_stem().unwrap().to_string_lossy().into_owned());
        }
        names.sort();
        assert_eq!(
            names,
            [
                "business_days",
                "data_classified",
                "gdpr_consented",
                "in_org_tree",
                "reports_to",
                "risk_below",
                "trusted_device",
                "working_hours"
            ]
        );
    }
}
