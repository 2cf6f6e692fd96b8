//! `forecourt sim`: the outside parties' simulators as standalone HTTP servers, for a demo or a
//! developer's machine.
//!
//! - `sim payments`: WeChat Pay, Alipay and a card acquirer. Each start makes fresh keys and
//!   writes the halves the merchant side needs (merchant private keys, the parties' public
//!   keys) as PEM files.
//! - `sim bank`: the custodial bank's host-to-host interface (see `treasury::bank`). Its key
//!   pair and, unless `--platform-public-key` is given, a demo key pair of the platform are
//!   generated once in the keys directory and kept across restarts: the platform signs with
//!   `platform.key.pem` and verifies the bank with `bank.pub.pem`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use ledger::{Currency, Money};
use rust_decimal::Decimal;
use treasury::calendar::BusinessCalendar;
use treasury::domain::AccountNumber;
use treasury::rails::{Rails, RailsConfig};
use treasury::signing::{Signer, Verifier, generate_demo_keys};

#[derive(clap::Subcommand)]
pub enum Sim {
    /// The payment parties: WeChat Pay v3, Alipay, a card acquirer.
    Payments(PaymentsArgs),
    /// The custodial bank's host-to-host interface (ISO 20022, signed, with callbacks).
    Bank(BankArgs),
}

impl Sim {
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            Sim::Payments(args) => payments(args).await,
            Sim::Bank(args) => bank(args).await,
        }
    }
}

#[derive(clap::Args)]
pub struct PaymentsArgs {
    /// Address of the WeChat Pay API v3 simulator.
    #[arg(long, default_value = "127.0.0.1:7701")]
    wechat: SocketAddr,
    /// Address of the Alipay gateway simulator (`/gateway.do`).
    #[arg(long, default_value = "127.0.0.1:7702")]
    alipay: SocketAddr,
    /// Address of the card acquirer simulator.
    #[arg(long, default_value = "127.0.0.1:7703")]
    acquirer: SocketAddr,
    /// Where to write the keys the merchant side needs.
    #[arg(long, default_value = "data/sim-keys")]
    keys_dir: PathBuf,
    /// WeChat Pay's APIv3 key (32 characters) for encrypted notifications.
    #[arg(long, default_value = "forecourt-sim-apiv3-key-32-bytes")]
    api_v3_key: String,
}

pub async fn payments(args: PaymentsArgs) -> anyhow::Result<()> {
    let api_v3_key: [u8; 32] = args
        .api_v3_key
        .as_bytes()
        .try_into()
        .context("--api-v3-key must be exactly 32 bytes")?;
    std::fs::create_dir_all(&args.keys_dir)
        .with_context(|| format!("creating {}", args.keys_dir.display()))?;
    let write = |name: &str, pem: Vec<u8>| -> anyhow::Result<()> {
        let path = args.keys_dir.join(name);
        std::fs::write(&path, pem).with_context(|| format!("writing {}", path.display()))
    };

    let (wx_merchant, wx_merchant_public) = sim::keys::rsa_pair();
    let (wx_platform, wx_platform_public) = sim::keys::rsa_pair();
    write(
        "wechat-merchant-key.pem",
        wx_merchant.private_key_to_pem_pkcs8()?,
    )?;
    write(
        "wechat-platform-public.pem",
        wx_platform_public.public_key_to_pem()?,
    )?;
    let wechat = sim::wechat::start(
        sim::wechat::WechatSimConfig {
            mchid: "1900000001".into(),
            appid: "wx8888888888888888".into(),
            merchant_serial_no: "SIM-MERCHANT-SERIAL".into(),
            merchant_public_key: wx_merchant_public,
            platform_serial_no: "PUB_KEY_ID_SIM".into(),
            platform_key: wx_platform,
            api_v3_key,
            fee_rate_bp: 38,
        },
        args.wechat,
    )
    .await
    .context("starting the WeChat Pay simulator")?;

    let (ali_app, ali_app_public) = sim::keys::rsa_pair();
    let (ali_platform, ali_platform_public) = sim::keys::rsa_pair();
    write("alipay-app-key.pem", ali_app.private_key_to_pem_pkcs8()?)?;
    write(
        "alipay-public.pem",
        ali_platform_public.public_key_to_pem()?,
    )?;
    let alipay = sim::alipay::start(
        sim::alipay::AlipaySimConfig {
            app_id: "2021000000000001".into(),
            app_public_key: ali_app_public,
            alipay_key: ali_platform,
            fee_rate_bp: 38,
        },
        args.alipay,
    )
    .await
    .context("starting the Alipay simulator")?;

    let (acq_merchant, acq_merchant_public) = sim::keys::rsa_pair();
    let (acq_key, acq_public) = sim::keys::rsa_pair();
    write(
        "acquirer-merchant-key.pem",
        acq_merchant.private_key_to_pem_pkcs8()?,
    )?;
    write("acquirer-public.pem", acq_public.public_key_to_pem()?)?;
    let acquirer = sim::acquirer::start(
        sim::acquirer::AcquirerSimConfig {
            merchant_id: "M-SIM-0001".into(),
            merchant_public_key: acq_merchant_public,
            acquirer_key: acq_key,
            fee_rate_bp: 50,
        },
        args.acquirer,
    )
    .await
    .context("starting the acquirer simulator")?;

    println!(
        "WeChat Pay v3  {}  mchid 1900000001, merchant serial SIM-MERCHANT-SERIAL, platform key id PUB_KEY_ID_SIM",
        wechat.base_url()
    );
    println!(
        "Alipay         {}/gateway.do  app_id 2021000000000001",
        alipay.base_url()
    );
    println!(
        "Acquirer       {}  merchant M-SIM-0001",
        acquirer.base_url()
    );
    println!("keys in {}; Ctrl-C to stop", args.keys_dir.display());
    tokio::signal::ctrl_c().await?;
    Ok(())
}

#[derive(clap::Args)]
pub struct BankArgs {
    /// Address of the bank's host-to-host interface.
    #[arg(long, default_value = "127.0.0.1:7704")]
    addr: SocketAddr,
    /// Where the key pairs live (generated at first start, kept across restarts).
    #[arg(long, default_value = "data/sim-keys")]
    keys_dir: PathBuf,
    /// The bank's private key (PEM); generated as `bank.key.pem` in the keys directory when
    /// absent, with `bank.pub.pem` for the platform.
    #[arg(long)]
    bank_key: Option<PathBuf>,
    /// The platform's public key (PEM public key or certificate) that verifies its pain.001
    /// messages; when absent, a demo pair `platform.key.pem` / `platform.pub.pem` is
    /// generated in the keys directory and the platform signs with its private half.
    #[arg(long)]
    platform_public_key: Option<PathBuf>,
    /// Where to post signed callbacks (later pain.002, camt.054).
    #[arg(long)]
    callback_url: Option<String>,
    /// From an event to its callback, in milliseconds.
    #[arg(long, default_value_t = 200)]
    callback_delay_ms: u64,
    /// Sub-accounts opened at start, as ACCOUNT=AMOUNT in CNY (repeatable).
    #[arg(
        long = "account",
        value_name = "ACCOUNT=AMOUNT",
        default_values = ["3100000000000001=50000000.00", "3100000000000002=1000000.00"]
    )]
    accounts: Vec<String>,
    /// The rails configuration (JSON, `treasury::rails::RailsConfig`); the defaults when absent.
    #[arg(long)]
    rails: Option<PathBuf>,
    /// The business calendar (JSON: holidays and make-up working days); weekends only when
    /// absent.
    #[arg(long)]
    calendar: Option<PathBuf>,
}

fn parse_account(text: &str) -> anyhow::Result<(AccountNumber, Money)> {
    let (account, amount) = text
        .split_once('=')
        .with_context(|| format!("--account {text:?}: expected ACCOUNT=AMOUNT"))?;
    let account = AccountNumber::new(account.trim())?;
    let amount: Decimal = amount
        .trim()
        .parse()
        .with_context(|| format!("--account {text:?}: not an amount"))?;
    Ok((account, Money::new(amount, Currency::CNY)?))
}

fn read(path: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

pub async fn bank(args: BankArgs) -> anyhow::Result<()> {
    let bank_key = match &args.bank_key {
        Some(path) => Signer::from_pem_file(path)?,
        None => {
            let paths = generate_demo_keys(&args.keys_dir, "bank")?;
            Signer::from_pem_file(&paths.private_key)?
        }
    };
    let (platform_key, platform_note) = match &args.platform_public_key {
        Some(path) => (
            Verifier::from_pem_file(path)?,
            format!("platform key {}", path.display()),
        ),
        None => {
            let paths = generate_demo_keys(&args.keys_dir, "platform")?;
            (
                Verifier::from_pem_file(&paths.public_key)?,
                format!("platform signs with {}", paths.private_key.display()),
            )
        }
    };
    let bank_public = args.keys_dir.join("bank.pub.pem");
    if args.bank_key.is_some() {
        std::fs::create_dir_all(&args.keys_dir)
            .with_context(|| format!("creating {}", args.keys_dir.display()))?;
        std::fs::write(&bank_public, bank_key.public_key_pem()?)
            .with_context(|| format!("writing {}", bank_public.display()))?;
    }
    let calendar = match &args.calendar {
        Some(path) => BusinessCalendar::from_json(&read(path)?)?,
        None => BusinessCalendar::new(Default::default())?,
    };
    let rails_config: RailsConfig = match &args.rails {
        Some(path) => serde_json::from_str(&read(path)?)
            .with_context(|| format!("reading rails from {}", path.display()))?,
        None => RailsConfig::default(),
    };
    let mut config =
        sim::bank::BankSimConfig::new(bank_key, platform_key, Rails::new(rails_config, calendar)?);
    config.accounts = args
        .accounts
        .iter()
        .map(|a| parse_account(a))
        .collect::<anyhow::Result<_>>()?;
    config.callback_url = args.callback_url.clone();
    config.callback_delay = std::time::Duration::from_millis(args.callback_delay_ms);
    let accounts = config
        .accounts
        .iter()
        .map(|(a, m)| format!("{a} {m}"))
        .collect::<Vec<_>>()
        .join(", ");
    let handle = sim::bank::start(config, args.addr)
        .await
        .context("starting the bank simulator")?;
    println!(
        "Custodial bank {}  (H2H /h2h/..., admin /sim/...)",
        handle.base_url()
    );
    println!("  sub-accounts: {accounts}");
    println!(
        "  {platform_note}; the bank's public key: {}",
        bank_public.display()
    );
    match &args.callback_url {
        Some(url) => println!("  callbacks to {url}"),
        None => println!(
            "  no callback URL: set one with POST /sim/behaviour {{\"callback_url\": ...}}"
        ),
    }
    println!("Ctrl-C to stop");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
