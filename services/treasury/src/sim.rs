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
//! bank never received it. Transport (HTTP, callbacks,
//! delays) is the caller's concern.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use ledger::Money;
use rust_decimal::Decimal;

use crate::domain::{AccountNumber, BankCode, EndToEndId, MessageId};
use crate::iso20022::MessageError;
use crate::iso20022::pain001;
use crate::iso20022::pain002::{PaymentStatus, StatusReason, StatusReport, TransactionStatus};
use crate::rails::{Rail, Rails};
use crate::signing::{Signature, Signer, SigningError, Verifier};

/// A report as it leaves the bank: the XML bytes and the bank's signature over them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedReport {
    pub xml: String,
    pub signature: Signature,
}

/// Why the bank could not even answer with a status report.
#[derive(Debug, thiserror::Error)]
pub enum BankError {
    #[error("unreadable message: {0}")]
    Malformed(#[from] MessageError),
    #[error("signing the report failed: {0}")]
    Signing(#[from] SigningError),
}

/// A payment waiting for its rail to open.
#[derive(Clone, Debug)]
struct Queued {
    message_id: MessageId,
    end_to_end_id: EndToEndId,
    debtor: AccountNumber,
    debtor_bank: BankCode,
    creditor_bank: BankCode,
    rail: Rail,
    amount: Money,
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
    reports: u64,
    /// The latest status of every transaction of every accepted message, for queries.
    statuses: BTreeMap<MessageId, Vec<TransactionStatus>>,
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
            statuses: BTreeMap::new(),
        }
    }

    /// Opens or tops up a sub-account.
    pub fn credit(&mut self, account: AccountNumber, amount: Money) {
        let entry = self
            .balances
            .entry(account)
            .or_insert_with(|| Money::zero(amount.currency()));
        *entry = entry.checked_add(amount).expect("same currency");
    }

    pub fn balance(&self, account: &AccountNumber) -> Option<Money> {
        self.balances.get(account).copied()
    }

    /// Receives a signed pain.001 at `at` and answers with a signed status report.
    pub fn receive(
        &mut self,
        xml: &[u8],
        signature: &Signature,
        at: DateTime<Utc>,
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
        if !self.seen_messages.insert(message_id.clone()) {
            return self.group_rejection(message_id, "DU01", "duplicate message id", at);
        }
        let mut statuses = Vec::new();
        for payment in &document.initiation.pmt_inf {
            match self.payments_of(&message_id, payment) {
                Ok(queued) => {
                    for q in queued {
                        statuses.push(self.execute(q, at));
                    }
                }
                Err(reason) => {
                    return self.group_rejection(message_id, "FF01", &reason, at);
                }
            }
        }
        self.statuses.insert(message_id.clone(), statuses.clone());
        self.sign_report(message_id, None, statuses, at)
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
        self.sign_report(message_id.clone(), None, statuses, at)
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
                if let Some(known) = self.statuses.get_mut(&message_id)
                    && let Some(slot) = known
                        .iter_mut()
                        .find(|t| t.end_to_end_id == status.end_to_end_id)
                {
                    *slot = status.clone();
                }
                per_message.entry(message_id).or_default().push(status);
            } else {
                self.queue.push(q);
            }
        }
        per_message
            .into_iter()
            .map(|(message_id, statuses)| self.sign_report(message_id, None, statuses, at))
            .collect()
    }

    /// How many payments wait for their rail.
    pub fn waiting(&self) -> usize {
        self.queue.len()
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
            sum += amount.amount();
            out.push(Queued {
                message_id: message_id.clone(),
                end_to_end_id: EndToEndId::new(tx.pmt_id.end_to_end_id.clone())
                    .map_err(|e| e.to_string())?,
                debtor: debtor.clone(),
                debtor_bank: debtor_bank.clone(),
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
        let Some(balance) = self.balances.get_mut(&q.debtor) else {
            return reject("AC01", "unknown debtor account");
        };
        if balance.currency() != q.amount.currency() || balance.amount() < q.amount.amount() {
            return reject("AM04", "insufficient funds");
        }
        *balance = Money::new(balance.amount() - q.amount.amount(), balance.currency())
            .expect("same scale");
        self.paid.insert(q.end_to_end_id.clone());
        TransactionStatus {
            end_to_end_id: q.end_to_end_id,
            status: PaymentStatus::AcceptedSettlementCompleted,
            reason: None,
        }
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
        self.sign_report(message_id, Some(reason), Vec::new(), at)
    }

    fn sign_report(
        &mut self,
        original: MessageId,
        rejection: Option<StatusReason>,
        transactions: Vec<TransactionStatus>,
        at: DateTime<Utc>,
    ) -> Result<SignedReport, BankError> {
        self.reports += 1;
        let group_status = if rejection.is_some() {
            PaymentStatus::Rejected
        } else if transactions
            .iter()
            .all(|t| t.status == PaymentStatus::AcceptedSettlementCompleted)
        {
            PaymentStatus::AcceptedSettlementCompleted
        } else if transactions
            .iter()
            .all(|t| t.status == PaymentStatus::Rejected)
        {
            PaymentStatus::Rejected
        } else {
            PaymentStatus::AcceptedTechnicalValidation
        };
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
}
