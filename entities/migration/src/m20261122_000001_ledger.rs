//! The ledger: accounts, journal entries, postings and holds.
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

const POSTGRES: &str = r#"
CREATE TABLE ledger_accounts (
    id uuid PRIMARY KEY,
    owner_org text NOT NULL,
    code text NOT NULL,
    name text NOT NULL,
    currency text NOT NULL CHECK (length(currency) = 3),
    normal_side text NOT NULL CHECK (normal_side IN ('debit', 'credit')),
    debits_must_not_exceed_credits boolean NOT NULL,
    credits_must_not_exceed_debits boolean NOT NULL,
    credit_limit_minor bigint CHECK (credit_limit_minor >= 0),
    parent_id uuid REFERENCES ledger_accounts (id),
    closed boolean NOT NULL DEFAULT false,
    metadata jsonb NOT NULL,
    debits_posted bigint NOT NULL DEFAULT 0 CHECK (debits_posted >= 0),
    credits_posted bigint NOT NULL DEFAULT 0 CHECK (credits_posted >= 0),
    debits_pending bigint NOT NULL DEFAULT 0 CHECK (debits_pending >= 0),
    credits_pending bigint NOT NULL DEFAULT 0 CHECK (credits_pending >= 0),
    posting_seq bigint NOT NULL DEFAULT 0,
    content_hash text NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    CONSTRAINT ledger_accounts_one_constraint
        CHECK (NOT (debits_must_not_exceed_credits AND credits_must_not_exceed_debits)),
    CONSTRAINT ledger_accounts_debits_within_credits
        CHECK (NOT debits_must_not_exceed_credits
               OR debits_posted + debits_pending <= credits_posted + COALESCE(credit_limit_minor, 0)),
    CONSTRAINT ledger_accounts_credits_within_debits
        CHECK (NOT credits_must_not_exceed_debits
               OR credits_posted + credits_pending <= debits_posted + COALESCE(credit_limit_minor, 0))
) WITH (fillfactor = 50);
CREATE INDEX ledger_accounts_owner ON ledger_accounts (owner_org, code);
CREATE INDEX ledger_accounts_parent ON ledger_accounts (parent_id) WHERE parent_id IS NOT NULL;

CREATE TABLE ledger_entries (
    id uuid PRIMARY KEY,
    idempotency_key text NOT NULL UNIQUE,
    content_hash text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('posted', 'pending', 'post_pending', 'void_pending', 'expire_pending')),
    hold_id uuid REFERENCES ledger_entries (id),
    reference text NOT NULL,
    description text NOT NULL,
    effective_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL,
    metadata jsonb NOT NULL
);
CREATE INDEX ledger_entries_reference ON ledger_entries (reference);

-- No foreign keys here, on purpose: they cost two trigger calls per posting (a sixth of the
-- ledger's PostgreSQL throughput, measured). Entries and their postings are written by one
-- statement (or one transaction); every posting's account is updated by the same write,
-- which aborts unless every account it names was found and updated; accounts, entries and
-- postings can never be deleted (triggers below). The audit reports any orphan.
CREATE TABLE ledger_postings (
    entry_id uuid NOT NULL,
    leg integer NOT NULL,
    account_id uuid NOT NULL,
    currency text NOT NULL,
    side text NOT NULL CHECK (side IN ('debit', 'credit')),
    effect text NOT NULL CHECK (effect IN ('post', 'reserve', 'release')),
    amount_minor bigint NOT NULL CHECK (amount_minor > 0),
    account_seq bigint NOT NULL,
    debits_posted_after bigint NOT NULL,
    credits_posted_after bigint NOT NULL,
    debits_pending_after bigint NOT NULL,
    credits_pending_after bigint NOT NULL,
    effective_at timestamptz NOT NULL,
    PRIMARY KEY (entry_id, leg),
    UNIQUE (account_id, account_seq)
);
CREATE INDEX ledger_postings_account_effective ON ledger_postings (account_id, effective_at);

CREATE TABLE ledger_holds (
    entry_id uuid PRIMARY KEY REFERENCES ledger_entries (id),
    status text NOT NULL CHECK (status IN ('pending', 'posted', 'voided', 'expired')),
    expires_at timestamptz,
    resolved_entry_id uuid REFERENCES ledger_entries (id),
    resolved_at timestamptz,
    CHECK ((status = 'pending') = (resolved_entry_id IS NULL))
);
CREATE INDEX ledger_holds_due ON ledger_holds (expires_at) WHERE status = 'pending' AND expires_at IS NOT NULL;

-- Aborts the statement that calls it (and with it the implicit transaction) unless ok.
CREATE FUNCTION ledger_assert(ok boolean, message text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF NOT ok THEN
        RAISE EXCEPTION '%', message USING ERRCODE = '40001';
    END IF;
    RETURN ok;
END;
$$;
CREATE FUNCTION ledger_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger journal rows are immutable: % on %', TG_OP, TG_TABLE_NAME;
END;
$$;
CREATE TRIGGER ledger_entries_immutable BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_immutable();
CREATE TRIGGER ledger_postings_immutable BEFORE UPDATE OR DELETE ON ledger_postings
    FOR EACH ROW EXECUTE FUNCTION ledger_immutable();
CREATE TRIGGER ledger_accounts_kept BEFORE DELETE ON ledger_accounts
    FOR EACH ROW EXECUTE FUNCTION ledger_immutable();
"#;

const SQLITE: &str = r#"
CREATE TABLE ledger_accounts (
    id blob PRIMARY KEY NOT NULL,
    owner_org text NOT NULL,
    code text NOT NULL,
    name text NOT NULL,
    currency text NOT NULL CHECK (length(currency) = 3),
    normal_side text NOT NULL CHECK (normal_side IN ('debit', 'credit')),
    debits_must_not_exceed_credits boolean NOT NULL,
    credits_must_not_exceed_debits boolean NOT NULL,
    credit_limit_minor integer CHECK (credit_limit_minor >= 0),
    parent_id blob REFERENCES ledger_accounts (id),
    closed boolean NOT NULL DEFAULT false,
    metadata text NOT NULL,
    debits_posted integer NOT NULL DEFAULT 0 CHECK (debits_posted >= 0),
    credits_posted integer NOT NULL DEFAULT 0 CHECK (credits_posted >= 0),
    debits_pending integer NOT NULL DEFAULT 0 CHECK (debits_pending >= 0),
    credits_pending integer NOT NULL DEFAULT 0 CHECK (credits_pending >= 0),
    posting_seq integer NOT NULL DEFAULT 0,
    content_hash text NOT NULL,
    created_at text NOT NULL,
    updated_at text NOT NULL,
    CONSTRAINT ledger_accounts_one_constraint
        CHECK (NOT (debits_must_not_exceed_credits AND credits_must_not_exceed_debits)),
    CONSTRAINT ledger_accounts_debits_within_credits
        CHECK (NOT debits_must_not_exceed_credits
               OR debits_posted + debits_pending <= credits_posted + COALESCE(credit_limit_minor, 0)),
    CONSTRAINT ledger_accounts_credits_within_debits
        CHECK (NOT credits_must_not_exceed_debits
               OR credits_posted + credits_pending <= debits_posted + COALESCE(credit_limit_minor, 0))
);
CREATE INDEX ledger_accounts_owner ON ledger_accounts (owner_org, code);
CREATE INDEX ledger_accounts_parent ON ledger_accounts (parent_id) WHERE parent_id IS NOT NULL;

CREATE TABLE ledger_entries (
    id blob PRIMARY KEY NOT NULL,
    idempotency_key text NOT NULL UNIQUE,
    content_hash text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('posted', 'pending', 'post_pending', 'void_pending', 'expire_pending')),
    hold_id blob REFERENCES ledger_entries (id),
    reference text NOT NULL,
    description text NOT NULL,
    effective_at text NOT NULL,
    recorded_at text NOT NULL,
    metadata text NOT NULL
);
CREATE INDEX ledger_entries_reference ON ledger_entries (reference);

-- No foreign keys here, on purpose: they cost two trigger calls per posting (a sixth of the
-- ledger's PostgreSQL throughput, measured). Entries and their postings are written by one
-- statement (or one transaction); every posting's account is updated by the same write,
-- which aborts unless every account it names was found and updated; accounts, entries and
-- postings can never be deleted (triggers below). The audit reports any orphan.
CREATE TABLE ledger_postings (
    entry_id blob NOT NULL,
    leg integer NOT NULL,
    account_id blob NOT NULL,
    currency text NOT NULL,
    side text NOT NULL CHECK (side IN ('debit', 'credit')),
    effect text NOT NULL CHECK (effect IN ('post', 'reserve', 'release')),
    amount_minor integer NOT NULL CHECK (amount_minor > 0),
    account_seq integer NOT NULL,
    debits_posted_after integer NOT NULL,
    credits_posted_after integer NOT NULL,
    debits_pending_after integer NOT NULL,
    credits_pending_after integer NOT NULL,
    effective_at text NOT NULL,
    PRIMARY KEY (entry_id, leg),
    UNIQUE (account_id, account_seq)
);
CREATE INDEX ledger_postings_account_effective ON ledger_postings (account_id, effective_at);

CREATE TABLE ledger_holds (
    entry_id blob PRIMARY KEY NOT NULL REFERENCES ledger_entries (id),
    status text NOT NULL CHECK (status IN ('pending', 'posted', 'voided', 'expired')),
    expires_at text,
    resolved_entry_id blob REFERENCES ledger_entries (id),
    resolved_at text,
    CHECK ((status = 'pending') = (resolved_entry_id IS NULL))
);
CREATE INDEX ledger_holds_due ON ledger_holds (expires_at) WHERE status = 'pending' AND expires_at IS NOT NULL;

CREATE TRIGGER ledger_entries_no_update BEFORE UPDATE ON ledger_entries BEGIN
    SELECT RAISE(ABORT, 'ledger journal rows are immutable');
END;
CREATE TRIGGER ledger_entries_no_delete BEFORE DELETE ON ledger_entries BEGIN
    SELECT RAISE(ABORT, 'ledger journal rows are immutable');
END;
CREATE TRIGGER ledger_postings_no_update BEFORE UPDATE ON ledger_postings BEGIN
    SELECT RAISE(ABORT, 'ledger journal rows are immutable');
END;
CREATE TRIGGER ledger_postings_no_delete BEFORE DELETE ON ledger_postings BEGIN
    SELECT RAISE(ABORT, 'ledger journal rows are immutable');
END;
CREATE TRIGGER ledger_accounts_kept BEFORE DELETE ON ledger_accounts BEGIN
    SELECT RAISE(ABORT, 'ledger accounts are never deleted; close them');
END;
"#;

const DOWN: &str = r#"
DROP TABLE ledger_holds;
DROP TABLE ledger_postings;
DROP TABLE ledger_entries;
DROP TABLE ledger_accounts;
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_for_backend(manager, POSTGRES, SQLITE).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_script(manager, DOWN).await?;
        if manager.get_database_backend() == DbBackend::Postgres {
            crate::run_script(
                manager,
                "DROP FUNCTION ledger_immutable();\nDROP FUNCTION ledger_assert(boolean, text);",
            )
            .await?;
        }
        Ok(())
    }
}
