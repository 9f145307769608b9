//! API-key issuance, shared by the CLI and the test kit.

use domain::api_keys::{ApiKey, GeneratedKey, NewApiKey};
use domain::audit::AuditContext;
use domain::tenants::TenantSlug;
use domain::values::Label;
use domain::Store;

/// Creates a key for the tenant named by `slug`; the returned secret is the only copy.
pub async fn create_api_key(
    store: &dyn Store,
    slug: &str,
    name: &str,
    platform_admin: bool,
) -> anyhow::Result<(ApiKey, GeneratedKey)> {
    let slug = TenantSlug::parse("tenant", slug)?;
    let tenant = store
        .get_tenant_by_slug(&slug)
        .await
        .map_err(|e| anyhow::anyhow!("tenant {slug}: {e}"))?;
    let generated = GeneratedKey::generate();
    let key = store
        .create_api_key(
            tenant.id,
            NewApiKey {
                name: Label::parse("name", name)?,
                platform_admin,
            },
            &generated.hash,
            &generated.prefix,
            &AuditContext::system(),
        )
        .await?;
    Ok((key, generated))
}
