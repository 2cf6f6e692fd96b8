//! The platform's client of the custodial bank's host-to-host (H2H) HTTP interface.
//!
//! # Protocol
//! Every message body is ISO 20022 XML (`Content-Type: application/xml`), signed with
//! RSA-SHA256 (PKCS#1 v1.5) over the exact body bytes; the base64 signature travels in the
//! `X-Signature` header. The platform signs what it sends with its key; the bank signs every
//! answer and callback with its key, and nothing the bank says counts unless that signature
//! verifies.
//!
//! - `POST {base}/h2h/pain001`: body a pain.001.001.10 message. The answer is the
//!   synchronous pain.002.001.11 status report (`200`), signed: ACSC when the bank settled
//!   at once, PDNG when the rail is closed, RJCT with a reason (a group rejection without
//!   transactions for `DS0B` bad signature, `DU01` duplicate message id, `FF01` message
//!   rules), or a bare RCVD when the bank answers before processing. `400` with a text
//!   reason: the body is not a readable pain.001 (nothing was accepted). `503`: maintenance,
//!   nothing was processed.
//! - `GET {base}/h2h/status/{message_id}`: the latest signed pain.002 of a message, or `404`
//!   when the bank never accepted a message with this id (so sending it is safe).
//! - `GET {base}/h2h/statements/{account}?date=YYYY-MM-DD`: the signed camt.053.001.08 of a
//!   sub-account for a Shanghai calendar day; `404` for an account the bank does not hold.
//! - `POST {base}/h2h/freeze` and `GET {base}/h2h/freeze/{request_id}`: freezing and
//!   releasing funds on a sub-account, a proprietary JSON request on the same signed
//!   interface (see [`crate::freeze`] for why and how); the answers are signed JSON.
//! - Callbacks: the bank `POST`s later pain.002 reports (a PDNG payment settling, the final
//!   status of a message) and camt.054.001.08 notifications (every booking, returns after
//!   settlement included) to the platform's callback URL, signed the same way, and retries
//!   until it gets a `2xx`. [`verify_callback`] checks and reads them.
//!
//! # Failures
//! A submission either has a verified answer or fails in one of two ways that a money system
//! must keep apart ([`SubmitError`]):
//! - [`SubmitError::Refused`]: the bank certainly did not take the message (connection never
//!   opened, `503` maintenance before processing, a `4xx` with its reason). Sending it again
//!   later is safe.
//! - [`SubmitError::Unknown`]: the message may have been processed (timeout after sending,
//!   connection reset, an unreadable or unverifiable answer, a `5xx` other than `503`). Ask
//!   [`BankClient::status`] before sending again; a resubmission with the same message id
//!   is refused by the bank with `DU01` and never pays twice either.
//!
//! Transport security (TLS, client certificates) is the deployment's: the client is built
//! without TLS here, so `base_url` is `http://` behind the bank line's own encryption.

use std::time::Duration;

use chrono::NaiveDate;
use reqwest::StatusCode;

use crate::domain::{AccountNumber, MessageId};
use crate::freeze::{FreezeAnswer, FreezeRequest};
use crate::iso20022::MessageError;
use crate::iso20022::camt053::Statement;
use crate::iso20022::camt054::{self, Notification};
use crate::iso20022::pain001::Batch;
use crate::iso20022::pain002::{self, StatusReport};
use crate::signing::{Signature, Signer, SigningError, Verifier};

/// The header carrying the base64 RSA-SHA256 signature of the body.
pub const SIGNATURE_HEADER: &str = "X-Signature";
/// The content type of every ISO 20022 message.
pub const XML_CONTENT_TYPE: &str = "application/xml";
/// The content type of freeze requests and answers.
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// Where the bank is and how long to wait for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BankClientConfig {
    /// The H2H interface's base URL, without a trailing slash (`http://127.0.0.1:7704`).
    pub base_url: String,
    /// How long to wait for the TCP connection.
    pub connect_timeout: Duration,
    /// How long to wait for a whole answer, connection included.
    pub request_timeout: Duration,
}

impl BankClientConfig {
    /// A 3 s connection and a 30 s answer budget.
    pub fn new(base_url: impl Into<String>) -> Self {
        BankClientConfig {
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Why a submission has no verified answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The bank certainly did not take the message; sending it again is safe.
    #[error("refused by the bank, not received: {reason}")]
    Refused { reason: String },
    /// The bank may have processed the message: query its status before sending again.
    #[error("outcome unknown, query before resending: {reason}")]
    Unknown { reason: String },
    /// The message could not be built or signed; nothing was sent.
    #[error("not sent: {0}")]
    Local(String),
}

/// Why a query (status, statement) has no verified answer. Queries change nothing at the
/// bank: any failure may simply be retried.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("the bank is in maintenance")]
    Unavailable,
    #[error("the bank does not know {0}")]
    NotFound(String),
    #[error("transport: {0}")]
    Transport(String),
    #[error("the bank answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("the bank's signature is missing or does not verify")]
    BadSignature,
    #[error("the bank answered about something else: {0}")]
    Mismatch(String),
    #[error(transparent)]
    Message(#[from] MessageError),
}

/// Why a callback is refused. Answer it with a non-2xx status: the bank sends it again.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    #[error("no {SIGNATURE_HEADER} header")]
    MissingSignature,
    #[error("the bank's signature does not verify")]
    BadSignature,
    #[error("not a pain.002 or camt.054 message")]
    UnknownMessage,
    #[error(transparent)]
    Message(#[from] MessageError),
}

/// A verified callback from the bank.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A later status report on a message (pain.002).
    StatusReport(StatusReport),
    /// A booking on a sub-account (camt.054), including returns after settlement.
    Notification(Notification),
}

/// The platform's client of the bank.
#[derive(Clone, Debug)]
pub struct BankClient {
    http: reqwest::Client,
    base_url: String,
    signer: Signer,
    bank: Verifier,
}

impl BankClient {
    /// `signer` is the platform's key; `bank` verifies the bank's signatures.
    pub fn new(
        config: BankClientConfig,
        signer: Signer,
        bank: Verifier,
    ) -> Result<BankClient, SubmitError> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .build()
            .map_err(|e| SubmitError::Local(e.to_string()))?;
        Ok(BankClient {
            http,
            base_url: config.base_url.trim_end_matches('/').to_owned(),
            signer,
            bank,
        })
    }

    /// Builds, signs and submits a batch; the bank's verified synchronous status report.
    pub async fn submit(&self, batch: &Batch) -> Result<StatusReport, SubmitError> {
        let xml = batch
            .to_xml()
            .map_err(|e| SubmitError::Local(e.to_string()))?;
        let signature = self
            .signer
            .sign(xml.as_bytes())
            .map_err(|e| SubmitError::Local(e.to_string()))?;
        self.submit_signed(xml.as_bytes(), &signature).await
    }

    /// Submits message bytes with their signature as they are (for a message stored signed
    /// before sending, so that a resubmission sends exactly the same bytes). Bytes that are
    /// not a readable pain.001 are not sent ([`SubmitError::Local`]); an answer about another
    /// message id is not believed ([`SubmitError::Unknown`]).
    pub async fn submit_signed(
        &self,
        xml: &[u8],
        signature: &Signature,
    ) -> Result<StatusReport, SubmitError> {
        let unknown = |reason: String| SubmitError::Unknown { reason };
        let sent = std::str::from_utf8(xml)
            .ok()
            .and_then(|text| crate::iso20022::pain001::parse(text).ok())
            .map(|document| document.initiation.grp_hdr.msg_id)
            .ok_or_else(|| SubmitError::Local("not a readable pain.001 message".into()))?;
        let response = self
            .http
            .post(format!("{}/h2h/pain001", self.base_url))
            .header(reqwest::header::CONTENT_TYPE, XML_CONTENT_TYPE)
            .header(SIGNATURE_HEADER, signature.to_base64())
            .body(xml.to_vec())
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            return Err(SubmitError::Refused {
                reason: "503 maintenance".into(),
            });
        }
        let signature = header_signature(&response);
        let body = response
            .bytes()
            .await
            .map_err(|e| unknown(format!("reading the answer: {e}")))?;
        if status.is_client_error() {
            return Err(SubmitError::Refused {
                reason: format!("{status}: {}", String::from_utf8_lossy(&body).trim()),
            });
        }
        if !status.is_success() {
            return Err(unknown(format!(
                "{status}: {}",
                String::from_utf8_lossy(&body).trim()
            )));
        }
        let verified = self
            .verified(&body, signature.as_deref())
            .map_err(|e| unknown(format!("answer not believed: {e}")))?;
        let report = StatusReport::parse(verified)
            .map_err(|e| unknown(format!("unreadable answer: {e}")))?;
        if report.original_message_id.as_str() != sent {
            return Err(unknown(format!(
                "the answer is about message {}, not {sent}",
                report.original_message_id
            )));
        }
        Ok(report)
    }

    /// The bank's latest status report on a message, or `None` when the bank never
    /// accepted it (sending it is then safe).
    pub async fn status(&self, message_id: &MessageId) -> Result<Option<StatusReport>, QueryError> {
        let url = format!("{}/h2h/status/{}", self.base_url, message_id);
        match self.get_signed(&url).await {
            Ok(xml) => {
                let report = StatusReport::parse(&xml)?;
                if &report.original_message_id != message_id {
                    return Err(QueryError::Mismatch(format!(
                        "status of {} asked, of {} answered",
                        message_id, report.original_message_id
                    )));
                }
                Ok(Some(report))
            }
            Err(QueryError::NotFound(_)) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// Sends a signed freeze or unfreeze request (the exact stored bytes); the bank's
    /// verified answer. Failures are classified as for [`submit_signed`](Self::submit_signed).
    pub async fn freeze_signed(
        &self,
        json: &[u8],
        signature: &Signature,
    ) -> Result<FreezeAnswer, SubmitError> {
        let unknown = |reason: String| SubmitError::Unknown { reason };
        let sent = std::str::from_utf8(json)
            .ok()
            .and_then(|text| FreezeRequest::parse(text).ok())
            .map(|request| request.request_id)
            .ok_or_else(|| SubmitError::Local("not a readable freeze request".into()))?;
        let response = self
            .http
            .post(format!("{}/h2h/freeze", self.base_url))
            .header(reqwest::header::CONTENT_TYPE, JSON_CONTENT_TYPE)
            .header(SIGNATURE_HEADER, signature.to_base64())
            .body(json.to_vec())
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            return Err(SubmitError::Refused {
                reason: "503 maintenance".into(),
            });
        }
        let signature = header_signature(&response);
        let body = response
            .bytes()
            .await
            .map_err(|e| unknown(format!("reading the answer: {e}")))?;
        if status.is_client_error() {
            return Err(SubmitError::Refused {
                reason: format!("{status}: {}", String::from_utf8_lossy(&body).trim()),
            });
        }
        if !status.is_success() {
            return Err(unknown(format!(
                "{status}: {}",
                String::from_utf8_lossy(&body).trim()
            )));
        }
        let verified = self
            .verified(&body, signature.as_deref())
            .map_err(|e| unknown(format!("answer not believed: {e}")))?;
        let answer = FreezeAnswer::parse(verified)
            .map_err(|e| unknown(format!("unreadable answer: {e}")))?;
        if answer.request_id != sent {
            return Err(unknown(format!(
                "the answer is about request {}, not {sent}",
                answer.request_id
            )));
        }
        Ok(answer)
    }

    /// The bank's answer to a freeze or unfreeze request, or `None` when it never received
    /// it (sending it is then safe).
    pub async fn freeze_status(
        &self,
        request_id: &MessageId,
    ) -> Result<Option<FreezeAnswer>, QueryError> {
        let url = format!("{}/h2h/freeze/{}", self.base_url, request_id);
        match self.get_signed(&url).await {
            Ok(json) => {
                let answer = FreezeAnswer::parse(&json)?;
                if &answer.request_id != request_id {
                    return Err(QueryError::Mismatch(format!(
                        "request {request_id} asked, {} answered",
                        answer.request_id
                    )));
                }
                Ok(Some(answer))
            }
            Err(QueryError::NotFound(_)) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// The statement of a sub-account for a Shanghai calendar day.
    pub async fn statement(
        &self,
        account: &AccountNumber,
        date: NaiveDate,
    ) -> Result<Statement, QueryError> {
        let url = format!(
            "{}/h2h/statements/{}?date={}",
            self.base_url,
            account,
            date.format("%Y-%m-%d")
        );
        let xml = self.get_signed(&url).await?;
        let statement = Statement::parse(&xml)?;
        if &statement.account != account || statement.date != date {
            return Err(QueryError::Mismatch(format!(
                "statement of {account} on {date} asked, of {} on {} answered",
                statement.account, statement.date
            )));
        }
        Ok(statement)
    }

    /// Verifies and reads a callback (see [`verify_callback`]).
    pub fn verify_callback(
        &self,
        body: &[u8],
        signature_header: Option<&str>,
    ) -> Result<Incoming, CallbackError> {
        verify_callback(&self.bank, body, signature_header)
    }

    async fn get_signed(&self, url: &str) -> Result<String, QueryError> {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| QueryError::Transport(e.to_string()))?;
        let status = response.status();
        let signature = header_signature(&response);
        let body = response
            .bytes()
            .await
            .map_err(|e| QueryError::Transport(e.to_string()))?;
        match status {
            StatusCode::SERVICE_UNAVAILABLE => return Err(QueryError::Unavailable),
            StatusCode::NOT_FOUND => return Err(QueryError::NotFound(url.to_owned())),
            s if !s.is_success() => {
                return Err(QueryError::Status {
                    status: s.as_u16(),
                    body: String::from_utf8_lossy(&body).trim().to_owned(),
                });
            }
            _ => {}
        }
        let xml = self
            .verified(&body, signature.as_deref())
            .map_err(|_| QueryError::BadSignature)?;
        Ok(xml.to_owned())
    }

    fn verified<'a>(
        &self,
        body: &'a [u8],
        signature: Option<&str>,
    ) -> Result<&'a str, CallbackError> {
        verify_body(&self.bank, body, signature)
    }
}

fn header_signature(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn verify_body<'a>(
    bank: &Verifier,
    body: &'a [u8],
    signature: Option<&str>,
) -> Result<&'a str, CallbackError> {
    let signature = signature.ok_or(CallbackError::MissingSignature)?;
    let signature = Signature::from_base64(signature).map_err(|_| CallbackError::BadSignature)?;
    bank.verify(body, &signature)
        .map_err(|_: SigningError| CallbackError::BadSignature)?;
    std::str::from_utf8(body).map_err(|e| MessageError::Xml(e.to_string()).into())
}

/// Checks the bank's signature over a callback's exact body bytes (the value of its
/// `X-Signature` header) and reads it as a pain.002 or a camt.054, told apart by the
/// document's namespace. Anything else, or anything unsigned, is refused.
pub fn verify_callback(
    bank: &Verifier,
    body: &[u8],
    signature_header: Option<&str>,
) -> Result<Incoming, CallbackError> {
    let xml = verify_body(bank, body, signature_header)?;
    match root_namespace(xml).as_deref() {
        Some(pain002::NAMESPACE) => Ok(Incoming::StatusReport(StatusReport::parse(xml)?)),
        Some(camt054::NAMESPACE) => Ok(Incoming::Notification(Notification::parse(xml)?)),
        _ => Err(CallbackError::UnknownMessage),
    }
}

/// The default namespace of the document's root element.
fn root_namespace(xml: &str) -> Option<String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    loop {
        match reader.read_event().ok()? {
            Event::Start(element) | Event::Empty(element) => {
                return element
                    .attributes()
                    .flatten()
                    .find(|a| a.key.as_ref() == b"xmlns")
                    .and_then(|a| String::from_utf8(a.value.into_owned()).ok());
            }
            Event::Eof => return None,
            _ => {}
        }
    }
}

/// A transport failure, as what it means for the money: a connection that never opened
/// carried nothing; a failure after it opened (timeout, reset, truncated answer) may come
/// after the bank processed the message.
fn transport_error(error: reqwest::Error) -> SubmitError {
    if error.is_connect() {
        SubmitError::Refused {
            reason: format!("connect: {error}"),
        }
    } else if error.is_builder() {
        SubmitError::Local(error.to_string())
    } else {
        SubmitError::Unknown {
            reason: format!("transport: {error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::generate_demo_keys;

    fn keys() -> (Signer, Verifier) {
        let dir = std::env::temp_dir().join(format!(
            "forecourt-bank-client-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let paths = generate_demo_keys(&dir, "bank").unwrap();
        let signer = Signer::from_pem_file(&paths.private_key).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let verifier = signer.verifier().unwrap();
        (signer, verifier)
    }

    #[test]
    fn callbacks_are_told_apart_by_namespace_and_must_be_signed() {
        let (bank, verifier) = keys();
        let report = crate::iso20022::pain002::StatusReport {
            message_id: MessageId::new("BANK-STS-1").unwrap(),
            created_at: "2026-11-24T08:00:05Z".parse().unwrap(),
            original_message_id: MessageId::new("FC-1").unwrap(),
            group_status: Some(crate::iso20022::pain002::PaymentStatus::Pending),
            group_reason: None,
            transactions: vec![],
        };
        let xml = report.to_xml().unwrap();
        let signature = bank.sign(xml.as_bytes()).unwrap().to_base64();
        assert_eq!(
            verify_callback(&verifier, xml.as_bytes(), Some(&signature)).unwrap(),
            Incoming::StatusReport(report)
        );
        assert!(matches!(
            verify_callback(&verifier, xml.as_bytes(), None),
            Err(CallbackError::MissingSignature)
        ));
        let tampered = xml.replace("PDNG", "ACSC");
        assert!(matches!(
            verify_callback(&verifier, tampered.as_bytes(), Some(&signature)),
            Err(CallbackError::BadSignature)
        ));
        let statement = crate::iso20022::camt053::tests::statement()
            .to_xml()
            .unwrap();
        let signature = bank.sign(statement.as_bytes()).unwrap().to_base64();
        assert!(matches!(
            verify_callback(&verifier, statement.as_bytes(), Some(&signature)),
            Err(CallbackError::UnknownMessage)
        ));
    }
}
