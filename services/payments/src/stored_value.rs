//! Paying from money held in our own ledger: no outside channel, no routing, booked at once
//! at the till, and never more than the payer holds, under any concurrency (the ledger
//! refuses an entry that would take the paying account below zero).
//!
//! The station company's member cards ([`crate::cards`]) are one such payer. **Fleet cards
//! plug in here** when the fleet accounts exist: a fleet card is a [`StoredValue`] whose
//! paying account is the vehicle's or driver's sub-account, with no cap to keep, and whose
//! [`StoredValue::refusal`] holds the fleet's rules (fuel grades, per-vehicle limits, hours),
//! read from the payment's sale lines. Charging, refusing and refunding are the same code for
//! both: [`charge`] and [`give_back`] below. The till's side needs only a method that names
//! the card and a lookup of its number, as `member_card` has.

use entities::{pos_payments, pos_refunds};
use ledger::{Ledger, LedgerError};

use crate::postings::PayingAccounts;
use crate::sales::stored_money;
use crate::stations::StoreError;

/// A payer whose money is an account in our ledger.
pub trait StoredValue: Send + Sync {
    /// How the payer is named to the till and in reasons, e.g. `member card 8800…`.
    fn label(&self) -> String;
    /// The paying account and, when the payer has a cap, the headroom pair that moves with
    /// it (see [`crate::cards`]).
    fn accounts(&self) -> PayingAccounts;
    /// Why this payer may not pay for `payment` now (blocked, outside its rules), if so.
    fn refusal(&self, payment: &pos_payments::Model) -> Option<String>;
}

/// How a stored-value payment's booking ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Charge {
    Paid,
    /// Nothing was taken, for this reason.
    Refused(String),
}

/// Books a sale paid from stored value: the paying account pays the station's sales and
/// cannot go below zero. Idempotent by the payment number; a booking that landed before a
/// crash stands whatever the payer's state is now.
pub async fn charge(
    ledger: &Ledger,
    payment: &pos_payments::Model,
    payer: &dyn StoredValue,
) -> Result<Charge, StoreError> {
    let amount = stored_money(payment.amount_minor, &payment.currency)?;
    let key = format!("payment:{}:sale", payment.payment_no);
    // A refusal stands unless the sale was booked before a crash (only then worth a look).
    if let Some(reason) = payer.refusal(payment) {
        let booked = ledger
            .entries_by_reference(&format!("payment:{}", payment.payment_no))
            .await?
            .iter()
            .any(|e| e.idempotency_key == key);
        if !booked {
            return Ok(Charge::Refused(reason));
        }
    }
    let accounts = payer.accounts();
    let sales = crate::stations::station_account_ids(payment.station_id).sales;
    let entry = crate::postings::card_sale(&payment.payment_no, &accounts, sales, amount);
    match ledger.post_entry(entry).await {
        Ok(_) => Ok(Charge::Paid),
        Err(LedgerError::ExceedsCredits { account }) if account == accounts.balance => {
            let balance = ledger.balance(accounts.balance).await?.available;
            Ok(Charge::Refused(format!(
                "the {} holds {} CNY, less than {} CNY",
                payer.label(),
                balance.amount(),
                amount.amount()
            )))
        }
        Err(e) => Err(e.into()),
    }
}

/// Pays a refund back onto the payer. `Ok(Err(reason))` when the payer cannot take it back
/// (a cap, with what was loaded since).
pub async fn give_back(
    ledger: &Ledger,
    payment: &pos_payments::Model,
    refund: &pos_refunds::Model,
    payer: &dyn StoredValue,
) -> Result<Result<(), String>, StoreError> {
    let amount = stored_money(refund.amount_minor, &refund.currency)?;
    let accounts = payer.accounts();
    let sales = crate::stations::station_account_ids(payment.station_id).sales;
    let entry = crate::postings::card_refund(
        &payment.payment_no,
        &refund.refund_no,
        &accounts,
        sales,
        amount,
    );
    match ledger.post_entry(entry).await {
        Ok(_) => Ok(Ok(())),
        Err(LedgerError::ExceedsCredits { account })
            if accounts
                .cap
                .is_some_and(|(headroom, _)| headroom == account) =>
        {
            Ok(Err(format!(
                "the {} cannot take {} CNY back without passing its cap; refund it in cash",
                payer.label(),
                amount.amount()
            )))
        }
        Err(e) => Err(e.into()),
    }
}
