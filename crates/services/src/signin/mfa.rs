//! The second factor: completing a sign-in with a TOTP or recovery code, the password
//! change a sign-in may require, and TOTP enrolment.

use super::*;

impl SignIn {
    pub async fn complete_mfa(
        &self,
        mfa_token: &str,
        code: &str,
        meta: &RequestMeta,
    ) -> AuthResult<Step> {
        let bad = || AuthError::refused(Code::InvalidMfaToken);
        self.reserve_ip_attempt(meta)?;
        let (hash, user) = self
            .peek_for_user(TokenPurpose::MfaChallenge, mfa_token, bad)
            .await?;
        check_can_sign_in(&user)?;
        // Attempts are taken before the code is checked, against the challenge and the
        // account, so that parallel guesses get no more tries than either allows.
        let taken = self
            .store
            .reserve_token_attempt(TokenPurpose::MfaChallenge, &hash, MFA_MAX_ATTEMPTS, now())
            .await?;
        if !taken {
            return Err(bad());
        }
        if self.reserve_account_attempt(&user, meta).await?.is_none() {
            self.audit_failure(&user, "account_locked", None, meta)
                .await?;
            self.penalise(self.config.lockout.threshold, meta).await;
            return Err(AuthError::refused(Code::InvalidMfaCode));
        }
        let ctx = meta.audit(Actor::User(user.id));
        let code = code.trim();
        let accepted = if code.len() == totp::DIGITS && code.bytes().all(|b| b.is_ascii_digit()) {
            self.check_totp(&user, code).await?
        } else {
            let normalized = totp::normalize_recovery_code(code);
            let digest = keyed_digest(&self.recovery_key, &normalized);
            self.store
                .use_recovery_code(user.tenant_id, user.id, &digest, &ctx)
                .await?
        };
        if !accepted {
            let failures = self.account_failure(&user, "wrong_mfa_code", meta).await?;
            self.penalise(failures, meta).await;
            return Err(AuthError::refused(Code::InvalidMfaCode));
        }
        self.release_attempts(&user, meta).await?;
        // Consuming is the commit point: of two requests with one token, one wins.
        let token = self
            .store
            .consume_one_time_token(TokenPurpose::MfaChallenge, &hash, now())
            .await?
            .ok_or_else(bad)?;
        let creds = self.store.get_credentials(user.tenant_id, user.id).await?;
        let settings = self.store.get_auth_settings(user.tenant_id).await?;
        let mut data = token.data;
        let mut amr: Vec<Value> = data["amr"].as_array().cloned().unwrap_or_default();
        amr.push(json!("otp"));
        amr.push(json!("mfa"));
        data["amr"] = Value::Array(amr);
        self.after_all_factors(user, creds, &settings, data, meta)
            .await
    }

    /// Whether `code` is a current TOTP code of the user, not used before.
    pub(super) async fn check_totp(&self, user: &User, code: &str) -> AuthResult<bool> {
        let Some(enrolment) = self.store.get_totp(user.tenant_id, user.id).await? else {
            return Ok(false);
        };
        if enrolment.confirmed_at.is_none() {
            return Ok(false);
        }
        let secret = self
            .master
            .decrypt(&enrolment.secret_ciphertext, &totp_aad(user.id))?;
        let unix = u64::try_from(now().timestamp()).unwrap_or(0);
        match totp::verify_code(&secret, code, unix) {
            // The store accepts each step once: a replayed code fails here.
            Some(step) => Ok(self
                .store
                .use_totp_step(user.tenant_id, user.id, step)
                .await?),
            None => Ok(false),
        }
    }

    /// Completes a sign-in that had to change its password.
    pub async fn complete_password_change(
        &self,
        token: &str,
        new_password: SecretString,
        meta: &RequestMeta,
    ) -> AuthResult<Step> {
        let bad = || AuthError::refused(Code::InvalidPasswordChangeToken);
        let (hash, user) = self
            .peek_for_user(TokenPurpose::PasswordChange, token, bad)
            .await?;
        check_can_sign_in(&user)?;
        let (pending, settings, creds) = self
            .redeem_with_new_password(
                TokenPurpose::PasswordChange,
                &hash,
                &user,
                new_password,
                actions::PASSWORD_CHANGE,
                bad,
                meta,
            )
            .await?;
        self.after_all_factors(user, creds, &settings, pending.data, meta)
            .await
    }

    /// Reads a valid single-use token and the (non-deleted) user it belongs to.
    pub(super) async fn peek_for_user(
        &self,
        purpose: TokenPurpose,
        token: &str,
        bad: impl Fn() -> AuthError,
    ) -> AuthResult<(KeyHash, User)> {
        let hash = digest_of(token).ok_or_else(&bad)?;
        let pending = self
            .store
            .peek_one_time_token(purpose, &hash, now())
            .await?
            .ok_or_else(&bad)?;
        let user = self.pending_user(&pending).await?.ok_or_else(&bad)?;
        Ok((hash, user))
    }

    /// The user a pending step (an emailed link, an MFA challenge, a required password
    /// change) belongs to, if the step still holds: the user is not deleted, still has the
    /// address the step was issued to (a link is bound to the address it was sent to), and
    /// their tenant is active (a suspension stops every step begun before it).
    pub(super) async fn pending_user(&self, token: &OneTimeToken) -> AuthResult<Option<User>> {
        let Some(user_id) = token.user_id else {
            return Ok(None);
        };
        let user = match self.store.get_user(token.tenant_id, user_id).await {
            Ok(user) if !user.is_deleted() => user,
            Ok(_) | Err(domain::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let bound = token
            .email
            .as_deref()
            .is_some_and(|sent_to| sent_to.to_lowercase() == user.email_normalized());
        if !bound {
            return Ok(None);
        }
        let tenant = self.store.get_tenant(token.tenant_id).await?;
        if tenant.status != TenantStatus::Active {
            return Ok(None);
        }
        Ok(Some(user))
    }

    /// Sets a new password with a single-use token: the password is checked against the
    /// policy and history *before* the token is spent, so a refused one can be retried with
    /// the same token. Every session of the user ends.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn redeem_with_new_password(
        &self,
        purpose: TokenPurpose,
        hash: &KeyHash,
        user: &User,
        new_password: SecretString,
        action: &'static str,
        bad: impl Fn() -> AuthError,
        meta: &RequestMeta,
    ) -> AuthResult<(OneTimeToken, AuthSettings, Credentials)> {
        let settings = self.store.get_auth_settings(user.tenant_id).await?;
        let new_hash = self
            .checked_new_hash(user, &settings, new_password, true)
            .await?;
        let spent = self
            .store
            .consume_one_time_token(purpose, hash, now())
            .await?
            .ok_or_else(bad)?;
        let creds = self
            .store
            .set_password(
                user.tenant_id,
                user.id,
                NewPassword {
                    hash: new_hash,
                    must_change: false,
                    keep_history: settings.password_policy.history,
                },
                Some(RevokeScope::All),
                action,
                &meta.audit(Actor::User(user.id)),
            )
            .await?;
        Ok((spent, settings, creds))
    }

    // ------------------------------------------------------------------------------------
    // TOTP
    // ------------------------------------------------------------------------------------

    /// Starts a TOTP enrolment (replacing an unconfirmed one).
    pub async fn enrol_totp(
        &self,
        who: &SessionPrincipal,
        meta: &RequestMeta,
    ) -> AuthResult<TotpEnrolment> {
        let user = self.store.get_user(who.tenant_id, who.user_id).await?;
        let tenant = self.store.get_tenant(who.tenant_id).await?;
        let secret = totp::generate_secret();
        let sealed = self.master.encrypt(&secret, &totp_aad(user.id));
        self.store
            .put_pending_totp(
                who.tenant_id,
                who.user_id,
                sealed,
                &meta.audit(Actor::User(who.user_id)),
            )
            .await?;
        let otpauth_uri = totp::otpauth_uri(&secret, &tenant.display_name, &user.email);
        let qr_svg = totp::qr_svg(&otpauth_uri).map_err(AuthError::internal)?;
        Ok(TotpEnrolment {
            otpauth_uri,
            qr_svg,
        })
    }

    /// Confirms the enrolment with a first code; returns the ten recovery codes, shown once.
    pub async fn confirm_totp(
        &self,
        who: &SessionPrincipal,
        code: &str,
        meta: &RequestMeta,
    ) -> AuthResult<Vec<String>> {
        let pending = self
            .store
            .get_totp(who.tenant_id, who.user_id)
            .await?
            .filter(|t| t.confirmed_at.is_none())
            .ok_or_else(|| AuthError::refused(Code::TotpNotPending))?;
        let secret = self
            .master
            .decrypt(&pending.secret_ciphertext, &totp_aad(who.user_id))?;
        let unix = u64::try_from(now().timestamp()).unwrap_or(0);
        let step = totp::verify_code(&secret, code.trim(), unix).ok_or_else(|| {
            AuthError::field(
                "code",
                "invalid_code",
                "the code does not match; check the device clock",
            )
        })?;
        let codes = totp::generate_recovery_codes();
        let hashes: Vec<KeyHash> = codes
            .iter()
            .map(|c| keyed_digest(&self.recovery_key, c))
            .collect();
        self.store
            .confirm_totp(
                who.tenant_id,
                who.user_id,
                step,
                &hashes,
                &meta.audit(Actor::User(who.user_id)),
            )
            .await?;
        Ok(codes)
    }

    /// Replaces the recovery codes. Needs a session signed in with the second factor.
    pub async fn regenerate_recovery_codes(
        &self,
        who: &SessionPrincipal,
        meta: &RequestMeta,
    ) -> AuthResult<Vec<String>> {
        require_mfa_session(who)?;
        let codes = totp::generate_recovery_codes();
        let hashes: Vec<KeyHash> = codes
            .iter()
            .map(|c| keyed_digest(&self.recovery_key, c))
            .collect();
        self.store
            .replace_recovery_codes(
                who.tenant_id,
                who.user_id,
                &hashes,
                &meta.audit(Actor::User(who.user_id)),
            )
            .await?;
        Ok(codes)
    }

    /// Removes TOTP. Needs a session signed in with the second factor.
    pub async fn remove_totp(&self, who: &SessionPrincipal, meta: &RequestMeta) -> AuthResult<()> {
        require_mfa_session(who)?;
        self.store
            .delete_totp(
                who.tenant_id,
                who.user_id,
                &meta.audit(Actor::User(who.user_id)),
            )
            .await
    }
}
