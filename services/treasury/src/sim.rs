//! The custodial bank simulator's core: a test peer with the bank's behaviour, never a
//! shortcut inside the product.
//!
//! It accepts a signed pain.001, checks the platform's signature and the message rules,
//! refuses a message id it has seen before (so a resubmission after a crash never pays
//! twice) and an end-to-end id it has paid before, keeps sub-account balances (insufficient
//! funds are rejected), applies the configured rails, hours, cap and maintenance (a payment
//! whose rail is closed waits as PDNG until [`CustodialBank::run_due`] finds it open), and
//! answers with pain.002 reports signed with the bank's key. A status query
//! ([`CustodialBank::query`]) answers the latest status of a message's payments, or that the
//! bank never received it. Transport (HTTP, callbacks, delays) is the caller's concern.
//!
//! # Bookings
//! An executed payment debits the debtor sub-account and, when the creditor account is held
//! at this bank (it has a balance here), credits it. Every movement is booked in the
//! account's journal ([`Booking`]) and announced with a signed camt.054 notification, which
//! the caller collects with [`CustodialBank::take_notifications`]. The journal gives the
//! end-of-day camt.053 statement of an account for a date ([`CustodialBank::statement`];
//! days are Asia/Shanghai days).
//!
//! # Freezes
//! A signed freeze request ([`crate::freeze`]) blocks an amount on a sub-account: the
//! available balance (the booked balance less everything frozen) drops, payments beyond it
//! are rejected with `AM04`, and so is a freeze beyond it. An unfreeze names the freeze it
//! releases. Answers are signed JSON, stored per request id: the same request again gets
//! the same answer and changes nothing ([`CustodialBank::receive_freeze`],
//! [`CustodialBank::query_freeze`]).
//!
//! # Returns after settlement
//! A settled payment can come back from the creditor's side ([`CustodialBank::return_payment`],
//! e.g. `AC04` closed account). The bank then
//! - credits the debtor sub-account back and books it as a credit with the reversal
//!   indicator (`RvslInd`), the original end-to-end id, the creditor as counterparty and the
//!   return reason in `NtryDtls/TxDtls/RtrInf` (`Rsn/Cd` and `AddtlInf`), announced with a
//!   signed camt.054 for the debtor account;
//! - reverses the creditor's credit as well when the creditor account is held here;
//! - reports the transaction in later status queries as `RJCT` with the return reason code
//!   and additional information starting with
//!   [`RETURN_INFO_PREFIX`](crate::iso20022::pain002::RETURN_INFO_PREFIX), so a platform that
//!   saw `ACSC` before can tell a return after settlement from a rejection before it
//!   ([`TransactionStatus::is_return`]).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, Utc};
use ledger::Money;
use rust_decimal::Decimal;
use serde::Serialize;

use crate::domain::{AccountNumber, BankCode, EndToEndId, MessageId};
use crate::freeze::{FreezeAction, FreezeAnswer, FreezeRequest, FreezeStatus};
use crate::iso20022::MessageError;
use crate::iso20022::camt053::{Counterparty, Direction, ReturnReason, Statement, StatementEntry};
use crate::iso20022::camt054::Notification;
use crate::iso20022::pain001;
use crate::iso20022::pain002::{
    PaymentStatus, RETURN_INFO_PREFIX, StatusReason, StatusReport, TransactionStatus,
};
use crate::rails::{Rail, Rails, TZ};
use crate::signing::{Signature, Signer, SigningError, Verifier};

/// A message as it leaves the bank: the XML bytes and the bank's signature over them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedReport {
    pub xml: String,
    pub signature: Signature,
}

/// A signed camt.054 about one booking, and what it is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedNotification {
    /// The pain.001 message whose payment caused the booking, if one did.
    pub message_id: Option<MessageId>,
    pub account: AccountNumber,
    pub signed: SignedReport,
}

/// Why the bank could not even answer with a status report.
#[derive(Debug, thiserror::Error)]
pub enum BankError {
    #[error("unreadable message: {0}")]
    Malformed(#[from] MessageError),
    #[error("signing the report failed: {0}")]
    Signing(#[from] SigningError),
    #[error("refused: {0}")]
    Refused(String),
}

/// Why a payment cannot be returned.
#[derive(Debug, thiserror::Error)]
pub enum ReturnError {
    #[error("no settled payment with end-to-end id {0}")]
    NotSettled(EndToEndId),
    #[error("payment {0} was returned already")]
    AlreadyReturned(EndToEndId),
    #[error("{0:?} is not a return reason code (1 to 4 characters)")]
    InvalidReason(String),
    #[error(transparent)]
    Bank(#[from] BankError),
}

/// One booked movement in an account's journal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Booking {
    /// The bank's reference of the booking (`AcctSvcrRef`).
    pub reference: String,
    pub end_to_end_id: Option<EndToEndId>,
    /// Always positive; `direction` says in or out.
    pub amount: Money,
    pub direction: Direction,
    pub booked_at: DateTime<Utc>,
    pub counterparty: Option<Counterparty>,
    /// The booking reverses an earlier one (a return after settlement).
    pub reversal: bool,
    pub return_reason: Option<ReturnReason>,
}

impl Booking {
    fn signed_amount(&self) -> Decimal {
        match self.direction {
            Direction::Credit => self.amount.amount(),
            Direction::Debit => -self.amount.amount(),
        }
    }

    fn to_entry(&self) -> StatementEntry {
        StatementEntry {
            amount: self.amount,
            direction: self.direction,
            booking_date: self.booked_at.with_timezone(&TZ).date_naive(),
            bank_reference: self.reference.clone(),
            end_to_end_id: self.end_to_end_id.clone(),
            reversal: self.reversal,
            counterparty: self.counterparty.clone(),
            return_reason: self.return_reason.clone(),
        }
    }
}

/// A payment waiting for its rail to open.
#[derive(Clone, Debug)]
struct Queued {
    message_id: MessageId,
    end_to_end_id: EndToEndId,
    debtor: AccountNumber,
    debtor_name: Option<String>,
    debtor_bank: BankCode,
    creditor: AccountNumber,
    creditor_name: Option<String>,
    creditor_bank: BankCode,
    rail: Rail,
    amount: Money,
}

/// A settled payment, kept for returns.
#[derive(Clone, Debug)]
struct Settled {
    payment: Queued,
    /// The creditor account is held here and was credited.
    credited_here: bool,
    returned: bool,
}

/// The simulated custodial bank.
pub struct CustodialBank {
    rails: Rails,
    platform: Verifier,
    signer: Signer,
    balances: BTreeMap<AccountNumber, Money>,
    seen_messages: BTreeSet<MessageId>,
    paid: BTreeSet<EndToEndId>,
    queue: Vec<Queued>,
    /// Messages the bank has produced (reports, notifications, statements), for their ids.
    reports: u64,
    bookings_made: u64,
    executed: u64,
    /// The latest status of every transaction of every accepted message, for queries.
    statuses: BTreeMap<MessageId, Vec<TransactionStatus>>,
    journal: BTreeMap<AccountNumber, Vec<Booking>>,
    settled: BTreeMap<EndToEndId, Settled>,
    outbox: Vec<SignedNotification>,
    /// Freezes by request id, and whether released.
    freezes: BTreeMap<MessageId, Frozen>,
    /// The answer to every freeze or unfreeze request taken, for repeats and queries.
    freeze_answers: BTreeMap<MessageId, FreezeAnswer>,
}

/// An amount blocked on an account.
#[derive(Clone, Debug)]
struct Frozen {
    account: AccountNumber,
    amount: Money,
    released: bool,
}

impl CustodialBank {
    pub fn new(rails: Rails, platform: Verifier, signer: Signer) -> Self {
        CustodialBank {
            rails,
            platform,
            signer,
            balances: BTreeMap::new(),
            seen_messages: BTreeSet::new(),
            paid: BTreeSet::new(),
            queue: Vec::new(),
            reports: 0,
            bookings_made: 0,
            executed: 0,
            statuses: BTreeMap::new(),
            journal: BTreeMap::new(),
            settled: BTreeMap::new(),
            outbox: Vec::new(),
            freezes: BTreeMap::new(),
            freeze_answers: BTreeMap::new(),
        }
    }

    /// Everything frozen on an account now.
    pub fn frozen(&self, account: &AccountNumber) -> Decimal {
        self.freezes
            .values()
            .filter(|f| &f.account == account && !f.released)
            .map(|f| f.amount.amount())
            .sum()
    }

    /// The booked balance less everything frozen.
    pub fn available(&self, account: &AccountNumber) -> Option<Money> {
        let balance = self.balances.get(account)?;
        Money::new(balance.amount() - self.frozen(account), balance.currency()).ok()
    }

    /// Takes a signed freeze or unfreeze request at `at` and answers it, signed. A request
    /// id seen before gets its first answer again; nothing is done twice.
    pub fn receive_freeze(
        &mut self,
        body: &[u8],
        signature: &Signature,
        at: DateTime<Utc>,
    ) -> Result<SignedReport, BankError> {
        let text = std::str::from_utf8(body).map_err(|e| MessageError::Xml(e.to_string()))?;
        let request = FreezeRequest::parse(text)?;
        let answer = |status, code: Option<&str>, info: Option<&str>, frozen| FreezeAnswer {
            request_id: request.request_id.clone(),
            status,
            reason_code: code.map(str::to_owned),
            reason: info.map(str::to_owned),
            frozen,
            answered_at: at,
        };
        if self.platform.verify(body, signature).is_err() {
            // Not taken: the id stays free for a correctly signed request.
            let refused = answer(
                FreezeStatus::Rejected,
                Some("DS0B"),
                Some("signature invalid"),
                self.frozen(&request.account),
            );
            return self.sign_json(&refused.to_json()?);
        }
        if let Some(known) = self.freeze_answers.get(&request.request_id).cloned() {
            return self.sign_json(&known.to_json()?);
        }
        let amount = request.money()?;
        let reject = |code: &str, info: &str, frozen| {
            answer(FreezeStatus::Rejected, Some(code), Some(info), frozen)
        };
        let decided = match (self.available(&request.account), request.action) {
            (None, _) => reject("AC01", "unknown account", Decimal::ZERO),
            (Some(available), _) if available.currency() != amount.currency() => reject(
                "AM03",
                "not the account's currency",
                self.frozen(&request.account),
            ),
            (Some(available), FreezeAction::Freeze) => {
                if available.amount() < amount.amount() {
                    reject(
                        "AM04",
                        "insufficient available funds to freeze",
                        self.frozen(&request.account),
                    )
                } else {
                    self.freezes.insert(
                        request.request_id.clone(),
                        Frozen {
                            account: request.account.clone(),
                            amount,
                            released: false,
                        },
                    );
                    answer(
                        FreezeStatus::Done,
                        None,
                        None,
                        self.frozen(&request.account),
                    )
                }
            }
            (Some(_), FreezeAction::Unfreeze) => {
                let target = request
                    .releases
                    .as_ref()
                    .and_then(|id| self.freezes.get_mut(id));
                match target {
                    Some(f) if f.account != request.account || f.amount != amount => {
                        let frozen = self.frozen(&request.account);
                        reject("NARR", "the freeze is on another account or amount", frozen)
                    }
                    Some(f) if f.released => {
                        let frozen = self.frozen(&request.account);
                        reject("NARR", "the freeze was released already", frozen)
                    }
                    Some(f) => {
                        f.released = true;
                        answer(
                            FreezeStatus::Done,
                            None,
                            None,
                            self.frozen(&request.account),
                        )
                    }
                    None => {
                        let frozen = self.frozen(&request.account);
                        reject("NARR", "no such freeze", frozen)
                    }
                }
            }
        };
        self.freeze_answers
            .insert(request.request_id.clone(), decided.clone());
        self.sign_json(&decided.to_json()?)
    }

    /// The answer to a freeze or unfreeze request, signed again; `None` when the bank never
    /// took a request with this id.
    pub fn query_freeze(
        &mut self,
        request_id: &MessageId,
    ) -> Result<Option<SignedReport>, BankError> {
        match self.freeze_answers.get(request_id).cloned() {
            Some(answer) => self.sign_json(&answer.to_json()?).map(Some),
            None => Ok(None),
        }
    }

    /// A JSON answer with the bank's signature (in the `xml` field of the signed message).
    fn sign_json(&self, json: &str) -> Result<SignedReport, BankError> {
        let signature = self.signer.sign(json.as_bytes())?;
        Ok(SignedReport {
            xml: json.to_owned(),
            signature,
        })
    }

    /// Opens or tops up a sub-account with funds it had before any day the bank reports on
    /// (booked at the Unix epoch, without a notification).
    pub fn credit(&mut self, account: AccountNumber, amount: Money) {
        self.book(
            &account,
            amount,
            Direction::Credit,
            DateTime::UNIX_EPOCH,
            None,
            None,
            (false, None),
        )
        .expect("same currency");
    }

    /// Money arriving on a sub-account at `at` from outside the platform's instructions (a
    /// deposit): booked, and announced with a camt.054.
    pub fn deposit(
        &mut self,
        account: AccountNumber,
        amount: Money,
        at: DateTime<Utc>,
    ) -> Result<(), BankError> {
        if !amount.is_positive() {
            return Err(BankError::Refused("a deposit must be positive".into()));
        }
        let booking = self.book(
            &account,
            amount,
            Direction::Credit,
            at,
            None,
            None,
            (false, None),
        )?;
        self.notify(None, &account, booking, at)
    }

    pub fn balance(&self, account: &AccountNumber) -> Option<Money> {
        self.balances.get(account).copied()
    }

    /// The account's journal, oldest first.
    pub fn bookings(&self, account: &AccountNumber) -> &[Booking] {
        self.journal.get(account).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Whether a message with this id was accepted (a new one with it would get DU01).
    pub fn has_message(&self, message_id: &MessageId) -> bool {
        self.seen_messages.contains(message_id)
    }

    /// Payments executed (settled) so far.
    pub fn executed(&self) -> u64 {
        self.executed
    }

    /// The camt.054 notifications produced since the last call, oldest first.
    pub fn take_notifications(&mut self) -> Vec<SignedNotification> {
        std::mem::take(&mut self.outbox)
    }

    /// Receives a signed pain.001 at `at` and answers with a signed status report.
    pub fn receive(
        &mut self,
        xml: &[u8],
        signature: &Signature,
        at: DateTime<Utc>,
    ) -> Result<SignedReport, BankError> {
        self.receive_with(xml, signature, at, None)
    }

    /// Like [`receive`](Self::receive), but every payment of a message that passes the
    /// signature and duplicate checks is rejected with `reason` (a bank's bad day: the
    /// compliance check, a frozen account, …). Nothing is booked.
    pub fn receive_rejecting(
        &mut self,
        xml: &[u8],
        signature: &Signature,
        at: DateTime<Utc>,
        reason: StatusReason,
    ) -> Result<SignedReport, BankError> {
        self.receive_with(xml, signature, at, Some(reason))
    }

    fn receive_with(
        &mut self,
        xml: &[u8],
        signature: &Signature,
        at: DateTime<Utc>,
        forced: Option<StatusReason>,
    ) -> Result<SignedReport, BankError> {
        let text = std::str::from_utf8(xml).map_err(|e| MessageError::Xml(e.to_string()))?;
        let document = pain001::parse(text)?;
        let header = &document.initiation.grp_hdr;
        let message_id =
            MessageId::new(header.msg_id.clone()).map_err(|e| MessageError::Invalid {
                field: "MsgId",
                reason: e.to_string(),
            })?;
        if self.platform.verify(xml, signature).is_err() {
            return self.group_rejection(message_id, "DS0B", "signature invalid", at);
        }
        if self.seen_messages.contains(&message_id) {
            return self.group_rejection(message_id, "DU01", "duplicate message id", at);
        }
        // Every payment instruction is checked before any is executed: a refused message
        // moves no money, and its id stays free for a corrected message.
        let mut payments = Vec::new();
        for payment in &document.initiation.pmt_inf {
            match self.payments_of(&message_id, payment) {
                Ok(queued) => payments.extend(queued),
                Err(reason) => return self.group_rejection(message_id, "FF01", &reason, at),
            }
        }
        self.seen_messages.insert(message_id.clone());
        let statuses: Vec<TransactionStatus> = payments
            .into_iter()
            .map(|q| match &forced {
                Some(reason) => TransactionStatus {
                    end_to_end_id: q.end_to_end_id,
                    status: PaymentStatus::Rejected,
                    reason: Some(reason.clone()),
                },
                None => self.execute(q, at),
            })
            .collect();
        self.statuses.insert(message_id.clone(), statuses.clone());
        self.sign_report(message_id, None, None, statuses, at)
    }

    /// A bare acknowledgement that the message arrived (group status RCVD, no
    /// transactions), for a bank that answers before it has processed anything.
    pub fn acknowledge(
        &mut self,
        message_id: &MessageId,
        at: DateTime<Utc>,
    ) -> Result<SignedReport, BankError> {
        self.sign_report(
            message_id.clone(),
            Some(PaymentStatus::Received),
            None,
            Vec::new(),
            at,
        )
    }

    /// Answers a status query: the latest status of every transaction of the message, or
    /// `None` when the bank never accepted a message with this id (so sending it is safe).
    pub fn query(
        &mut self,
        message_id: &MessageId,
        at: DateTime<Utc>,
    ) -> Result<Option<SignedReport>, BankError> {
        let Some(statuses) = self.statuses.get(message_id).cloned() else {
            return Ok(None);
        };
        self.sign_report(message_id.clone(), None, None, statuses, at)
            .map(Some)
    }

    /// Executes waiting payments whose rail is open at `at`; one report per message.
    pub fn run_due(&mut self, at: DateTime<Utc>) -> Result<Vec<SignedReport>, BankError> {
        let waiting = std::mem::take(&mut self.queue);
        let mut per_message: BTreeMap<MessageId, Vec<TransactionStatus>> = BTreeMap::new();
        for q in waiting {
            if self
                .rails
                .is_open(q.rail, &q.debtor_bank, &q.creditor_bank, at)
            {
                let message_id = q.message_id.clone();
                let status = self.execute(q, at);
                self.set_status(&message_id, status.clone());
                per_message.entry(message_id).or_default().push(status);
            } else {
                self.queue.push(q);
            }
        }
        per_message
            .into_iter()
            .map(|(message_id, statuses)| self.sign_report(message_id, None, None, statuses, at))
            .collect()
    }

    /// How many payments wait for their rail.
    pub fn waiting(&self) -> usize {
        self.queue.len()
    }

    /// The payment with this end-to-end id comes back after settlement, for `reason_code`
    /// (an ISO external return reason code such as `AC04`). The debtor is credited back
    /// (and the creditor debited back when held here), the bookings are announced with
    /// camt.054 notifications (all of them queued for [`take_notifications`]
    /// (Self::take_notifications); the debtor's one is also returned), and later status
    /// queries report the transaction as returned.
    pub fn return_payment(
        &mut self,
        end_to_end_id: &EndToEndId,
        reason_code: &str,
        at: DateTime<Utc>,
    ) -> Result<SignedNotification, ReturnError> {
        if reason_code.is_empty() || reason_code.chars().count() > 4 {
            return Err(ReturnError::InvalidReason(reason_code.to_owned()));
        }
        let settled = self
            .settled
            .get(end_to_end_id)
            .cloned()
            .ok_or_else(|| ReturnError::NotSettled(end_to_end_id.clone()))?;
        if settled.returned {
            return Err(ReturnError::AlreadyReturned(end_to_end_id.clone()));
        }
        let q = &settled.payment;
        let info = format!("{RETURN_INFO_PREFIX} after settlement");
        let reason = ReturnReason {
            code: reason_code.to_owned(),
            info: Some(info.clone()),
        };
        let back = self.book(
            &q.debtor,
            q.amount,
            Direction::Credit,
            at,
            Some(q.end_to_end_id.clone()),
            Some(Counterparty {
                name: q.creditor_name.clone(),
                account: Some(q.creditor.clone()),
            }),
            (true, Some(reason.clone())),
        )?;
        let reference = back.reference.clone();
        self.notify(Some(&q.message_id), &q.debtor, back, at)?;
        let debtor_notice = self
            .outbox
            .last()
            .cloned()
            .expect("the notification was just queued");
        if settled.credited_here {
            let undone = self.book(
                &q.creditor,
                q.amount,
                Direction::Debit,
                at,
                Some(q.end_to_end_id.clone()),
                Some(Counterparty {
                    name: q.debtor_name.clone(),
                    account: Some(q.debtor.clone()),
                }),
                (true, Some(reason)),
            )?;
            self.notify(Some(&q.message_id), &q.creditor, undone, at)?;
        }
        if let Some(s) = self.settled.get_mut(end_to_end_id) {
            s.returned = true;
        }
        self.set_status(
            &q.message_id,
            TransactionStatus {
                end_to_end_id: q.end_to_end_id.clone(),
                status: PaymentStatus::Rejected,
                reason: Some(StatusReason {
                    code: reason_code.to_owned(),
                    info: Some(format!("{info}, booking {reference}")),
                }),
            },
        );
        Ok(debtor_notice)
    }

    /// The signed camt.053 of `account` for the Shanghai calendar day `date`: the booked
    /// balance at the start of the day, the day's bookings, the booked balance at its end.
    /// `None` for an account the bank does not hold.
    pub fn statement(
        &mut self,
        account: &AccountNumber,
        date: NaiveDate,
        at: DateTime<Utc>,
    ) -> Result<Option<SignedReport>, BankError> {
        let Some(balance) = self.balances.get(account).copied() else {
            return Ok(None);
        };
        let currency = balance.currency();
        let local_date = |b: &Booking| b.booked_at.with_timezone(&TZ).date_naive();
        let bookings = self.bookings(account);
        let opening: Decimal = bookings
            .iter()
            .filter(|b| local_date(b) < date)
            .map(Booking::signed_amount)
            .sum();
        let entries: Vec<StatementEntry> = bookings
            .iter()
            .filter(|b| local_date(b) == date)
            .map(Booking::to_entry)
            .collect();
        let net: Decimal = bookings
            .iter()
            .filter(|b| local_date(b) == date)
            .map(Booking::signed_amount)
            .sum();
        let money = |amount: Decimal| {
            Money::new(amount, currency).map_err(|e| BankError::Refused(e.to_string()))
        };
        let digits = account.as_str();
        let tail = &digits[digits.len().saturating_sub(18)..];
        self.reports += 1;
        let statement = Statement {
            message_id: MessageId::new(format!("BANK-STM-{:010}", self.reports)).expect("valid id"),
            created_at: at,
            statement_id: format!("STM-{}-{tail}", date.format("%Y%m%d")),
            account: account.clone(),
            date,
            opening: money(opening)?,
            closing: money(opening + net)?,
            entries,
        };
        let xml = statement.to_xml()?;
        let signature = self.signer.sign(xml.as_bytes())?;
        Ok(Some(SignedReport { xml, signature }))
    }

    fn set_status(&mut self, message_id: &MessageId, status: TransactionStatus) {
        if let Some(known) = self.statuses.get_mut(message_id)
            && let Some(slot) = known
                .iter_mut()
                .find(|t| t.end_to_end_id == status.end_to_end_id)
        {
            *slot = status;
        }
    }

    /// Books a movement on an account (opening it on a first credit) and returns the
    /// booking. `(reversal, return reason)` describe a return.
    #[allow(clippy::too_many_arguments)]
    fn book(
        &mut self,
        account: &AccountNumber,
        amount: Money,
        direction: Direction,
        at: DateTime<Utc>,
        end_to_end_id: Option<EndToEndId>,
        counterparty: Option<Counterparty>,
        (reversal, return_reason): (bool, Option<ReturnReason>),
    ) -> Result<Booking, BankError> {
        let balance = self
            .balances
            .entry(account.clone())
            .or_insert_with(|| Money::zero(amount.currency()));
        if balance.currency() != amount.currency() {
            return Err(BankError::Refused(format!(
                "account {account} is in {}, not {}",
                balance.currency(),
                amount.currency()
            )));
        }
        let signed = match direction {
            Direction::Credit => amount.amount(),
            Direction::Debit => -amount.amount(),
        };
        *balance = Money::new(balance.amount() + signed, balance.currency())
            .map_err(|e| BankError::Refused(e.to_string()))?;
        self.bookings_made += 1;
        let booking = Booking {
            reference: format!("BK{:012}", self.bookings_made),
            end_to_end_id,
            amount,
            direction,
            booked_at: at,
            counterparty,
            reversal,
            return_reason,
        };
        self.journal
            .entry(account.clone())
            .or_default()
            .push(booking.clone());
        Ok(booking)
    }

    /// Queues the signed camt.054 of one booking.
    fn notify(
        &mut self,
        message_id: Option<&MessageId>,
        account: &AccountNumber,
        booking: Booking,
        at: DateTime<Utc>,
    ) -> Result<(), BankError> {
        self.reports += 1;
        let notification = Notification {
            message_id: MessageId::new(format!("BANK-NTF-{:010}", self.reports)).expect("valid id"),
            created_at: at,
            notification_id: format!("NTF-{:010}", self.reports),
            account: account.clone(),
            entries: vec![booking.to_entry()],
        };
        let xml = notification.to_xml()?;
        let signature = self.signer.sign(xml.as_bytes())?;
        self.outbox.push(SignedNotification {
            message_id: message_id.cloned(),
            account: account.clone(),
            signed: SignedReport { xml, signature },
        });
        Ok(())
    }

    fn payments_of(
        &self,
        message_id: &MessageId,
        payment: &pain001::PaymentInstruction,
    ) -> Result<Vec<Queued>, String> {
        let code = payment.pmt_tp_inf.lcl_instrm.prtry.as_deref().unwrap_or("");
        let rail = Rail::from_code(code).ok_or_else(|| format!("unknown rail {code:?}"))?;
        let debtor =
            AccountNumber::new(payment.dbtr_acct.id.othr.id.clone()).map_err(|e| e.to_string())?;
        let debtor_bank = bank_of(&payment.dbtr_agt)?;
        let mut sum = Decimal::ZERO;
        let mut out = Vec::with_capacity(payment.cdt_trf_tx_inf.len());
        for tx in &payment.cdt_trf_tx_inf {
            let amount = tx
                .amt
                .instd_amt
                .to_money("InstdAmt")
                .map_err(|e| e.to_string())?;
            if !amount.is_positive() {
                return Err("amounts must be positive".into());
            }
            sum += amount.amount();
            out.push(Queued {
                message_id: message_id.clone(),
                end_to_end_id: EndToEndId::new(tx.pmt_id.end_to_end_id.clone())
                    .map_err(|e| e.to_string())?,
                debtor: debtor.clone(),
                debtor_name: payment.dbtr.nm.clone(),
                debtor_bank: debtor_bank.clone(),
                creditor: AccountNumber::new(tx.cdtr_acct.id.othr.id.clone())
                    .map_err(|e| e.to_string())?,
                creditor_name: tx.cdtr.nm.clone(),
                creditor_bank: bank_of(&tx.cdtr_agt)?,
                rail,
                amount,
            });
        }
        if sum != payment.ctrl_sum {
            return Err(format!("control sum {} is not {sum}", payment.ctrl_sum));
        }
        Ok(out)
    }

    fn execute(&mut self, q: Queued, at: DateTime<Utc>) -> TransactionStatus {
        let reject = |code: &str, info: &str| TransactionStatus {
            end_to_end_id: q.end_to_end_id.clone(),
            status: PaymentStatus::Rejected,
            reason: Some(StatusReason {
                code: code.to_owned(),
                info: Some(info.to_owned()),
            }),
        };
        if self.paid.contains(&q.end_to_end_id) {
            return reject("AM05", "duplicate end-to-end id");
        }
        if !q.rail.serves(&q.debtor_bank, &q.creditor_bank) {
            return reject("RC01", "rail does not connect these banks");
        }
        if q.rail == Rail::Interbank24x7
            && q.amount.amount() > self.rails.config().interbank.per_transaction_cap
        {
            return reject("AM02", "above the per-transaction cap");
        }
        if !self
            .rails
            .is_open(q.rail, &q.debtor_bank, &q.creditor_bank, at)
        {
            let status = TransactionStatus {
                end_to_end_id: q.end_to_end_id.clone(),
                status: PaymentStatus::Pending,
                reason: None,
            };
            self.queue.push(q);
            return status;
        }
        let Some(balance) = self.balances.get(&q.debtor) else {
            return reject("AC01", "unknown debtor account");
        };
        if balance.currency() != q.amount.currency() || balance.amount() < q.amount.amount() {
            return reject("AM04", "insufficient funds");
        }
        if balance.amount() - self.frozen(&q.debtor) < q.amount.amount() {
            return reject(
                "AM04",
                "insufficient available funds: part of the balance is frozen",
            );
        }
        let credited_here = self
            .balances
            .get(&q.creditor)
            .is_some_and(|b| b.currency() == q.amount.currency());
        let booked = self.settle(&q, credited_here, at);
        if let Err(error) = booked {
            return reject("NARR", &format!("booking failed: {error}"));
        }
        self.paid.insert(q.end_to_end_id.clone());
        self.executed += 1;
        let status = TransactionStatus {
            end_to_end_id: q.end_to_end_id.clone(),
            status: PaymentStatus::AcceptedSettlementCompleted,
            reason: None,
        };
        self.settled.insert(
            q.end_to_end_id.clone(),
            Settled {
                payment: q,
                credited_here,
                returned: false,
            },
        );
        status
    }

    /// Books a payment: the debtor's debit, the creditor's credit when held here.
    fn settle(
        &mut self,
        q: &Queued,
        credited_here: bool,
        at: DateTime<Utc>,
    ) -> Result<(), BankError> {
        let debit = self.book(
            &q.debtor,
            q.amount,
            Direction::Debit,
            at,
            Some(q.end_to_end_id.clone()),
            Some(Counterparty {
                name: q.creditor_name.clone(),
                account: Some(q.creditor.clone()),
            }),
            (false, None),
        )?;
        self.notify(Some(&q.message_id), &q.debtor, debit, at)?;
        if credited_here {
            let credit = self.book(
                &q.creditor,
                q.amount,
                Direction::Credit,
                at,
                Some(q.end_to_end_id.clone()),
                Some(Counterparty {
                    name: q.debtor_name.clone(),
                    account: Some(q.debtor.clone()),
                }),
                (false, None),
            )?;
            self.notify(Some(&q.message_id), &q.creditor, credit, at)?;
        }
        Ok(())
    }

    fn group_rejection(
        &mut self,
        message_id: MessageId,
        code: &str,
        info: &str,
        at: DateTime<Utc>,
    ) -> Result<SignedReport, BankError> {
        let reason = StatusReason {
            code: code.to_owned(),
            info: Some(info.to_owned()),
        };
        self.sign_report(
            message_id,
            Some(PaymentStatus::Rejected),
            Some(reason),
            Vec::new(),
            at,
        )
    }

    /// Signs a report; the group status is `group` when given, else derived from the
    /// transactions.
    fn sign_report(
        &mut self,
        original: MessageId,
        group: Option<PaymentStatus>,
        rejection: Option<StatusReason>,
        transactions: Vec<TransactionStatus>,
        at: DateTime<Utc>,
    ) -> Result<SignedReport, BankError> {
        self.reports += 1;
        let all = |status: PaymentStatus| transactions.iter().all(|t| t.status == status);
        let group_status = group.unwrap_or(if all(PaymentStatus::AcceptedSettlementCompleted) {
            PaymentStatus::AcceptedSettlementCompleted
        } else if all(PaymentStatus::Rejected) {
            PaymentStatus::Rejected
        } else if all(PaymentStatus::Pending) {
            PaymentStatus::Pending
        } else {
            PaymentStatus::AcceptedTechnicalValidation
        });
        let report = StatusReport {
            message_id: MessageId::new(format!("BANK-STS-{:010}", self.reports)).expect("valid id"),
            created_at: at,
            original_message_id: original,
            group_status: Some(group_status),
            group_reason: rejection,
            transactions,
        };
        let xml = report.to_xml()?;
        let signature = self.signer.sign(xml.as_bytes())?;
        Ok(SignedReport { xml, signature })
    }
}

fn bank_of(agent: &crate::iso20022::Agent) -> Result<BankCode, String> {
    let code = agent
        .fin_instn_id
        .clr_sys_mmb_id
        .as_ref()
        .map(|m| m.mmb_id.clone())
        .ok_or("agent without clearing-system member id")?;
    BankCode::new(code).map_err(|e| e.to_string())
}

/// The platform's side: a report counts only if the bank's signature verifies.
pub fn read_signed_report(
    bank: &Verifier,
    report: &SignedReport,
) -> Result<StatusReport, ReportError> {
    bank.verify(report.xml.as_bytes(), &report.signature)
        .map_err(|_| ReportError::BadSignature)?;
    Ok(StatusReport::parse(&report.xml)?)
}

/// Why a status report from the bank is not believed.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("the bank's signature does not verify")]
    BadSignature,
    #[error(transparent)]
    Message(#[from] MessageError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iso20022::pain001::tests::depot_batch;
    use crate::iso20022::schema;
    use crate::rails::tests::{at, rails_with};
    use crate::signing::generate_demo_keys;
    use ledger::Currency;
    use rust_decimal_macros::dec;

    struct Setup {
        bank: CustodialBank,
        platform: Signer,
        bank_key: Verifier,
        debtor: AccountNumber,
    }

    fn setup() -> Setup {
        let dir = std::env::temp_dir().join(format!(
            "forecourt-sim-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let platform_keys = generate_demo_keys(&dir, "platform").unwrap();
        let bank_keys = generate_demo_keys(&dir, "bank").unwrap();
        let platform = Signer::from_pem_file(&platform_keys.private_key).unwrap();
        let bank_signer = Signer::from_pem_file(&bank_keys.private_key).unwrap();
        let bank_key = Verifier::from_pem_file(&bank_keys.public_key).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let mut bank = CustodialBank::new(
            rails_with(vec![]),
            platform.verifier().unwrap(),
            bank_signer,
        );
        let debtor = AccountNumber::new("3100000000000001").unwrap();
        bank.credit(
            debtor.clone(),
            Money::new(dec!(50000000), Currency::CNY).unwrap(),
        );
        Setup {
            bank,
            platform,
            bank_key,
            debtor,
        }
    }

    fn cny(amount: Decimal) -> Money {
        Money::new(amount, Currency::CNY).unwrap()
    }

    #[test]
    fn a_signed_depot_payment_settles_and_the_report_is_signed_and_valid() {
        let mut s = setup();
        let xml = depot_batch().to_xml().unwrap();
        let signature = s.platform.sign(xml.as_bytes()).unwrap();
        let signed = s
            .bank
            .receive(xml.as_bytes(), &signature, at("2026-11-24T16:00:00"))
            .unwrap();
        schema::validate(&signed.xml, "pain.002.001.11.xsd").unwrap();
        let report = read_signed_report(&s.bank_key, &signed).unwrap();
        assert_eq!(
            report.group_status,
            Some(PaymentStatus::AcceptedSettlementCompleted)
        );
        assert_eq!(report.transactions.len(), 2);
        assert_eq!(s.bank.balance(&s.debtor), Some(cny(dec!(19998765.44))));
    }

    #[test]
    fn a_tampered_message_is_refused_by_the_bank() {
        let mut s = setup();
        let xml = depot_batch().to_xml().unwrap();
        let signature = s.platform.sign(xml.as_bytes()).unwrap();
        let tampered = xml.replace("6222020200112233445", "6222020200999999999");
        let signed = s
            .bank
            .receive(tampered.as_bytes(), &signature, at("2026-11-24T16:00:00"))
            .unwrap();
        let report = read_signed_report(&s.bank_key, &signed).unwrap();
        assert_eq!(report.group_status, Some(PaymentStatus::Rejected));
        assert_eq!(report.group_reason.unwrap().code, "DS0B");
        assert_eq!(s.bank.balance(&s.debtor), Some(cny(dec!(50000000))));
    }

    #[test]
    fn a_resubmission_after_a_crash_does_not_pay_twice() {
        let mut s = setup();
        let xml = depot_batch().to_xml().unwrap();
        let signature = s.platform.sign(xml.as_bytes()).unwrap();
        let when = at("2026-11-24T16:00:00");
        // The acknowledgement is lost: the platform submits the same message again.
        let _lost = s.bank.receive(xml.as_bytes(), &signature, when).unwrap();
        let again = s.bank.receive(xml.as_bytes(), &signature, when).unwrap();
        let report = read_signed_report(&s.bank_key, &again).unwrap();
        assert_eq!(report.group_status, Some(PaymentStatus::Rejected));
        assert_eq!(report.group_reason.unwrap().code, "DU01");
        assert_eq!(s.bank.balance(&s.debtor), Some(cny(dec!(19998765.44))));

        // A new message reusing a paid end-to-end id is refused per transaction.
        let mut batch = depot_batch();
        batch.message_id = MessageId::new("FC-20261124-0002").unwrap();
        batch.transfers.truncate(1);
        let xml = batch.to_xml().unwrap();
        let signature = s.platform.sign(xml.as_bytes()).unwrap();
        let signed = s.bank.receive(xml.as_bytes(), &signature, when).unwrap();
        let report = read_signed_report(&s.bank_key, &signed).unwrap();
        assert_eq!(report.transactions[0].status, PaymentStatus::Rejected);
        assert_eq!(report.transactions[0].reason.as_ref().unwrap().code, "AM05");
        assert_eq!(s.bank.balance(&s.debtor), Some(cny(dec!(19998765.44))));
    }

    #[test]
    fn insufficient_funds_are_rejected_with_am04() {
        let mut s = setup();
        let mut batch = depot_batch();
        batch.transfers.truncate(1);
        batch.transfers[0].amount = cny(dec!(60000000));
        let xml = batch.to_xml().unwrap();
        let signature = s.platform.sign(xml.as_bytes()).unwrap();
        let signed = s
            .bank
            .receive(xml.as_bytes(), &signature, at("2026-11-24T16:00:00"))
            .unwrap();
        let report = read_signed_report(&s.bank_key, &signed).unwrap();
        assert_eq!(report.transactions[0].status, PaymentStatus::Rejected);
        assert_eq!(report.transactions[0].reason.as_ref().unwrap().code, "AM04");
    }

    #[test]
    fn a_large_value_payment_at_night_waits_for_the_morning_window() {
        let mut s = setup();
        let mut batch = depot_batch();
        batch.transfers.truncate(1);
        let xml = batch.to_xml().unwrap();
        let signature = s.platform.sign(xml.as_bytes()).unwrap();
        let signed = s
            .bank
            .receive(xml.as_bytes(), &signature, at("2026-11-24T22:00:00"))
            .unwrap();
        let report = read_signed_report(&s.bank_key, &signed).unwrap();
        assert_eq!(report.transactions[0].status, PaymentStatus::Pending);
        assert_eq!(s.bank.waiting(), 1);
        assert!(
            s.bank
                .run_due(at("2026-11-25T03:00:00"))
                .unwrap()
                .is_empty()
        );
        let reports = s.bank.run_due(at("2026-11-25T08:30:00")).unwrap();
        let report = read_signed_report(&s.bank_key, &reports[0]).unwrap();
        assert_eq!(
            report.transactions[0].status,
            PaymentStatus::AcceptedSettlementCompleted
        );
        assert_eq!(s.bank.waiting(), 0);
        assert_eq!(s.bank.balance(&s.debtor), Some(cny(dec!(20000000))));
    }

    #[test]
    fn silence_then_a_status_query_tells_the_outcome() {
        let mut s = setup();
        let mut batch = depot_batch();
        batch.transfers.truncate(1);
        let unknown = s
            .bank
            .query(&batch.message_id, at("2026-11-24T21:59:00"))
            .unwrap();
        assert!(unknown.is_none(), "never received: safe to send");
        let xml = batch.to_xml().unwrap();
        let signature = s.platform.sign(xml.as_bytes()).unwrap();
        // The PDNG answer is lost; the payment settles in the morning, the callback is lost too.
        let _lost = s
            .bank
            .receive(xml.as_bytes(), &signature, at("2026-11-24T22:00:00"))
            .unwrap();
        let _lost_too = s.bank.run_due(at("2026-11-25T08:30:00")).unwrap();
        let answer = s
            .bank
            .query(&batch.message_id, at("2026-11-25T09:00:00"))
            .unwrap()
            .unwrap();
        schema::validate(&answer.xml, "pain.002.001.11.xsd").unwrap();
        let report = read_signed_report(&s.bank_key, &answer).unwrap();
        assert_eq!(
            report.transactions[0].status,
            PaymentStatus::AcceptedSettlementCompleted
        );
    }

    #[test]
    fn the_24x7_cap_is_enforced_by_the_bank() {
        let mut s = setup();
        let mut batch = depot_batch();
        batch.transfers.truncate(1);
        batch.rail = Rail::Interbank24x7;
        let xml = batch.to_xml().unwrap();
        let signature = s.platform.sign(xml.as_bytes()).unwrap();
        let signed = s
            .bank
            .receive(xml.as_bytes(), &signature, at("2026-11-24T22:00:00"))
            .unwrap();
        let report = read_signed_report(&s.bank_key, &signed).unwrap();
        assert_eq!(report.transactions[0].reason.as_ref().unwrap().code, "AM02");
    }

    fn freeze_request(
        s: &Setup,
        id: &str,
        action: FreezeAction,
        amount: Decimal,
        releases: Option<&str>,
    ) -> (String, Signature) {
        let request = FreezeRequest {
            request_id: MessageId::new(id).unwrap(),
            action,
            account: s.debtor.clone(),
            bank: BankCode::new("102100099996").unwrap(),
            amount,
            currency: Currency::CNY,
            reference: EndToEndId::new(format!("E2E-{id}")).unwrap(),
            releases: releases.map(|r| MessageId::new(r).unwrap()),
            reason: Some("(2026)沪0115民初12345号 财产保全".into()),
            created_at: at("2026-11-24T10:00:00"),
        };
        let json = request.to_json().unwrap();
        let signature = s.platform.sign(json.as_bytes()).unwrap();
        (json, signature)
    }

    fn freeze_answer(bank_key: &Verifier, signed: &SignedReport) -> FreezeAnswer {
        bank_key
            .verify(signed.xml.as_bytes(), &signed.signature)
            .expect("signed by the bank");
        FreezeAnswer::parse(&signed.xml).unwrap()
    }

    #[test]
    fn a_frozen_amount_cannot_be_paid_and_an_unfreeze_restores_it() {
        let mut s = setup();
        let when = at("2026-11-24T10:00:00");
        let (json, sig) = freeze_request(&s, "FRZ-1", FreezeAction::Freeze, dec!(40000000), None);
        let done = freeze_answer(
            &s.bank_key,
            &s.bank.receive_freeze(json.as_bytes(), &sig, when).unwrap(),
        );
        assert_eq!(done.status, FreezeStatus::Done);
        assert_eq!(done.frozen, dec!(40000000));
        assert_eq!(s.bank.available(&s.debtor), Some(cny(dec!(10000000))));
        // The same request again: the same answer, nothing frozen twice.
        let again = freeze_answer(
            &s.bank_key,
            &s.bank.receive_freeze(json.as_bytes(), &sig, when).unwrap(),
        );
        assert_eq!(again, done);
        assert_eq!(s.bank.frozen(&s.debtor), dec!(40000000));
        // 30,001,234.56 to pay, 10,000,000 available: refused, nothing booked.
        let xml = depot_batch().to_xml().unwrap();
        let signature = s.platform.sign(xml.as_bytes()).unwrap();
        let signed = s.bank.receive(xml.as_bytes(), &signature, when).unwrap();
        let report = read_signed_report(&s.bank_key, &signed).unwrap();
        let reason = report.transactions[0].reason.as_ref().unwrap();
        assert_eq!(reason.code, "AM04");
        assert!(reason.info.as_deref().unwrap().contains("frozen"));
        assert_eq!(
            report.transactions[1].status,
            PaymentStatus::AcceptedSettlementCompleted
        );
        assert_eq!(s.bank.balance(&s.debtor), Some(cny(dec!(49998765.44))));
        // A freeze beyond what is available is refused.
        let (json, sig) = freeze_request(&s, "FRZ-2", FreezeAction::Freeze, dec!(10000000), None);
        let refused = freeze_answer(
            &s.bank_key,
            &s.bank.receive_freeze(json.as_bytes(), &sig, when).unwrap(),
        );
        assert_eq!(
            (refused.status, refused.reason_code.as_deref()),
            (FreezeStatus::Rejected, Some("AM04"))
        );
        // The unfreeze must name the freeze, with its amount.
        let (json, sig) =
            freeze_request(&s, "UNF-0", FreezeAction::Unfreeze, dec!(1), Some("FRZ-1"));
        let wrong = freeze_answer(
            &s.bank_key,
            &s.bank.receive_freeze(json.as_bytes(), &sig, when).unwrap(),
        );
        assert_eq!(wrong.status, FreezeStatus::Rejected);
        let (json, sig) = freeze_request(
            &s,
            "UNF-1",
            FreezeAction::Unfreeze,
            dec!(40000000),
            Some("FRZ-1"),
        );
        let released = freeze_answer(
            &s.bank_key,
            &s.bank.receive_freeze(json.as_bytes(), &sig, when).unwrap(),
        );
        assert_eq!(
            (released.status, released.frozen),
            (FreezeStatus::Done, dec!(0))
        );
        assert_eq!(s.bank.available(&s.debtor), s.bank.balance(&s.debtor));
        let queried = s
            .bank
            .query_freeze(&MessageId::new("UNF-1").unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(freeze_answer(&s.bank_key, &queried), released);
        assert!(
            s.bank
                .query_freeze(&MessageId::new("UNF-9").unwrap())
                .unwrap()
                .is_none()
        );
        // Released once only.
        let (json, sig) = freeze_request(
            &s,
            "UNF-2",
            FreezeAction::Unfreeze,
            dec!(40000000),
            Some("FRZ-1"),
        );
        let twice = freeze_answer(
            &s.bank_key,
            &s.bank.receive_freeze(json.as_bytes(), &sig, when).unwrap(),
        );
        assert_eq!(twice.status, FreezeStatus::Rejected);
        // Now the payment goes through.
        let mut batch = depot_batch();
        batch.message_id = MessageId::new("FC-20261124-0002").unwrap();
        batch.transfers.truncate(1);
        batch.transfers[0].end_to_end_id = EndToEndId::new("E2E-DEPOT-0003").unwrap();
        let xml = batch.to_xml().unwrap();
        let signature = s.platform.sign(xml.as_bytes()).unwrap();
        let signed = s.bank.receive(xml.as_bytes(), &signature, when).unwrap();
        let report = read_signed_report(&s.bank_key, &signed).unwrap();
        assert_eq!(
            report.transactions[0].status,
            PaymentStatus::AcceptedSettlementCompleted
        );
    }

    #[test]
    fn a_forged_freeze_request_is_refused_and_its_id_stays_free() {
        let mut s = setup();
        let when = at("2026-11-24T10:00:00");
        let (json, good) = freeze_request(&s, "FRZ-9", FreezeAction::Freeze, dec!(1000), None);
        // The amount changed after signing.
        let tampered = json.replace("\"1000\"", "\"9000\"");
        assert_ne!(tampered, json);
        let refused = freeze_answer(
            &s.bank_key,
            &s.bank
                .receive_freeze(tampered.as_bytes(), &good, when)
                .unwrap(),
        );
        assert_eq!(refused.reason_code.as_deref(), Some("DS0B"));
        assert_eq!(s.bank.frozen(&s.debtor), dec!(0));
        let done = freeze_answer(
            &s.bank_key,
            &s.bank.receive_freeze(json.as_bytes(), &good, when).unwrap(),
        );
        assert_eq!(done.status, FreezeStatus::Done);
    }

    #[test]
    fn tranches_in_one_message_are_capped_one_by_one_and_the_report_validates() {
        let mut s = setup();
        let mut batch = depot_batch();
        batch.rail = Rail::Interbank24x7;
        let template = batch.transfers[0].clone();
        batch.transfers = (1..=7)
            .map(|n| {
                let mut t = template.clone();
                t.end_to_end_id = EndToEndId::new(format!("E2E-DEPOT-0001-{n}")).unwrap();
                t.amount = cny(if n == 7 {
                    dec!(5000000.01)
                } else {
                    dec!(5000000)
                });
                t
            })
            .collect();
        let xml = batch.to_xml().unwrap();
        schema::validate(&xml, "pain.001.001.10.xsd").unwrap();
        let signature = s.platform.sign(xml.as_bytes()).unwrap();
        let signed = s
            .bank
            .receive(xml.as_bytes(), &signature, at("2026-11-24T22:00:00"))
            .unwrap();
        schema::validate(&signed.xml, "pain.002.001.11.xsd").unwrap();
        let report = read_signed_report(&s.bank_key, &signed).unwrap();
        assert_eq!(report.transactions.len(), 7);
        assert!(
            report.transactions[..6]
                .iter()
                .all(|t| t.status == PaymentStatus::AcceptedSettlementCompleted)
        );
        assert_eq!(report.transactions[6].reason.as_ref().unwrap().code, "AM02");
        assert_eq!(s.bank.balance(&s.debtor), Some(cny(dec!(20000000))));
    }

    #[test]
    fn the_platform_refuses_a_report_the_bank_did_not_sign() {
        let mut s = setup();
        let xml = depot_batch().to_xml().unwrap();
        let signature = s.platform.sign(xml.as_bytes()).unwrap();
        let mut signed = s
            .bank
            .receive(xml.as_bytes(), &signature, at("2026-11-24T16:00:00"))
            .unwrap();
        signed.xml = signed.xml.replace("ACSC", "RJCT");
        assert!(matches!(
            read_signed_report(&s.bank_key, &signed),
            Err(ReportError::BadSignature)
        ));
    }

    fn settle_depot_batch(s: &mut Setup, when: &str) -> MessageId {
        let batch = depot_batch();
        let xml = batch.to_xml().unwrap();
        let signature = s.platform.sign(xml.as_bytes()).unwrap();
        s.bank
            .receive(xml.as_bytes(), &signature, at(when))
            .unwrap();
        batch.message_id
    }

    #[test]
    fn every_booking_is_notified_with_a_signed_valid_camt054() {
        let mut s = setup();
        settle_depot_batch(&mut s, "2026-11-24T16:00:00");
        let notices = s.bank.take_notifications();
        assert_eq!(
            notices.len(),
            2,
            "one debit per payment, creditors are elsewhere"
        );
        for n in &notices {
            schema::validate(&n.signed.xml, "camt.054.001.08.xsd").unwrap();
            s.bank_key
                .verify(n.signed.xml.as_bytes(), &n.signed.signature)
                .unwrap();
            assert_eq!(n.account, s.debtor);
        }
        let first = Notification::parse(&notices[0].signed.xml).unwrap();
        let entry = &first.entries[0];
        assert_eq!(entry.direction, Direction::Debit);
        assert_eq!(entry.amount, cny(dec!(30000000.00)));
        assert_eq!(
            entry.end_to_end_id.as_ref().unwrap().as_str(),
            "E2E-DEPOT-0001"
        );
        assert_eq!(
            entry
                .counterparty
                .as_ref()
                .unwrap()
                .account
                .as_ref()
                .unwrap()
                .as_str(),
            "6222020200112233445"
        );
        assert!(s.bank.take_notifications().is_empty(), "drained");
        assert_eq!(
            s.bank.bookings(&s.debtor).len(),
            3,
            "opening funds and two debits"
        );
        assert_eq!(s.bank.executed(), 2);
    }

    #[test]
    fn a_creditor_held_at_the_bank_is_credited() {
        let mut s = setup();
        let creditor = AccountNumber::new("6222020200112233445").unwrap();
        s.bank.credit(creditor.clone(), cny(dec!(0)));
        settle_depot_batch(&mut s, "2026-11-24T16:00:00");
        assert_eq!(s.bank.balance(&creditor), Some(cny(dec!(30000000.00))));
        let notices = s.bank.take_notifications();
        assert_eq!(notices.len(), 3);
        assert!(notices.iter().any(|n| n.account == creditor));
    }

    #[test]
    fn a_day_statement_balances_and_validates() {
        let mut s = setup();
        settle_depot_batch(&mut s, "2026-11-24T16:00:00");
        s.bank
            .deposit(
                s.debtor.clone(),
                cny(dec!(100.00)),
                at("2026-11-24T23:59:00"),
            )
            .unwrap();
        // After midnight in Shanghai: the next day's statement.
        s.bank
            .deposit(s.debtor.clone(), cny(dec!(7.00)), at("2026-11-25T00:01:00"))
            .unwrap();
        let signed = s
            .bank
            .statement(
                &s.debtor,
                "2026-11-24".parse().unwrap(),
                at("2026-11-25T06:00:00"),
            )
            .unwrap()
            .unwrap();
        schema::validate(&signed.xml, "camt.053.001.08.xsd").unwrap();
        s.bank_key
            .verify(signed.xml.as_bytes(), &signed.signature)
            .unwrap();
        let statement = Statement::parse(&signed.xml).unwrap();
        assert_eq!(statement.opening, cny(dec!(50000000.00)));
        assert_eq!(statement.entries.len(), 3);
        let net: Decimal = statement
            .entries
            .iter()
            .map(|e| match e.direction {
                Direction::Credit => e.amount.amount(),
                Direction::Debit => -e.amount.amount(),
            })
            .sum();
        assert_eq!(statement.opening.amount() + net, statement.closing.amount());
        assert_eq!(statement.closing, cny(dec!(19998865.44)));
        let next = s
            .bank
            .statement(
                &s.debtor,
                "2026-11-25".parse().unwrap(),
                at("2026-11-26T06:00:00"),
            )
            .unwrap()
            .unwrap();
        let next = Statement::parse(&next.xml).unwrap();
        assert_eq!(next.opening, statement.closing);
        assert_eq!(Some(next.closing), s.bank.balance(&s.debtor));
        let unknown = AccountNumber::new("999").unwrap();
        assert!(
            s.bank
                .statement(
                    &unknown,
                    "2026-11-24".parse().unwrap(),
                    at("2026-11-25T06:00:00")
                )
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_return_after_settlement_credits_back_and_shows_in_queries() {
        let mut s = setup();
        let message_id = settle_depot_batch(&mut s, "2026-11-24T16:00:00");
        s.bank.take_notifications();
        let e2e = EndToEndId::new("E2E-DEPOT-0002").unwrap();
        let notice = s
            .bank
            .return_payment(&e2e, "AC04", at("2026-11-24T16:30:00"))
            .unwrap();
        assert_eq!(s.bank.take_notifications(), vec![notice.clone()]);
        schema::validate(&notice.signed.xml, "camt.054.001.08.xsd").unwrap();
        let parsed = Notification::parse(&notice.signed.xml).unwrap();
        let entry = &parsed.entries[0];
        assert_eq!(entry.direction, Direction::Credit);
        assert!(entry.reversal);
        assert_eq!(entry.end_to_end_id.as_ref(), Some(&e2e));
        assert_eq!(entry.return_reason.as_ref().unwrap().code, "AC04");
        assert_eq!(
            s.bank.balance(&s.debtor),
            Some(cny(dec!(19999999.99) + dec!(0.01)))
        );
        let answer = s
            .bank
            .query(&message_id, at("2026-11-24T16:31:00"))
            .unwrap()
            .unwrap();
        schema::validate(&answer.xml, "pain.002.001.11.xsd").unwrap();
        let report = read_signed_report(&s.bank_key, &answer).unwrap();
        let returned = report
            .transactions
            .iter()
            .find(|t| t.end_to_end_id == e2e)
            .unwrap();
        assert!(returned.is_return());
        assert_eq!(returned.reason.as_ref().unwrap().code, "AC04");
        let kept = report
            .transactions
            .iter()
            .find(|t| t.end_to_end_id != e2e)
            .unwrap();
        assert_eq!(kept.status, PaymentStatus::AcceptedSettlementCompleted);
        assert!(!kept.is_return());
        assert!(matches!(
            s.bank
                .return_payment(&e2e, "AC04", at("2026-11-24T16:40:00")),
            Err(ReturnError::AlreadyReturned(_))
        ));
        let never = EndToEndId::new("E2E-NEVER").unwrap();
        assert!(matches!(
            s.bank
                .return_payment(&never, "AC04", at("2026-11-24T16:40:00")),
            Err(ReturnError::NotSettled(_))
        ));
        // The statement books the return as a reversal, and it reconciles.
        let signed = s
            .bank
            .statement(
                &s.debtor,
                "2026-11-24".parse().unwrap(),
                at("2026-11-25T06:00:00"),
            )
            .unwrap()
            .unwrap();
        schema::validate(&signed.xml, "camt.053.001.08.xsd").unwrap();
        let statement = Statement::parse(&signed.xml).unwrap();
        let expected = [
            ("E2E-DEPOT-0001", dec!(30000000.00), Direction::Debit, false),
            ("E2E-DEPOT-0002", dec!(1234.56), Direction::Debit, false),
            ("E2E-DEPOT-0002", dec!(1234.56), Direction::Credit, true),
        ]
        .map(
            |(id, amount, direction, reversal)| crate::reconcile::ExpectedMovement {
                end_to_end_id: EndToEndId::new(id).unwrap(),
                amount: cny(amount),
                direction,
                reversal,
            },
        );
        let recon = crate::reconcile::reconcile(&statement, &expected);
        assert!(recon.is_clean(), "{recon:?}");
    }

    #[test]
    fn a_forced_rejection_moves_no_money_and_an_acknowledgement_says_received() {
        let mut s = setup();
        let batch = depot_batch();
        let xml = batch.to_xml().unwrap();
        let signature = s.platform.sign(xml.as_bytes()).unwrap();
        let reason = StatusReason {
            code: "AM04".into(),
            info: Some("insufficient funds".into()),
        };
        let signed = s
            .bank
            .receive_rejecting(
                xml.as_bytes(),
                &signature,
                at("2026-11-24T16:00:00"),
                reason,
            )
            .unwrap();
        let report = read_signed_report(&s.bank_key, &signed).unwrap();
        assert_eq!(report.group_status, Some(PaymentStatus::Rejected));
        assert!(
            report
                .transactions
                .iter()
                .all(|t| t.reason.as_ref().unwrap().code == "AM04")
        );
        assert_eq!(s.bank.balance(&s.debtor), Some(cny(dec!(50000000))));
        let ack = s
            .bank
            .acknowledge(&batch.message_id, at("2026-11-24T16:00:00"))
            .unwrap();
        schema::validate(&ack.xml, "pain.002.001.11.xsd").unwrap();
        let ack = read_signed_report(&s.bank_key, &ack).unwrap();
        assert_eq!(ack.group_status, Some(PaymentStatus::Received));
        assert!(ack.transactions.is_empty());
    }
}
