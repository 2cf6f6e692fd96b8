//! Treasury: the approval policy as data. Every change is a new version; the highest is in
//! force; none is ever changed or deleted, so the audit trail can say which rules applied.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const POSTGRES: &str = r#"
CREATE TABLE treasury_policies (
    version integer PRIMARY KEY CHECK (version > 0),
    config text NOT NULL,
    set_by text NOT NULL,
    set_at timestamptz NOT NULL
);
CREATE FUNCTION treasury_policies_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'treasury_policies is append-only';
END;
$$;
CREATE TRIGGER treasury_policies_no_change BEFORE UPDATE OR DELETE ON treasury_policies
    FOR EACH ROW EXECUTE FUNCTION treasury_policies_immutable();
"#;

const SQLITE: &str = r#"
CREATE TABLE treasury_policies (
    version integer PRIMARY KEY NOT NULL CHECK (version > 0),
    config text NOT NULL,
    set_by text NOT NULL,
    set_at text NOT NULL
);
CREATE TRIGGER treasury_policies_no_update BEFORE UPDATE ON treasury_policies BEGIN
    SELECT RAISE(ABORT, 'treasury_policies is append-only');
END;
CREATE TRIGGER treasury_policies_no_delete BEFORE DELETE ON treasury_policies BEGIN
    SELECT RAISE(ABORT, 'treasury_policies is append-only');
END;
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_for_backend(manager, POSTGRES, SQLITE).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_for_backend(
            manager,
            "DROP TABLE treasury_policies; DROP FUNCTION treasury_policies_immutable();",
            "DROP TABLE treasury_policies;",
        )
        .await
    }
}
