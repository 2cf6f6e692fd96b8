//! One router per area, each a file; [`crate::router`] merges them in one place.

/// Ledger accounts, balances and statements (read).
pub mod accounts;
/// Partner API keys.
pub mod api_keys;
/// Login, logout and `whoami`.
pub mod auth;
/// `/healthz`, `/readyz`, `/metrics`.
pub mod health;
/// Stored-value member cards at the till: issue, top up, register, block.
pub mod member_cards;
/// The organisation tree.
pub mod organisations;
/// Partner-app orders: partner–station contracts, orders pushed to a terminal, the till's
/// tickets.
pub mod partner_orders;
/// Retail payments: terminals, channels, shifts, payments, refunds, channel notifications.
pub mod payments;
/// Treasury: instructions to the custodial bank, approvals, rails, the bank's callbacks.
pub mod treasury;
/// Users and their roles.
pub mod users;
/// Webhook subscriptions and their deliveries.
pub mod webhooks;
/// Workflow instances and their history (read, platform admins).
pub mod workflows;

use sea_orm::ExprTrait;
use sea_orm::sea_query::{Expr, Query, SelectStatement};

use entities::organisations as org_table;

/// `SELECT <column> FROM organisations WHERE path LIKE '<path>%'`: the caller's subtree, as a
/// subquery for lists.
pub(crate) fn subtree(column: org_table::Column, path: &str) -> SelectStatement {
    debug_assert!(
        path.bytes().all(|b| b.is_ascii_hexdigit() || b == b'/'),
        "paths hold only ids and separators, nothing LIKE would read as a pattern"
    );
    Query::select()
        .column(column)
        .from(org_table::Entity)
        .and_where(Expr::col(org_table::Column::Path).like(format!("{path}%")))
        .to_owned()
}

/// The security requirement of every protected operation, named in the OpenAPI document.
pub const BEARER: &str = "bearer";
pub const PARTNER_SIGNATURE: &str = "partner_signature";
