//! `ledger_postings`: the legs of journal entries, immutable like them.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "ledger_postings")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub entry_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub leg: i32,
    pub account_id: Uuid,
    pub currency: String,
    /// `debit` or `credit`.
    pub side: String,
    /// `post` (moves the posted balance), `reserve` (adds to pending) or `release`
    /// (takes a reservation off pending).
    pub effect: String,
    pub amount_minor: i64,
    /// The account's posting sequence number: statements page on it.
    pub account_seq: i64,
    pub debits_posted_after: i64,
    pub credits_posted_after: i64,
    pub debits_pending_after: i64,
    pub credits_pending_after: i64,
    /// Copied from the entry so that balances as of a time need no join.
    pub effective_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::ledger_entries::Entity",
        from = "Column::EntryId",
        to = "super::ledger_entries::Column::Id"
    )]
    Entry,
    #[sea_orm(
        belongs_to = "super::ledger_accounts::Entity",
        from = "Column::AccountId",
        to = "super::ledger_accounts::Column::Id"
    )]
    Account,
}

impl Related<super::ledger_entries::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Entry.def()
    }
}

impl Related<super::ledger_accounts::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Account.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
