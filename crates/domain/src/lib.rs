//! Portcullis domain: identifiers, entities, the rules that make a value valid, and the
//! storage trait every backend implements. Nothing here performs I/O; the interface layer
//! (`api`) parses requests into these types and the `store-*` crates persist them.

pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod auth_store;
pub mod authz;
pub mod authz_store;
pub mod code;
pub mod error;
pub mod events;
pub mod ids;
pub mod page;
pub mod patch;
pub mod store;
pub mod tenants;
#[cfg(feature = "testing")]
pub mod testing;
pub mod time;
pub mod users;
pub mod values;

pub use auth_store::AuthStore;
pub use authz_store::AuthzStore;
pub use code::{Code, Kind};
pub use error::{Error, FieldError, Result, ValidationErrors};
pub use ids::{ApiKeyId, AuditEventId, GroupId, PolicyId, RoleId, SessionId, TenantId, UserId};
pub use page::Page;
pub use patch::Patch;
pub use store::Store;
pub use time::Timestamp;
