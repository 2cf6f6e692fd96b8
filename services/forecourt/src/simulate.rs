//! `forecourt sim`: the outside parties' simulators as standalone HTTP servers, for a demo or a
//! developer's machine.
//!
//! - `sim payments`: two channels per method (WeChat Pay, Alipay, card acquirers) on
//!   ephemeral ports. Each start makes fresh keys and writes a `PAYMENTS_CHANNELS` file for
//!   `serve` and `worker`, with the halves the merchant side needs (merchant private keys,
//!   the parties' public keys) as PEM files beside it.
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
    /// Where to write the `PAYMENTS_CHANNELS` file (`channels.json`) and the keys it names.
    #[arg(long, default_value = "data/sim-payments")]
    keys_dir: PathBuf,
    /// Where the simulators post their notifications: the API's
    /// `/v1/payments/notifications`, to which each channel's id is appended.
    #[arg(
        long,
        default_value = "http://127.0.0.1:8080/v1/payments/notifications"
    )]
    notify_base: String,
}

pub async fn payments(args: PaymentsArgs) -> anyhow::Result<()> {
    let timeouts = payments::channels::Timeouts {
        connect_ms: 1_000,
        request_ms: 5_000,
    };
    let retail = sim::retail::start(timeouts)
        .await
        .context("starting the payment simulators")?;
    retail.notify_to(&args.notify_base);
    // Customers scan a till's dynamic code two seconds after it is shown.
    retail.customers_scan_after(Some(2_000));
    let path = retail
        .write_config(&args.keys_dir, &args.notify_base, timeouts)
        .with_context(|| format!("writing into {}", args.keys_dir.display()))?;
    for channel in &retail.channels {
        println!("{:<22} {}", channel.id.as_str(), channel.sim.base_url());
    }
    println!(
        "PAYMENTS_CHANNELS={} (fresh keys at every start); Ctrl-C to stop",
        path.display()
    );
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
