//! camt.053.001.08: the bank's end-of-day statement of a (sub-)account.
//!
//! The platform imports these to reconcile what the bank booked against its instructions and
//! the ledger; the bank simulator writes them.

use chrono::{DateTime, NaiveDate, Utc};
use ledger::{Currency, Money};
use serde::{Deserialize, Serialize};

use super::{
    CashAccount, CodeOrProprietary, CurrencyAndAmount, DateOrDateTime, MessageError, Namespaced,
    Party, check_len, from_xml, iso_date_time, to_xml,
};
use crate::domain::{AccountNumber, EndToEndId, MessageId};

pub const NAMESPACE: &str = "urn:iso:std:iso:20022:tech:xsd:camt.053.001.08";

/// Money in or out of the account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Direction {
    /// CRDT: money in.
    Credit,
    /// DBIT: money out.
    Debit,
}

impl Direction {
    const fn code(self) -> &'static str {
        match self {
            Direction::Credit => "CRDT",
            Direction::Debit => "DBIT",
        }
    }

    fn from_code(code: &str) -> Result<Direction, MessageError> {
        match code {
            "CRDT" => Ok(Direction::Credit),
            "DBIT" => Ok(Direction::Debit),
            other => Err(MessageError::Invalid {
                field: "CdtDbtInd",
                reason: format!("unknown indicator {other:?}"),
            }),
        }
    }
}

/// A booked line of the statement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementEntry {
    pub amount: Money,
    pub direction: Direction,
    pub booking_date: NaiveDate,
    /// The bank's own reference of the booking.
    pub bank_reference: String,
    /// The end-to-end id of the platform's instruction, when the booking comes from one.
    pub end_to_end_id: Option<EndToEndId>,
    /// A reversal (a return after settlement) of an earlier booking.
    pub reversal: bool,
    /// The other side of the movement: the creditor of a debit, the debtor of a credit
    /// (`NtryDtls/TxDtls/RltdPties`), when the bank reports it.
    pub counterparty: Option<Counterparty>,
    /// Why the payment came back, on the booking of a return (`NtryDtls/TxDtls/RtrInf`).
    pub return_reason: Option<ReturnReason>,
}

/// The other party of a booked movement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counterparty {
    pub name: Option<String>,
    pub account: Option<AccountNumber>,
}

/// A return's reason: an ISO external return reason code (`AC04` closed account, `AC01`
/// wrong account number, `AM09` wrong amount, …) and free text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReturnReason {
    pub code: String,
    pub info: Option<String>,
}

/// A statement as the platform understands it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    pub message_id: MessageId,
    pub created_at: DateTime<Utc>,
    pub statement_id: String,
    pub account: AccountNumber,
    pub date: NaiveDate,
    /// Opening and closing booked balances, signed: negative is a debit balance.
    pub opening: Money,
    pub closing: Money,
    pub entries: Vec<StatementEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename = "Document")]
pub struct Document {
    #[serde(rename = "@xmlns")]
    pub xmlns: String,
    #[serde(rename = "BkToCstmrStmt")]
    pub statement: BankToCustomerStatement,
}

impl Namespaced for Document {
    fn namespace(&self) -> &str {
        &self.xmlns
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BankToCustomerStatement {
    #[serde(rename = "GrpHdr")]
    pub grp_hdr: GroupHeader,
    #[serde(rename = "Stmt")]
    pub stmt: Vec<AccountStatement>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupHeader {
    #[serde(rename = "MsgId")]
    pub msg_id: String,
    #[serde(rename = "CreDtTm")]
    pub cre_dt_tm: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountStatement {
    #[serde(rename = "Id")]
    pub id: String,
    #[serde(rename = "Acct")]
    pub acct: CashAccount,
    #[serde(rename = "Bal")]
    pub bal: Vec<CashBalance>,
    #[serde(rename = "Ntry", default)]
    pub ntry: Vec<ReportEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CashBalance {
    #[serde(rename = "Tp")]
    pub tp: BalanceType,
    #[serde(rename = "Amt")]
    pub amt: CurrencyAndAmount,
    #[serde(rename = "CdtDbtInd")]
    pub cdt_dbt_ind: String,
    #[serde(rename = "Dt")]
    pub dt: DateOrDateTime,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceType {
    #[serde(rename = "CdOrPrtry")]
    pub cd_or_prtry: CodeOrProprietary,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportEntry {
    #[serde(rename = "Amt")]
    pub amt: CurrencyAndAmount,
    #[serde(rename = "CdtDbtInd")]
    pub cdt_dbt_ind: String,
    #[serde(rename = "RvslInd", default, skip_serializing_if = "Option::is_none")]
    pub rvsl_ind: Option<bool>,
    #[serde(rename = "Sts")]
    pub sts: CodeOrProprietary,
    #[serde(rename = "BookgDt", default, skip_serializing_if = "Option::is_none")]
    pub bookg_dt: Option<DateOrDateTime>,
    #[serde(
        rename = "AcctSvcrRef",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub acct_svcr_ref: Option<String>,
    #[serde(rename = "BkTxCd")]
    pub bk_tx_cd: BankTransactionCode,
    #[serde(rename = "NtryDtls", default, skip_serializing_if = "Vec::is_empty")]
    pub ntry_dtls: Vec<EntryDetails>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BankTransactionCode {
    #[serde(rename = "Prtry")]
    pub prtry: ProprietaryCode,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProprietaryCode {
    #[serde(rename = "Cd")]
    pub cd: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryDetails {
    #[serde(rename = "TxDtls", default)]
    pub tx_dtls: Vec<EntryTransaction>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryTransaction {
    #[serde(rename = "Refs", default, skip_serializing_if = "Option::is_none")]
    pub refs: Option<References>,
    #[serde(rename = "RltdPties", default, skip_serializing_if = "Option::is_none")]
    pub rltd_pties: Option<RelatedParties>,
    #[serde(rename = "RtrInf", default, skip_serializing_if = "Option::is_none")]
    pub rtr_inf: Option<ReturnInformation>,
}

/// `TransactionParties6`, with the parties named and their accounts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelatedParties {
    #[serde(rename = "Dbtr", default, skip_serializing_if = "Option::is_none")]
    pub dbtr: Option<PartyChoice>,
    #[serde(rename = "DbtrAcct", default, skip_serializing_if = "Option::is_none")]
    pub dbtr_acct: Option<CashAccount>,
    #[serde(rename = "Cdtr", default, skip_serializing_if = "Option::is_none")]
    pub cdtr: Option<PartyChoice>,
    #[serde(rename = "CdtrAcct", default, skip_serializing_if = "Option::is_none")]
    pub cdtr_acct: Option<CashAccount>,
}

/// `Party40Choice`, as a party.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartyChoice {
    #[serde(rename = "Pty")]
    pub pty: Party,
}

/// `PaymentReturnReason5`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReturnInformation {
    #[serde(rename = "Rsn", default, skip_serializing_if = "Option::is_none")]
    pub rsn: Option<CodeOrProprietary>,
    #[serde(rename = "AddtlInf", default, skip_serializing_if = "Vec::is_empty")]
    pub addtl_inf: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct References {
    #[serde(
        rename = "EndToEndId",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub end_to_end_id: Option<String>,
}

fn signed_balance(kind: &str, money: Money, date: NaiveDate) -> CashBalance {
    let direction = if money.amount().is_sign_negative() {
        Direction::Debit
    } else {
        Direction::Credit
    };
    CashBalance {
        tp: BalanceType {
            cd_or_prtry: CodeOrProprietary::code(kind),
        },
        amt: CurrencyAndAmount {
            ccy: money.currency().code().to_owned(),
            value: money.amount().abs(),
        },
        cdt_dbt_ind: direction.code().to_owned(),
        dt: DateOrDateTime::date(date),
    }
}

fn read_balance(balances: &[CashBalance], kind: &'static str) -> Result<Money, MessageError> {
    let bal = balances
        .iter()
        .find(|b| b.tp.cd_or_prtry.cd.as_deref() == Some(kind))
        .ok_or(MessageError::Invalid {
            field: "Bal",
            reason: format!("no {kind} balance"),
        })?;
    let money = bal.amt.to_money("Bal/Amt")?;
    Ok(match Direction::from_code(&bal.cdt_dbt_ind)? {
        Direction::Credit => money,
        Direction::Debit => Money::new(-money.amount(), money.currency()).expect("same scale"),
    })
}

fn parties_to_wire(
    counterparty: &Counterparty,
    direction: Direction,
) -> Result<RelatedParties, MessageError> {
    if let Some(name) = &counterparty.name {
        check_len("RltdPties/Nm", name, 140)?;
    }
    let party = counterparty.name.as_ref().map(|name| PartyChoice {
        pty: Party {
            nm: Some(name.clone()),
        },
    });
    let account = counterparty
        .account
        .as_ref()
        .map(|a| CashAccount::number(a.as_str(), None));
    Ok(match direction {
        Direction::Debit => RelatedParties {
            cdtr: party,
            cdtr_acct: account,
            ..RelatedParties::default()
        },
        Direction::Credit => RelatedParties {
            dbtr: party,
            dbtr_acct: account,
            ..RelatedParties::default()
        },
    })
}

fn parties_from_wire(
    parties: &RelatedParties,
    direction: Direction,
) -> Result<Option<Counterparty>, MessageError> {
    let (party, account) = match direction {
        Direction::Debit => (&parties.cdtr, &parties.cdtr_acct),
        Direction::Credit => (&parties.dbtr, &parties.dbtr_acct),
    };
    let name = party.as_ref().and_then(|p| p.pty.nm.clone());
    let account = account
        .as_ref()
        .map(|a| AccountNumber::new(a.id.othr.id.clone()))
        .transpose()
        .map_err(invalid("RltdPties/Acct"))?;
    Ok((name.is_some() || account.is_some()).then_some(Counterparty { name, account }))
}

/// A booked line as a `ReportEntry10` (shared by camt.053 and camt.054).
pub(crate) fn entry_to_wire(e: &StatementEntry) -> Result<ReportEntry, MessageError> {
    check_len("AcctSvcrRef", &e.bank_reference, 35)?;
    let rtr_inf = match &e.return_reason {
        Some(reason) => {
            check_len("RtrInf/Rsn/Cd", &reason.code, 4)?;
            if let Some(info) = &reason.info {
                check_len("RtrInf/AddtlInf", info, 105)?;
            }
            Some(ReturnInformation {
                rsn: Some(CodeOrProprietary::code(&reason.code)),
                addtl_inf: reason.info.iter().cloned().collect(),
            })
        }
        None => None,
    };
    let rltd_pties = e
        .counterparty
        .as_ref()
        .map(|c| parties_to_wire(c, e.direction))
        .transpose()?;
    Ok(ReportEntry {
        amt: CurrencyAndAmount::from_money(e.amount),
        cdt_dbt_ind: e.direction.code().to_owned(),
        rvsl_ind: e.reversal.then_some(true),
        sts: CodeOrProprietary::code("BOOK"),
        bookg_dt: Some(DateOrDateTime::date(e.booking_date)),
        acct_svcr_ref: Some(e.bank_reference.clone()),
        bk_tx_cd: BankTransactionCode {
            prtry: ProprietaryCode { cd: "TRF".into() },
        },
        ntry_dtls: vec![EntryDetails {
            tx_dtls: vec![EntryTransaction {
                refs: Some(References {
                    end_to_end_id: e.end_to_end_id.as_ref().map(|id| id.to_string()),
                }),
                rltd_pties,
                rtr_inf,
            }],
        }],
    })
}

/// A `ReportEntry10` as a booked line; `None` for an entry not booked (pending, info).
pub(crate) fn entry_from_wire(
    entry: ReportEntry,
    default_date: NaiveDate,
) -> Result<Option<StatementEntry>, MessageError> {
    if entry.sts.cd.as_deref() != Some("BOOK") {
        return Ok(None);
    }
    let details = || entry.ntry_dtls.iter().flat_map(|d| d.tx_dtls.iter());
    let end_to_end_id = details()
        .find_map(|t| t.refs.as_ref().and_then(|r| r.end_to_end_id.clone()))
        .map(EndToEndId::new)
        .transpose()
        .map_err(invalid("EndToEndId"))?;
    let direction = Direction::from_code(&entry.cdt_dbt_ind)?;
    let counterparty = match details().find_map(|t| t.rltd_pties.as_ref()) {
        Some(parties) => parties_from_wire(parties, direction)?,
        None => None,
    };
    let return_reason = details()
        .find_map(|t| t.rtr_inf.as_ref())
        .map(|r| ReturnReason {
            code: r
                .rsn
                .as_ref()
                .and_then(|c| c.cd.clone().or_else(|| c.prtry.clone()))
                .unwrap_or_default(),
            info: (!r.addtl_inf.is_empty()).then(|| r.addtl_inf.join(" ")),
        });
    Ok(Some(StatementEntry {
        amount: entry.amt.to_money("Ntry/Amt")?,
        direction,
        booking_date: entry.bookg_dt.and_then(|d| d.dt).unwrap_or(default_date),
        bank_reference: entry.acct_svcr_ref.unwrap_or_default(),
        end_to_end_id,
        reversal: entry.rvsl_ind.unwrap_or(false),
        counterparty,
        return_reason,
    }))
}

pub(crate) fn invalid(field: &'static str) -> impl Fn(crate::domain::InvalidValue) -> MessageError {
    move |e| MessageError::Invalid {
        field,
        reason: e.to_string(),
    }
}

impl Statement {
    pub fn currency(&self) -> Currency {
        self.opening.currency()
    }

    pub fn to_document(&self) -> Result<Document, MessageError> {
        check_len("Stmt/Id", &self.statement_id, 35)?;
        let entries = self
            .entries
            .iter()
            .map(entry_to_wire)
            .collect::<Result<Vec<_>, MessageError>>()?;
        Ok(Document {
            xmlns: NAMESPACE.to_owned(),
            statement: BankToCustomerStatement {
                grp_hdr: GroupHeader {
                    msg_id: self.message_id.to_string(),
                    cre_dt_tm: iso_date_time(self.created_at),
                },
                stmt: vec![AccountStatement {
                    id: self.statement_id.clone(),
                    acct: CashAccount::number(self.account.as_str(), Some(self.currency())),
                    bal: vec![
                        signed_balance("OPBD", self.opening, self.date),
                        signed_balance("CLBD", self.closing, self.date),
                    ],
                    ntry: entries,
                }],
            },
        })
    }

    pub fn to_xml(&self) -> Result<String, MessageError> {
        to_xml(&self.to_document()?)
    }

    /// Reads a camt.053 with one statement (the custodial bank sends one file per account).
    /// Only booked entries are kept.
    pub fn parse(xml: &str) -> Result<Statement, MessageError> {
        let doc: Document = from_xml(xml, NAMESPACE)?;
        let group = doc.statement.grp_hdr;
        let [stmt]: [AccountStatement; 1] =
            doc.statement
                .stmt
                .try_into()
                .map_err(|_| MessageError::Invalid {
                    field: "Stmt",
                    reason: "one statement per file expected".into(),
                })?;
        let opening = read_balance(&stmt.bal, "OPBD")?;
        let closing = read_balance(&stmt.bal, "CLBD")?;
        let date = stmt
            .bal
            .iter()
            .find_map(|b| b.dt.dt)
            .ok_or(MessageError::Invalid {
                field: "Bal/Dt",
                reason: "no statement date".into(),
            })?;
        let mut entries = Vec::with_capacity(stmt.ntry.len());
        for entry in stmt.ntry {
            if let Some(entry) = entry_from_wire(entry, date)? {
                entries.push(entry);
            }
        }
        let created_at = DateTime::parse_from_rfc3339(&group.cre_dt_tm)
            .map_err(|e| MessageError::Invalid {
                field: "CreDtTm",
                reason: e.to_string(),
            })?
            .with_timezone(&Utc);
        Ok(Statement {
            message_id: MessageId::new(group.msg_id).map_err(invalid("MsgId"))?,
            created_at,
            statement_id: stmt.id,
            account: AccountNumber::new(stmt.acct.id.othr.id).map_err(invalid("Acct"))?,
            date,
            opening,
            closing,
            entries,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::iso20022::schema;
    use rust_decimal_macros::dec;

    pub(crate) fn cny(amount: rust_decimal::Decimal) -> Money {
        Money::new(amount, Currency::CNY).unwrap()
    }

    pub(crate) fn entry(
        amount: rust_decimal::Decimal,
        e2e: &str,
        direction: Direction,
    ) -> StatementEntry {
        StatementEntry {
            amount: cny(amount),
            direction,
            booking_date: "2026-11-24".parse().unwrap(),
            bank_reference: format!("BK-{e2e}"),
            end_to_end_id: Some(EndToEndId::new(e2e).unwrap()),
            reversal: false,
            counterparty: None,
            return_reason: None,
        }
    }

    pub(crate) fn statement() -> Statement {
        Statement {
            message_id: MessageId::new("BANK-STMT-20261124").unwrap(),
            created_at: "2026-11-24T16:00:00Z".parse().unwrap(),
            statement_id: "STMT-3100000000000001-20261124".into(),
            account: AccountNumber::new("3100000000000001").unwrap(),
            date: "2026-11-24".parse().unwrap(),
            opening: cny(dec!(50000000.00)),
            closing: cny(dec!(19998765.44)),
            entries: vec![
                entry(dec!(30000000.00), "E2E-DEPOT-0001", Direction::Debit),
                entry(dec!(1234.56), "E2E-DEPOT-0002", Direction::Debit),
            ],
        }
    }

    #[test]
    fn an_end_of_day_statement_validates_and_reads_back() {
        let sent = statement();
        let xml = sent.to_xml().unwrap();
        schema::validate(&xml, "camt.053.001.08.xsd").unwrap();
        assert_eq!(Statement::parse(&xml).unwrap(), sent);
    }

    #[test]
    fn a_debit_balance_and_a_reversal_survive_the_round_trip() {
        let mut sent = statement();
        sent.closing = cny(dec!(-100.00));
        sent.entries[1].reversal = true;
        let xml = sent.to_xml().unwrap();
        schema::validate(&xml, "camt.053.001.08.xsd").unwrap();
        assert_eq!(Statement::parse(&xml).unwrap(), sent);
    }

    #[test]
    fn counterparties_and_return_reasons_validate_and_read_back() {
        let mut sent = statement();
        sent.entries[0].counterparty = Some(Counterparty {
            name: Some("西南油库有限公司".into()),
            account: Some(AccountNumber::new("6222020200112233445").unwrap()),
        });
        let mut back = entry(dec!(1234.56), "E2E-DEPOT-0002", Direction::Credit);
        back.reversal = true;
        back.counterparty = Some(Counterparty {
            name: None,
            account: Some(AccountNumber::new("6222020200999988887").unwrap()),
        });
        back.return_reason = Some(ReturnReason {
            code: "AC04".into(),
            info: Some("account closed".into()),
        });
        sent.entries.push(back);
        sent.closing = cny(dec!(20000000.00));
        let xml = sent.to_xml().unwrap();
        schema::validate(&xml, "camt.053.001.08.xsd").unwrap();
        assert!(xml.contains("<RtrInf><Rsn><Cd>AC04</Cd></Rsn>"), "{xml}");
        assert_eq!(Statement::parse(&xml).unwrap(), sent);
    }

    #[test]
    fn pending_entries_are_not_booked_lines() {
        let xml = statement()
            .to_xml()
            .unwrap()
            .replacen("<Cd>BOOK</Cd>", "<Cd>PDNG</Cd>", 1);
        assert_eq!(Statement::parse(&xml).unwrap().entries.len(), 1);
    }
}
