//! Organisations and users in storage: the tree, creation with its checks, lookups.
//!
//! Used by the routes, by the embedded mode's demo seeding and by tests, so that there is one
//! way to create an organisation or a user.

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use entities::{organisations, users};

use crate::error::{ApiError, FieldError, unique_violation};
use crate::policy::{OrgKind, OrgRef, Role};

/// Deepest level of the tree (the root is 0).
pub const MAX_DEPTH: i32 = 15;

/// Timestamps are kept to the microsecond, the precision PostgreSQL stores.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// An organisation as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "id": "0193a5c2-7d1e-7c4b-9f0e-2a51b2c3d4e5",
    "parent_id": "0193a5c2-6b00-7000-8000-000000000001",
    "kind": "station",
    "name": "Huaxin No. 3 Station",
    "ledger_owner": "0193a5c2-7d1e-7c4b-9f0e-2a51b2c3d4e5",
    "created_at": "2026-11-22T08:00:00Z"
}))]
pub struct Organisation {
    pub id: Uuid,
    /// Absent only for the platform operator, the root.
    pub parent_id: Option<Uuid>,
    pub kind: OrgKind,
    pub name: String,
    /// The `owner_org` of the organisation's ledger accounts.
    pub ledger_owner: String,
    pub created_at: DateTime<Utc>,
}

fn parse_kind(text: &str) -> Result<OrgKind, ApiError> {
    text.parse()
        .map_err(|e: String| ApiError::internal(anyhow::anyhow!(e)))
}

impl TryFrom<organisations::Model> for Organisation {
    type Error = ApiError;

    fn try_from(m: organisations::Model) -> Result<Self, ApiError> {
        Ok(Organisation {
            id: m.id,
            parent_id: m.parent_id,
            kind: parse_kind(&m.kind)?,
            name: m.name,
            ledger_owner: m.ledger_owner,
            created_at: m.created_at,
        })
    }
}

pub fn org_ref(m: &organisations::Model) -> Result<OrgRef, ApiError> {
    Ok(OrgRef {
        id: m.id,
        kind: parse_kind(&m.kind)?,
        name: m.name.clone(),
        path: m.path.clone(),
    })
}

/// An organisation's place in the tree, if it exists.
pub async fn find_org(db: &impl ConnectionTrait, id: Uuid) -> Result<Option<OrgRef>, ApiError> {
    organisations::Entity::find_by_id(id)
        .one(db)
        .await?
        .as_ref()
        .map(org_ref)
        .transpose()
}

/// The platform operator, root of the tree.
pub async fn root_org(db: &impl ConnectionTrait) -> Result<Option<OrgRef>, ApiError> {
    organisations::Entity::find()
        .filter(organisations::Column::ParentId.is_null())
        .one(db)
        .await?
        .as_ref()
        .map(org_ref)
        .transpose()
}

/// A new organisation.
#[derive(Clone, Debug)]
pub struct NewOrganisation {
    pub id: Uuid,
    pub parent_id: Option<Uuid>,
    pub kind: OrgKind,
    pub name: String,
    /// The `owner_org` of its ledger accounts; its id when absent.
    pub ledger_owner: Option<String>,
}

/// Checks a display name or organisation name.
pub fn check_name(field: &str, name: &str, errors: &mut Vec<FieldError>) {
    let chars = name.chars().count();
    if name.trim().is_empty() || chars > 200 || name.chars().any(char::is_control) {
        errors.push(FieldError::new(
            field,
            "must be 1 to 200 characters, not only spaces, without control characters",
        ));
    }
}

/// Creates an organisation under its parent. The kind must be one the parent's kind may
/// have; only the platform operator has no parent, and there is one.
pub async fn create_organisation(
    db: &impl ConnectionTrait,
    new: NewOrganisation,
) -> Result<organisations::Model, ApiError> {
    let (path, depth) = match new.parent_id {
        None => {
            if new.kind != OrgKind::PlatformOperator {
                return Err(ApiError::validation(vec![FieldError::new(
                    "parent_id",
                    "only the platform operator has no parent",
                )]));
            }
            (format!("/{}/", new.id.simple()), 0)
        }
        Some(parent_id) => {
            let parent = organisations::Entity::find_by_id(parent_id)
                .one(db)
                .await?
                .ok_or_else(|| ApiError::not_found("organisation"))?;
            let parent_kind = parse_kind(&parent.kind)?;
            if !parent_kind.children().contains(&new.kind) {
                return Err(ApiError::validation(vec![FieldError::new(
                    "kind",
                    format!(
                        "a {parent_kind} cannot have a {} below it; it may have: {}",
                        new.kind,
                        parent_kind
                            .children()
                            .iter()
                            .map(|k| k.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )]));
            }
            if parent.depth >= MAX_DEPTH {
                return Err(ApiError::validation(vec![FieldError::new(
                    "parent_id",
                    format!("the tree is at most {MAX_DEPTH} levels deep"),
                )]));
            }
            (
                format!("{}{}/", parent.path, new.id.simple()),
                parent.depth + 1,
            )
        }
    };
    let model = organisations::ActiveModel {
        id: Set(new.id),
        parent_id: Set(new.parent_id),
        kind: Set(new.kind.as_str().to_owned()),
        name: Set(new.name.trim().to_owned()),
        path: Set(path),
        depth: Set(depth),
        ledger_owner: Set(new.ledger_owner.unwrap_or_else(|| new.id.to_string())),
        created_at: Set(now()),
    };
    let name = new.name.clone();
    organisations::Entity::insert(model)
        .exec_with_returning(db)
        .await
        .map_err(|err| {
            unique_violation(err, || {
                if new.kind == OrgKind::PlatformOperator {
                    "there is a platform operator already".to_owned()
                } else {
                    format!(
                        "an organisation named {name:?} exists under this parent, or its id or ledger owner is taken"
                    )
                }
            })
        })
}

/// A user as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "id": "0193a5c2-8a00-7000-8000-0000000000aa",
    "organisation_id": "0193a5c2-7d1e-7c4b-9f0e-2a51b2c3d4e5",
    "username": "li.wei",
    "display_name": "Li Wei",
    "role": "cashier",
    "disabled": false,
    "created_at": "2026-11-22T08:00:00Z"
}))]
pub struct User {
    pub id: Uuid,
    pub organisation_id: Uuid,
    pub username: String,
    pub display_name: String,
    pub role: Role,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
}

impl TryFrom<users::Model> for User {
    type Error = ApiError;

    fn try_from(m: users::Model) -> Result<Self, ApiError> {
        Ok(User {
            id: m.id,
            organisation_id: m.organisation_id,
            username: m.username,
            display_name: m.display_name,
            role: m
                .role
                .parse()
                .map_err(|e: String| ApiError::internal(anyhow::anyhow!(e)))?,
            disabled: m.disabled_at.is_some(),
            created_at: m.created_at,
        })
    }
}

/// Checks a username: 3 to 64 characters of `a-z 0-9 . _ -`, starting with a letter or digit.
pub fn check_username(username: &str, errors: &mut Vec<FieldError>) {
    let ok = (3..=64).contains(&username.len())
        && username
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
        && username
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if !ok {
        errors.push(FieldError::new(
            "username",
            "must be 3 to 64 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit",
        ));
    }
}

/// Checks a new password: 12 to 256 characters.
pub fn check_password(password: &str, errors: &mut Vec<FieldError>) {
    let chars = password.chars().count();
    if !(12..=256).contains(&chars) {
        errors.push(FieldError::new("password", "must be 12 to 256 characters"));
    }
}

/// A new user; its password arrives hashed ([`hash_password`]).
#[derive(Clone, Debug)]
pub struct NewUser {
    pub id: Uuid,
    pub organisation_id: Uuid,
    pub username: String,
    pub display_name: String,
    pub role: Role,
}

/// Hashes a password off the async threads (argon2 takes tens of milliseconds of CPU).
pub async fn hash_password(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || crate::crypto::hash_password(&password))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)
}

/// Creates a user. The caller checks the role against the organisation and the grantor.
pub async fn create_user(
    db: &impl ConnectionTrait,
    new: NewUser,
    password_hash: String,
) -> Result<users::Model, ApiError> {
    let model = users::ActiveModel {
        id: Set(new.id),
        organisation_id: Set(new.organisation_id),
        username: Set(new.username.clone()),
        display_name: Set(new.display_name.trim().to_owned()),
        role: Set(new.role.as_str().to_owned()),
        password_hash: Set(password_hash),
        disabled_at: Set(None),
        created_at: Set(now()),
    };
    users::Entity::insert(model)
        .exec_with_returning(db)
        .await
        .map_err(|err| {
            unique_violation(err, || format!("the username {:?} is taken", new.username))
        })
}
