//! `forecourt demo`: a day on the ledger for a fleet, two stations and a depot.
//!
//! The chart of accounts mirrors how the platform books client money kept at the custodial
//! bank (托管银行): the bank account is the platform's asset, and each party's funds are a
//! credit-normal account that must never go negative. Every entry carries an idempotency key
//! made of the day and the step, so running the demo twice on one day replays it and
//! changes nothing; on the next day it posts a new day.

use chrono::{DateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Asia::Shanghai;
use ledger::{
    Account, Currency, Ledger, LedgerConfig, LedgerError, NewAccount, NewEntry, PostHold,
    PostingInput, Receipt, Side, StatementQuery, allocate, round_half_up,
};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use sea_orm::DatabaseConnection;
use uuid::Uuid;

/// Namespace of the demo's account ids, so that every run finds the same accounts.
const DEMO_NAMESPACE: Uuid = Uuid::from_u128(0x6f72_6563_6f75_7274_2d64_656d_6f2d_3031);

struct Day {
    ledger: Ledger,
    date: chrono::NaiveDate,
    written: usize,
    replayed: usize,
}

impl Day {
    fn at(&self, hh: u32, mm: u32) -> DateTime<Utc> {
        let local = self
            .date
            .and_time(NaiveTime::from_hms_opt(hh, mm, 0).expect("valid time"));
        Shanghai
            .from_local_datetime(&local)
            .single()
            .expect("Shanghai has no DST")
            .with_timezone(&Utc)
    }

    fn key(&self, step: &str) -> String {
        format!("demo:{}:{step}", self.date)
    }

    fn count(&mut self, receipt: &Receipt) {
        if receipt.replayed {
            self.replayed += 1;
        } else {
            self.written += 1;
        }
    }

    async fn transfer(
        &mut self,
        step: &str,
        reference: &str,
        (hh, mm): (u32, u32),
        (debit, credit): (Uuid, Uuid),
        amount: Decimal,
        description: &str,
    ) -> anyhow::Result<Receipt> {
        let entry = NewEntry::transfer(
            self.key(step),
            reference,
            debit,
            credit,
            amount,
            Currency::CNY,
        )
        .description(description)
        .effective_at(self.at(hh, mm));
        let receipt = self.ledger.post_entry(entry).await?;
        self.count(&receipt);
        Ok(receipt)
    }
}

struct Chart {
    bank: Account,
    wechat: Account,
    fleet_master: Account,
    truck_1: Account,
    truck_2: Account,
    station_a: Account,
    station_b: Account,
    cash_b: Account,
    owner: Account,
    depot: Account,
    shareholders: [Account; 3],
}

async fn open(
    ledger: &Ledger,
    owner: &str,
    code: &str,
    name: &str,
    side: Side,
    constrained: bool,
    parent: Option<Uuid>,
) -> Result<Account, LedgerError> {
    let id = Uuid::new_v5(&DEMO_NAMESPACE, format!("{owner}/{code}").as_bytes());
    let mut account = NewAccount::new(owner, code, name, Currency::CNY, side).with_id(id);
    if constrained {
        account = account.debits_must_not_exceed_credits();
    }
    if let Some(parent) = parent {
        account = account.parent(parent);
    }
    ledger.create_account(account).await
}

async fn chart(ledger: &Ledger) -> Result<Chart, LedgerError> {
    let credit = Side::Credit;
    let fleet_master = open(
        ledger,
        "fleet:shunda-logistics",
        "2203.prepaid.master",
        "Shunda Logistics fleet: master prepaid (预收)",
        credit,
        true,
        None,
    )
    .await?;
    Ok(Chart {
        bank: open(
            ledger,
            "platform",
            "1002.custodial",
            "Custodial bank: client funds (托管户)",
            Side::Debit,
            false,
            None,
        )
        .await?,
        wechat: open(
            ledger,
            "platform",
            "1122.wechat-pay",
            "WeChat Pay channel: in settlement",
            Side::Debit,
            false,
            None,
        )
        .await?,
        truck_1: open(
            ledger,
            "fleet:shunda-logistics",
            "2203.prepaid.sub.yue-b-12345",
            "Truck 粤B-12345: sub-account",
            credit,
            true,
            Some(fleet_master.id),
        )
        .await?,
        truck_2: open(
            ledger,
            "fleet:shunda-logistics",
            "2203.prepaid.sub.yue-b-67890",
            "Truck 粤B-67890: sub-account",
            credit,
            true,
            Some(fleet_master.id),
        )
        .await?,
        fleet_master,
        station_a: open(
            ledger,
            "station:nanshan",
            "2241.takings",
            "Station A (Nanshan): takings",
            credit,
            true,
            None,
        )
        .await?,
        station_b: open(
            ledger,
            "station:baoan",
            "2241.takings",
            "Station B (Bao'an): takings",
            credit,
            true,
            None,
        )
        .await?,
        cash_b: open(
            ledger,
            "station:baoan",
            "1001.cash",
            "Station B (Bao'an): cash in drawer",
            Side::Debit,
            false,
            None,
        )
        .await?,
        owner: open(
            ledger,
            "owner:li-energy",
            "2241.funds",
            "Li Energy (station owner): funds",
            credit,
            true,
            None,
        )
        .await?,
        depot: open(
            ledger,
            "depot:maoming",
            "2241.funds",
            "Maoming depot: funds",
            credit,
            true,
            None,
        )
        .await?,
        shareholders: [
            open(
                ledger,
                "holder:li-energy",
                "2241.dividends",
                "Shareholder Li Energy (60%)",
                credit,
                false,
                None,
            )
            .await?,
            open(
                ledger,
                "holder:harbour-capital",
                "2241.dividends",
                "Shareholder Harbour Capital (25%)",
                credit,
                false,
                None,
            )
            .await?,
            open(
                ledger,
                "holder:chen-wei",
                "2241.dividends",
                "Shareholder Chen Wei (15%)",
                credit,
                false,
                None,
            )
            .await?,
        ],
    })
}

pub async fn run(db: DatabaseConnection) -> anyhow::Result<()> {
    let ledger = Ledger::start(db, LedgerConfig::default());
    let today = Utc::now().with_timezone(&Shanghai).date_naive();
    let c = chart(&ledger).await?;
    let mut day = Day {
        ledger: ledger.clone(),
        date: today,
        written: 0,
        replayed: 0,
    };
    println!("Forecourt demo: {today} (Asia/Shanghai) on one double-entry ledger\n");

    // Fleet prepayment and funding of two vehicles.
    day.transfer(
        "fleet-prepay",
        "fleet-funding:FF-001",
        (8, 0),
        (c.bank.id, c.fleet_master.id),
        dec!(50000.00),
        "Fleet prepays its master account by bank transfer",
    )
    .await?;
    day.transfer(
        "fund-truck-1",
        "fleet-funding:FF-002",
        (8, 5),
        (c.fleet_master.id, c.truck_1.id),
        dec!(3000.00),
        "Fund truck 粤B-12345",
    )
    .await?;
    day.transfer(
        "fund-truck-2",
        "fleet-funding:FF-002",
        (8, 5),
        (c.fleet_master.id, c.truck_2.id),
        dec!(800.00),
        "Fund truck 粤B-67890",
    )
    .await?;

    // Retail sales at the two stations.
    let wechat_sale = dec!(268.00);
    let litres = dec!(52.31);
    let price = dec!(7.89);
    let fuel = round_half_up(litres * price, Currency::CNY)?;
    day.transfer(
        "sale-a-1",
        "pos:A-0001",
        (9, 12),
        (c.truck_1.id, c.station_a.id),
        fuel.amount(),
        &format!("Fleet card: 92# {litres} L at {price}/L"),
    )
    .await?;
    day.transfer(
        "sale-a-2",
        "pos:A-0002",
        (10, 40),
        (c.wechat.id, c.station_a.id),
        wechat_sale,
        "WeChat Pay, customer scans",
    )
    .await?;
    day.transfer(
        "sale-b-1",
        "pos:B-0001",
        (11, 3),
        (c.cash_b.id, c.station_b.id),
        dec!(150.00),
        "Cash, 95# petrol",
    )
    .await?;

    // A pump pre-authorisation: reserve 500, the tank takes 386.72.
    let preauth = NewEntry::transfer(
        day.key("preauth-b-2"),
        "pos:B-0002",
        c.truck_2.id,
        c.station_b.id,
        dec!(500.00),
        Currency::CNY,
    )
    .description("Pre-authorisation at pump 4")
    .effective_at(day.at(12, 30))
    .as_hold(Some(day.at(23, 59)));
    let hold = ledger.post_entry(preauth).await?;
    day.count(&hold);
    let fill = ledger
        .post_hold(
            PostHold::partial(day.key("fill-b-2"), hold.entry_id, dec!(386.72))
                .effective_at(day.at(12, 34)),
        )
        .await?;
    day.count(&fill);

    // A spend the truck cannot afford is refused, and nothing is written.
    let too_much = NewEntry::transfer(
        day.key("sale-b-3"),
        "pos:B-0003",
        c.truck_2.id,
        c.station_b.id,
        dec!(2000.00),
        Currency::CNY,
    );
    let refused = ledger
        .post_entry(too_much)
        .await
        .expect_err("the truck cannot afford it");
    println!("Refused as expected: pos:B-0003 for 2000.00 on truck 粤B-67890: {refused}\n");

    // A depot purchase: the owner's money arrives, a reservation is made, the depot confirms
    // the lifted quantity and the reservation is posted for what was lifted.
    day.transfer(
        "owner-funds",
        "depot-purchase:DP-001",
        (14, 0),
        (c.bank.id, c.owner.id),
        dec!(12000000.00),
        "Station owner transfers funds for a depot purchase",
    )
    .await?;
    let tonnes = dec!(1530.5);
    let price_per_tonne = dec!(7538.46);
    let ordered = round_half_up(tonnes * price_per_tonne, Currency::CNY)?;
    let reservation = NewEntry::transfer(
        day.key("depot-reserve"),
        "depot-purchase:DP-001",
        c.owner.id,
        c.depot.id,
        ordered.amount(),
        Currency::CNY,
    )
    .description(format!(
        "Reserve {tonnes} t of 0# diesel at {price_per_tonne}/t"
    ))
    .effective_at(day.at(14, 5))
    .as_hold(None);
    let reserved = ledger.post_entry(reservation).await?;
    day.count(&reserved);
    let lifted = round_half_up(dec!(1498.2) * price_per_tonne, Currency::CNY)?;
    let posted = ledger
        .post_hold(
            PostHold::partial(day.key("depot-lifted"), reserved.entry_id, lifted.amount())
                .effective_at(day.at(16, 20)),
        )
        .await?;
    day.count(&posted);

    // Franchise settlement: station A's takings go to its shareholders, 60/25/15, to the fen.
    let takings = fuel.checked_add(ledger::Money::new(wechat_sale, Currency::CNY)?)?;
    let shares = allocate(takings, &[dec!(60), dec!(25), dec!(15)])?;
    let mut postings = vec![PostingInput::debit(
        c.station_a.id,
        takings.amount(),
        Currency::CNY,
    )];
    for (holder, share) in c.shareholders.iter().zip(&shares) {
        postings.push(PostingInput::credit(
            holder.id,
            share.amount(),
            Currency::CNY,
        ));
    }
    let settlement = NewEntry {
        idempotency_key: day.key("settle-a"),
        reference: format!("franchise-settlement:A:{}", day.date),
        description: "Daily profit share of Station A".into(),
        effective_at: Some(day.at(23, 30)),
        postings,
        hold: None,
        metadata: serde_json::json!({ "rule": "60/25/15" }),
    };
    let receipt = ledger.post_entry(settlement).await?;
    day.count(&receipt);

    println!(
        "Entries written: {}, replayed (already on the books): {}\n",
        day.written, day.replayed
    );
    print_balances(&ledger, &c).await?;
    print_statement(&ledger, &c.truck_2).await?;
    print_statement(&ledger, &c.station_a).await?;

    let report = ledger.audit().await?;
    for tb in ledger.trial_balance().await? {
        println!(
            "Trial balance {}: debits {} = credits {}; pending debits {} = pending credits {}",
            tb.currency,
            tb.debits_posted.amount(),
            tb.credits_posted.amount(),
            tb.debits_pending.amount(),
            tb.credits_pending.amount()
        );
    }
    if report.problems.is_empty() {
        println!(
            "Audit: {} accounts and {} postings recomputed; the books agree.",
            report.accounts, report.postings
        );
        Ok(())
    } else {
        anyhow::bail!("audit found problems: {:#?}", report.problems)
    }
}

async fn print_balances(ledger: &Ledger, c: &Chart) -> anyhow::Result<()> {
    println!(
        "{:<52} {:>16} {:>14} {:>16}",
        "Account", "Posted", "Pending", "Available"
    );
    let all = [
        &c.bank,
        &c.wechat,
        &c.fleet_master,
        &c.truck_1,
        &c.truck_2,
        &c.station_a,
        &c.station_b,
        &c.cash_b,
        &c.owner,
        &c.depot,
        &c.shareholders[0],
        &c.shareholders[1],
        &c.shareholders[2],
    ];
    for account in all {
        let b = ledger.balance(account.id).await?;
        let pending = match account.normal_side {
            Side::Debit => b.credits_pending.amount(),
            Side::Credit => b.debits_pending.amount(),
        };
        println!(
            "{:<52} {:>16} {:>14} {:>16}",
            account.name,
            b.posted.amount(),
            pending,
            b.available.amount()
        );
    }
    println!();
    Ok(())
}

async fn print_statement(ledger: &Ledger, account: &Account) -> anyhow::Result<()> {
    println!("Statement: {}", account.name);
    let page = ledger
        .statement(StatementQuery {
            account_id: account.id,
            after: None,
            limit: 50,
        })
        .await?;
    for line in page.lines {
        let local = line
            .effective_at
            .with_timezone(&Shanghai)
            .format("%m-%d %H:%M");
        println!(
            "  #{:<3} {local}  {:<7} {:<7} {:>14}  balance {:>14}  {}",
            line.seq,
            line.side.as_str(),
            line.effect.as_str(),
            line.amount.amount(),
            line.running_balance.amount(),
            if line.description.is_empty() {
                &line.reference
            } else {
                &line.description
            },
        );
    }
    println!();
    Ok(())
}
