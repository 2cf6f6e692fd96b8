//! A station's full set of channel parties, simulated: two channels per method, each a
//! simulator on its own ephemeral port with the platform's adapter pointed at it.
//!
//! | channel                 | party      | methods                        |
//! |-------------------------|------------|--------------------------------|
//! | `wxpay-direct`          | WeChat Pay | payment code, dynamic code     |
//! | `wxpay-via-bank-a`      | WeChat Pay | payment code, dynamic code     |
//! | `alipay-direct`         | Alipay     | payment code, dynamic code     |
//! | `alipay-via-acquirer-b` | Alipay     | payment code, dynamic code     |
//! | `card-acquirer-a`       | acquirer   | bank card                      |
//! | `card-acquirer-b`       | acquirer   | bank card                      |
//!
//! Used by the embedded `serve`, the API tests and `bench payments`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use ledger::money::{Currency, Money};
use payments::channels::acquirer::{Acquirer, AcquirerConfig};
use payments::channels::alipay::{Alipay, AlipayConfig};
use payments::channels::wechat::{WechatPay, WechatPayConfig};
use payments::channels::{Channel, Timeouts};
use payments::crypto::ApiV3Key;
use payments::model::{ChannelConfig, ChannelId, FeeMode, FeeRate, Method, Party};
use rust_decimal::Decimal;

use crate::SimHandle;

const API_V3_KEY: &[u8; 32] = b"fc0123456789abcdef0123456789abcd";

/// One simulated channel: its id, party, simulator and the platform's adapter.
pub struct SimulatedChannel {
    pub id: ChannelId,
    pub party: Party,
    pub sim: SimHandle,
    pub adapter: Arc<dyn Channel>,
    /// The merchant side's private key and the party's public key (PEM), and the entry of
    /// the channel in a `PAYMENTS_CHANNELS` file without its key paths.
    merchant_key_pem: Vec<u8>,
    party_key_pem: Vec<u8>,
    entry: serde_json::Value,
}

/// Every channel of [the table above](self).
pub struct Retail {
    pub channels: Vec<SimulatedChannel>,
}

impl Retail {
    /// The adapters by channel id.
    pub fn adapters(&self) -> BTreeMap<ChannelId, Arc<dyn Channel>> {
        self.channels
            .iter()
            .map(|c| (c.id.clone(), c.adapter.clone()))
            .collect()
    }

    pub fn parties(&self) -> BTreeMap<ChannelId, Party> {
        self.channels
            .iter()
            .map(|c| (c.id.clone(), c.party))
            .collect()
    }

    pub fn sim(&self, id: &str) -> &SimHandle {
        &self
            .channels
            .iter()
            .find(|c| c.id.as_str() == id)
            .unwrap_or_else(|| panic!("no simulated channel {id}"))
            .sim
    }

    /// Writes a `PAYMENTS_CHANNELS` file for these simulators into `dir` (the merchant keys,
    /// the parties' public keys and the APIv3 key beside it), with notifications addressed to
    /// `notify_base/<channel id>`. Returns the file's path.
    pub fn write_config(
        &self,
        dir: &std::path::Path,
        notify_base: &str,
        timeouts: Timeouts,
    ) -> std::io::Result<std::path::PathBuf> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("wechat-apiv3.key"), API_V3_KEY)?;
        let mut entries = Vec::new();
        for channel in &self.channels {
            let merchant = format!("{}-merchant-key.pem", channel.id);
            let party = format!("{}-party-public.pem", channel.id);
            std::fs::write(dir.join(&merchant), &channel.merchant_key_pem)?;
            std::fs::write(dir.join(&party), &channel.party_key_pem)?;
            let mut entry = channel.entry.clone();
            let notify = format!("{}/{}", notify_base.trim_end_matches('/'), channel.id);
            match channel.party {
                Party::WechatPay => {
                    entry["merchant_key"] = merchant.into();
                    entry["platform_keys"] =
                        serde_json::json!([{"serial": "PUB_KEY_ID_0001", "public_key": party}]);
                    entry["api_v3_key_file"] = "wechat-apiv3.key".into();
                    entry["notify_url"] = notify.into();
                }
                Party::Alipay => {
                    entry["app_key"] = merchant.into();
                    entry["alipay_public_key"] = party.into();
                    entry["notify_url"] = notify.into();
                }
                Party::Acquirer => {
                    entry["merchant_key"] = merchant.into();
                    entry["acquirer_public_key"] = party.into();
                }
            }
            entries.push(entry);
        }
        let file = serde_json::json!({ "timeouts": timeouts, "channels": entries });
        let path = dir.join("channels.json");
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&file).expect("JSON serialises"),
        )?;
        Ok(path)
    }

    /// Customers shown a dynamic code on any channel scan it and pay `after_ms` later
    /// (`None`: nobody scans).
    pub fn customers_scan_after(&self, after_ms: Option<u64>) {
        for channel in &self.channels {
            channel.sim.set(|b| b.qr_scan_after_ms = after_ms);
        }
    }

    /// Tells every simulator to post its notifications to `base/<channel id>`.
    pub fn notify_to(&self, base: &str) {
        for channel in &self.channels {
            let url = format!("{}/{}", base.trim_end_matches('/'), channel.id);
            channel.sim.set(|b| b.notify_url = Some(url));
        }
    }
}

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().expect("a socket address")
}

async fn wechat(id: &str, mchid: &str, timeouts: Timeouts) -> std::io::Result<SimulatedChannel> {
    let (merchant_key, merchant_public) = crate::keys::rsa_pair();
    let (platform_key, platform_public) = crate::keys::rsa_pair();
    let sim = crate::wechat::start(
        crate::wechat::WechatSimConfig {
            mchid: mchid.into(),
            appid: "wx8888888888888888".into(),
            merchant_serial_no: format!("SERIAL-{mchid}"),
            merchant_public_key: merchant_public,
            platform_serial_no: "PUB_KEY_ID_0001".into(),
            platform_key,
            api_v3_key: *API_V3_KEY,
            fee_rate_bp: 38,
        },
        local(),
    )
    .await?;
    let entry = serde_json::json!({
        "id": id, "party": "wechat_pay", "base_url": sim.base_url(),
        "appid": "wx8888888888888888", "mchid": mchid,
        "merchant_serial_no": format!("SERIAL-{mchid}"),
    });
    let merchant_key_pem = merchant_key.private_key_to_pem_pkcs8().expect("PEM");
    let party_key_pem = platform_public.public_key_to_pem().expect("PEM");
    let adapter = WechatPay::new(WechatPayConfig {
        base_url: sim.base_url(),
        appid: "wx8888888888888888".into(),
        mchid: mchid.into(),
        merchant_serial_no: format!("SERIAL-{mchid}"),
        merchant_key,
        platform_keys: vec![("PUB_KEY_ID_0001".into(), platform_public)],
        api_v3_key: ApiV3Key::new(API_V3_KEY).expect("32 bytes"),
        notify_url: format!("http://127.0.0.1/v1/payments/notifications/{id}"),
        timeouts,
    });
    Ok(SimulatedChannel {
        id: ChannelId::new(id).expect("a channel id"),
        party: Party::WechatPay,
        sim,
        adapter: Arc::new(adapter),
        merchant_key_pem,
        party_key_pem,
        entry,
    })
}

async fn alipay(id: &str, app_id: &str, timeouts: Timeouts) -> std::io::Result<SimulatedChannel> {
    let (app_key, app_public) = crate::keys::rsa_pair();
    let (alipay_key, alipay_public) = crate::keys::rsa_pair();
    let sim = crate::alipay::start(
        crate::alipay::AlipaySimConfig {
            app_id: app_id.into(),
            app_public_key: app_public,
            alipay_key,
            fee_rate_bp: 38,
        },
        local(),
    )
    .await?;
    let entry = serde_json::json!({
        "id": id, "party": "alipay", "gateway_url": format!("{}/gateway.do", sim.base_url()),
        "app_id": app_id,
    });
    let merchant_key_pem = app_key.private_key_to_pem_pkcs8().expect("PEM");
    let party_key_pem = alipay_public.public_key_to_pem().expect("PEM");
    let adapter = Alipay::new(AlipayConfig {
        gateway_url: format!("{}/gateway.do", sim.base_url()),
        app_id: app_id.into(),
        app_key,
        alipay_public_key: alipay_public,
        notify_url: format!("http://127.0.0.1/v1/payments/notifications/{id}"),
        timeouts,
    });
    Ok(SimulatedChannel {
        id: ChannelId::new(id).expect("a channel id"),
        party: Party::Alipay,
        sim,
        adapter: Arc::new(adapter),
        merchant_key_pem,
        party_key_pem,
        entry,
    })
}

async fn acquirer(
    id: &str,
    merchant_id: &str,
    timeouts: Timeouts,
) -> std::io::Result<SimulatedChannel> {
    let (merchant_key, merchant_public) = crate::keys::rsa_pair();
    let (acquirer_key, acquirer_public) = crate::keys::rsa_pair();
    let sim = crate::acquirer::start(
        crate::acquirer::AcquirerSimConfig {
            merchant_id: merchant_id.into(),
            merchant_public_key: merchant_public,
            acquirer_key,
            fee_rate_bp: 50,
        },
        local(),
    )
    .await?;
    let entry = serde_json::json!({
        "id": id, "party": "acquirer", "base_url": sim.base_url(),
        "merchant_id": merchant_id, "terminal_id": "T0001",
    });
    let merchant_key_pem = merchant_key.private_key_to_pem_pkcs8().expect("PEM");
    let party_key_pem = acquirer_public.public_key_to_pem().expect("PEM");
    let adapter = Acquirer::new(AcquirerConfig {
        base_url: sim.base_url(),
        merchant_id: merchant_id.into(),
        terminal_id: "T0001".into(),
        merchant_key,
        acquirer_public_key: acquirer_public,
        timeouts,
    });
    Ok(SimulatedChannel {
        id: ChannelId::new(id).expect("a channel id"),
        party: Party::Acquirer,
        sim,
        adapter: Arc::new(adapter),
        merchant_key_pem,
        party_key_pem,
        entry,
    })
}

/// Starts the six simulators, with the adapters waiting at most `timeouts`.
pub async fn start(timeouts: Timeouts) -> std::io::Result<Retail> {
    Ok(Retail {
        channels: vec![
            wechat("wxpay-direct", "1900000001", timeouts).await?,
            wechat("wxpay-via-bank-a", "1900000002", timeouts).await?,
            alipay("alipay-direct", "2021000000000001", timeouts).await?,
            alipay("alipay-via-acquirer-b", "2021000000000002", timeouts).await?,
            acquirer("card-acquirer-a", "898000000000001", timeouts).await?,
            acquirer("card-acquirer-b", "898000000000002", timeouts).await?,
        ],
    })
}

/// A station's usual terms on each simulated channel: the direct contracts first, the
/// resellers second; 50,000 CNY a payment, 5,000,000 CNY a day.
pub fn default_terms(channel: &SimulatedChannel) -> ChannelConfig {
    let (methods, rate_bp, priority) = match (channel.party, channel.id.as_str()) {
        (Party::WechatPay, id) => (
            vec![Method::WechatPayCode, Method::WechatPayQr],
            38,
            if id.ends_with("direct") { 1 } else { 2 },
        ),
        (Party::Alipay, id) => (
            vec![Method::AlipayCode, Method::AlipayQr],
            38,
            if id.ends_with("direct") { 1 } else { 2 },
        ),
        (Party::Acquirer, id) => (
            vec![Method::BankCard],
            50,
            if id.ends_with("-a") { 1 } else { 2 },
        ),
    };
    ChannelConfig {
        id: channel.id.clone(),
        party: channel.party,
        methods,
        currency: Currency::CNY,
        fee_rate: FeeRate::new(Decimal::new(rate_bp, 4)).expect("a fee rate"),
        fee_mode: FeeMode::DeductedAtPayment,
        single_limit: Money::from_minor(5_000_000, Currency::CNY),
        daily_limit: Money::from_minor(500_000_000, Currency::CNY),
        priority,
        maintenance: vec![],
        enabled: true,
    }
}
