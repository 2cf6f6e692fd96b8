//! `treasury_messages`: the signed pain.001 of an instruction, kept so that every
//! resubmission sends the same bytes under the same message id.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "treasury_messages")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub message_id: String,
    pub instruction_id: Uuid,
    /// The rail the message asks for (`intra_bank`, `large_value`, `interbank_24x7`).
    pub rail: String,
    pub xml: String,
    /// The platform's detached signature, base64.
    pub signature: String,
    /// How many times the message was sent.
    pub sends: i32,
    /// The latest status the bank reported (an ISO 20022 status code), if any.
    pub last_status: Option<String>,
    /// The latest verified pain.002 about the message.
    pub last_report: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
