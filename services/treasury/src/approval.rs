//! Maker-checker approval: policies as rule blocks, evaluated purely.
//!
//! A policy is a list of rules. Every rule whose condition matches an instruction (amount
//! above a threshold, kind of instruction, first payment to a new creditor) adds its chain
//! of steps; each step needs N approvals from people holding a role, optionally from a named
//! set of M people (N of M). Steps are satisfied in order: an approval counts for the first
//! step not yet satisfied.
//!
//! The rules every evaluation enforces:
//! - the maker never approves (or rejects) their own instruction;
//! - nobody approves the same instruction twice;
//! - approvals expire after the policy's validity;
//! - an approval binds the instruction's content digest: any change voids it;
//! - a rejection ends the instruction.
//!
//! The functions here decide; storing approvals and the audit trail is the caller's job.

use chrono::{DateTime, Duration, Utc};
use ledger::Money;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::InstructionKind;
use crate::planner::TranchePolicy;

/// A user of the platform, as the API authenticates them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UserId(pub String);

/// A role a user holds (`treasury_checker`, `treasury_director`, …).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Role(pub String);

impl Role {
    pub fn new(name: &str) -> Role {
        Role(name.to_owned())
    }
}

/// When a rule applies. Every field set must match; an empty condition matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    /// Applies when the amount is strictly above this.
    #[serde(default)]
    pub amount_above: Option<Decimal>,
    /// Applies to these kinds only; empty means every kind.
    #[serde(default)]
    pub kinds: Vec<InstructionKind>,
    /// Applies only when the creditor has (`true`) or has not (`false`) been paid before.
    #[serde(default)]
    pub new_creditor: Option<bool>,
}

impl Condition {
    fn is_unconditional(&self) -> bool {
        self.amount_above.is_none() && self.kinds.is_empty() && self.new_creditor.is_none()
    }

    fn matches(&self, subject: &Subject) -> bool {
        self.amount_above
            .is_none_or(|threshold| subject.amount.amount() > threshold)
            && (self.kinds.is_empty() || self.kinds.contains(&subject.kind))
            && self.new_creditor.is_none_or(|n| n == subject.new_creditor)
    }
}

/// One link of an approval chain: `approvals` people with `role`, from `eligible` when named.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub role: Role,
    pub approvals: u32,
    /// The M people who may approve this step; empty means anyone holding the role.
    #[serde(default)]
    pub eligible: Vec<UserId>,
}

/// A rule block: a condition and the chain it requires.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub name: String,
    #[serde(default)]
    pub when: Condition,
    pub steps: Vec<Step>,
}

/// A checked approval policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PolicyConfig")]
pub struct ApprovalPolicy {
    rules: Vec<Rule>,
    valid_for_minutes: u32,
    tranches: TranchePolicy,
}

/// An approval policy as configured, before it is checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyConfig {
    pub rules: Vec<Rule>,
    /// How long an approval stays valid.
    pub valid_for_minutes: u32,
    /// Whether an approved payment above the 24x7 cap may go in tranches when only that
    /// rail is open; versions stored before this setting existed wait for the window.
    #[serde(default)]
    pub tranches: TranchePolicy,
}

/// Why a policy is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("a policy needs a rule without condition, so that every instruction needs approval")]
    NoBaseRule,
    #[error("rule {rule:?} has a step that needs no approval or no step at all")]
    EmptyStep { rule: String },
    #[error("rule {rule:?} needs {needed} approvals from only {eligible} eligible people")]
    TooFewEligible {
        rule: String,
        needed: u32,
        eligible: usize,
    },
    #[error("approvals must stay valid for a positive time")]
    NoValidity,
    #[error("tranches need a limit of 2 to {MAX_TRANCHES} transactions, not {0}")]
    TrancheLimit(u32),
}

/// The most tranches one instruction may be split into: one message carries them all.
pub const MAX_TRANCHES: u32 = 100;

impl ApprovalPolicy {
    /// The policy as configuration.
    pub fn config(&self) -> PolicyConfig {
        PolicyConfig {
            rules: self.rules.clone(),
            valid_for_minutes: self.valid_for_minutes,
            tranches: self.tranches,
        }
    }
}

impl TryFrom<PolicyConfig> for ApprovalPolicy {
    type Error = PolicyError;

    fn try_from(config: PolicyConfig) -> Result<Self, Self::Error> {
        ApprovalPolicy::new(config)
    }
}

impl ApprovalPolicy {
    pub fn new(config: PolicyConfig) -> Result<Self, PolicyError> {
        if config.valid_for_minutes == 0 {
            return Err(PolicyError::NoValidity);
        }
        if !config
            .rules
            .iter()
            .any(|r| r.when.is_unconditional() && !r.steps.is_empty())
        {
            return Err(PolicyError::NoBaseRule);
        }
        for rule in &config.rules {
            if rule.steps.is_empty() || rule.steps.iter().any(|s| s.approvals == 0) {
                return Err(PolicyError::EmptyStep {
                    rule: rule.name.clone(),
                });
            }
            for step in &rule.steps {
                if !step.eligible.is_empty() && step.eligible.len() < step.approvals as usize {
                    return Err(PolicyError::TooFewEligible {
                        rule: rule.name.clone(),
                        needed: step.approvals,
                        eligible: step.eligible.len(),
                    });
                }
            }
        }
        if let TranchePolicy::Allowed { max_tranches } = config.tranches
            && !(2..=MAX_TRANCHES).contains(&max_tranches)
        {
            return Err(PolicyError::TrancheLimit(max_tranches));
        }
        Ok(ApprovalPolicy {
            rules: config.rules,
            valid_for_minutes: config.valid_for_minutes,
            tranches: config.tranches,
        })
    }

    /// Whether a payment above the 24x7 cap may go in tranches.
    pub fn tranches(&self) -> TranchePolicy {
        self.tranches
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The chain an instruction needs: the steps of every matching rule, in rule order.
    pub fn chain(&self, subject: &Subject) -> Vec<&Step> {
        self.rules
            .iter()
            .filter(|r| r.when.matches(subject))
            .flat_map(|r| r.steps.iter())
            .collect()
    }
}

/// The SHA-256 of an instruction's approvable content, hex encoded.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ContentDigest(pub String);

impl ContentDigest {
    /// The digest of the content's JSON form (field order is the struct's, so stable).
    pub fn of(content: &impl Serialize) -> ContentDigest {
        let bytes = serde_json::to_vec(content).expect("instruction content serialises");
        let hash = Sha256::digest(&bytes);
        ContentDigest(hash.iter().map(|b| format!("{b:02x}")).collect())
    }
}

/// What the policy looks at in an instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    pub kind: InstructionKind,
    pub amount: Money,
    /// Whether no earlier instruction has paid this creditor account.
    pub new_creditor: bool,
    pub maker: UserId,
    pub digest: ContentDigest,
}

/// A recorded approval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub approver: UserId,
    /// The step of the chain it counts for.
    pub step: usize,
    pub role: Role,
    pub digest: ContentDigest,
    pub approved_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A recorded rejection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub by: UserId,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// Where an instruction stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ApprovalState {
    Approved,
    /// Waiting for `need - have` more approvals by `role` at `step`.
    Pending {
        step: usize,
        role: Role,
        have: u32,
        need: u32,
    },
    Rejected {
        by: UserId,
        reason: String,
    },
}

/// Why an approval or rejection is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalError {
    #[error("the maker cannot approve or reject their own instruction")]
    SelfApproval,
    #[error("{0:?} has approved this instruction already")]
    AlreadyApprovedBy(UserId),
    #[error("this step needs the role {0:?}")]
    MissingRole(Role),
    #[error("this step is reserved to named approvers")]
    NotEligible,
    #[error("the instruction is approved already")]
    AlreadyApproved,
    #[error("the instruction was rejected")]
    Rejected,
    #[error("a rejection needs a reason")]
    NoReason,
}

/// Approvals that still count: the same content, not expired.
fn valid<'a>(
    subject: &'a Subject,
    approvals: &'a [Approval],
    now: DateTime<Utc>,
) -> impl Iterator<Item = &'a Approval> {
    approvals
        .iter()
        .filter(move |a| a.digest == subject.digest && a.expires_at > now)
}

/// Where the instruction stands now.
pub fn evaluate(
    policy: &ApprovalPolicy,
    subject: &Subject,
    approvals: &[Approval],
    rejection: Option<&Rejection>,
    now: DateTime<Utc>,
) -> ApprovalState {
    if let Some(r) = rejection {
        return ApprovalState::Rejected {
            by: r.by.clone(),
            reason: r.reason.clone(),
        };
    }
    for (index, step) in policy.chain(subject).into_iter().enumerate() {
        let have = valid(subject, approvals, now)
            .filter(|a| a.step == index)
            .count() as u32;
        if have < step.approvals {
            return ApprovalState::Pending {
                step: index,
                role: step.role.clone(),
                have,
                need: step.approvals,
            };
        }
    }
    ApprovalState::Approved
}

/// Decides whether `approver` may approve now and, if so, the approval to record.
pub fn approve(
    policy: &ApprovalPolicy,
    subject: &Subject,
    approvals: &[Approval],
    rejection: Option<&Rejection>,
    approver: &UserId,
    roles: &[Role],
    now: DateTime<Utc>,
) -> Result<Approval, ApprovalError> {
    if approver == &subject.maker {
        return Err(ApprovalError::SelfApproval);
    }
    let step = match evaluate(policy, subject, approvals, rejection, now) {
        ApprovalState::Rejected { .. } => return Err(ApprovalError::Rejected),
        ApprovalState::Approved => return Err(ApprovalError::AlreadyApproved),
        ApprovalState::Pending { step, .. } => step,
    };
    if valid(subject, approvals, now).any(|a| &a.approver == approver) {
        return Err(ApprovalError::AlreadyApprovedBy(approver.clone()));
    }
    let required = policy.chain(subject)[step];
    if !roles.contains(&required.role) {
        return Err(ApprovalError::MissingRole(required.role.clone()));
    }
    if !required.eligible.is_empty() && !required.eligible.contains(approver) {
        return Err(ApprovalError::NotEligible);
    }
    Ok(Approval {
        approver: approver.clone(),
        step,
        role: required.role.clone(),
        digest: subject.digest.clone(),
        approved_at: now,
        expires_at: now + Duration::minutes(i64::from(policy.valid_for_minutes)),
    })
}

/// Decides whether `by` may reject: anyone but the maker who holds a role of the chain.
pub fn reject(
    policy: &ApprovalPolicy,
    subject: &Subject,
    rejection: Option<&Rejection>,
    by: &UserId,
    roles: &[Role],
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Rejection, ApprovalError> {
    if by == &subject.maker {
        return Err(ApprovalError::SelfApproval);
    }
    if rejection.is_some() {
        return Err(ApprovalError::Rejected);
    }
    if reason.trim().is_empty() {
        return Err(ApprovalError::NoReason);
    }
    let chain = policy.chain(subject);
    if let Some(first) = chain.first()
        && !chain.iter().any(|s| roles.contains(&s.role))
    {
        return Err(ApprovalError::MissingRole(first.role.clone()));
    }
    Ok(Rejection {
        by: by.clone(),
        reason: reason.to_owned(),
        at: now,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger::Currency;
    use rust_decimal_macros::dec;

    fn user(name: &str) -> UserId {
        UserId(name.to_owned())
    }

    fn checker() -> Role {
        Role::new("treasury_checker")
    }

    fn director() -> Role {
        Role::new("treasury_director")
    }

    /// One checker for everything; above 10,000,000 CNY two of three named directors; a
    /// first payout to a new creditor also needs the head of treasury.
    fn policy() -> ApprovalPolicy {
        ApprovalPolicy::new(PolicyConfig {
            rules: vec![
                Rule {
                    name: "every instruction".into(),
                    when: Condition::default(),
                    steps: vec![Step {
                        role: checker(),
                        approvals: 1,
                        eligible: vec![],
                    }],
                },
                Rule {
                    name: "large amounts".into(),
                    when: Condition {
                        amount_above: Some(dec!(10000000)),
                        ..Condition::default()
                    },
                    steps: vec![Step {
                        role: director(),
                        approvals: 2,
                        eligible: vec![user("zhao"), user("qian"), user("sun")],
                    }],
                },
                Rule {
                    name: "first payout to a new creditor".into(),
                    when: Condition {
                        kinds: vec![InstructionKind::Payout],
                        new_creditor: Some(true),
                        ..Condition::default()
                    },
                    steps: vec![Step {
                        role: Role::new("head_of_treasury"),
                        approvals: 1,
                        eligible: vec![],
                    }],
                },
            ],
            valid_for_minutes: 240,
            tranches: TranchePolicy::Never,
        })
        .unwrap()
    }

    fn subject(amount: Decimal, new_creditor: bool) -> Subject {
        Subject {
            kind: InstructionKind::Payout,
            amount: Money::new(amount, Currency::CNY).unwrap(),
            new_creditor,
            maker: user("maker"),
            digest: ContentDigest::of(&("payout", amount.to_string())),
        }
    }

    fn now() -> DateTime<Utc> {
        "2026-11-24T08:00:00Z".parse().unwrap()
    }

    #[test]
    fn the_maker_cannot_approve_their_own_instruction() {
        let s = subject(dec!(1000), false);
        let err = approve(
            &policy(),
            &s,
            &[],
            None,
            &user("maker"),
            &[checker()],
            now(),
        );
        assert_eq!(err, Err(ApprovalError::SelfApproval));
        let err = reject(
            &policy(),
            &s,
            None,
            &user("maker"),
            &[checker()],
            "no",
            now(),
        );
        assert_eq!(err, Err(ApprovalError::SelfApproval));
    }

    #[test]
    fn one_checker_approves_a_small_payout() {
        let (p, s) = (policy(), subject(dec!(1000), false));
        let a = approve(&p, &s, &[], None, &user("li"), &[checker()], now()).unwrap();
        assert_eq!(evaluate(&p, &s, &[a], None, now()), ApprovalState::Approved);
    }

    #[test]
    fn above_the_threshold_two_of_three_directors_follow_the_checker() {
        let (p, s) = (policy(), subject(dec!(30000000), false));
        let mut approvals = vec![];
        // A director cannot jump the chain: the checker's step comes first.
        assert_eq!(
            approve(
                &p,
                &s,
                &approvals,
                None,
                &user("zhao"),
                &[director()],
                now()
            ),
            Err(ApprovalError::MissingRole(checker()))
        );
        approvals
            .push(approve(&p, &s, &approvals, None, &user("li"), &[checker()], now()).unwrap());
        assert_eq!(
            evaluate(&p, &s, &approvals, None, now()),
            ApprovalState::Pending {
                step: 1,
                role: director(),
                have: 0,
                need: 2
            }
        );
        // A director outside the named three is not eligible.
        assert_eq!(
            approve(
                &p,
                &s,
                &approvals,
                None,
                &user("zhou"),
                &[director()],
                now()
            ),
            Err(ApprovalError::NotEligible)
        );
        approvals.push(
            approve(
                &p,
                &s,
                &approvals,
                None,
                &user("zhao"),
                &[director()],
                now(),
            )
            .unwrap(),
        );
        assert_eq!(
            approve(
                &p,
                &s,
                &approvals,
                None,
                &user("zhao"),
                &[director()],
                now()
            ),
            Err(ApprovalError::AlreadyApprovedBy(user("zhao")))
        );
        assert!(matches!(
            evaluate(&p, &s, &approvals, None, now()),
            ApprovalState::Pending {
                have: 1,
                need: 2,
                ..
            }
        ));
        approvals
            .push(approve(&p, &s, &approvals, None, &user("sun"), &[director()], now()).unwrap());
        assert_eq!(
            evaluate(&p, &s, &approvals, None, now()),
            ApprovalState::Approved
        );
        assert_eq!(
            approve(
                &p,
                &s,
                &approvals,
                None,
                &user("qian"),
                &[director()],
                now()
            ),
            Err(ApprovalError::AlreadyApproved)
        );
    }

    #[test]
    fn at_the_threshold_the_directors_are_not_needed() {
        let (p, s) = (policy(), subject(dec!(10000000), false));
        assert_eq!(p.chain(&s).len(), 1);
    }

    #[test]
    fn a_first_payout_to_a_new_creditor_needs_the_head_of_treasury() {
        let p = policy();
        let s = subject(dec!(1000), true);
        let chain: Vec<&str> = p.chain(&s).iter().map(|s| s.role.0.as_str()).collect();
        assert_eq!(chain, vec!["treasury_checker", "head_of_treasury"]);
        let mut transfer = subject(dec!(1000), true);
        transfer.kind = InstructionKind::SubAccountTransfer;
        assert_eq!(p.chain(&transfer).len(), 1, "the rule is for payouts only");
    }

    #[test]
    fn approvals_expire() {
        let (p, s) = (policy(), subject(dec!(1000), false));
        let a = approve(&p, &s, &[], None, &user("li"), &[checker()], now()).unwrap();
        let later = now() + Duration::minutes(240);
        assert!(matches!(
            evaluate(&p, &s, std::slice::from_ref(&a), None, later),
            ApprovalState::Pending { have: 0, .. }
        ));
        // The same checker may approve again once their approval has lapsed.
        assert!(approve(&p, &s, &[a], None, &user("li"), &[checker()], later).is_ok());
    }

    #[test]
    fn any_change_after_approval_voids_it() {
        let p = policy();
        let s = subject(dec!(1000), false);
        let a = approve(&p, &s, &[], None, &user("li"), &[checker()], now()).unwrap();
        let mut changed = s.clone();
        changed.digest = ContentDigest::of(&("payout", "1000.01"));
        assert!(matches!(
            evaluate(&p, &changed, &[a], None, now()),
            ApprovalState::Pending { have: 0, .. }
        ));
    }

    #[test]
    fn a_rejection_ends_the_instruction() {
        let (p, s) = (policy(), subject(dec!(1000), false));
        assert_eq!(
            reject(&p, &s, None, &user("li"), &[checker()], " ", now()),
            Err(ApprovalError::NoReason)
        );
        assert_eq!(
            reject(
                &p,
                &s,
                None,
                &user("li"),
                &[Role::new("cashier")],
                "wrong payee",
                now()
            ),
            Err(ApprovalError::MissingRole(checker()))
        );
        let r = reject(
            &p,
            &s,
            None,
            &user("li"),
            &[checker()],
            "wrong payee",
            now(),
        )
        .unwrap();
        assert!(matches!(
            evaluate(&p, &s, &[], Some(&r), now()),
            ApprovalState::Rejected { .. }
        ));
        assert_eq!(
            approve(&p, &s, &[], Some(&r), &user("wang"), &[checker()], now()),
            Err(ApprovalError::Rejected)
        );
    }

    #[test]
    fn unsound_policies_are_refused() {
        let base = Rule {
            name: "base".into(),
            when: Condition::default(),
            steps: vec![Step {
                role: checker(),
                approvals: 1,
                eligible: vec![],
            }],
        };
        let only_large = Rule {
            name: "large".into(),
            when: Condition {
                amount_above: Some(dec!(1)),
                ..Condition::default()
            },
            steps: vec![Step {
                role: director(),
                approvals: 3,
                eligible: vec![user("a"), user("b")],
            }],
        };
        let config = |rules: Vec<Rule>, minutes| PolicyConfig {
            rules,
            valid_for_minutes: minutes,
            tranches: TranchePolicy::Never,
        };
        assert_eq!(
            ApprovalPolicy::new(config(vec![only_large.clone()], 60)),
            Err(PolicyError::NoBaseRule)
        );
        assert!(matches!(
            ApprovalPolicy::new(config(vec![base.clone(), only_large], 60)),
            Err(PolicyError::TooFewEligible {
                needed: 3,
                eligible: 2,
                ..
            })
        ));
        assert_eq!(
            ApprovalPolicy::new(config(vec![base.clone()], 0)),
            Err(PolicyError::NoValidity)
        );
        let json = serde_json::to_string(&config(vec![base.clone()], 60)).unwrap();
        assert!(serde_json::from_str::<ApprovalPolicy>(&json).is_ok());
        assert!(
            serde_json::from_str::<ApprovalPolicy>(r#"{"rules": [], "valid_for_minutes": 5}"#)
                .is_err()
        );
        let mut one_tranche = config(vec![base.clone()], 60);
        one_tranche.tranches = TranchePolicy::Allowed { max_tranches: 1 };
        assert_eq!(
            ApprovalPolicy::new(one_tranche),
            Err(PolicyError::TrancheLimit(1))
        );
    }

    #[test]
    fn a_policy_stored_before_tranches_existed_waits_for_the_window() {
        let old = r#"{"rules": [{"name": "all", "when": {}, "steps": [
            {"role": "treasury_checker", "approvals": 1}]}], "valid_for_minutes": 60}"#;
        let policy: ApprovalPolicy = serde_json::from_str(old).unwrap();
        assert_eq!(policy.tranches(), TranchePolicy::Never);
        let json = serde_json::to_value(policy.config()).unwrap();
        assert_eq!(json["tranches"], serde_json::json!({"kind": "wait"}));
        let allowed = old.replace(
            r#""valid_for_minutes": 60"#,
            r#""valid_for_minutes": 60, "tranches": {"kind": "allowed", "max_tranches": 8}"#,
        );
        let policy: ApprovalPolicy = serde_json::from_str(&allowed).unwrap();
        assert_eq!(
            policy.tranches(),
            TranchePolicy::Allowed { max_tranches: 8 }
        );
    }
}
