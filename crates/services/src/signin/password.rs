//! Password sign-in: the first factor, the failure counters and delays, the session at
//! the end of every sign-in, refresh-token rotation and sign-out.

use super::*;

impl SignIn {
    // ------------------------------------------------------------------------------------
    // Password sign-in
    // ------------------------------------------------------------------------------------

    /// Signs in with a login (email or username) and password. Unknown tenants, unknown
    /// logins, wrong passwords and locked accounts all get the same answer after the same
    /// work (an argon2 verification) and the same progressive delay. The attempt is counted
    /// against the account and the IP before the password is checked, so that parallel
    /// guesses get no more tries than the lockout policy allows.
    pub async fn login(
        self: &Arc<Self>,
        tenant_slug: &str,
        login: &str,
        password: SecretString,
        mode: Option<&str>,
        device_label: Option<String>,
        meta: &RequestMeta,
    ) -> AuthResult<Step> {
        self.reserve_ip_attempt(meta)?;
        let tenant = self.active_tenant(tenant_slug).await?;
        let login = login.trim();
        let subject = match &tenant {
            Some(t) if !login.is_empty() && login.len() <= 320 => {
                self.store.find_login(t.id, login).await?
            }
            _ => None,
        };
        let Some((user, _)) = subject else {
            // The same work as a real check.
            self.hasher.verify(password, None).await?;
            let failures = self
                .unknown_login_failure(tenant.as_ref(), login, meta)
                .await?;
            return self.fail(failures, meta).await;
        };
        let Some(creds) = self.reserve_account_attempt(&user, meta).await? else {
            // Locked: the password is not checked, but the same work is done.
            self.hasher.verify(password, None).await?;
            self.audit_failure(&user, "account_locked", None, meta)
                .await?;
            return self.fail(self.config.lockout.threshold, meta).await;
        };
        let stored = creds.password_hash.clone();
        let kept = password.clone();
        let verification = self.hasher.verify(password, stored.clone()).await?;
        if !verification.matched {
            let failures = self.account_failure(&user, "wrong_password", meta).await?;
            return self.fail(failures, meta).await;
        }
        self.release_attempts(&user, meta).await?;
        if verification.needs_rehash {
            if let Some(old) = stored {
                self.rehash_later(&user, old, kept);
            }
        }
        self.after_first_factor(
            user,
            creds,
            vec!["pwd".into()],
            SessionMode::parse(mode),
            device_label,
            meta,
        )
        .await
    }

    pub(super) async fn active_tenant(&self, slug: &str) -> AuthResult<Option<Tenant>> {
        let Ok(slug) = TenantSlug::parse("tenant", slug) else {
            return Ok(None);
        };
        match self.store.get_tenant_by_slug(&slug).await {
            Ok(t) if t.status == TenantStatus::Active => Ok(Some(t)),
            Ok(_) | Err(domain::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Counts an attempt against the client's IP before any secret is checked: refused
    /// once the window holds the configured number of failures (0: no limit; the count
    /// still paces the delays).
    pub(super) fn reserve_ip_attempt(&self, meta: &RequestMeta) -> AuthResult<()> {
        let Some(ip) = meta.ip else {
            return Ok(());
        };
        self.ip_failures
            .take(&ip, self.config.ip_failure_limit)
            .map(|_| ())
            .map_err(|remaining| AuthError::RateLimited {
                retry_after: remaining.max(Duration::from_secs(1)),
            })
    }

    /// The attempt reserved against the IP turned out right.
    pub(super) fn release_ip_attempt(&self, meta: &RequestMeta) {
        if let Some(ip) = meta.ip {
            self.ip_failures.give_back(&ip);
        }
    }

    /// Takes one attempt against the account before its secret is checked: the user's
    /// credentials as they were, or `None` while the account is locked or its window is
    /// full. A lock that has run out is cleared here (audit `user.unlock`).
    pub(super) async fn reserve_account_attempt(
        &self,
        user: &User,
        meta: &RequestMeta,
    ) -> AuthResult<Option<Credentials>> {
        let at = now();
        let mut tx = self.core.begin().await?;
        let creds = tx.credentials_for_update(user.tenant_id, user.id).await?;
        let Some(reserved) = creds.reserve_attempt(&self.config.lockout, at) else {
            return Ok(None);
        };
        tx.put_lock_state(user.tenant_id, user.id, &reserved)
            .await?;
        if reserved.unlocked {
            tx.record(&AuditEvent::record(
                &meta.audit(Actor::Anonymous),
                user.tenant_id,
                actions::USER_UNLOCK,
                EntityRef::user(user.id),
                (Some(json!({ "locked_until": creds.locked_until })), None),
                at,
            ))
            .await?;
        }
        self.core.commit(tx).await?;
        Ok(Some(creds))
    }

    /// The attempts reserved against the IP and the account turned out right.
    pub(super) async fn release_attempts(&self, user: &User, meta: &RequestMeta) -> AuthResult<()> {
        self.release_ip_attempt(meta);
        let mut tx = self.core.begin().await?;
        let creds = tx.credentials_for_update(user.tenant_id, user.id).await?;
        tx.put_lock_state(user.tenant_id, user.id, &creds.after_right_attempt())
            .await?;
        self.core.commit(tx).await?;
        Ok(())
    }

    /// Confirms a reserved attempt as a failure: locks the account when its window is
    /// full, and audits it (actor `anonymous`, the account as entity). Returns the failures
    /// to base the delay on.
    pub(super) async fn account_failure(
        &self,
        user: &User,
        reason: &str,
        meta: &RequestMeta,
    ) -> AuthResult<u32> {
        let at = now();
        let mut tx = self.core.begin().await?;
        let creds = tx.credentials_for_update(user.tenant_id, user.id).await?;
        let t = creds.after_failure(&self.config.lockout, at);
        tx.put_lock_state(user.tenant_id, user.id, &t).await?;
        for event in failure_events(
            user,
            reason,
            t.locked.then_some(t.locked_until).flatten(),
            meta,
            at,
        ) {
            tx.record(&event).await?;
        }
        self.core.commit(tx).await?;
        if t.locked {
            info!(user_id = %user.id, "account locked after repeated sign-in failures");
        }
        Ok(if t.locked_until.is_some() {
            self.config.lockout.threshold
        } else {
            creds.failed_count
        })
    }

    /// Audits a failed attempt that changed no counter (the account was locked).
    pub(super) async fn audit_failure(
        &self,
        user: &User,
        reason: &str,
        locked_until: Option<Timestamp>,
        meta: &RequestMeta,
    ) -> AuthResult<()> {
        let events = failure_events(user, reason, locked_until, meta, now());
        self.store.append_audit_events(&events).await?;
        Ok(())
    }

    /// Counts a failure for a login that matches no account, the same way.
    pub(super) async fn unknown_login_failure(
        &self,
        tenant: Option<&Tenant>,
        login: &str,
        meta: &RequestMeta,
    ) -> AuthResult<u32> {
        let Some(tenant) = tenant else {
            return Ok(0);
        };
        let login: String = login.to_lowercase().chars().take(320).collect();
        let count = self.unknown_login_failures.hit(&(tenant.id, login.clone()));
        // The login typed is not recorded: it may be a password typed in the wrong field.
        let event = AuditEvent::record(
            &meta.audit(Actor::Anonymous),
            tenant.id,
            actions::AUTH_LOGIN_FAILURE,
            EntityRef::none("user"),
            (None, Some(json!({"reason": "unknown_login"}))),
            now(),
        );
        self.store.append_audit_events(&[event]).await?;
        Ok(count.min(self.config.lockout.threshold))
    }

    /// Answers a failed sign-in: counts it against the IP, waits the progressive delay.
    pub(super) async fn fail<T>(&self, account_failures: u32, meta: &RequestMeta) -> AuthResult<T> {
        self.penalise(account_failures, meta).await;
        Err(AuthError::refused(Code::InvalidCredentials))
    }

    /// Waits the progressive delay of the failures counted against the account and the IP.
    pub(super) async fn penalise(&self, account_failures: u32, meta: &RequestMeta) {
        let ip_failures = meta
            .ip
            .map(|ip| self.ip_failures.current(&ip).0)
            .unwrap_or(0);
        // The IP's own delay starts later: many users may share an address.
        let delay = progressive_delay(account_failures).max(progressive_delay(ip_failures / 5));
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }

    pub(super) fn rehash_later(
        self: &Arc<Self>,
        user: &User,
        old_hash: String,
        password: SecretString,
    ) {
        let this = Arc::clone(self);
        let (tenant, id) = (user.tenant_id, user.id);
        self.background.spawn(async move {
            let result = async {
                let new_hash = this.hasher.hash(password).await?;
                this.store
                    .rehash_password(tenant, id, &old_hash, &new_hash)
                    .await?;
                AuthResult::Ok(())
            }
            .await;
            if let Err(e) = result {
                warn!(user_id = %id, error = %e, "could not re-hash a password");
            }
        });
    }

    /// After a first factor (password or magic link): refuses accounts that may not sign
    /// in, asks for the second factor or a password change, or completes the sign-in.
    pub(super) async fn after_first_factor(
        &self,
        user: User,
        creds: Credentials,
        amr: Vec<String>,
        mode: SessionMode,
        device_label: Option<String>,
        meta: &RequestMeta,
    ) -> AuthResult<Step> {
        check_can_sign_in(&user)?;
        let settings = self.store.get_auth_settings(user.tenant_id).await?;
        if settings.require_verified_email && creds.email_verified_at.is_none() {
            return Err(AuthError::refused(Code::EmailNotVerified));
        }
        let data = json!({"amr": amr, "mode": mode.as_str(), "device_label": device_label});
        if creds.totp_enabled {
            let token = self
                .issue_token(
                    &user,
                    TokenPurpose::MfaChallenge,
                    self.config.mfa_challenge_ttl,
                    data,
                    &[],
                )
                .await?;
            return Ok(Step::MfaRequired {
                mfa_token: token,
                expires_in: self.config.mfa_challenge_ttl.num_seconds(),
            });
        }
        self.after_all_factors(user, creds, &settings, data, meta)
            .await
    }

    /// Every factor passed: asks for a password change when one is due, or creates the
    /// session.
    pub(super) async fn after_all_factors(
        &self,
        user: User,
        creds: Credentials,
        settings: &AuthSettings,
        data: Value,
        meta: &RequestMeta,
    ) -> AuthResult<Step> {
        let at = now();
        let change_due = creds.password_hash.is_some()
            && (creds.must_change_password
                || settings
                    .password_policy
                    .is_expired(creds.password_changed_at, at));
        if change_due {
            let token = self
                .issue_token(
                    &user,
                    TokenPurpose::PasswordChange,
                    PASSWORD_CHANGE_TTL,
                    data,
                    &[],
                )
                .await?;
            return Ok(Step::PasswordChangeRequired {
                token,
                expires_in: PASSWORD_CHANGE_TTL.num_seconds(),
            });
        }
        let grant = self.create_session(user, settings, &data, meta).await?;
        Ok(Step::Complete(Box::new(grant)))
    }

    pub(super) async fn create_session(
        &self,
        user: User,
        settings: &AuthSettings,
        data: &Value,
        meta: &RequestMeta,
    ) -> AuthResult<Grant> {
        let amr: Vec<String> = data["amr"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let mode = SessionMode::parse(data["mode"].as_str());
        let device_label = data["device_label"]
            .as_str()
            .map(|s| s.chars().take(100).collect());
        let mfa_level = if amr.iter().any(|m| m == "mfa") { 2 } else { 1 };
        let at = now();
        let session = Session {
            id: SessionId::new(),
            tenant_id: user.tenant_id,
            user_id: user.id,
            kind: match mode {
                SessionMode::Token => SessionKind::Token,
                SessionMode::Browser => SessionKind::Browser,
            },
            device_label,
            ip: meta.ip.map(|ip| ip.to_string()),
            user_agent: meta.user_agent.clone(),
            amr,
            mfa_level,
            created_at: at,
            last_seen_at: at,
            expires_at: at + self.config.session_ttl,
            revoked_at: None,
            revoke_reason: None,
        };
        let (new, secrets) = match mode {
            SessionMode::Token => {
                let refresh = GeneratedKey::with_prefix(REFRESH_PREFIX);
                let (access_token, expires_in) = self.access_token(&session)?;
                (
                    NewSession {
                        session,
                        refresh_hash: Some(refresh.hash.clone()),
                        cookie_hash: None,
                        csrf_hash: None,
                    },
                    GrantSecrets::Bearer {
                        access_token,
                        refresh_token: refresh.secret,
                        expires_in,
                    },
                )
            }
            SessionMode::Browser => {
                let cookie = GeneratedKey::with_prefix("");
                let csrf = GeneratedKey::with_prefix("");
                (
                    NewSession {
                        session,
                        refresh_hash: None,
                        cookie_hash: Some(cookie.hash.clone()),
                        csrf_hash: Some(csrf.hash.clone()),
                    },
                    GrantSecrets::Browser {
                        cookie: cookie.secret,
                        csrf_token: csrf.secret,
                    },
                )
            }
        };
        let session = self
            .store
            .create_session(new, &meta.audit(Actor::User(user.id)))
            .await?;
        Ok(Grant {
            missing_profile_fields: settings.missing_profile_fields(&user),
            session,
            secrets,
        })
    }

    // ------------------------------------------------------------------------------------
    // Refresh and logout
    // ------------------------------------------------------------------------------------

    /// Exchanges a refresh token for new tokens. A token presented twice revokes its
    /// session (reuse detection): whoever holds a copy loses it, and so does the user, who
    /// signs in again.
    pub async fn refresh(&self, refresh_token: &str, meta: &RequestMeta) -> AuthResult<Refreshed> {
        let invalid = || AuthError::refused(Code::InvalidRefreshToken);
        let presented = digest_of(refresh_token).ok_or_else(invalid)?;
        let next = GeneratedKey::with_prefix(REFRESH_PREFIX);
        let outcome = self
            .store
            .rotate_refresh_token(&presented, &next.hash, now(), &meta.audit(Actor::System))
            .await?;
        match outcome {
            RefreshOutcome::Rotated(session) => {
                let (access_token, expires_in) = self.access_token(&session)?;
                Ok(Refreshed {
                    access_token,
                    refresh_token: next.secret,
                    expires_in,
                })
            }
            RefreshOutcome::Reused(session) => {
                warn!(session_id = %session.id, "refresh token reused; session revoked");
                Err(AuthError::refused(Code::RefreshTokenReused))
            }
            RefreshOutcome::Invalid => Err(invalid()),
        }
    }

    /// Ends the caller's session.
    pub async fn logout(&self, who: &SessionPrincipal, meta: &RequestMeta) -> AuthResult<()> {
        match self
            .store
            .revoke_sessions(
                who.tenant_id,
                who.user_id,
                RevokeScope::One(who.session_id),
                "logout",
                &meta.audit(Actor::User(who.user_id)),
            )
            .await
        {
            Ok(_) | Err(domain::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The audit events of a failed sign-in attempt against `user`: `auth.login_failure` by an
/// anonymous actor with the account as entity, and `user.lock` when it locked the account.
fn failure_events(
    user: &User,
    reason: &str,
    locked: Option<Timestamp>,
    meta: &RequestMeta,
    at: Timestamp,
) -> Vec<AuditEvent> {
    let ctx = meta.audit(Actor::Anonymous);
    let mut events = vec![AuditEvent::record(
        &ctx,
        user.tenant_id,
        actions::AUTH_LOGIN_FAILURE,
        EntityRef::user(user.id),
        (None, Some(json!({ "reason": reason }))),
        at,
    )];
    if let Some(until) = locked {
        events.push(AuditEvent::record(
            &ctx,
            user.tenant_id,
            actions::USER_LOCK,
            EntityRef::user(user.id),
            (None, Some(json!({ "locked_until": until }))),
            at,
        ));
    }
    events
}
