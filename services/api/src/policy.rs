//! Who may do what: roles, organisation kinds, actions, and the one function that decides.
//!
//! [`authorize`] decides every request from the caller's role, the action and the
//! organisation that owns the resource:
//! 1. the role must allow the action at all, or the answer is 403 `forbidden` (which says
//!    nothing about any resource);
//! 2. the resource's organisation must lie in the caller's organisation subtree, or the
//!    answer is 404 `not-found`, exactly as for a resource that does not exist, so that ids
//!    of other organisations do not leak.
//!
//! Lists apply the same rule by filtering on the caller's subtree.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{ApiError, FieldError};

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &[$name] = &[$($name::$variant),+];

            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(text: &str) -> Result<Self, String> {
                match text {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!("unknown {} {other:?}", stringify!($name))),
                }
            }
        }
    };
}

text_enum!(
    /// What an organisation is. The platform operator is the one root of the tree.
    OrgKind {
        PlatformOperator => "platform_operator",
        Brand => "brand",
        StationCompany => "station_company",
        Station => "station",
        FleetCompany => "fleet_company",
        Depot => "depot",
        Partner => "partner",
    }
);

text_enum!(
    /// A user's role. A user has one, in one organisation, and acts within that
    /// organisation's subtree.
    Role {
        Admin => "admin",
        StationOwner => "station_owner",
        StationManager => "station_manager",
        Cashier => "cashier",
        FleetManager => "fleet_manager",
        TreasuryMaker => "treasury_maker",
        TreasuryChecker => "treasury_checker",
        Partner => "partner",
    }
);

impl OrgKind {
    /// The kinds an organisation of this kind may have as children: a brand has station
    /// companies, a station company has stations; fleets, depots and partners hang off the
    /// platform operator.
    pub fn children(self) -> &'static [OrgKind] {
        match self {
            OrgKind::PlatformOperator => &[
                OrgKind::Brand,
                OrgKind::StationCompany,
                OrgKind::FleetCompany,
                OrgKind::Depot,
                OrgKind::Partner,
            ],
            OrgKind::Brand => &[OrgKind::StationCompany],
            OrgKind::StationCompany => &[OrgKind::Station],
            OrgKind::Station | OrgKind::FleetCompany | OrgKind::Depot | OrgKind::Partner => &[],
        }
    }
}

impl Role {
    /// The kinds of organisation a user of this role can belong to.
    pub fn fits(self, kind: OrgKind) -> bool {
        match self {
            Role::Admin => true,
            Role::StationOwner => matches!(kind, OrgKind::StationCompany | OrgKind::Station),
            Role::StationManager | Role::Cashier => kind == OrgKind::Station,
            Role::FleetManager => kind == OrgKind::FleetCompany,
            Role::TreasuryMaker | Role::TreasuryChecker => matches!(
                kind,
                OrgKind::PlatformOperator | OrgKind::Brand | OrgKind::StationCompany
            ),
            Role::Partner => kind == OrgKind::Partner,
        }
    }

    /// The roles a user of this role may give to users they create: never more than their
    /// own.
    pub fn may_grant(self, role: Role) -> bool {
        match self {
            Role::Admin => true,
            Role::StationOwner => matches!(role, Role::StationManager | Role::Cashier),
            Role::StationManager => role == Role::Cashier,
            _ => false,
        }
    }
}

/// Everything a caller can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    ReadOrganisations,
    CreateOrganisations,
    ReadUsers,
    ManageUsers,
    ReadApiKeys,
    ManageApiKeys,
    ReadAccounts,
    ReadWorkflows,
    ReadTreasury,
    MakeInstructions,
    CheckInstructions,
    ImportStatements,
    ManageApprovalPolicy,
    ManageWebhooks,
    /// See a station's tills, channels, shifts, payments and refunds.
    ReadPayments,
    /// Work a till: shifts, payments, refunds.
    TakePayments,
    /// Register terminals and set a station's channel terms.
    ManageStations,
    /// Decide refund requests, close shifts over unresolved payments, unblock member cards.
    ApproveRefunds,
    /// Push orders its drivers paid to the terminals of stations that signed the partner.
    PushPartnerOrders,
    /// See the partner's own orders and the stations it may serve.
    ReadPartnerOrders,
}

impl Action {
    pub const ALL: &[Action] = &[
        Action::ReadOrganisations,
        Action::CreateOrganisations,
        Action::ReadUsers,
        Action::ManageUsers,
        Action::ReadApiKeys,
        Action::ManageApiKeys,
        Action::ReadAccounts,
        Action::ReadWorkflows,
        Action::ReadTreasury,
        Action::MakeInstructions,
        Action::CheckInstructions,
        Action::ImportStatements,
        Action::ManageApprovalPolicy,
        Action::ManageWebhooks,
        Action::ReadPayments,
        Action::TakePayments,
        Action::ManageStations,
        Action::ApproveRefunds,
        Action::PushPartnerOrders,
        Action::ReadPartnerOrders,
    ];
}

/// Whether a role allows an action anywhere in the caller's subtree.
pub fn permits(role: Role, action: Action) -> bool {
    use Action::*;
    use Role::*;
    match action {
        ReadOrganisations | ReadAccounts => true,
        CreateOrganisations | ReadWorkflows => role == Admin,
        ReadUsers => matches!(role, Admin | StationOwner | StationManager | FleetManager),
        ManageUsers => matches!(role, Admin | StationOwner | StationManager),
        ReadApiKeys | ManageApiKeys => matches!(role, Admin | Partner),
        ReadTreasury => matches!(role, Admin | TreasuryMaker | TreasuryChecker),
        MakeInstructions => role == TreasuryMaker,
        CheckInstructions => role == TreasuryChecker,
        ImportStatements => matches!(role, TreasuryMaker | TreasuryChecker),
        ManageApprovalPolicy => role == Admin,
        // Administrators for the platform operator's integrations; partners for the events
        // about their own orders.
        ManageWebhooks => matches!(role, Admin | Partner),
        ReadPayments => matches!(role, Admin | StationOwner | StationManager | Cashier),
        TakePayments => matches!(role, StationManager | Cashier),
        ManageStations => matches!(role, Admin | StationOwner),
        ApproveRefunds => role == StationManager,
        PushPartnerOrders | ReadPartnerOrders => role == Partner,
    }
}

/// An organisation as the policy sees it: where it sits in the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrgRef {
    pub id: Uuid,
    pub kind: OrgKind,
    pub name: String,
    pub path: String,
}

impl OrgRef {
    /// Whether `other` is this organisation or below it.
    pub fn contains(&self, other: &OrgRef) -> bool {
        other.path.starts_with(&self.path)
    }
}

/// How the caller proved who they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    /// A user with a bearer token from login.
    User {
        id: Uuid,
        username: String,
        session_id: Uuid,
    },
    /// A partner system signing with an API key.
    ApiKey { id: Uuid },
}

/// The authenticated caller of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub subject: Subject,
    pub role: Role,
    pub org: OrgRef,
}

impl Caller {
    /// The id of the user or API key.
    pub fn subject_id(&self) -> Uuid {
        match &self.subject {
            Subject::User { id, .. } | Subject::ApiKey { id } => *id,
        }
    }
}

/// The one decision: may `caller` do `action` on a resource (`what`: "account", "user")
/// owned by `resource`? A resource outside the caller's subtree is answered exactly like a
/// missing one: same status, same detail.
pub fn authorize(
    caller: &Caller,
    action: Action,
    resource: &OrgRef,
    what: &str,
) -> Result<(), ApiError> {
    if !permits(caller.role, action) {
        return Err(ApiError::forbidden(format!(
            "the {} role does not allow {action:?}",
            caller.role
        )));
    }
    // A leaked partner key must not be able to mint or revoke keys: that takes a person.
    if action == Action::ManageApiKeys && matches!(caller.subject, Subject::ApiKey { .. }) {
        return Err(ApiError::forbidden(
            "API keys are managed by a logged-in user, not with an API key",
        ));
    }
    if !caller.org.contains(resource) {
        return Err(ApiError::not_found(what));
    }
    Ok(())
}

/// Checks that `caller` may give `role` to a new user of organisation `org`.
pub fn check_grant(caller: &Caller, role: Role, org: &OrgRef) -> Result<(), ApiError> {
    if !caller.role.may_grant(role) {
        return Err(ApiError::forbidden(format!(
            "the {} role cannot create users with the {role} role",
            caller.role
        )));
    }
    if !role.fits(org.kind) {
        return Err(ApiError::validation(vec![FieldError::new(
            "role",
            format!("a {role} cannot belong to a {} organisation", org.kind),
        )]));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org(path: &str) -> OrgRef {
        OrgRef {
            id: Uuid::now_v7(),
            kind: OrgKind::Station,
            name: "x".into(),
            path: path.into(),
        }
    }

    fn caller(role: Role, path: &str) -> Caller {
        Caller {
            subject: Subject::User {
                id: Uuid::now_v7(),
                username: "u".into(),
                session_id: Uuid::now_v7(),
            },
            role,
            org: org(path),
        }
    }

    #[test]
    fn a_role_without_the_action_is_forbidden_before_the_resource_is_considered() {
        let cashier = caller(Role::Cashier, "/a/b/");
        let err = authorize(&cashier, Action::ReadUsers, &org("/z/"), "user").unwrap_err();
        assert_eq!(err.kind, crate::error::ProblemKind::Forbidden);
    }

    #[test]
    fn another_subtree_is_not_found_and_a_sibling_prefix_is_not_a_subtree() {
        let owner = caller(Role::StationOwner, "/root/a/");
        assert!(authorize(&owner, Action::ReadAccounts, &org("/root/a/s1/"), "account").is_ok());
        let err = authorize(&owner, Action::ReadAccounts, &org("/root/b/"), "account").unwrap_err();
        assert_eq!(err.kind, crate::error::ProblemKind::NotFound);
        // `/root/a/` must not contain `/root/ab/`: paths end with a separator.
        let err =
            authorize(&owner, Action::ReadAccounts, &org("/root/ab/"), "account").unwrap_err();
        assert_eq!(err.kind, crate::error::ProblemKind::NotFound);
    }

    #[test]
    fn nobody_grants_more_than_they_have() {
        for role in Role::ALL {
            assert!(Role::Admin.may_grant(*role));
            assert!(!Role::Cashier.may_grant(*role));
        }
        assert!(!Role::StationOwner.may_grant(Role::Admin));
        assert!(!Role::StationManager.may_grant(Role::StationManager));
    }

    #[test]
    fn every_role_fits_some_kind_and_every_kind_but_the_root_has_a_parent_kind() {
        for role in Role::ALL {
            assert!(OrgKind::ALL.iter().any(|k| role.fits(*k)), "{role}");
        }
        for kind in OrgKind::ALL {
            if *kind != OrgKind::PlatformOperator {
                assert!(
                    OrgKind::ALL.iter().any(|p| p.children().contains(kind)),
                    "{kind}"
                );
            }
        }
    }
}
