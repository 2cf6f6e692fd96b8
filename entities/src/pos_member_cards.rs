//! `pos_member_cards`: a stored-value member card of a station company, usable at its
//! stations. The money is in the ledger (the balance and headroom accounts).
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "pos_member_cards")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The organisation that issued the card and owes its balance (the station company).
    pub issuer_org_id: Uuid,
    /// The number printed on the card, unique per issuer.
    pub card_no: String,
    /// `anonymous` (at most 1,000 CNY) or `named` (at most 5,000 CNY).
    pub kind: String,
    pub holder_name: Option<String>,
    pub holder_phone: Option<String>,
    /// `active` or `blocked` (reported lost, or stopped by the issuer).
    pub status: String,
    pub status_reason: Option<String>,
    /// The most the card may hold, in minor units.
    pub cap_minor: i64,
    pub currency: String,
    /// What the issuer owes the holder (a liability that cannot go negative).
    pub balance_account_id: Uuid,
    /// What may still be loaded (cannot go negative either): balance + headroom = cap.
    pub headroom_account_id: Uuid,
    pub issued_station_id: Uuid,
    pub issued_terminal_id: Uuid,
    pub issued_by: String,
    pub request_hash: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
