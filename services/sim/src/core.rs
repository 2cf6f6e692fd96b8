//! What every simulated party shares: behaviour switches, the book of charges, the server.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private, Public};
use openssl::sign::{Signer, Verifier};
use serde::Serialize;
use tokio::task::JoinHandle;

/// How the party behaves; every switch can be flipped while it runs.
#[derive(Clone, Debug, Default)]
pub struct Behaviour {
    /// Added before every answer.
    pub latency_ms: u64,
    /// Maintenance: every request gets a 503 before anything is processed.
    pub unavailable: bool,
    /// The next N charges are declined (insufficient funds); nothing is taken.
    pub decline_next: u32,
    /// The next N charges are taken, then the answer is held for `hang_ms` (longer than the
    /// client waits): the client sees a timeout although the money is gone.
    pub timeout_after_charge_next: u32,
    pub hang_ms: u64,
    /// The next N charges wait for the customer's confirmation; the charge completes on the
    /// first query after it.
    pub user_paying_next: u32,
    /// Where to post asynchronous notifications of charges, and how many copies to send.
    pub notify_url: Option<String>,
    pub notify_copies: u32,
    /// A customer shown a dynamic code (WeChat Native, Alipay precreate) scans it and pays
    /// this long after it is issued; `None`: nobody scans, and the order waits until it is
    /// closed.
    pub qr_scan_after_ms: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ChargeStatus {
    /// A dynamic code was issued; the customer has not paid it (yet).
    NotPaid,
    Succeeded,
    UserPaying,
    Declined,
    Reversed,
}

/// One order as the party books it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SimRecord {
    pub out_trade_no: String,
    pub txn_id: String,
    pub amount_fen: i64,
    pub status: ChargeStatus,
    pub at: DateTime<Utc>,
    pub refunded_fen: i64,
    pub refunds: Vec<SimRefund>,
}

/// One refund of an order, as the party books it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SimRefund {
    pub refund_no: String,
    pub amount_fen: i64,
    pub at: DateTime<Utc>,
}

/// The party's state.
#[derive(Debug, Default)]
pub struct SimState {
    pub behaviour: Behaviour,
    pub records: BTreeMap<String, SimRecord>,
    /// Charge requests that reached the party (whatever their outcome).
    pub charge_calls: u64,
    /// Requests refused because their signature did not verify.
    pub bad_signatures: u64,
    next_txn: u64,
}

/// What a charge request turned into.
pub enum ChargeDecision {
    Declined,
    UserPaying(SimRecord),
    /// Taken; answer after the given delay (zero, or longer than the client waits).
    Charged(SimRecord, u64),
    /// The order number was seen before: its record as it stands.
    Existing(SimRecord),
}

impl SimState {
    /// Books a charge according to the behaviour. Idempotent on the order number.
    pub fn charge(&mut self, prefix: &str, out_trade_no: &str, amount_fen: i64) -> ChargeDecision {
        self.charge_calls += 1;
        if let Some(existing) = self.records.get(out_trade_no) {
            return ChargeDecision::Existing(existing.clone());
        }
        let b = &mut self.behaviour;
        if b.decline_next > 0 {
            b.decline_next -= 1;
            return ChargeDecision::Declined;
        }
        let (status, hang_ms) = if b.user_paying_next > 0 {
            b.user_paying_next -= 1;
            (ChargeStatus::UserPaying, 0)
        } else if b.timeout_after_charge_next > 0 {
            b.timeout_after_charge_next -= 1;
            (ChargeStatus::Succeeded, b.hang_ms)
        } else {
            (ChargeStatus::Succeeded, 0)
        };
        self.next_txn += 1;
        let record = SimRecord {
            out_trade_no: out_trade_no.to_owned(),
            txn_id: format!("{prefix}{:012}", self.next_txn),
            amount_fen,
            status,
            at: Utc::now(),
            refunded_fen: 0,
            refunds: Vec::new(),
        };
        self.records.insert(out_trade_no.to_owned(), record.clone());
        match status {
            ChargeStatus::UserPaying => ChargeDecision::UserPaying(record),
            _ => ChargeDecision::Charged(record, hang_ms),
        }
    }

    /// A dynamic code issued for an order: the order exists, unpaid, until the customer
    /// scans the code or the order is closed. Idempotent on the order number.
    pub fn open_order(&mut self, out_trade_no: &str, amount_fen: i64) -> SimRecord {
        self.charge_calls += 1;
        self.records
            .entry(out_trade_no.to_owned())
            .or_insert_with(|| SimRecord {
                out_trade_no: out_trade_no.to_owned(),
                txn_id: String::new(),
                amount_fen,
                status: ChargeStatus::NotPaid,
                at: Utc::now(),
                refunded_fen: 0,
                refunds: Vec::new(),
            })
            .clone()
    }

    /// The customer scanned the order's code and paid: the money is taken. `None` when the
    /// order is unknown, closed or paid already.
    pub fn customer_pays(&mut self, prefix: &str, out_trade_no: &str) -> Option<SimRecord> {
        let record = self.records.get_mut(out_trade_no)?;
        if record.status != ChargeStatus::NotPaid {
            return None;
        }
        self.next_txn += 1;
        record.txn_id = format!("{prefix}{:012}", self.next_txn);
        record.status = ChargeStatus::Succeeded;
        record.at = Utc::now();
        Some(record.clone())
    }

    /// A query: a customer who was confirming has now paid.
    pub fn query(&mut self, out_trade_no: &str) -> Option<SimRecord> {
        let record = self.records.get_mut(out_trade_no)?;
        if record.status == ChargeStatus::UserPaying {
            record.status = ChargeStatus::Succeeded;
        }
        Some(record.clone())
    }

    /// A reversal: whatever was taken goes back. Unknown orders are closed so that a late
    /// request can never take money under them.
    pub fn reverse(&mut self, out_trade_no: &str) -> SimRecord {
        let record = self
            .records
            .entry(out_trade_no.to_owned())
            .or_insert_with(|| SimRecord {
                out_trade_no: out_trade_no.to_owned(),
                txn_id: String::new(),
                amount_fen: 0,
                status: ChargeStatus::Reversed,
                at: Utc::now(),
                refunded_fen: 0,
                refunds: Vec::new(),
            });
        record.status = ChargeStatus::Reversed;
        record.clone()
    }

    /// A refund, idempotent on the refund number; refuses more than what is left.
    pub fn refund(
        &mut self,
        out_trade_no: &str,
        refund_no: &str,
        amount_fen: i64,
    ) -> Result<SimRecord, &'static str> {
        let record = self
            .records
            .get_mut(out_trade_no)
            .ok_or("ORDER_NOT_EXIST")?;
        if record.refunds.iter().any(|r| r.refund_no == refund_no) {
            return Ok(record.clone());
        }
        if record.status != ChargeStatus::Succeeded {
            return Err("TRADE_NOT_PAID");
        }
        if amount_fen <= 0 || record.refunded_fen + amount_fen > record.amount_fen {
            return Err("REFUND_AMOUNT_EXCEEDED");
        }
        record.refunded_fen += amount_fen;
        record.refunds.push(SimRefund {
            refund_no: refund_no.to_owned(),
            amount_fen,
            at: Utc::now(),
        });
        Ok(record.clone())
    }

    /// The refunds paid back on a day (China Standard Time), with their orders, for the
    /// statement.
    pub fn refunds_on(&self, date: chrono::NaiveDate) -> Vec<(SimRecord, SimRefund)> {
        let china = chrono::FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset");
        self.records
            .values()
            .flat_map(|r| r.refunds.iter().map(move |f| (r, f)))
            .filter(|(_, f)| f.at.with_timezone(&china).date_naive() == date)
            .map(|(r, f)| (r.clone(), f.clone()))
            .collect()
    }

    /// The charges taken on a day, for the statement. The parties count days in China
    /// Standard Time (UTC+8), as their statement files do.
    pub fn charges_on(&self, date: chrono::NaiveDate) -> Vec<SimRecord> {
        let china = chrono::FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset");
        self.records
            .values()
            .filter(|r| r.at.with_timezone(&china).date_naive() == date)
            .filter(|r| r.status != ChargeStatus::Declined)
            .filter(|r| !r.txn_id.is_empty())
            .cloned()
            .collect()
    }
}

/// Shared state behind a lock held only briefly, never across an await.
#[derive(Clone, Debug, Default)]
pub struct Shared(Arc<Mutex<SimState>>);

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, SimState> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn behaviour(&self) -> Behaviour {
        self.lock().behaviour.clone()
    }

    pub async fn latency(&self) {
        let ms = self.lock().behaviour.latency_ms;
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }
}

/// A running simulator: its address, its state, its server task.
pub struct SimHandle {
    pub addr: SocketAddr,
    pub state: Shared,
    task: JoinHandle<()>,
}

impl SimHandle {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes the behaviour while the simulator runs.
    pub fn set(&self, change: impl FnOnce(&mut Behaviour)) {
        change(&mut self.state.lock().behaviour);
    }

    pub fn charge_calls(&self) -> u64 {
        self.state.lock().charge_calls
    }

    pub fn bad_signatures(&self) -> u64 {
        self.state.lock().bad_signatures
    }

    pub fn record(&self, out_trade_no: &str) -> Option<SimRecord> {
        self.state.lock().records.get(out_trade_no).cloned()
    }

    /// Orders on which money is taken (not reversed, not declined).
    pub fn taken(&self) -> Vec<SimRecord> {
        self.state
            .lock()
            .records
            .values()
            .filter(|r| r.status == ChargeStatus::Succeeded)
            .cloned()
            .collect()
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `router` on `addr` (port 0 for an ephemeral port).
pub async fn serve(
    router: axum::Router,
    addr: SocketAddr,
    state: Shared,
) -> std::io::Result<SimHandle> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::warn!(%error, "simulator stopped");
        }
    });
    Ok(SimHandle { addr, state, task })
}

pub fn sign(key: &PKey<Private>, message: &[u8]) -> String {
    let mut signer = Signer::new(MessageDigest::sha256(), key).expect("signer");
    signer.update(message).expect("sign update");
    B64.encode(signer.sign_to_vec().expect("sign"))
}

pub fn verify(key: &PKey<Public>, message: &[u8], signature_b64: &str) -> bool {
    let Ok(signature) = B64.decode(signature_b64) else {
        return false;
    };
    let Ok(mut verifier) = Verifier::new(MessageDigest::sha256(), key) else {
        return false;
    };
    verifier.update(message).is_ok() && verifier.verify(&signature).unwrap_or(false)
}

pub fn random_token(len: usize) -> String {
    let mut bytes = vec![0_u8; len];
    openssl::rand::rand_bytes(&mut bytes).expect("rng");
    bytes.iter().map(|b| (b'A' + b % 26) as char).collect()
}

/// Posts `copies` copies of a notification, one after another, ignoring the answers (the
/// real parties retry on failure; duplicates are what the receiver must withstand).
pub fn spawn_notifications(
    url: String,
    copies: u32,
    make: impl Fn() -> (Vec<(&'static str, String)>, String) + Send + 'static,
) {
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        for _ in 0..copies {
            let (headers, body) = make();
            let mut request = client.post(&url).body(body);
            for (name, value) in headers {
                request = request.header(name, value);
            }
            if let Err(error) = request.send().await {
                tracing::debug!(%error, "notification not delivered");
            }
        }
    });
}
