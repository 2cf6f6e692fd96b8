//! The ledger entries a payment makes. Pure: builds [`ledger::model::NewEntry`] values for
//! the ledger to write; the idempotency key makes a repeated posting a no-op.
//!
//! A channel sale debits the channel's clearing account and credits the station's sales; a
//! fee deducted at payment time moves from clearing to the station's fee expense, so the
//! clearing account holds exactly what the channel will settle. A fee billed later is booked
//! when the bill comes. Cash debits the station's drawer.

use ledger::model::{NewEntry, PostingInput};
use ledger::money::{Money, MoneyError};
use uuid::Uuid;

use crate::model::{FeeMode, FeeRate};

/// The accounts one station's payments through one channel post to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelAccounts {
    /// What the channel owes the station until it settles (an asset).
    pub clearing: Uuid,
    /// The station's sales (revenue).
    pub sales: Uuid,
    /// The station's channel fees (expense).
    pub fees: Uuid,
    /// The station's own bank account, where settlements arrive.
    pub bank: Uuid,
}

/// The entry of a channel sale. The fee is computed by the ledger's rounding rule; with
/// [`FeeMode::DeductedAtPayment`] it leaves clearing at once.
pub fn channel_sale(
    payment_no: &str,
    accounts: &ChannelAccounts,
    amount: Money,
    fee_rate: FeeRate,
    fee_mode: FeeMode,
) -> Result<NewEntry, MoneyError> {
    let currency = amount.currency();
    let mut entry = NewEntry::transfer(
        format!("payment:{payment_no}:sale"),
        format!("payment:{payment_no}"),
        accounts.clearing,
        accounts.sales,
        amount.amount(),
        currency,
    )
    .description("channel sale");
    let fee = fee_rate.fee_on(amount)?;
    if fee_mode == FeeMode::DeductedAtPayment && fee.is_positive() {
        entry
            .postings
            .push(PostingInput::debit(accounts.fees, fee.amount(), currency));
        entry.postings.push(PostingInput::credit(
            accounts.clearing,
            fee.amount(),
            currency,
        ));
    }
    Ok(entry)
}

/// The entry of a cash sale: the drawer takes the money.
pub fn cash_sale(payment_no: &str, drawer: Uuid, sales: Uuid, amount: Money) -> NewEntry {
    NewEntry::transfer(
        format!("payment:{payment_no}:sale"),
        format!("payment:{payment_no}"),
        drawer,
        sales,
        amount.amount(),
        amount.currency(),
    )
    .description("cash sale")
}

/// The entry of a refund through the channel: sales give back, clearing owes less.
pub fn channel_refund(
    payment_no: &str,
    refund_no: &str,
    accounts: &ChannelAccounts,
    refund: Money,
) -> NewEntry {
    NewEntry::transfer(
        format!("payment:{payment_no}:refund:{refund_no}"),
        format!("payment:{payment_no}"),
        accounts.sales,
        accounts.clearing,
        refund.amount(),
        refund.currency(),
    )
    .description("channel refund")
}

/// The entry of a cash refund: the drawer pays back what the sale took.
pub fn cash_refund(
    payment_no: &str,
    refund_no: &str,
    drawer: Uuid,
    sales: Uuid,
    refund: Money,
) -> NewEntry {
    NewEntry::transfer(
        format!("payment:{payment_no}:refund:{refund_no}"),
        format!("payment:{payment_no}"),
        sales,
        drawer,
        refund.amount(),
        refund.currency(),
    )
    .description("cash refund")
}

/// The entry of a channel's settlement from its statement: the net amount arrives in the
/// station's bank and clearing is emptied by as much.
pub fn settlement(
    channel: &str,
    statement_date: &str,
    accounts: &ChannelAccounts,
    net: Money,
) -> NewEntry {
    NewEntry::transfer(
        format!("settlement:{channel}:{statement_date}"),
        format!("statement:{channel}:{statement_date}"),
        accounts.bank,
        accounts.clearing,
        net.amount(),
        net.currency(),
    )
    .description("channel settlement")
}

/// The entry of one station's share of a channel's settlement of a statement day: the net
/// amount arrives in the station's bank and clearing is emptied by as much. A day whose
/// refunds exceed its sales settles the other way (the channel takes the difference from
/// the station's account). `None` when nothing moves.
pub fn station_settlement(
    channel: &str,
    statement_day: &str,
    station_id: Uuid,
    accounts: &ChannelAccounts,
    net: Money,
) -> Option<NewEntry> {
    let (debit, credit) = if net.is_positive() {
        (accounts.bank, accounts.clearing)
    } else if net.amount().is_zero() {
        return None;
    } else {
        (accounts.clearing, accounts.bank)
    };
    Some(
        NewEntry::transfer(
            format!("settlement:{channel}:{statement_day}:{station_id}"),
            format!("statement:{channel}:{statement_day}"),
            debit,
            credit,
            net.amount().abs(),
            net.currency(),
        )
        .description("channel settlement"),
    )
}

/// The entry that brings the fees deducted at payment (our rounding, booked with each sale)
/// to what the statement charged: the difference moves between fees and clearing, so that
/// clearing holds exactly what the channel pays. `None` when they agree.
pub fn fee_adjustment(
    channel: &str,
    statement_day: &str,
    station_id: Uuid,
    accounts: &ChannelAccounts,
    booked: Money,
    charged: Money,
) -> Result<Option<NewEntry>, MoneyError> {
    if booked.currency() != charged.currency() {
        return Err(MoneyError::CurrencyMismatch(
            booked.currency(),
            charged.currency(),
        ));
    }
    let difference = charged.minor_units()? - booked.minor_units()?;
    let (debit, credit) = match difference.signum() {
        0 => return Ok(None),
        1 => (accounts.fees, accounts.clearing),
        _ => (accounts.clearing, accounts.fees),
    };
    let moved = Money::from_minor(difference.abs(), charged.currency());
    Ok(Some(
        NewEntry::transfer(
            format!("fee-adjustment:{channel}:{statement_day}:{station_id}"),
            format!("statement:{channel}:{statement_day}"),
            debit,
            credit,
            moved.amount(),
            moved.currency(),
        )
        .description("channel fee adjustment to the statement"),
    ))
}

/// The entry of the fees a channel bills later, as its statement states them: an expense
/// now, owed to the channel until its bill is paid. `None` when there is no fee.
pub fn fees_billed(
    channel: &str,
    statement_day: &str,
    station_id: Uuid,
    fees: Uuid,
    payable: Uuid,
    charged: Money,
) -> Option<NewEntry> {
    charged.is_positive().then(|| {
        NewEntry::transfer(
            format!("fees-billed:{channel}:{statement_day}:{station_id}"),
            format!("statement:{channel}:{statement_day}"),
            fees,
            payable,
            charged.amount(),
            charged.currency(),
        )
        .description("channel fees billed later")
    })
}

/// The accounts of one stored-value member card.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CardAccounts {
    /// What the issuer owes the holder (a liability that cannot go negative).
    pub balance: Uuid,
    /// What may still be loaded (cannot go negative): balance + headroom = the card's cap.
    pub headroom: Uuid,
    /// The issuer's counterpart of every card's headroom (a memorandum account).
    pub capacity: Uuid,
}

impl CardAccounts {
    /// The card as a paying account with its cap.
    pub fn paying(&self) -> PayingAccounts {
        PayingAccounts {
            balance: self.balance,
            cap: Some((self.headroom, self.capacity)),
        }
    }
}

/// The accounts a stored-value payer pays from: its balance and, when it has a cap, its
/// headroom and the capacity account opposite it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PayingAccounts {
    pub balance: Uuid,
    pub cap: Option<(Uuid, Uuid)>,
}

/// The money leg and, when there is one, the headroom leg that keeps the cap, in one entry.
fn card_entry(
    key: String,
    reference: String,
    money: (Uuid, Uuid),
    headroom: Option<(Uuid, Uuid)>,
    amount: Money,
    description: &str,
) -> NewEntry {
    let currency = amount.currency();
    let mut entry = NewEntry::transfer(key, reference, money.0, money.1, amount.amount(), currency)
        .description(description);
    if let Some((debit, credit)) = headroom {
        entry
            .postings
            .push(PostingInput::debit(debit, amount.amount(), currency));
        entry
            .postings
            .push(PostingInput::credit(credit, amount.amount(), currency));
    }
    entry
}

/// The entry that gives a card room to hold up to `room` more (its cap when issued, the
/// difference when an anonymous card is registered to a name).
pub fn card_capacity(key: String, card: &CardAccounts, room: Money) -> NewEntry {
    let currency = room.currency();
    NewEntry::transfer(
        key.clone(),
        key,
        card.capacity,
        card.headroom,
        room.amount(),
        currency,
    )
    .description("member card capacity")
}

/// The entry of a top-up: the money arrives (`into`, e.g. the drawer) and the card owes the
/// holder more; the headroom shrinks by as much, and cannot go below zero.
pub fn card_top_up(top_up_no: &str, card: &CardAccounts, into: Uuid, amount: Money) -> NewEntry {
    card_entry(
        format!("top-up:{top_up_no}"),
        format!("top-up:{top_up_no}"),
        (into, card.balance),
        Some((card.headroom, card.capacity)),
        amount,
        "member card top-up",
    )
}

/// The entry of a sale paid by card: the balance pays the station's sales (and cannot go
/// below zero); the headroom grows back by as much.
pub fn card_sale(payment_no: &str, card: &PayingAccounts, sales: Uuid, amount: Money) -> NewEntry {
    card_entry(
        format!("payment:{payment_no}:sale"),
        format!("payment:{payment_no}"),
        (card.balance, sales),
        card.cap.map(|(headroom, capacity)| (capacity, headroom)),
        amount,
        "member card sale",
    )
}

/// The entry of a refund to the card: sales give back onto the balance, which uses headroom.
pub fn card_refund(
    payment_no: &str,
    refund_no: &str,
    card: &PayingAccounts,
    sales: Uuid,
    refund: Money,
) -> NewEntry {
    card_entry(
        format!("payment:{payment_no}:refund:{refund_no}"),
        format!("payment:{payment_no}"),
        (sales, card.balance),
        card.cap,
        refund,
        "member card refund",
    )
}
