//! `pos_channel_attempts`: what a channel did with one attempt (routing's view of its health).
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "pos_channel_attempts")]
pub struct Model {
    /// Derived from the payment number and the attempt: written once.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub channel_id: String,
    pub at: DateTimeUtc,
    /// `succeeded`, `declined` (the payer's problem) or `failed` (the channel's).
    pub signal: String,
    /// The fingerprint of the payer's code or card, when the attempt did not charge.
    pub payer_token: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
