//! The custodial bank of the embedded mode: the bank simulator in this process, the
//! platform's keys in the data directory, and the demo's accounts at the bank.
//!
//! The simulator is a test peer standing in for the bank, never a shortcut: the platform
//! talks to it over HTTP with signed ISO 20022 messages exactly as it would to the bank, and
//! the bank's callbacks come back through the API. Its books live in memory: at every start
//! they are opened from the ledger's balances of the sub-accounts, and messages sent before a
//! restart are unknown to it (a demo limit, not a property of the platform).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use ledger::{Currency, Ledger, NewEntry};
use rust_decimal_macros::dec;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use treasury::accounts::{NewExternalAccount, NewSubAccount, open_sub_account, register};
use treasury::approval::{ApprovalPolicy, Condition, PolicyConfig, Role, Rule, Step};
use treasury::bank::{BankClient, BankClientConfig};
use treasury::calendar::BusinessCalendar;
use treasury::domain::{AccountNumber, BankCode};
use treasury::execution::Executor;
use treasury::rails::{Rails, RailsConfig};
use treasury::signing::{Signer, Verifier};
use treasury::store::Instructions;

/// The custodial bank's branch (CNAPS) in the demo.
pub const CUSTODIAN_BANK: &str = "308584000013";

/// The approval policy of the demo: one treasury checker for every instruction, and two
/// more above 10,000,000 CNY.
pub fn default_policy() -> anyhow::Result<ApprovalPolicy> {
    let checker = Role::new("treasury_checker");
    Ok(ApprovalPolicy::new(PolicyConfig {
        rules: vec![
            Rule {
                name: "every instruction: one checker".into(),
                when: Condition::default(),
                steps: vec![Step {
                    role: checker.clone(),
                    approvals: 1,
                    eligible: vec![],
                }],
            },
            Rule {
                name: "above 10,000,000 CNY: two more checkers".into(),
                when: Condition {
                    amount_above: Some(dec!(10000000)),
                    ..Condition::default()
                },
                steps: vec![Step {
                    role: checker,
                    approvals: 2,
                    eligible: vec![],
                }],
            },
        ],
        valid_for_minutes: 24 * 60,
        tranches: Default::default(),
    })?)
}

/// What the embedded mode runs for treasury.
pub struct Custodian {
    pub executor: Arc<Executor>,
    /// Verifies the bank's callbacks.
    pub bank_key: Verifier,
    /// The simulator; it stops when dropped.
    pub bank: sim::bank::BankSimHandle,
}

/// The demo's accounts at the bank: the platform's master account, the station company's
/// and the depot's sub-accounts, and the depot's own account elsewhere for payouts.
async fn seed_accounts(db: &DatabaseConnection, ledger: &Ledger) -> anyhow::Result<()> {
    let owner = |key: &str| crate::seed::org_id(key).to_string();
    let bank = BankCode::new(CUSTODIAN_BANK)?;
    let mut opened = Vec::new();
    for (key, number, name, is_master) in [
        ("platform", "3100000000000000", "Forecourt Platform", true),
        (
            "company",
            "3100000000000101",
            "Huaxin Energy (Suzhou) Co.",
            false,
        ),
        ("depot", "3100000000000301", "Taicang Depot", false),
    ] {
        let row = open_sub_account(
            ledger,
            NewSubAccount {
                owner_org: owner(key),
                holder_name: name.into(),
                account: AccountNumber::new(number)?,
                bank: bank.clone(),
                currency: Currency::CNY,
                is_master,
            },
            Utc::now(),
        )
        .await?;
        opened.push(row);
    }
    // The station company's takings at the bank: posted once (the key makes it so).
    ledger
        .post_entry(
            NewEntry::transfer(
                "demo-treasury-fund-company",
                "demo",
                opened[0].ledger_account_id,
                opened[1].ledger_account_id,
                dec!(5000000),
                Currency::CNY,
            )
            .description("station takings held at the custodial bank"),
        )
        .await?;
    register(
        db,
        NewExternalAccount {
            owner_org: owner("depot"),
            holder_name: "Taicang Depot Co., Ltd.".into(),
            account: AccountNumber::new("6222020200000000301")?,
            bank: BankCode::new("102100099996")?,
            branch_name: "ICBC Taicang Branch".into(),
        },
        "demo",
        Utc::now(),
    )
    .await?;
    Ok(())
}

/// Seeds the demo's accounts, starts the bank simulator with the ledger's balances and
/// callbacks to `api_base`, and builds the executor of the `bank_instruction` workflow.
pub async fn embedded(
    db: &DatabaseConnection,
    ledger: &Ledger,
    dir: &Path,
    api_base: &str,
    args: &TreasuryArgs,
) -> anyhow::Result<Custodian> {
    seed_accounts(db, ledger).await?;
    let keys = dir.join("treasury-keys");
    let platform_paths = treasury::signing::generate_demo_keys(&keys, "platform")?;
    let bank_paths = treasury::signing::generate_demo_keys(&keys, "bank")?;
    let platform = Signer::from_pem_file(&platform_paths.private_key)?;
    let bank_signer = Signer::from_pem_file(&bank_paths.private_key)?;
    let bank_key = Verifier::from_pem_file(&bank_paths.public_key)?;
    // The simulator follows the same rails and calendar as the platform.
    let rails = args.rails()?;
    let mut config =
        sim::bank::BankSimConfig::new(bank_signer, platform.verifier()?, rails.clone());
    use entities::treasury_sub_accounts as subs;
    for row in subs::Entity::find()
        .filter(subs::Column::IsMaster.eq(false))
        .all(db)
        .await?
    {
        let balance = ledger.balance(row.ledger_account_id).await?;
        config
            .accounts
            .push((AccountNumber::new(row.account_number)?, balance.posted));
    }
    config.callback_url = Some(format!("{api_base}/v1/treasury/bank/callbacks"));
    config.callback_delay = Duration::from_millis(300);
    let bank = sim::bank::start(config, "127.0.0.1:0".parse()?)
        .await
        .context("starting the custodial bank simulator")?;
    let client = BankClient::new(
        BankClientConfig::new(bank.base_url()),
        platform.clone(),
        bank_key.clone(),
    )?;
    let executor = Arc::new(Executor {
        instructions: Instructions::new(ledger.clone(), default_policy()?, Arc::new(Utc::now)),
        rails: Arc::new(rails),
        bank: client,
        signer: platform,
        clock: Arc::new(Utc::now),
        initiating_party: args.initiating_party.clone(),
    });
    Ok(Custodian {
        executor,
        bank_key,
        bank,
    })
}

/// The custodial bank of a production process. Without `TREASURY_BANK_URL` the process has
/// no treasury: the API answers the treasury routes with 503 and workers leave treasury
/// activities to workers that have it.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TreasuryArgs {
    /// The custodial bank's host-to-host interface (`https://…`).
    #[arg(long = "treasury-bank-url", env = "TREASURY_BANK_URL")]
    pub bank_url: Option<String>,
    /// The platform's private key (PEM) that signs every message to the bank.
    #[arg(long = "treasury-signing-key", env = "TREASURY_SIGNING_KEY")]
    pub signing_key: Option<std::path::PathBuf>,
    /// The bank's public key or certificate (PEM) that its answers and callbacks must verify
    /// against.
    #[arg(long = "treasury-bank-key", env = "TREASURY_BANK_KEY")]
    pub bank_key: Option<std::path::PathBuf>,
    /// Public holidays and make-up working days (JSON: `{"holidays": [...],
    /// "makeup_working_days": [...]}`); none when absent.
    #[arg(long = "treasury-calendar", env = "TREASURY_CALENDAR")]
    pub calendar: Option<std::path::PathBuf>,
    /// The rails' hours, the 24x7 per-transaction cap and the banks' maintenance windows
    /// (JSON, see `treasury::rails`); the defaults when absent. Checked at start.
    #[arg(long = "treasury-rails", env = "TREASURY_RAILS")]
    pub rails: Option<std::path::PathBuf>,
    /// The platform's name as initiating party of its messages.
    #[arg(
        long = "treasury-initiating-party",
        env = "TREASURY_INITIATING_PARTY",
        default_value = "Forecourt Platform"
    )]
    pub initiating_party: String,
    /// Longest time one call to the bank may take before another worker takes the step over
    /// (after a crash, say).
    #[arg(
        long = "treasury-activity-timeout-ms",
        env = "TREASURY_ACTIVITY_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    pub activity_timeout_ms: u64,
}

impl TreasuryArgs {
    /// The business calendar (`TREASURY_CALENDAR`) and the rails (`TREASURY_RAILS`), checked;
    /// an error names the file and what is wrong with it.
    pub fn rails(&self) -> anyhow::Result<Rails> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
        };
        let calendar = match &self.calendar {
            Some(path) => BusinessCalendar::from_json(&read(path)?)
                .with_context(|| format!("TREASURY_CALENDAR {}", path.display()))?,
            None => BusinessCalendar::new(Default::default())?,
        };
        let config = match &self.rails {
            Some(path) => RailsConfig::from_json(&read(path)?)
                .with_context(|| format!("TREASURY_RAILS {}", path.display()))?,
            None => RailsConfig::default(),
        };
        let origin = self
            .rails
            .as_ref()
            .map(|p| format!("TREASURY_RAILS {}", p.display()))
            .unwrap_or_else(|| "the default rails".into());
        Rails::new(config, calendar).with_context(|| origin)
    }

    /// The executor and the bank's key, or `None` when no bank is configured.
    pub fn executor(&self, ledger: &Ledger) -> anyhow::Result<Option<(Arc<Executor>, Verifier)>> {
        let Some(url) = &self.bank_url else {
            return Ok(None);
        };
        let signing = self
            .signing_key
            .as_ref()
            .context("TREASURY_BANK_URL needs TREASURY_SIGNING_KEY (the platform's private key)")?;
        let bank_key = self
            .bank_key
            .as_ref()
            .context("TREASURY_BANK_URL needs TREASURY_BANK_KEY (the bank's public key)")?;
        let platform = Signer::from_pem_file(signing)
            .with_context(|| format!("reading {}", signing.display()))?;
        let bank = Verifier::from_pem_file(bank_key)
            .with_context(|| format!("reading {}", bank_key.display()))?;
        let rails = self.rails()?;
        let client = BankClient::new(
            BankClientConfig::new(url.clone()),
            platform.clone(),
            bank.clone(),
        )?;
        let executor = Executor {
            instructions: Instructions::new(ledger.clone(), default_policy()?, Arc::new(Utc::now)),
            rails: Arc::new(rails),
            bank: client,
            signer: platform,
            clock: Arc::new(Utc::now),
            initiating_party: self.initiating_party.clone(),
        };
        Ok(Some((Arc::new(executor), bank)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, text: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!(
            "forecourt-{}-{}-{name}",
            std::process::id(),
            uuid::Uuid::now_v7()
        ));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn the_rails_come_from_treasury_rails_and_the_defaults_stay_without_it() {
        let defaults = TreasuryArgs::default().rails().unwrap();
        assert_eq!(defaults.config(), &RailsConfig::default());
        let path = file(
            "rails.json",
            r#"{"interbank": {"per_transaction_cap": "1000000"},
                "maintenance": [{"bank": "313290000017",
                  "when": {"kind": "daily", "from": "23:55:00", "until": "00:30:00"}}]}"#,
        );
        let args = TreasuryArgs {
            rails: Some(path.clone()),
            ..TreasuryArgs::default()
        };
        let rails = args.rails().unwrap();
        std::fs::remove_file(path).unwrap();
        assert_eq!(
            rails.config().interbank.per_transaction_cap,
            rust_decimal::Decimal::from(1_000_000)
        );
        assert_eq!(rails.config().maintenance.len(), 1);
    }

    #[test]
    fn a_bad_rails_file_stops_the_start_with_a_clear_error() {
        let typo = file("typo.json", r#"{"interbank": {"cap": "1000000"}}"#);
        let inverted = file(
            "inverted.json",
            r#"{"large_value": {"opens_at": "17:00:00", "cut_off": "08:30:00"}}"#,
        );
        for (path, says) in [(&typo, "unknown field `cap`"), (&inverted, "cut-off")] {
            let args = TreasuryArgs {
                rails: Some(path.clone()),
                ..TreasuryArgs::default()
            };
            let error = format!("{:#}", args.rails().unwrap_err());
            assert!(error.contains("TREASURY_RAILS"), "{error}");
            assert!(error.contains(says), "{error}");
        }
        let missing = TreasuryArgs {
            rails: Some("/nonexistent/rails.json".into()),
            ..TreasuryArgs::default()
        };
        let error = format!("{:#}", missing.rails().unwrap_err());
        assert!(error.contains("/nonexistent/rails.json"), "{error}");
        std::fs::remove_file(typo).unwrap();
        std::fs::remove_file(inverted).unwrap();
    }
}
