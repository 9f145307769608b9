//! API-key issuance, shared by the CLI and the test kit.

use domain::api_keys::{ApiKey, GeneratedKey, NewApiKey};
use domain::tenants::TenantSlug;
use domain::values::Label;
use portcullis_services::{Actor, Services};

/// Creates a key for the tenant named by `slug` as the operator; the returned secret is the
/// only copy.
pub async fn create_api_key(
    services: &Services,
    slug: &str,
    name: &str,
    platform_admin: bool,
) -> anyhow::Result<(ApiKey, GeneratedKey)> {
    let operator = Actor::operator();
    let slug = TenantSlug::parse("tenant", slug)?;
    let tenant = services
        .tenant_by_slug(&operator, &slug)
        .await
        .map_err(|e| anyhow::anyhow!("tenant {slug}: {e}"))?;
    let new = NewApiKey {
        name: Label::parse("name", name)?,
        platform_admin,
    };
    Ok(services.create_api_key(&operator, tenant.id, new).await?)
}
