//! The embedded mode's demo world, seeded once: an organisation tree (platform operator, a
//! brand with a station company and two stations, a fleet, a depot, a freight-app partner),
//! one user per role, ledger accounts with some movements, and the retail side: both
//! stations signed on the six simulated channels, and a till at No. 1 whose key is kept in
//! `<data dir>/demo-terminal.txt`.
//!
//! Passwords are random, generated at the first seeding and written to
//! `<data dir>/demo-credentials.txt` (readable by the owner only), which every start prints:
//! nothing about the demo users is guessable from the source. Deleting the data directory
//! starts over. Ids come from a fixed namespace, and ledger entries carry fixed idempotency
//! keys, so a second start finds everything in place and changes nothing.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use api::directory::{self, NewOrganisation, NewUser};
use api::policy::{OrgKind, Role};
use base64::Engine as _;
use ledger::{Currency, Ledger, NewAccount, NewEntry, Side};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use sea_orm::DatabaseConnection;
use uuid::Uuid;
use workflows::Engine;
use workflows::canary::{Canary, CanaryInput};

/// Namespace of the demo's ids.
const NAMESPACE: Uuid = Uuid::from_u128(0x6f72_6563_6f75_7274_2d73_6572_7665_3031);

fn id(name: &str) -> Uuid {
    Uuid::new_v5(&NAMESPACE, name.as_bytes())
}

/// The id of a demo organisation (`platform`, `brand`, `company`, `station-1`, `station-2`,
/// `fleet`, `depot`, `partner`); it is also the owner of its ledger accounts.
pub fn org_id(key: &str) -> Uuid {
    id(key)
}

/// Organisations: key, parent key, kind, name.
const ORGANISATIONS: &[(&str, Option<&str>, OrgKind, &str)] = &[
    (
        "platform",
        None,
        OrgKind::PlatformOperator,
        "Forecourt Platform",
    ),
    ("brand", Some("platform"), OrgKind::Brand, "Huaxin Fuel"),
    (
        "company",
        Some("brand"),
        OrgKind::StationCompany,
        "Huaxin Energy (Suzhou) Co.",
    ),
    (
        "station-1",
        Some("company"),
        OrgKind::Station,
        "Huaxin No. 1 Station",
    ),
    (
        "station-2",
        Some("company"),
        OrgKind::Station,
        "Huaxin No. 2 Station",
    ),
    (
        "fleet",
        Some("platform"),
        OrgKind::FleetCompany,
        "Shunda Logistics",
    ),
    ("depot", Some("platform"), OrgKind::Depot, "Taicang Depot"),
    (
        "partner",
        Some("platform"),
        OrgKind::Partner,
        "Yunche Freight App",
    ),
];

/// Users: username, role, organisation key.
const USERS: &[(&str, Role, &str)] = &[
    ("admin", Role::Admin, "platform"),
    ("station-owner", Role::StationOwner, "company"),
    ("station-manager", Role::StationManager, "station-1"),
    ("cashier", Role::Cashier, "station-1"),
    ("fleet-manager", Role::FleetManager, "fleet"),
    ("treasury-maker", Role::TreasuryMaker, "platform"),
    ("treasury-checker", Role::TreasuryChecker, "platform"),
    ("partner", Role::Partner, "partner"),
];

/// Writes a file readable by its owner only.
pub fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn api_err(err: api::error::ApiError) -> anyhow::Error {
    anyhow::anyhow!("{err}")
}

fn org_name(key: &str) -> &'static str {
    ORGANISATIONS
        .iter()
        .find(|o| o.0 == key)
        .map(|o| o.3)
        .expect("a known organisation")
}

/// Seeds the demo world if the database has none, and returns the credentials to print.
pub async fn seed(
    db: &DatabaseConnection,
    ledger: &Ledger,
    engine: &Engine,
    dir: &Path,
) -> anyhow::Result<String> {
    let credentials = dir.join("demo-credentials.txt");
    if directory::root_org(db).await.map_err(api_err)?.is_none() {
        seed_directory(db, &credentials).await?;
    }
    seed_ledger(ledger).await?;
    engine
        .start::<Canary>(
            "demo",
            CanaryInput {
                steps: 3,
                record_effects: true,
            },
        )
        .await?;
    Ok(match std::fs::read_to_string(&credentials) {
        Ok(text) => format!(
            "Demo users (passwords from {}):\n{text}",
            credentials.display()
        ),
        Err(_) => format!(
            "The demo credentials file {} is missing: delete {} to seed the demo again.\n",
            credentials.display(),
            dir.display()
        ),
    })
}

async fn seed_directory(db: &DatabaseConnection, credentials: &Path) -> anyhow::Result<()> {
    let mut text = format!(
        "# Forecourt demo users, embedded mode only. Delete the data directory to start over.\n# {:<17} {:<24} {:<17} organisation\n",
        "username", "password", "role"
    );
    let mut users = Vec::new();
    for (username, role, org) in USERS {
        let password =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(api::crypto::random_bytes(15));
        text.push_str(&format!(
            "  {username:<17} {password:<24} {:<17} {}\n",
            role.as_str(),
            org_name(org)
        ));
        let hash = directory::hash_password(password).await.map_err(api_err)?;
        users.push((username, role, org, hash));
    }
    // The file comes first: if the process dies before the commit, the next start seeds
    // again with new passwords and overwrites it; never are users stored whose passwords
    // nobody has.
    write_private(credentials, &text)?;
    let txn = entities::db::begin_write(db).await?;
    for (key, parent, kind, name) in ORGANISATIONS {
        directory::create_organisation(
            &txn,
            NewOrganisation {
                id: id(key),
                parent_id: parent.map(id),
                kind: *kind,
                name: (*name).to_owned(),
                ledger_owner: None,
            },
        )
        .await
        .map_err(api_err)?;
    }
    for (username, role, org, hash) in users {
        directory::create_user(
            &txn,
            NewUser {
                id: id(&format!("user/{username}")),
                organisation_id: id(org),
                username: (*username).to_owned(),
                display_name: format!("{} (demo)", role.as_str().replace('_', " ")),
                role: *role,
            },
            hash,
        )
        .await
        .map_err(api_err)?;
    }
    txn.commit().await?;
    Ok(())
}

/// Opens an account owned by a demo organisation (its ledger owner is its id).
async fn account(
    ledger: &Ledger,
    org: &str,
    code: &str,
    name: &str,
    side: Side,
    parent: Option<Uuid>,
) -> anyhow::Result<Uuid> {
    let account_id = id(&format!("account/{org}/{code}"));
    let mut new =
        NewAccount::new(id(org).to_string(), code, name, Currency::CNY, side).with_id(account_id);
    if side == Side::Credit {
        // Client money: never below zero.
        new = new.debits_must_not_exceed_credits();
    }
    if let Some(parent) = parent {
        new = new.parent(parent);
    }
    ledger.create_account(new).await?;
    Ok(account_id)
}

async fn seed_ledger(ledger: &Ledger) -> anyhow::Result<()> {
    let bank = account(
        ledger,
        "platform",
        "1002.custodial.bank",
        "Custodial bank account (托管银行)",
        Side::Debit,
        None,
    )
    .await?;
    let fleet = account(
        ledger,
        "fleet",
        "2203.prepaid.master",
        "Shunda Logistics: prepaid master (预收)",
        Side::Credit,
        None,
    )
    .await?;
    let truck = account(
        ledger,
        "fleet",
        "2203.prepaid.truck-su-e-12345",
        "Shunda Logistics: truck 苏E-12345",
        Side::Credit,
        Some(fleet),
    )
    .await?;
    let station_1 = account(
        ledger,
        "station-1",
        "2202.station.settlement",
        "Huaxin No. 1 Station: settlement due",
        Side::Credit,
        None,
    )
    .await?;
    let station_2 = account(
        ledger,
        "station-2",
        "2202.station.settlement",
        "Huaxin No. 2 Station: settlement due",
        Side::Credit,
        None,
    )
    .await?;
    let depot = account(
        ledger,
        "depot",
        "2204.depot.payable",
        "Taicang Depot: purchases due",
        Side::Credit,
        None,
    )
    .await?;
    let moves: [(&str, Uuid, Uuid, Decimal, &str); 6] = [
        (
            "fleet-prepayment",
            bank,
            fleet,
            dec!(200000.00),
            "Shunda prepays its master account",
        ),
        (
            "truck-funding",
            fleet,
            truck,
            dec!(5000.00),
            "Master funds truck 苏E-12345",
        ),
        (
            "truck-fuel",
            truck,
            station_1,
            dec!(612.40),
            "Fleet card: 80 L of 0# diesel at No. 1",
        ),
        (
            "wechat-sale",
            bank,
            station_1,
            dec!(1280.50),
            "WeChat Pay sale at No. 1",
        ),
        (
            "card-sale",
            bank,
            station_2,
            dec!(860.00),
            "UnionPay card sale at No. 2",
        ),
        (
            "depot-purchase",
            station_2,
            depot,
            dec!(500.00),
            "No. 2 pays the depot for a lifting",
        ),
    ];
    for (step, debit, credit, amount, description) in moves {
        ledger
            .post_entry(
                NewEntry::transfer(
                    format!("serve-demo:{step}"),
                    format!("demo:{step}"),
                    debit,
                    credit,
                    amount,
                    Currency::CNY,
                )
                .description(description),
            )
            .await?;
    }
    Ok(())
}

/// Signs both stations on every simulated channel (their default terms; setting them again
/// changes nothing) and registers No. 1's till once. Returns what to print about the till.
pub async fn seed_retail(
    ledger: &Ledger,
    retail: &sim::retail::Retail,
    dir: &Path,
) -> anyhow::Result<String> {
    for station in ["station-1", "station-2"] {
        for channel in &retail.channels {
            payments::stations::set_channel(
                ledger,
                org_id(station),
                &org_id(station).to_string(),
                sim::retail::default_terms(channel),
                chrono::Utc::now(),
            )
            .await?;
        }
    }
    let path = dir.join("demo-terminal.txt");
    let station = org_id("station-1");
    if payments::stations::terminals(ledger.db(), station)
        .await?
        .is_empty()
    {
        let registered = payments::stations::register_terminal(
            ledger.db(),
            station,
            "till-1",
            "Forecourt till 1",
            chrono::Utc::now(),
        )
        .await?;
        write_private(
            &path,
            &format!(
                "TERMINAL={}\nTERMINAL_KEY={}\n",
                registered.terminal.id, registered.key
            ),
        )?;
    }
    Ok(match std::fs::read_to_string(&path) {
        Ok(text) => format!(
            "Till 1 of {} ({}; send the key as Forecourt-Terminal-Key):\n{text}",
            org_name("station-1"),
            path.display()
        ),
        Err(_) => format!(
            "The demo till's key file {} is missing: delete {} to seed the demo again.\n",
            path.display(),
            dir.display()
        ),
    })
}
