//! `api_idempotency`: one row per `Idempotency-Key` and scope, claimed before the request
//! runs and holding its response after.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_idempotency")]
pub struct Model {
    /// The caller's organisation id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub scope: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub key: String,
    /// Hex SHA-256 over the caller, method, path and query, and the body's digest.
    pub fingerprint: String,
    /// `in_flight` or `completed`.
    pub state: String,
    /// An in-flight claim older than this was left by a process that died; it may be taken
    /// over.
    pub locked_until: DateTimeUtc,
    pub response_status: Option<i32>,
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub response_headers: Option<Json>,
    pub response_body: Option<String>,
    /// The response carried a secret shown once (an API key's); it was not stored.
    pub secret_withheld: bool,
    pub created_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
