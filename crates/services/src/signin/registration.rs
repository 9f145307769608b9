//! Self-service registration and invitations.

use super::*;

impl SignIn {
    // ------------------------------------------------------------------------------------
    // Registration and invitations
    // ------------------------------------------------------------------------------------

    /// Self-service registration under the tenant's registration mode. An invitation
    /// admits its addressee whatever the mode, and proves the address.
    pub async fn register(
        self: &Arc<Self>,
        req: Registration,
        meta: &RequestMeta,
    ) -> AuthResult<User> {
        let closed = || AuthError::refused(Code::RegistrationClosed);
        let tenant = self.active_tenant(&req.tenant).await?.ok_or_else(closed)?;
        let settings = self.store.get_auth_settings(tenant.id).await?;
        let invitation = match req.invitation_token.as_ref().map(|t| t.expose_secret()) {
            Some(t) => {
                let hash = digest_of(t).ok_or_else(|| invalid_link(Code::InvalidInvitation))?;
                let inv = self
                    .store
                    .peek_one_time_token(TokenPurpose::Invitation, &hash, now())
                    .await?
                    .filter(|i| i.tenant_id == tenant.id)
                    .ok_or_else(|| invalid_link(Code::InvalidInvitation))?;
                let invited = inv.email.as_deref().map(str::to_lowercase);
                if invited.as_deref() != Some(req.new_user.email.normalized().as_str()) {
                    return Err(AuthError::field(
                        "email",
                        "not_invited",
                        "the invitation was sent to another address",
                    ));
                }
                Some(hash)
            }
            None => None,
        };
        let status = match (invitation.is_some(), settings.registration) {
            (true, _) | (false, RegistrationMode::Open) => UserStatus::Active,
            (false, RegistrationMode::Approval) => UserStatus::Pending,
            (false, RegistrationMode::Invite) => {
                return Err(AuthError::refused(Code::InvitationRequired))
            }
            (false, RegistrationMode::Closed) => return Err(closed()),
        };
        let mut new_user = req.new_user;
        new_user.status = status;
        let probe = new_user.clone().into_user(tenant.id, now());
        let hash = self
            .checked_new_hash(&probe, &settings, req.password, false)
            .await?;
        // The new user is who acts: they created themselves.
        let ctx = meta.audit(Actor::User(probe.id));
        let password = NewPassword {
            hash,
            must_change: false,
            keep_history: settings.password_policy.history,
        };
        let mut tx = self.core.begin().await?;
        self.core
            .insert_user(
                tx.as_mut(),
                &probe,
                Some(&password),
                actions::USER_REGISTER,
                &ctx,
            )
            .await?;
        self.core.commit(tx).await?;
        let user = probe;
        if let Some(hash) = invitation {
            self.store
                .consume_one_time_token(TokenPurpose::Invitation, &hash, now())
                .await?;
            self.store
                .mark_email_verified(tenant.id, user.id, &user.email, &ctx)
                .await?;
        } else {
            self.email_link_later(
                tenant.slug.as_str(),
                &user.email,
                TokenPurpose::EmailVerification,
                meta,
            );
        }
        Ok(user)
    }

    /// Emails a single-use invitation to register.
    pub(crate) async fn invite(
        &self,
        tenant: TenantId,
        email: &Email,
        ctx: &AuditContext,
    ) -> AuthResult<Timestamp> {
        let tenant = self.store.get_tenant(tenant).await?;
        let secret = GeneratedKey::with_prefix("");
        let at = now();
        let expires_at = at + self.config.invitation_ttl;
        let event = AuditEvent::record(
            ctx,
            tenant.id,
            actions::AUTH_INVITATION_CREATE,
            EntityRef::none("invitation"),
            (
                None,
                Some(json!({"email": email.as_str(), "expires_at": expires_at})),
            ),
            at,
        );
        self.store
            .create_one_time_token(
                &OneTimeToken {
                    hash: secret.hash.clone(),
                    tenant_id: tenant.id,
                    purpose: TokenPurpose::Invitation,
                    user_id: None,
                    email: Some(email.normalized()),
                    data: json!({}),
                    created_at: at,
                    expires_at,
                    used_at: None,
                    attempts: 0,
                },
                &[event],
            )
            .await?;
        self.send_link(
            &tenant,
            email.as_str(),
            None,
            MailKind::Invitation,
            "register",
            &secret.secret,
            self.config.invitation_ttl,
        )
        .await?;
        Ok(expires_at)
    }
}
