//! The authorization check API (may this user do this to that, and why) and one's own
//! effective permissions. An actor asks about anyone of the tenant with `authz:check:all`,
//! or about themself with `authz:check:own`.

use chrono::Utc;
use domain::{Code, Error, Result};
use portcullis_authz::{Check, Decision, Effective};
use serde_json::json;

use crate::access::{Reach, Target};
use crate::users::signed_in;
use crate::{Actor, Services};

impl Services {
    async fn may_ask(&self, actor: &Actor, checks: &[Check]) -> Result<()> {
        let reach = self
            .authorize(actor, "authz", "check", Target::Collection)
            .await?;
        if reach != Reach::All && checks.iter().any(|c| Some(c.principal) != actor.user_id()) {
            return Err(Error::refused(Code::Forbidden)
                .with_reason(json!({"needs": "authz:check:all to ask about others"})));
        }
        Ok(())
    }

    /// Decides one question.
    pub async fn check(&self, actor: &Actor, check: &Check) -> Result<Decision> {
        self.may_ask(actor, std::slice::from_ref(check)).await?;
        self.core.authz.check(actor.tenant, check).await
    }

    /// Decides several questions, in order; one that cannot be decided (e.g. an action the
    /// tenant has not defined) fails the batch, naming it (`checks[3].action`).
    pub async fn check_batch(&self, actor: &Actor, checks: &[Check]) -> Result<Vec<Decision>> {
        self.may_ask(actor, checks).await?;
        let mut out = Vec::with_capacity(checks.len());
        for (i, c) in checks.iter().enumerate() {
            let decision = self
                .core
                .authz
                .check(actor.tenant, c)
                .await
                .map_err(|e| match e {
                    Error::Validation(errors) => Error::Validation(
                        errors
                            .into_iter()
                            .map(|f| domain::FieldError {
                                field: format!("checks[{i}].{}", f.field),
                                ..f
                            })
                            .collect(),
                    ),
                    other => other,
                })?;
            out.push(decision);
        }
        Ok(out)
    }

    /// The signed-in user's effective permissions with where each comes from.
    pub async fn my_permissions(&self, actor: &Actor) -> Result<Effective> {
        let me = signed_in(actor)?;
        self.core
            .authz
            .effective(actor.tenant, me, Utc::now())
            .await?
            .ok_or(Error::refused(Code::SessionRevoked))
    }
}
