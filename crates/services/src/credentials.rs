//! Passwords and second factors as administrators and users manage them: a user's password
//! state, a password set by an administrator (or a hash imported from another system), and
//! one's own password, TOTP and recovery codes.
//!
//! Rules: setting one's own password goes through [`Services::change_own_password`] with
//! the current password — `PUT /users/{own id}/password` is refused (`use_me_password`);
//! only API keys, the system and holders of `users:create:all` store a hash; an
//! administrator manages the password only of users they may manage (`access`).

use domain::auth::PasswordStatus;
use domain::time::{now, Timestamp};
use domain::values::Email;
use domain::{Code, Error, Result, UserId};
use secrecy::SecretString;

use crate::access::Target;
use crate::signin::{PasswordInput, TotpEnrolment};
use crate::users::signed_in;
use crate::{Actor, Services};

impl Services {
    /// Emails a single-use invitation to register; it admits its addressee whatever the
    /// tenant's registration mode, and proves the address.
    pub async fn invite(&self, actor: &Actor, email: &Email) -> Result<Timestamp> {
        self.authorize(actor, "users", "create", Target::Collection)
            .await?;
        self.signin
            .invite(actor.tenant, email, &actor.audit())
            .await
    }

    /// A user's password state.
    pub async fn password_status(&self, actor: &Actor, id: UserId) -> Result<PasswordStatus> {
        let user = self.core.store.get_user(actor.tenant, id).await?;
        self.authorize(actor, "users", "read", Target::User(&user))
            .await?;
        let creds = self.core.store.get_credentials(actor.tenant, id).await?;
        Ok(PasswordStatus::of(&creds, now()))
    }

    /// Sets a user's password (or imports a hash); every session of the user ends.
    pub async fn set_password(
        &self,
        actor: &Actor,
        id: UserId,
        input: PasswordInput,
        must_change: bool,
    ) -> Result<PasswordStatus> {
        if actor.user_id() == Some(id) {
            return Err(Error::refused(Code::UseMePassword));
        }
        let user = self.live_user(actor.tenant, id).await?;
        self.authorize(actor, "users", "update", Target::User(&user))
            .await?;
        self.core.may_manage(actor, &user).await?;
        if matches!(input, PasswordInput::Imported(_)) {
            self.may_import_hashes(actor).await?;
        }
        self.signin
            .set_password(&user, input, must_change, &actor.audit())
            .await
    }

    /// Changes the actor's own password, given the current one; the other sessions end.
    pub async fn change_own_password(
        &self,
        actor: &Actor,
        current: SecretString,
        new_password: SecretString,
    ) -> Result<()> {
        signed_in(actor)?;
        let session = actor
            .session()
            .ok_or(Error::refused(Code::UserSessionRequired))?;
        self.signin
            .change_own_password(session, current, new_password, &actor.meta)
            .await
    }

    /// Starts a TOTP enrolment of the actor (replacing an unconfirmed one).
    pub async fn enrol_totp(&self, actor: &Actor) -> Result<TotpEnrolment> {
        let session = actor
            .session()
            .ok_or(Error::refused(Code::UserSessionRequired))?;
        self.signin.enrol_totp(session, &actor.meta).await
    }

    /// Confirms the actor's TOTP enrolment with a first code; the ten recovery codes.
    pub async fn confirm_totp(&self, actor: &Actor, code: &str) -> Result<Vec<String>> {
        let session = actor
            .session()
            .ok_or(Error::refused(Code::UserSessionRequired))?;
        self.signin.confirm_totp(session, code, &actor.meta).await
    }

    /// Replaces the actor's recovery codes (a session signed in with the second factor).
    pub async fn regenerate_recovery_codes(&self, actor: &Actor) -> Result<Vec<String>> {
        let session = actor
            .session()
            .ok_or(Error::refused(Code::UserSessionRequired))?;
        self.signin
            .regenerate_recovery_codes(session, &actor.meta)
            .await
    }

    /// Removes the actor's TOTP (a session signed in with the second factor).
    pub async fn remove_totp(&self, actor: &Actor) -> Result<()> {
        let session = actor
            .session()
            .ok_or(Error::refused(Code::UserSessionRequired))?;
        self.signin.remove_totp(session, &actor.meta).await
    }
}
