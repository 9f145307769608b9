//! Emailed single-use links: magic-link sign-in, password reset and email verification.

use super::*;

impl SignIn {
    // ------------------------------------------------------------------------------------
    // Emailed links
    // ------------------------------------------------------------------------------------

    /// Emails a sign-in link if `email` belongs to an active user of the tenant. The work
    /// happens after the answer, so neither the answer nor its timing tells whether it did.
    pub fn request_magic_link(self: &Arc<Self>, tenant: &str, email: &str, meta: &RequestMeta) {
        self.email_link_later(tenant, email, TokenPurpose::MagicLink, meta);
    }

    /// Emails a password-reset link, under the same rules as magic links.
    pub fn request_password_reset(self: &Arc<Self>, tenant: &str, email: &str, meta: &RequestMeta) {
        self.email_link_later(tenant, email, TokenPurpose::PasswordReset, meta);
    }

    /// Emails a new verification link (answer and timing as for magic links).
    pub fn request_email_verification(
        self: &Arc<Self>,
        tenant: &str,
        email: &str,
        meta: &RequestMeta,
    ) {
        self.email_link_later(tenant, email, TokenPurpose::EmailVerification, meta);
    }

    pub(super) fn email_link_later(
        self: &Arc<Self>,
        tenant: &str,
        email: &str,
        purpose: TokenPurpose,
        meta: &RequestMeta,
    ) {
        let this = Arc::clone(self);
        let (tenant, email, meta) = (tenant.to_owned(), email.to_owned(), meta.clone());
        this.background.clone().spawn(async move {
            if let Err(e) = this.email_link(&tenant, &email, purpose, &meta).await {
                warn!(error = %e, purpose = purpose.as_str(), "could not send an emailed link");
            }
        });
    }

    pub(super) async fn email_link(
        &self,
        tenant_slug: &str,
        email: &str,
        purpose: TokenPurpose,
        meta: &RequestMeta,
    ) -> AuthResult<()> {
        let Some(tenant) = self.active_tenant(tenant_slug).await? else {
            return Ok(());
        };
        let Ok(email) = Email::parse("email", email) else {
            return Ok(());
        };
        let Some((user, creds)) = self.store.find_login(tenant.id, email.as_str()).await? else {
            return Ok(());
        };
        // Only an exact address match: a username that looks like an address is not one.
        if user.email_normalized() != email.normalized() {
            return Ok(());
        }
        let usable = match purpose {
            TokenPurpose::EmailVerification => {
                creds.email_verified_at.is_none() && user.status != UserStatus::Blocked
            }
            _ => user.status == UserStatus::Active,
        };
        if !usable {
            return Ok(());
        }
        let count = self
            .mail_throttle
            .hit(&(tenant.id, user.email_normalized()));
        if count > self.config.emails_per_address_per_hour {
            info!(user_id = %user.id, "emailed-link limit reached for this address");
            return Ok(());
        }
        let (action, ttl, kind, path) = match purpose {
            TokenPurpose::MagicLink => (
                actions::AUTH_MAGIC_LINK_REQUEST,
                self.config.link_ttl,
                MailKind::MagicLink,
                "magic-link",
            ),
            TokenPurpose::PasswordReset => (
                actions::AUTH_PASSWORD_RESET_REQUEST,
                self.config.link_ttl,
                MailKind::PasswordReset,
                "password-reset",
            ),
            _ => (
                actions::AUTH_EMAIL_VERIFICATION_REQUEST,
                self.config.email_verification_ttl,
                MailKind::EmailVerification,
                "verify-email",
            ),
        };
        let event = AuditEvent::record(
            &meta.audit(Actor::User(user.id)),
            tenant.id,
            action,
            EntityRef::user(user.id),
            (None, None),
            now(),
        );
        let token = self
            .issue_token(&user, purpose, ttl, json!({}), &[event])
            .await?;
        self.send_link(
            &tenant,
            &user.email,
            Some(&user.full_name),
            kind,
            path,
            &token,
            ttl,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn send_link(
        &self,
        tenant: &Tenant,
        to: &str,
        name: Option<&str>,
        kind: MailKind,
        path: &str,
        token: &SecretString,
        ttl: TimeDelta,
    ) -> AuthResult<()> {
        let link = format!(
            "{}/auth/{path}?tenant={}&token={}",
            self.config.public_url.trim_end_matches('/'),
            tenant.slug.as_str(),
            token.expose_secret()
        );
        let minutes = u32::try_from(ttl.num_minutes()).unwrap_or(u32::MAX);
        let message = render(
            kind,
            to,
            &TemplateContext {
                tenant_name: &tenant.display_name,
                recipient_name: name,
                link: Some(&link),
                expires_minutes: Some(minutes),
            },
        );
        self.mailer
            .send(message)
            .await
            .map_err(|e| AuthError::internal(format!("mail: {e}")))
    }

    /// Signs in with an emailed link (the second factor is still asked when enrolled).
    /// The link also proves the address.
    pub async fn complete_magic_link(
        &self,
        token: &str,
        mode: Option<&str>,
        device_label: Option<String>,
        meta: &RequestMeta,
    ) -> AuthResult<Step> {
        let token = self
            .consume(TokenPurpose::MagicLink, token, Code::InvalidMagicLink)
            .await?;
        let user = self
            .pending_user(&token)
            .await?
            .ok_or_else(|| invalid_link(Code::InvalidMagicLink))?;
        let ctx = meta.audit(Actor::User(user.id));
        self.store
            .mark_email_verified(user.tenant_id, user.id, &user.email, &ctx)
            .await?;
        let creds = self.store.get_credentials(user.tenant_id, user.id).await?;
        self.after_first_factor(
            user,
            creds,
            vec!["email".into()],
            SessionMode::parse(mode),
            device_label,
            meta,
        )
        .await
    }

    /// Sets a new password with an emailed reset link; every session of the user ends and
    /// any lock lifts.
    pub async fn complete_password_reset(
        &self,
        token: &str,
        new_password: SecretString,
        meta: &RequestMeta,
    ) -> AuthResult<()> {
        let bad = || invalid_link(Code::InvalidResetToken);
        let (hash, user) = self
            .peek_for_user(TokenPurpose::PasswordReset, token, bad)
            .await?;
        self.redeem_with_new_password(
            TokenPurpose::PasswordReset,
            &hash,
            &user,
            new_password,
            actions::PASSWORD_RESET,
            bad,
            meta,
        )
        .await?;
        // Receiving the link proved the address.
        self.store
            .mark_email_verified(
                user.tenant_id,
                user.id,
                &user.email,
                &meta.audit(Actor::User(user.id)),
            )
            .await?;
        self.notify_password_changed(&user).await;
        Ok(())
    }

    /// Marks an address verified with its emailed link.
    pub async fn verify_email(&self, token: &str, meta: &RequestMeta) -> AuthResult<()> {
        let token = self
            .consume(
                TokenPurpose::EmailVerification,
                token,
                Code::InvalidVerificationToken,
            )
            .await?;
        let (Some(user), Some(email)) = (self.pending_user(&token).await?, token.email.as_deref())
        else {
            return Err(invalid_link(Code::InvalidVerificationToken));
        };
        let verified = self
            .store
            .mark_email_verified(
                token.tenant_id,
                user.id,
                email,
                &meta.audit(Actor::User(user.id)),
            )
            .await?;
        if verified {
            Ok(())
        } else {
            Err(invalid_link(Code::InvalidVerificationToken))
        }
    }

    pub(super) async fn consume(
        &self,
        purpose: TokenPurpose,
        token: &str,
        code: Code,
    ) -> AuthResult<OneTimeToken> {
        let hash = digest_of(token).ok_or_else(|| invalid_link(code))?;
        self.store
            .consume_one_time_token(purpose, &hash, now())
            .await?
            .ok_or_else(|| invalid_link(code))
    }

    pub(super) async fn issue_token(
        &self,
        user: &User,
        purpose: TokenPurpose,
        ttl: TimeDelta,
        data: Value,
        events: &[AuditEvent],
    ) -> AuthResult<SecretString> {
        let secret = GeneratedKey::with_prefix("");
        let at = now();
        let token = OneTimeToken {
            hash: secret.hash.clone(),
            tenant_id: user.tenant_id,
            purpose,
            user_id: Some(user.id),
            email: Some(user.email.clone()),
            data,
            created_at: at,
            expires_at: at + ttl,
            used_at: None,
            attempts: 0,
        };
        self.store.create_one_time_token(&token, events).await?;
        Ok(secret.secret)
    }

    pub(super) async fn notify_password_changed(&self, user: &User) {
        let Ok(tenant) = self.store.get_tenant(user.tenant_id).await else {
            return;
        };
        let message = render(
            MailKind::PasswordChanged,
            &user.email,
            &TemplateContext {
                tenant_name: &tenant.display_name,
                recipient_name: Some(&user.full_name),
                link: None,
                expires_minutes: None,
            },
        );
        let mailer = Arc::clone(&self.mailer);
        self.background.spawn(async move {
            if let Err(e) = mailer.send(message).await {
                warn!(error = %e, "could not send a password-change notice");
            }
        });
    }
}
