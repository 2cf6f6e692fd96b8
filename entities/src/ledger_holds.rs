//! `ledger_holds`: the state of each two-phase (pending) entry.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "ledger_holds")]
pub struct Model {
    /// The pending entry that made the reservation.
    #[sea_orm(primary_key, auto_increment = false)]
    pub entry_id: Uuid,
    /// `pending`, `posted`, `voided` or `expired`.
    pub status: String,
    pub expires_at: Option<DateTimeUtc>,
    /// The entry that posted, voided or expired the hold.
    pub resolved_entry_id: Option<Uuid>,
    pub resolved_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
