//! New passwords: the policy and history check, administrator-given passwords and imported
//! hashes, and changing one's own password.

use super::*;

impl SignIn {
    // ------------------------------------------------------------------------------------
    // Passwords managed by the user or an administrator
    // ------------------------------------------------------------------------------------

    /// Checks a new password against the tenant's policy (and, for an existing user, the
    /// history), and hashes it.
    pub(super) async fn checked_new_hash(
        &self,
        user: &User,
        settings: &AuthSettings,
        password: SecretString,
        check_history: bool,
    ) -> AuthResult<String> {
        let policy = &settings.password_policy;
        let local = user.email.split('@').next().unwrap_or_default().to_owned();
        let mut inputs: Vec<&str> = vec![&user.email, &local];
        if let Some(u) = &user.username {
            inputs.push(u);
        }
        inputs.extend(user.full_name.split_whitespace());
        let violations = check_policy(policy, password.expose_secret(), &inputs);
        if !violations.is_empty() {
            return Err(AuthError::Validation(
                violations
                    .into_iter()
                    .map(|(code, message)| domain::FieldError::new("password", code, message))
                    .collect(),
            ));
        }
        if check_history && policy.history > 0 {
            let previous = self
                .store
                .password_history(user.tenant_id, user.id, policy.history)
                .await?;
            if !previous.is_empty() && self.hasher.matches_any(password.clone(), previous).await? {
                return Err(AuthError::field(
                    "password",
                    "password_reused",
                    format!(
                        "choose a password different from your last {}",
                        policy.history
                    ),
                ));
            }
        }
        Ok(self.hasher.hash(password).await?)
    }

    /// The hash to store for an administrator-given password.
    pub(super) async fn admin_hash(
        &self,
        user: &User,
        settings: &AuthSettings,
        input: PasswordInput,
        check_history: bool,
    ) -> AuthResult<String> {
        match input {
            PasswordInput::Plain(p) => {
                self.checked_new_hash(user, settings, p, check_history)
                    .await
            }
            PasswordInput::Imported(raw) => {
                import_hash(&raw, &self.hasher.params()).map_err(|e| match e {
                    ImportError::Unsupported(m) => {
                        AuthError::field("password_hash", Code::UnsupportedHash.as_str(), m)
                    }
                    ImportError::TooCostly => AuthError::rule("password_hash", Code::HashTooCostly),
                })
            }
        }
    }

    /// The password to store for an administrator-given password or imported hash.
    pub(crate) async fn admin_password(
        &self,
        user: &User,
        settings: &AuthSettings,
        input: PasswordInput,
        must_change: bool,
        check_history: bool,
    ) -> AuthResult<NewPassword> {
        Ok(NewPassword {
            hash: self
                .admin_hash(user, settings, input, check_history)
                .await?,
            must_change,
            keep_history: settings.password_policy.history,
        })
    }

    /// Sets a user's password (administrators); every session of the user ends.
    pub(crate) async fn set_password(
        &self,
        user: &User,
        input: PasswordInput,
        must_change: bool,
        ctx: &AuditContext,
    ) -> AuthResult<PasswordStatus> {
        let settings = self.store.get_auth_settings(user.tenant_id).await?;
        let password = self
            .admin_password(user, &settings, input, must_change, false)
            .await?;
        let creds = self
            .store
            .set_password(
                user.tenant_id,
                user.id,
                password,
                Some(RevokeScope::All),
                actions::PASSWORD_SET,
                ctx,
            )
            .await?;
        Ok(PasswordStatus::of(&creds, now()))
    }

    /// Changes the caller's own password, given the current one; other sessions end.
    pub async fn change_own_password(
        &self,
        who: &SessionPrincipal,
        current: SecretString,
        new_password: SecretString,
        meta: &RequestMeta,
    ) -> AuthResult<()> {
        let user = self.store.get_user(who.tenant_id, who.user_id).await?;
        // Counted before checking, like a sign-in: a stolen token cannot guess faster.
        let Some(creds) = self.reserve_account_attempt(&user, meta).await? else {
            self.hasher.verify(current, None).await?;
            self.audit_failure(&user, "account_locked", None, meta)
                .await?;
            tokio::time::sleep(progressive_delay(self.config.lockout.threshold)).await;
            return Err(AuthError::rule("current_password", Code::WrongPassword));
        };
        let verification = self
            .hasher
            .verify(current, creds.password_hash.clone())
            .await?;
        if !verification.matched {
            let failures = self.account_failure(&user, "wrong_password", meta).await?;
            tokio::time::sleep(progressive_delay(failures)).await;
            return Err(AuthError::rule("current_password", Code::WrongPassword));
        }
        self.release_attempts(&user, meta).await?;
        let settings = self.store.get_auth_settings(who.tenant_id).await?;
        let hash = self
            .checked_new_hash(&user, &settings, new_password, true)
            .await?;
        self.store
            .set_password(
                who.tenant_id,
                who.user_id,
                NewPassword {
                    hash,
                    must_change: false,
                    keep_history: settings.password_policy.history,
                },
                Some(RevokeScope::AllExcept(who.session_id)),
                actions::PASSWORD_CHANGE,
                &meta.audit(Actor::User(who.user_id)),
            )
            .await?;
        self.notify_password_changed(&user).await;
        Ok(())
    }
}
