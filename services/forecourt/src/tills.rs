//! The payment channels of a production deployment: `PAYMENTS_CHANNELS` names a JSON file
//! with one entry per channel (its id, its party, where it is, the merchant's credentials as
//! PEM file paths), from which `serve` and `worker` build the adapters.
//!
//! ```json
//! {
//!   "timeouts": {"connect_ms": 1000, "request_ms": 5000},
//!   "channels": [
//!     {"id": "wxpay-direct", "party": "wechat_pay", "base_url": "https://api.mch.weixin.qq.com",
//!      "appid": "wx…", "mchid": "1900000001", "merchant_serial_no": "…",
//!      "merchant_key": "/etc/forecourt/wxpay-direct/apiclient_key.pem",
//!      "platform_keys": [{"serial": "PUB_KEY_ID_…", "public_key": "/etc/…/pub_key.pem"}],
//!      "api_v3_key_file": "/etc/forecourt/wxpay-direct/apiv3.key",
//!      "notify_url": "https://pay.example.com/v1/payments/notifications/wxpay-direct"},
//!     {"id": "alipay-direct", "party": "alipay", "gateway_url": "https://openapi.alipay.com/gateway.do",
//!      "app_id": "2021…", "app_key": "/etc/…/app_key.pem", "alipay_public_key": "/etc/…/alipay_public.pem",
//!      "notify_url": "https://pay.example.com/v1/payments/notifications/alipay-direct"},
//!     {"id": "card-acquirer-a", "party": "acquirer", "base_url": "https://acq.example.com",
//!      "merchant_id": "898…", "terminal_id": "T0001", "merchant_key": "/etc/…/merchant_key.pem",
//!      "acquirer_public_key": "/etc/…/acquirer_public.pem"}
//!   ]
//! }
//! ```
//!
//! Relative paths are read relative to the file. Every key is read and checked at start: a
//! deployment with a bad key does not start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use openssl::pkey::{PKey, Private, Public};
use payments::channels::acquirer::{Acquirer, AcquirerConfig};
use payments::channels::alipay::{Alipay, AlipayConfig};
use payments::channels::wechat::{WechatPay, WechatPayConfig};
use payments::channels::{Channel, Timeouts};
use payments::crypto::ApiV3Key;
use payments::model::{ChannelId, Party};
use serde::Deserialize;

#[derive(clap::Args, Clone, Debug)]
pub struct PaymentsArgs {
    /// The payment channels (JSON, see `forecourt::tills`); the payments area answers 503
    /// without it.
    #[arg(
        id = "payments_channels",
        long = "payments-channels",
        env = "PAYMENTS_CHANNELS"
    )]
    pub channels: Option<PathBuf>,
    /// How long a till's payment request waits for the outcome before answering `pending`.
    #[arg(
        id = "payments_wait_ms",
        long = "payments-wait-ms",
        env = "PAYMENTS_WAIT_MS",
        default_value_t = 10_000
    )]
    pub wait_ms: u64,
    /// Longest time one call to a channel may take before another worker takes it over.
    #[arg(
        id = "payments_activity_timeout_ms",
        long = "payments-activity-timeout-ms",
        env = "PAYMENTS_ACTIVITY_TIMEOUT_MS",
        default_value_t = 15_000
    )]
    pub activity_timeout_ms: u64,
    /// How long a refund request waits for the station manager.
    #[arg(
        id = "payments_approval_hours",
        long = "payments-approval-hours",
        env = "PAYMENTS_APPROVAL_HOURS",
        default_value_t = 24
    )]
    pub approval_hours: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    timeouts: Option<Timeouts>,
    channels: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlatformKey {
    serial: String,
    public_key: PathBuf,
}

#[derive(Deserialize)]
#[serde(tag = "party", rename_all = "snake_case", deny_unknown_fields)]
enum Entry {
    WechatPay {
        id: String,
        base_url: String,
        appid: String,
        mchid: String,
        merchant_serial_no: String,
        merchant_key: PathBuf,
        platform_keys: Vec<PlatformKey>,
        api_v3_key_file: PathBuf,
        notify_url: String,
    },
    Alipay {
        id: String,
        gateway_url: String,
        app_id: String,
        app_key: PathBuf,
        alipay_public_key: PathBuf,
        notify_url: String,
    },
    Acquirer {
        id: String,
        base_url: String,
        merchant_id: String,
        terminal_id: String,
        merchant_key: PathBuf,
        acquirer_public_key: PathBuf,
    },
}

/// The adapters by channel id and the party of each.
pub struct Configured {
    pub channels: Arc<workflows::pos_payment::Channels>,
    pub parties: BTreeMap<ChannelId, Party>,
}

fn read(base: &Path, path: &Path) -> anyhow::Result<Vec<u8>> {
    let path = if path.is_relative() {
        base.join(path)
    } else {
        path.to_owned()
    };
    std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))
}

fn private(base: &Path, path: &Path) -> anyhow::Result<PKey<Private>> {
    PKey::private_key_from_pem(&read(base, path)?)
        .with_context(|| format!("{} is not a PEM private key", path.display()))
}

fn public(base: &Path, path: &Path) -> anyhow::Result<PKey<Public>> {
    PKey::public_key_from_pem(&read(base, path)?)
        .with_context(|| format!("{} is not a PEM public key", path.display()))
}

impl PaymentsArgs {
    /// The configured channels, or `None` when `PAYMENTS_CHANNELS` is not set.
    pub fn configured(&self) -> anyhow::Result<Option<Configured>> {
        let Some(path) = &self.channels else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read PAYMENTS_CHANNELS {}", path.display()))?;
        let file: File = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a channels file", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let timeouts = file.timeouts.unwrap_or(Timeouts {
            connect_ms: 1_000,
            request_ms: 5_000,
        });
        let mut channels: workflows::pos_payment::Channels = BTreeMap::new();
        let mut parties = BTreeMap::new();
        for entry in file.channels {
            let (id, party, adapter): (String, Party, Arc<dyn Channel>) = match entry {
                Entry::WechatPay {
                    id,
                    base_url,
                    appid,
                    mchid,
                    merchant_serial_no,
                    merchant_key,
                    platform_keys,
                    api_v3_key_file,
                    notify_url,
                } => {
                    let key = read(base, &api_v3_key_file)?;
                    let key = String::from_utf8_lossy(&key).trim().as_bytes().to_vec();
                    let adapter = WechatPay::new(WechatPayConfig {
                        base_url,
                        appid,
                        mchid,
                        merchant_serial_no,
                        merchant_key: private(base, &merchant_key)?,
                        platform_keys: platform_keys
                            .iter()
                            .map(|k| Ok((k.serial.clone(), public(base, &k.public_key)?)))
                            .collect::<anyhow::Result<_>>()?,
                        api_v3_key: ApiV3Key::new(&key)
                            .map_err(|e| anyhow::anyhow!("channel {id}: APIv3 key: {e}"))?,
                        notify_url,
                        timeouts,
                    });
                    (id, Party::WechatPay, Arc::new(adapter))
                }
                Entry::Alipay {
                    id,
                    gateway_url,
                    app_id,
                    app_key,
                    alipay_public_key,
                    notify_url,
                } => {
                    let adapter = Alipay::new(AlipayConfig {
                        gateway_url,
                        app_id,
                        app_key: private(base, &app_key)?,
                        alipay_public_key: public(base, &alipay_public_key)?,
                        notify_url,
                        timeouts,
                    });
                    (id, Party::Alipay, Arc::new(adapter))
                }
                Entry::Acquirer {
                    id,
                    base_url,
                    merchant_id,
                    terminal_id,
                    merchant_key,
                    acquirer_public_key,
                } => {
                    let adapter = Acquirer::new(AcquirerConfig {
                        base_url,
                        merchant_id,
                        terminal_id,
                        merchant_key: private(base, &merchant_key)?,
                        acquirer_public_key: public(base, &acquirer_public_key)?,
                        timeouts,
                    });
                    (id, Party::Acquirer, Arc::new(adapter))
                }
            };
            let id = ChannelId::new(id).map_err(|e| anyhow::anyhow!("{e}"))?;
            if channels.insert(id.clone(), adapter).is_some() {
                anyhow::bail!("channel {id} is configured twice");
            }
            parties.insert(id, party);
        }
        Ok(Some(Configured {
            channels: Arc::new(channels),
            parties,
        }))
    }

    /// The API's payments area over the configured channels.
    pub fn context(
        &self,
        engine: workflows::Engine,
        configured: &Configured,
    ) -> api::routes::payments::PaymentsContext {
        api::routes::payments::PaymentsContext {
            engine,
            channels: configured.channels.clone(),
            parties: configured.parties.clone(),
            flow: payments::flow::FlowPolicy {
                first_query_ms: 1_000,
                max_query_ms: 10_000,
                max_queries: 30,
                max_reversals: 10,
                reversal_retry_ms: 2_000,
                max_attempts: 3,
            },
            wait: std::time::Duration::from_millis(self.wait_ms),
            activity_timeout_ms: self.activity_timeout_ms,
            approval_deadline: std::time::Duration::from_secs(self.approval_hours * 3600),
            health: payments::health::HealthBook::new(api::routes::payments::BREAKER).into(),
        }
    }
}
