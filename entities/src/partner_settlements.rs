//! `partner_settlements`: a transfer a station received from a partner against its contract,
//! once per bank reference. The money is the ledger entry `entry_id`.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "partner_settlements")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub contract_id: Uuid,
    pub partner_id: Uuid,
    pub station_id: Uuid,
    /// The bank's reference of the transfer, unique per contract.
    pub reference: String,
    /// SHA-256 of what was recorded (amount, currency, value date), hex.
    pub request_hash: String,
    pub amount_minor: i64,
    pub currency: String,
    /// The value date on the station's bank statement, `YYYY-MM-DD`.
    pub received_on: String,
    /// The ledger entry that booked it.
    pub entry_id: Uuid,
    pub recorded_by: String,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
