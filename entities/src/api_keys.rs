//! `api_keys`: partner keys that sign requests with HMAC-SHA256.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub organisation_id: Uuid,
    pub name: String,
    /// The signing secret, encrypted with AES-256-GCM under the deployment's key-encryption
    /// key (base64 of nonce, ciphertext and tag). HMAC verification needs the secret itself,
    /// so it cannot be a one-way hash; a copy of the database alone cannot sign requests.
    pub secret_ciphertext: String,
    /// Fingerprint of the key-encryption key that encrypted the secret.
    pub encryption_key_id: String,
    pub created_by: Option<Uuid>,
    pub created_at: DateTimeUtc,
    pub revoked_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
