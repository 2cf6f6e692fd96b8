//! Schema migrations for every table of the platform.
//!
//! # Layout
//! One module per migration, named by date and purpose, listed in [`Migrator`] in order.
//! Each migration carries its DDL for PostgreSQL and for SQLite side by side, so that the two
//! schemas can be read (and reviewed) together. Invariants that the database can check on its
//! own (balance limits, positive amounts, immutability of journal rows) are declared here as a
//! second line of defence behind the ledger's own checks.

pub use sea_orm_migration::prelude::*;

mod m20261122_000001_ledger;
mod m20261122_000002_workflows;
mod m20261122_000003_canary;
mod m20261122_000004_schedules;
mod m20261122_000005_child_workflows;
mod m20261122_000006_api;
mod m20261123_000001_outbox_ready;
mod m20261124_000001_treasury_instructions;
mod m20261124_000002_treasury_external_accounts;
mod m20261125_000001_treasury_bank;
mod m20261125_000002_treasury_statements;
mod m20261125_000003_treasury_policies;
mod m20261125_000004_webhooks;
mod m20261126_000001_pos;
mod m20261126_000002_pos_close;
mod m20261127_000001_treasury_message_transactions;
mod m20261127_000002_treasury_freezes;
mod m20261127_000003_treasury_batches;
mod m20261128_000001_channel_attempts;
mod m20261128_000002_member_cards;
mod m20261128_000003_partner_orders;
mod m20261128_000004_channel_day_totals;
mod m20261129_000001_partner_settlements;

/// Every migration of the platform, in order.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_ledger::Migration),
            Box::new(m20261122_000002_workflows::Migration),
            Box::new(m20261122_000003_canary::Migration),
            Box::new(m20261122_000004_schedules::Migration),
            Box::new(m20261122_000005_child_workflows::Migration),
            Box::new(m20261122_000006_api::Migration),
            Box::new(m20261123_000001_outbox_ready::Migration),
            Box::new(m20261124_000001_treasury_instructions::Migration),
            Box::new(m20261124_000002_treasury_external_accounts::Migration),
            Box::new(m20261125_000001_treasury_bank::Migration),
            Box::new(m20261125_000002_treasury_statements::Migration),
            Box::new(m20261125_000003_treasury_policies::Migration),
            Box::new(m20261125_000004_webhooks::Migration),
            Box::new(m20261126_000001_pos::Migration),
            Box::new(m20261126_000002_pos_close::Migration),
            Box::new(m20261127_000001_treasury_message_transactions::Migration),
            Box::new(m20261127_000002_treasury_freezes::Migration),
            Box::new(m20261127_000003_treasury_batches::Migration),
            Box::new(m20261128_000001_channel_attempts::Migration),
            Box::new(m20261128_000002_member_cards::Migration),
            Box::new(m20261128_000003_partner_orders::Migration),
            Box::new(m20261128_000004_channel_day_totals::Migration),
            Box::new(m20261129_000001_partner_settlements::Migration),
        ]
    }
}

/// Brings the schema up to date. Safe to run on every start: applied migrations are skipped.
pub async fn migrate(db: &sea_orm_migration::sea_orm::DatabaseConnection) -> Result<(), DbErr> {
    Migrator::up(db, None).await
}

/// Runs the script of the connection's backend.
pub(crate) async fn run_for_backend(
    manager: &SchemaManager<'_>,
    postgres: &str,
    sqlite: &str,
) -> Result<(), DbErr> {
    use sea_orm_migration::sea_orm::DbBackend;
    let script = match manager.get_database_backend() {
        DbBackend::Postgres => postgres,
        DbBackend::Sqlite => sqlite,
        other => {
            return Err(DbErr::Migration(format!(
                "{other:?} is not supported: use PostgreSQL or SQLite"
            )));
        }
    };
    run_script(manager, script).await
}

/// Runs each statement of a `;`-separated script. Statements must not contain `;` themselves,
/// except inside `BEGIN ... END;` trigger bodies, which are kept whole.
pub(crate) async fn run_script(manager: &SchemaManager<'_>, script: &str) -> Result<(), DbErr> {
    let db = manager.get_connection();
    for statement in split_script(script) {
        db.execute_unprepared(&statement).await?;
    }
    Ok(())
}

fn split_script(script: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    // A trigger or function body ends at its own terminator, not at the first `;`.
    let mut body_end: Option<fn(&str) -> bool> = None;
    for line in script.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with("--") {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        let upper = trimmed.to_ascii_uppercase();
        if body_end.is_none() {
            if upper.ends_with("AS $$") {
                body_end = Some(|l| l.starts_with("$$"));
                continue;
            }
            if upper.ends_with("BEGIN") {
                body_end = Some(|l| l == "END;");
                continue;
            }
        }
        let complete = match body_end {
            Some(ends) => ends(&upper),
            None => trimmed.ends_with(';'),
        };
        if complete {
            body_end = None;
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.trim().is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::split_script;

    #[test]
    fn trigger_bodies_stay_whole() {
        let script = "CREATE TABLE a (x int);\nCREATE TRIGGER t BEFORE UPDATE ON a BEGIN\n SELECT RAISE(ABORT, 'no');\nEND;\nCREATE INDEX i ON a (x);";
        let parts = split_script(script);
        assert_eq!(parts.len(), 3);
        assert!(parts[1].contains("RAISE"));
    }

    #[test]
    fn function_bodies_stay_whole() {
        let script = "CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n RAISE EXCEPTION 'no';\nEND;\n$$;\nCREATE INDEX i ON a (x);";
        let parts = split_script(script);
        assert_eq!(parts.len(), 2, "{parts:?}");
        assert!(parts[0].trim_end().ends_with("$$;"));
    }
}
