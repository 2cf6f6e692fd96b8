//! The parties' T+1 statement files, read into one shape, and the pure matching of a
//! statement against our payments.
//!
//! Formats: WeChat Pay's trade bill (CSV, every field prefixed with a backquote, a totals
//! section at the end), Alipay's business detail CSV (`#` comment lines around the table,
//! tab-padded ids), and the acquirer's pipe-delimited file (`H|`, `D|`, `T|` records).

use std::collections::BTreeMap;
use std::str::FromStr;

use ledger::money::{Currency, Money};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// One transaction as the channel reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementLine {
    pub out_trade_no: String,
    pub channel_txn_id: String,
    pub amount: Money,
    pub fee: Money,
    /// Whether the channel counts the money as taken.
    pub paid: bool,
}

/// One refund as the channel reports it: paid back on the statement's day.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementRefund {
    /// The refunded order.
    pub out_trade_no: String,
    /// Our refund number.
    pub out_refund_no: String,
    pub channel_refund_id: String,
    pub amount: Money,
    pub succeeded: bool,
}

/// A statement file read: the orders of the day and the refunds paid back on it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    pub lines: Vec<StatementLine>,
    pub refunds: Vec<StatementRefund>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatementError {
    #[error("line {line}: {reason}")]
    Malformed { line: usize, reason: String },
    #[error("the totals say {stated} but the lines add up to {computed}")]
    TotalsDisagree { stated: Money, computed: Money },
}

fn malformed(line: usize, reason: impl Into<String>) -> StatementError {
    StatementError::Malformed {
        line: line + 1,
        reason: reason.into(),
    }
}

fn yuan(text: &str, line: usize) -> Result<Money, StatementError> {
    let amount = Decimal::from_str(text.trim()).map_err(|e| malformed(line, e.to_string()))?;
    Money::new(amount.abs(), Currency::CNY).map_err(|e| malformed(line, e.to_string()))
}

fn sum(lines: &[StatementLine], pick: impl Fn(&StatementLine) -> Money) -> Money {
    let fen: i64 = lines
        .iter()
        .filter(|l| l.paid)
        .map(|l| pick(l).minor_units().expect("statement amounts fit in fen"))
        .sum();
    Money::from_minor(fen, Currency::CNY)
}

/// Reads the orders of a WeChat Pay trade bill and checks its totals line against them.
pub fn parse_wechat_trade_bill(text: &str) -> Result<Vec<StatementLine>, StatementError> {
    read_wechat_trade_bill(text).map(|s| s.lines)
}

/// Reads a WeChat Pay trade bill, orders and `REFUND` lines, and checks its totals line
/// against the orders.
pub fn read_wechat_trade_bill(text: &str) -> Result<Statement, StatementError> {
    let mut lines = Vec::new();
    let mut refunds = Vec::new();
    let mut rows = text.lines().enumerate().skip(1);
    for (n, row) in rows.by_ref() {
        if row.starts_with("总交易单数") {
            break;
        }
        let f: Vec<&str> = row.split(',').map(|f| f.trim_start_matches('`')).collect();
        if f.len() < 24 {
            return Err(malformed(n, format!("{} fields, expected 24", f.len())));
        }
        if f[9] == "REFUND" {
            refunds.push(StatementRefund {
                out_trade_no: f[6].to_owned(),
                out_refund_no: f[15].to_owned(),
                channel_refund_id: f[14].to_owned(),
                amount: yuan(f[16], n)?,
                succeeded: f[19] == "SUCCESS",
            });
            continue;
        }
        lines.push(StatementLine {
            out_trade_no: f[6].to_owned(),
            channel_txn_id: f[5].to_owned(),
            amount: yuan(f[12], n)?,
            fee: yuan(f[22], n)?,
            paid: f[9] == "SUCCESS",
        });
    }
    if let Some((n, totals)) = rows.next() {
        let f: Vec<&str> = totals
            .split(',')
            .map(|f| f.trim_start_matches('`'))
            .collect();
        let stated = yuan(f.get(1).ok_or_else(|| malformed(n, "no total"))?, n)?;
        let computed = sum(&lines, |l| l.amount);
        if stated != computed {
            return Err(StatementError::TotalsDisagree { stated, computed });
        }
    }
    Ok(Statement { lines, refunds })
}

/// Reads the trades of an Alipay business detail CSV.
pub fn parse_alipay_statement(text: &str) -> Result<Vec<StatementLine>, StatementError> {
    read_alipay_statement(text).map(|s| s.lines)
}

/// Reads an Alipay business detail CSV, trades (`交易`) and refunds (`退款`).
pub fn read_alipay_statement(text: &str) -> Result<Statement, StatementError> {
    let mut lines = Vec::new();
    let mut refunds = Vec::new();
    let mut header_seen = false;
    for (n, row) in text.lines().enumerate() {
        if row.starts_with('#') || row.trim().is_empty() {
            continue;
        }
        if !header_seen {
            header_seen = true;
            continue;
        }
        let f: Vec<&str> = row.split(',').map(str::trim).collect();
        if f.len() < 11 {
            return Err(malformed(n, format!("{} fields, expected 11", f.len())));
        }
        if f[2] == "退款" {
            refunds.push(StatementRefund {
                out_trade_no: f[1].to_owned(),
                out_refund_no: f[9].to_owned(),
                channel_refund_id: f[0].to_owned(),
                amount: yuan(f[6], n)?,
                succeeded: f[10] == "TRADE_SUCCESS",
            });
            continue;
        }
        lines.push(StatementLine {
            out_trade_no: f[1].to_owned(),
            channel_txn_id: f[0].to_owned(),
            amount: yuan(f[6], n)?,
            fee: yuan(f[8], n)?,
            paid: f[10] == "TRADE_SUCCESS",
        });
    }
    Ok(Statement { lines, refunds })
}

/// Reads the sales of the acquirer's pipe-delimited statement and checks its trailer.
pub fn parse_acquirer_statement(text: &str) -> Result<Vec<StatementLine>, StatementError> {
    read_acquirer_statement(text).map(|s| s.lines)
}

/// Reads the acquirer's pipe-delimited statement, sales and `REFUND` records, and checks
/// its trailer against the sales.
pub fn read_acquirer_statement(text: &str) -> Result<Statement, StatementError> {
    let mut lines = Vec::new();
    let mut refunds = Vec::new();
    for (n, row) in text.lines().enumerate() {
        let f: Vec<&str> = row.split('|').collect();
        let fen = |i: usize| -> Result<Money, StatementError> {
            let v: i64 = f
                .get(i)
                .ok_or_else(|| malformed(n, "short record"))?
                .parse()
                .map_err(|_| malformed(n, "amount"))?;
            Ok(Money::from_minor(v, Currency::CNY))
        };
        match f[0] {
            "H" => {}
            "D" if f.get(3) == Some(&"REFUND") => refunds.push(StatementRefund {
                out_trade_no: f.get(1).ok_or_else(|| malformed(n, "short"))?.to_string(),
                channel_refund_id: f.get(2).ok_or_else(|| malformed(n, "short"))?.to_string(),
                amount: fen(4)?,
                out_refund_no: f.get(7).ok_or_else(|| malformed(n, "short"))?.to_string(),
                succeeded: true,
            }),
            "D" => lines.push(StatementLine {
                out_trade_no: f.get(1).ok_or_else(|| malformed(n, "short"))?.to_string(),
                channel_txn_id: f.get(2).ok_or_else(|| malformed(n, "short"))?.to_string(),
                amount: fen(4)?,
                fee: fen(5)?,
                paid: f.get(3) == Some(&"SALE"),
            }),
            "T" => {
                let stated = fen(2)?;
                let computed = sum(&lines, |l| l.amount);
                if stated != computed {
                    return Err(StatementError::TotalsDisagree { stated, computed });
                }
            }
            other => return Err(malformed(n, format!("record type {other:?}"))),
        }
    }
    Ok(Statement { lines, refunds })
}

/// A payment as our books have it, for matching.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookedPayment {
    pub out_trade_no: String,
    pub amount: Money,
    pub succeeded: bool,
}

/// How one order compares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Match {
    Matched {
        out_trade_no: String,
        fee: Money,
    },
    /// The channel has it; we do not.
    MissingHere {
        out_trade_no: String,
        amount: Money,
    },
    /// We have it; the channel does not.
    MissingThere {
        out_trade_no: String,
        amount: Money,
    },
    AmountMismatch {
        out_trade_no: String,
        ours: Money,
        theirs: Money,
    },
    /// One side says paid, the other not.
    StatusMismatch {
        out_trade_no: String,
        ours_paid: bool,
        theirs_paid: bool,
    },
}

/// Matches a statement with our payments, by order number. The result is sorted by order
/// number so that runs are comparable.
pub fn reconcile(ours: &[BookedPayment], theirs: &[StatementLine]) -> Vec<Match> {
    let ours: BTreeMap<&str, &BookedPayment> =
        ours.iter().map(|p| (p.out_trade_no.as_str(), p)).collect();
    let theirs: BTreeMap<&str, &StatementLine> = theirs
        .iter()
        .map(|l| (l.out_trade_no.as_str(), l))
        .collect();
    let mut keys: Vec<&str> = ours.keys().chain(theirs.keys()).copied().collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter()
        .filter_map(|no| {
            let out_trade_no = no.to_owned();
            match (ours.get(no), theirs.get(no)) {
                (Some(o), Some(t)) if o.succeeded != t.paid => Some(Match::StatusMismatch {
                    out_trade_no,
                    ours_paid: o.succeeded,
                    theirs_paid: t.paid,
                }),
                (Some(o), Some(_)) if !o.succeeded => None,
                (Some(o), Some(t)) if o.amount != t.amount => Some(Match::AmountMismatch {
                    out_trade_no,
                    ours: o.amount,
                    theirs: t.amount,
                }),
                (Some(_), Some(t)) => Some(Match::Matched {
                    out_trade_no,
                    fee: t.fee,
                }),
                (Some(o), None) if o.succeeded => Some(Match::MissingThere {
                    out_trade_no,
                    amount: o.amount,
                }),
                (None, Some(t)) if t.paid => Some(Match::MissingHere {
                    out_trade_no,
                    amount: t.amount,
                }),
                _ => None,
            }
        })
        .collect()
}

/// A refund as our books have it, for matching.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookedRefund {
    /// Our refund number, the key the channel reports it under.
    pub out_refund_no: String,
    /// The refunded order.
    pub out_trade_no: String,
    pub amount: Money,
    /// Whether our books count the refund as paid back.
    pub succeeded: bool,
}

/// How one refund compares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum RefundMatch {
    Matched {
        out_refund_no: String,
        amount: Money,
    },
    /// The channel paid back a refund we do not have.
    MissingHere {
        out_refund_no: String,
        out_trade_no: String,
        amount: Money,
    },
    /// We count a refund the channel's statement does not have.
    MissingThere {
        out_refund_no: String,
        out_trade_no: String,
        amount: Money,
    },
    AmountMismatch {
        out_refund_no: String,
        ours: Money,
        theirs: Money,
    },
    /// One side says paid back, the other not.
    StatusMismatch {
        out_refund_no: String,
        ours_succeeded: bool,
        theirs_succeeded: bool,
    },
}

/// Matches a statement's refunds with ours, by refund number, sorted by refund number.
pub fn reconcile_refunds(ours: &[BookedRefund], theirs: &[StatementRefund]) -> Vec<RefundMatch> {
    let ours: BTreeMap<&str, &BookedRefund> =
        ours.iter().map(|r| (r.out_refund_no.as_str(), r)).collect();
    let theirs: BTreeMap<&str, &StatementRefund> = theirs
        .iter()
        .map(|r| (r.out_refund_no.as_str(), r))
        .collect();
    let mut keys: Vec<&str> = ours.keys().chain(theirs.keys()).copied().collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter()
        .filter_map(|no| {
            let out_refund_no = no.to_owned();
            match (ours.get(no), theirs.get(no)) {
                (Some(o), Some(t)) if o.succeeded != t.succeeded => {
                    Some(RefundMatch::StatusMismatch {
                        out_refund_no,
                        ours_succeeded: o.succeeded,
                        theirs_succeeded: t.succeeded,
                    })
                }
                (Some(o), Some(_)) if !o.succeeded => None,
                (Some(o), Some(t)) if o.amount != t.amount => Some(RefundMatch::AmountMismatch {
                    out_refund_no,
                    ours: o.amount,
                    theirs: t.amount,
                }),
                (Some(_), Some(t)) => Some(RefundMatch::Matched {
                    out_refund_no,
                    amount: t.amount,
                }),
                (Some(o), None) if o.succeeded => Some(RefundMatch::MissingThere {
                    out_refund_no,
                    out_trade_no: o.out_trade_no.clone(),
                    amount: o.amount,
                }),
                (None, Some(t)) if t.succeeded => Some(RefundMatch::MissingHere {
                    out_refund_no,
                    out_trade_no: t.out_trade_no.clone(),
                    amount: t.amount,
                }),
                _ => None,
            }
        })
        .collect()
}
