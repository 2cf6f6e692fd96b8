//! The API: organisations (a tree), users and their sessions, partner API keys and the nonces
//! of their signed requests, and stored responses for `Idempotency-Key`.
//!
//! Uniqueness the API relies on under concurrency is declared here, so that the API can claim
//! a row by inserting it (the insert that loses a race fails on the constraint) instead of
//! reading first and writing after: one platform operator, an organisation name once per
//! parent, a username once, a token hash once, a nonce once per key, an idempotency key once
//! per scope.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const POSTGRES: &str = r#"
CREATE TABLE organisations (
    id uuid PRIMARY KEY,
    parent_id uuid REFERENCES organisations (id),
    kind text NOT NULL CHECK (kind IN ('platform_operator', 'brand', 'station_company', 'station',
                                       'fleet_company', 'depot', 'partner')),
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    path text NOT NULL UNIQUE,
    depth integer NOT NULL CHECK (depth BETWEEN 0 AND 15),
    ledger_owner text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL,
    CHECK ((kind = 'platform_operator') = (parent_id IS NULL))
);
CREATE UNIQUE INDEX organisations_one_platform_operator ON organisations (kind)
    WHERE kind = 'platform_operator';
CREATE UNIQUE INDEX organisations_sibling_names ON organisations (parent_id, name);
CREATE INDEX organisations_subtree ON organisations (path text_pattern_ops);

CREATE TABLE users (
    id uuid PRIMARY KEY,
    organisation_id uuid NOT NULL REFERENCES organisations (id),
    username text NOT NULL UNIQUE,
    display_name text NOT NULL,
    role text NOT NULL CHECK (role IN ('admin', 'station_owner', 'station_manager', 'cashier',
                                       'fleet_manager', 'treasury_maker', 'treasury_checker',
                                       'partner')),
    password_hash text NOT NULL,
    disabled_at timestamptz,
    created_at timestamptz NOT NULL
);
CREATE INDEX users_organisation ON users (organisation_id);

CREATE TABLE user_sessions (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id),
    token_sha256 text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz
);
CREATE INDEX user_sessions_user ON user_sessions (user_id);
CREATE INDEX user_sessions_expiry ON user_sessions (expires_at);

CREATE TABLE api_keys (
    id uuid PRIMARY KEY,
    organisation_id uuid NOT NULL REFERENCES organisations (id),
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    secret_ciphertext text NOT NULL,
    encryption_key_id text NOT NULL,
    created_by uuid REFERENCES users (id),
    created_at timestamptz NOT NULL,
    revoked_at timestamptz
);
CREATE INDEX api_keys_organisation ON api_keys (organisation_id);

CREATE TABLE api_nonces (
    api_key_id uuid NOT NULL REFERENCES api_keys (id),
    nonce text NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (api_key_id, nonce)
);
CREATE INDEX api_nonces_expiry ON api_nonces (expires_at);

CREATE TABLE api_idempotency (
    scope text NOT NULL,
    key text NOT NULL,
    fingerprint text NOT NULL,
    state text NOT NULL CHECK (state IN ('in_flight', 'completed')),
    locked_until timestamptz NOT NULL,
    response_status integer,
    response_headers jsonb,
    response_body text,
    secret_withheld boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (scope, key),
    CHECK ((state = 'completed') = (response_status IS NOT NULL))
);
CREATE INDEX api_idempotency_expiry ON api_idempotency (expires_at);
"#;

const SQLITE: &str = r#"
CREATE TABLE organisations (
    id blob PRIMARY KEY NOT NULL,
    parent_id blob REFERENCES organisations (id),
    kind text NOT NULL CHECK (kind IN ('platform_operator', 'brand', 'station_company', 'station',
                                       'fleet_company', 'depot', 'partner')),
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    path text NOT NULL UNIQUE,
    depth integer NOT NULL CHECK (depth BETWEEN 0 AND 15),
    ledger_owner text NOT NULL UNIQUE,
    created_at text NOT NULL,
    CHECK ((kind = 'platform_operator') = (parent_id IS NULL))
);
CREATE UNIQUE INDEX organisations_one_platform_operator ON organisations (kind)
    WHERE kind = 'platform_operator';
CREATE UNIQUE INDEX organisations_sibling_names ON organisations (parent_id, name);

CREATE TABLE users (
    id blob PRIMARY KEY NOT NULL,
    organisation_id blob NOT NULL REFERENCES organisations (id),
    username text NOT NULL UNIQUE,
    display_name text NOT NULL,
    role text NOT NULL CHECK (role IN ('admin', 'station_owner', 'station_manager', 'cashier',
                                       'fleet_manager', 'treasury_maker', 'treasury_checker',
                                       'partner')),
    password_hash text NOT NULL,
    disabled_at text,
    created_at text NOT NULL
);
CREATE INDEX users_organisation ON users (organisation_id);

CREATE TABLE user_sessions (
    id blob PRIMARY KEY NOT NULL,
    user_id blob NOT NULL REFERENCES users (id),
    token_sha256 text NOT NULL UNIQUE,
    created_at text NOT NULL,
    expires_at text NOT NULL,
    revoked_at text
);
CREATE INDEX user_sessions_user ON user_sessions (user_id);
CREATE INDEX user_sessions_expiry ON user_sessions (expires_at);

CREATE TABLE api_keys (
    id blob PRIMARY KEY NOT NULL,
    organisation_id blob NOT NULL REFERENCES organisations (id),
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    secret_ciphertext text NOT NULL,
    encryption_key_id text NOT NULL,
    created_by blob REFERENCES users (id),
    created_at text NOT NULL,
    revoked_at text
);
CREATE INDEX api_keys_organisation ON api_keys (organisation_id);

CREATE TABLE api_nonces (
    api_key_id blob NOT NULL REFERENCES api_keys (id),
    nonce text NOT NULL,
    expires_at text NOT NULL,
    PRIMARY KEY (api_key_id, nonce)
);
CREATE INDEX api_nonces_expiry ON api_nonces (expires_at);

CREATE TABLE api_idempotency (
    scope text NOT NULL,
    key text NOT NULL,
    fingerprint text NOT NULL,
    state text NOT NULL CHECK (state IN ('in_flight', 'completed')),
    locked_until text NOT NULL,
    response_status integer,
    response_headers text,
    response_body text,
    secret_withheld boolean NOT NULL DEFAULT false,
    created_at text NOT NULL,
    expires_at text NOT NULL,
    PRIMARY KEY (scope, key),
    CHECK ((state = 'completed') = (response_status IS NOT NULL))
);
CREATE INDEX api_idempotency_expiry ON api_idempotency (expires_at);
"#;

const DOWN: &str = r#"
DROP TABLE api_idempotency;
DROP TABLE api_nonces;
DROP TABLE api_keys;
DROP TABLE user_sessions;
DROP TABLE users;
DROP TABLE organisations;
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_for_backend(manager, POSTGRES, SQLITE).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_script(manager, DOWN).await
    }
}
