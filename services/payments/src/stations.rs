//! A station's tills and channels in storage: terminals with their keys, the channels the
//! station signed with its terms, and the station's ledger accounts.
//!
//! Every ledger account a station's payments post to has an id derived from the station and
//! the account's code, so that opening it again (a retry, a second process) finds the same
//! account instead of making a twin.

use chrono::{DateTime, Utc};
use ledger::{Currency, Ledger, LedgerError, NewAccount, Side};
use openssl::rand::rand_bytes;
use openssl::sha::sha256;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder, sea_query::OnConflict,
};
use uuid::Uuid;

use entities::{pos_channels, pos_terminals};

use crate::model::{ChannelConfig, ChannelId, Party};
use crate::postings::ChannelAccounts;

/// A failure of the station store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Db(#[from] sea_orm::DbErr),
}

/// Hex of SHA-256.
pub(crate) fn digest_hex(bytes: &[u8]) -> String {
    sha256(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh secret of 32 random bytes, hex.
fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand_bytes(&mut bytes).expect("the system's random source works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A terminal as registered, with its key shown this once.
#[derive(Clone, Debug)]
pub struct RegisteredTerminal {
    pub terminal: pos_terminals::Model,
    pub key: String,
}

/// Registers a till at a station. The code is unique within the station.
pub async fn register_terminal(
    db: &impl ConnectionTrait,
    station_id: Uuid,
    code: &str,
    name: &str,
    now: DateTime<Utc>,
) -> Result<RegisteredTerminal, StoreError> {
    let key = new_secret();
    let row = pos_terminals::Model {
        id: Uuid::now_v7(),
        station_id,
        code: code.to_owned(),
        name: name.to_owned(),
        key_hash: digest_hex(key.as_bytes()),
        created_at: now,
        disabled_at: None,
    };
    let inserted = pos_terminals::Entity::insert(pos_terminals::ActiveModel {
        id: Set(row.id),
        station_id: Set(row.station_id),
        code: Set(row.code.clone()),
        name: Set(row.name.clone()),
        key_hash: Set(row.key_hash.clone()),
        created_at: Set(row.created_at),
        disabled_at: Set(None),
    })
    .on_conflict(
        OnConflict::columns([
            pos_terminals::Column::StationId,
            pos_terminals::Column::Code,
        ])
        .do_nothing()
        .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    if inserted == 0 {
        return Err(StoreError::Conflict(format!(
            "the station already has a terminal {code:?}"
        )));
    }
    Ok(RegisteredTerminal { terminal: row, key })
}

/// The terminal, when `key` is its key and it is not disabled. Compares digests, so the
/// comparison's time says nothing about the stored key.
pub async fn authenticate_terminal(
    db: &impl ConnectionTrait,
    terminal_id: Uuid,
    key: &str,
) -> Result<Option<pos_terminals::Model>, StoreError> {
    let Some(terminal) = pos_terminals::Entity::find_by_id(terminal_id)
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    Ok(key_opens(&terminal, key).then_some(terminal))
}

/// Whether `key` is the key of a terminal as read, and the terminal is enabled.
pub fn key_opens(terminal: &pos_terminals::Model, key: &str) -> bool {
    let presented = digest_hex(key.as_bytes());
    let same = openssl::memcmp::eq(presented.as_bytes(), terminal.key_hash.as_bytes());
    same && terminal.disabled_at.is_none()
}

pub async fn terminal(
    db: &impl ConnectionTrait,
    terminal_id: Uuid,
) -> Result<Option<pos_terminals::Model>, StoreError> {
    Ok(pos_terminals::Entity::find_by_id(terminal_id)
        .one(db)
        .await?)
}

pub async fn terminals(
    db: &impl ConnectionTrait,
    station_id: Uuid,
) -> Result<Vec<pos_terminals::Model>, StoreError> {
    Ok(pos_terminals::Entity::find()
        .filter(pos_terminals::Column::StationId.eq(station_id))
        .order_by_asc(pos_terminals::Column::Code)
        .all(db)
        .await?)
}

/// The ledger accounts a station's retail takings post to, other than the per-channel
/// clearing accounts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StationAccounts {
    /// Sales (revenue, credit-normal).
    pub sales: Uuid,
    /// Channel fees (expense, debit-normal).
    pub fees: Uuid,
    /// The cash drawer (asset, debit-normal).
    pub cash: Uuid,
    /// The station's own bank account, where channels settle (asset, debit-normal).
    pub bank: Uuid,
}

/// The id of a station's account with `code`: the same station and code give the same id.
pub(crate) fn account_id(station_id: Uuid, code: &str) -> Uuid {
    Uuid::new_v5(&station_id, code.as_bytes())
}

/// Opens (or finds) the station's account with `code`.
pub(crate) async fn open(
    ledger: &Ledger,
    station_id: Uuid,
    owner: &str,
    code: &str,
    name: &str,
    side: Side,
) -> Result<Uuid, StoreError> {
    let id = account_id(station_id, code);
    let account = NewAccount::new(owner, code, name, Currency::CNY, side).with_id(id);
    ledger.create_account(account).await?;
    Ok(id)
}

/// Opens (or finds) the station's sales, fee, cash and bank accounts under the ledger
/// owner `owner`.
pub async fn station_accounts(
    ledger: &Ledger,
    station_id: Uuid,
    owner: &str,
) -> Result<StationAccounts, StoreError> {
    Ok(StationAccounts {
        sales: open(
            ledger,
            station_id,
            owner,
            "pos:sales",
            "Retail sales",
            Side::Credit,
        )
        .await?,
        fees: open(
            ledger,
            station_id,
            owner,
            "pos:fees",
            "Channel fees",
            Side::Debit,
        )
        .await?,
        cash: open(
            ledger,
            station_id,
            owner,
            "pos:cash",
            "Cash drawer",
            Side::Debit,
        )
        .await?,
        bank: open(
            ledger,
            station_id,
            owner,
            "pos:bank",
            "Station bank account",
            Side::Debit,
        )
        .await?,
    })
}

/// The station's accounts as one channel's sales post to them.
pub fn channel_accounts(station: &StationAccounts, clearing: Uuid) -> ChannelAccounts {
    ChannelAccounts {
        clearing,
        sales: station.sales,
        fees: station.fees,
        bank: station.bank,
    }
}

/// The ids of the station's accounts, without opening them (they are opened when the first
/// channel or terminal is set up).
pub fn station_account_ids(station_id: Uuid) -> StationAccounts {
    StationAccounts {
        sales: account_id(station_id, "pos:sales"),
        fees: account_id(station_id, "pos:fees"),
        cash: account_id(station_id, "pos:cash"),
        bank: account_id(station_id, "pos:bank"),
    }
}

/// Opens (or finds) what the station owes a channel that bills its fees later (a liability,
/// credit-normal), under the ledger owner `owner`.
pub async fn fees_payable_account(
    ledger: &Ledger,
    station_id: Uuid,
    owner: &str,
    channel: &ChannelId,
) -> Result<Uuid, StoreError> {
    open(
        ledger,
        station_id,
        owner,
        &format!("pos:fees-payable:{channel}"),
        &format!("Fees owed to {channel}"),
        Side::Credit,
    )
    .await
}

/// One of a station's channels with its terms and clearing account.
#[derive(Clone, Debug, PartialEq)]
pub struct StationChannel {
    pub terms: ChannelConfig,
    pub clearing_account_id: Uuid,
    pub updated_at: DateTime<Utc>,
}

fn party_text(party: Party) -> &'static str {
    match party {
        Party::WechatPay => "wechat_pay",
        Party::Alipay => "alipay",
        Party::Acquirer => "acquirer",
    }
}

fn read_channel(row: pos_channels::Model) -> Result<StationChannel, StoreError> {
    let terms: ChannelConfig = serde_json::from_str(&row.terms)
        .map_err(|e| StoreError::Invalid(format!("stored terms of {}: {e}", row.channel_id)))?;
    Ok(StationChannel {
        terms,
        clearing_account_id: row.clearing_account_id,
        updated_at: row.updated_at,
    })
}

/// Sets the station's terms on a channel (new, or replacing the terms it had), opening the
/// station's accounts and the channel's clearing account on first use.
pub async fn set_channel(
    ledger: &Ledger,
    station_id: Uuid,
    owner: &str,
    terms: ChannelConfig,
    now: DateTime<Utc>,
) -> Result<StationChannel, StoreError> {
    terms
        .validate()
        .map_err(|e| StoreError::Invalid(e.to_string()))?;
    if terms.currency != Currency::CNY {
        return Err(StoreError::Invalid("stations take CNY only".into()));
    }
    if terms.methods.is_empty() || terms.methods.iter().any(|m| !m.uses_channel()) {
        return Err(StoreError::Invalid(
            "a channel serves at least one method, and only methods that go through a channel"
                .into(),
        ));
    }
    station_accounts(ledger, station_id, owner).await?;
    let clearing = open(
        ledger,
        station_id,
        owner,
        &format!("pos:clearing:{}", terms.id),
        &format!("Clearing with {}", terms.id),
        Side::Debit,
    )
    .await?;
    let text = serde_json::to_string(&terms).expect("terms serialise");
    pos_channels::Entity::insert(pos_channels::ActiveModel {
        id: Set(Uuid::now_v7()),
        station_id: Set(station_id),
        channel_id: Set(terms.id.to_string()),
        party: Set(party_text(terms.party).to_owned()),
        terms: Set(text),
        clearing_account_id: Set(clearing),
        created_at: Set(now),
        updated_at: Set(now),
    })
    .on_conflict(
        OnConflict::columns([
            pos_channels::Column::StationId,
            pos_channels::Column::ChannelId,
        ])
        .update_columns([
            pos_channels::Column::Party,
            pos_channels::Column::Terms,
            pos_channels::Column::UpdatedAt,
        ])
        .to_owned(),
    )
    .exec_without_returning(ledger.db())
    .await?;
    Ok(StationChannel {
        terms,
        clearing_account_id: clearing,
        updated_at: now,
    })
}

/// Every channel the station signed.
pub async fn channels(
    db: &DatabaseConnection,
    station_id: Uuid,
) -> Result<Vec<StationChannel>, StoreError> {
    pos_channels::Entity::find()
        .filter(pos_channels::Column::StationId.eq(station_id))
        .order_by_asc(pos_channels::Column::ChannelId)
        .all(db)
        .await?
        .into_iter()
        .map(read_channel)
        .collect()
}

/// One of the station's channels.
pub async fn channel(
    db: &impl ConnectionTrait,
    station_id: Uuid,
    channel: &ChannelId,
) -> Result<Option<StationChannel>, StoreError> {
    pos_channels::Entity::find()
        .filter(pos_channels::Column::StationId.eq(station_id))
        .filter(pos_channels::Column::ChannelId.eq(channel.as_str()))
        .one(db)
        .await?
        .map(read_channel)
        .transpose()
}
