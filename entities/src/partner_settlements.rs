//! `partner_settlements`: a transfer a station received from a partner against its contract;
//! at most one standing (not reversed) per bank reference. The money is the ledger entry
//! `entry_id`, and `reversal_entry_id` once reversed.
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
    /// The n-th recording of this reference on the contract (the earlier ones reversed).
    pub attempt: i32,
    pub reversed_at: Option<DateTimeUtc>,
    pub reversed_by: Option<String>,
    pub reversal_reason: Option<String>,
    pub reversal_entry_id: Option<Uuid>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
