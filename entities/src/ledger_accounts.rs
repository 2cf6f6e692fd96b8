//! `ledger_accounts`: one row per account, holding its running balances.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "ledger_accounts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The organisation (party) that owns the account.
    pub owner_org: String,
    /// Code in the chart of accounts, e.g. `2203.fleet.prepaid`.
    pub code: String,
    pub name: String,
    /// ISO 4217 code; the scale of every amount on the account follows from it.
    pub currency: String,
    /// `debit` or `credit`.
    pub normal_side: String,
    pub debits_must_not_exceed_credits: bool,
    pub credits_must_not_exceed_debits: bool,
    /// How far the constrained side may exceed the other, in minor units.
    pub credit_limit_minor: Option<i64>,
    pub parent_id: Option<Uuid>,
    pub closed: bool,
    #[sea_orm(column_type = "JsonBinary")]
    pub metadata: Json,
    pub debits_posted: i64,
    pub credits_posted: i64,
    pub debits_pending: i64,
    pub credits_pending: i64,
    /// Number of postings applied to the account; each posting carries its sequence number.
    pub posting_seq: i64,
    /// Hash of the creation request, so that a repeated creation can be told from a conflict.
    pub content_hash: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::ledger_postings::Entity")]
    Postings,
}

impl Related<super::ledger_postings::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Postings.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
