//! The payment state machine on its own: every event sequence keeps the money rules.

use chrono::{TimeZone, Utc};
use ledger::money::{Currency, Money};
use payments::channels::{
    ChannelError, ChargeResult, PaymentNotification, QueryResult, ReverseResult,
};
use payments::flow::{
    AttemptOutcome, FlowPolicy, Payment, PaymentCommand, PaymentEvent, PaymentInput, PaymentState,
};
use payments::model::{ChannelId, Method};
use payments::routing::{Candidate, RouteDecision};
use proptest::prelude::*;

const POLICY: FlowPolicy = FlowPolicy {
    first_query_ms: 1_000,
    max_query_ms: 30_000,
    max_queries: 4,
    max_reversals: 3,
    reversal_retry_ms: 5_000,
    max_attempts: 3,
};

fn cny(fen: i64) -> Money {
    Money::from_minor(fen, Currency::CNY)
}

fn decision(channels: &[&str]) -> RouteDecision {
    RouteDecision {
        at: Utc.with_ymd_and_hms(2026, 11, 25, 2, 0, 0).unwrap(),
        method: Method::WechatPayCode,
        amount: cny(10_000),
        candidates: channels
            .iter()
            .map(|c| Candidate {
                channel: ChannelId::new(*c).unwrap(),
                priority: 1,
                fee: cny(38),
                success_per_mille: 1000,
                probe: false,
            })
            .collect(),
        excluded: vec![],
    }
}

fn fresh() -> Payment {
    Payment::new(PaymentInput {
        payment_no: "P".into(),
        method: Method::WechatPayCode,
        amount: cny(10_000),
    })
}

fn unknown() -> Result<ChargeResult, ChannelError> {
    Err(ChannelError::Unknown {
        reason: "timeout".into(),
    })
}

#[test]
fn a_timeout_is_queried_never_failed_over_and_the_found_charge_posts_once() {
    let mut p = fresh();
    let c = p.apply(
        &PaymentEvent::Routed {
            decision: decision(&["a", "b"]),
        },
        &POLICY,
    );
    assert!(matches!(&c[0], PaymentCommand::Submit { channel, .. } if channel.as_str() == "a"));
    let c = p.apply(
        &PaymentEvent::ChargeAnswered {
            attempt: 0,
            result: unknown(),
        },
        &POLICY,
    );
    assert_eq!(
        c,
        vec![PaymentCommand::ScheduleQuery {
            attempt: 0,
            after_ms: 1_000
        }]
    );
    // Still unknown: the query backs off, doubling up to the cap.
    p.apply(&PaymentEvent::QueryDue { attempt: 0 }, &POLICY);
    let c = p.apply(
        &PaymentEvent::QueryAnswered {
            attempt: 0,
            result: Ok(QueryResult::Pending),
        },
        &POLICY,
    );
    assert_eq!(
        c,
        vec![PaymentCommand::ScheduleQuery {
            attempt: 0,
            after_ms: 2_000
        }]
    );
    p.apply(&PaymentEvent::QueryDue { attempt: 0 }, &POLICY);
    let found = Ok(QueryResult::Succeeded {
        channel_txn_id: "T1".into(),
        amount: cny(10_000),
    });
    let c = p.apply(
        &PaymentEvent::QueryAnswered {
            attempt: 0,
            result: found.clone(),
        },
        &POLICY,
    );
    assert_eq!(c.len(), 2);
    assert!(matches!(&c[0], PaymentCommand::PostSale { amount, .. } if *amount == cny(10_000)));
    assert_eq!(p.attempts.len(), 1, "b was never tried");
    // A late duplicate answer does nothing.
    assert!(
        p.apply(
            &PaymentEvent::QueryAnswered {
                attempt: 0,
                result: found
            },
            &POLICY
        )
        .is_empty()
    );
}

#[test]
fn a_channel_that_reports_no_charge_after_a_timeout_is_closed_and_confirmed_before_failover() {
    let mut p = fresh();
    p.apply(
        &PaymentEvent::Routed {
            decision: decision(&["a", "b"]),
        },
        &POLICY,
    );
    p.apply(
        &PaymentEvent::ChargeAnswered {
            attempt: 0,
            result: unknown(),
        },
        &POLICY,
    );
    p.apply(&PaymentEvent::QueryDue { attempt: 0 }, &POLICY);
    let none = Ok(QueryResult::NotCharged {
        reason: "ORDER_NOT_EXIST".into(),
    });
    let c = p.apply(
        &PaymentEvent::QueryAnswered {
            attempt: 0,
            result: none.clone(),
        },
        &POLICY,
    );
    assert!(matches!(c[0], PaymentCommand::Reverse { attempt: 0, .. }));
    let c = p.apply(
        &PaymentEvent::ReverseAnswered {
            attempt: 0,
            result: Ok(ReverseResult::Reversed),
        },
        &POLICY,
    );
    assert!(
        matches!(c[0], PaymentCommand::Query { attempt: 0, .. }),
        "confirm first"
    );
    let c = p.apply(
        &PaymentEvent::QueryAnswered {
            attempt: 0,
            result: Ok(QueryResult::Reversed),
        },
        &POLICY,
    );
    assert!(
        matches!(&c[0], PaymentCommand::Submit { attempt: 1, channel, .. } if channel.as_str() == "b")
    );
}

#[test]
fn a_reversal_that_never_confirms_goes_to_the_exception_queue() {
    let mut p = fresh();
    p.apply(
        &PaymentEvent::Routed {
            decision: decision(&["a"]),
        },
        &POLICY,
    );
    p.apply(
        &PaymentEvent::ChargeAnswered {
            attempt: 0,
            result: unknown(),
        },
        &POLICY,
    );
    p.apply(&PaymentEvent::Abandoned, &POLICY);
    for _ in 0..POLICY.max_reversals {
        let retry = Err(ChannelError::Unknown {
            reason: "timeout".into(),
        });
        p.apply(
            &PaymentEvent::ReverseAnswered {
                attempt: 0,
                result: retry,
            },
            &POLICY,
        );
        p.apply(&PaymentEvent::ReverseDue { attempt: 0 }, &POLICY);
    }
    assert!(
        matches!(p.state, PaymentState::NeedsAttention { .. }),
        "{:?}",
        p.state
    );
}

#[test]
fn a_charge_for_another_amount_is_given_back() {
    let mut p = fresh();
    p.apply(
        &PaymentEvent::Routed {
            decision: decision(&["a", "b"]),
        },
        &POLICY,
    );
    p.apply(
        &PaymentEvent::ChargeAnswered {
            attempt: 0,
            result: unknown(),
        },
        &POLICY,
    );
    p.apply(&PaymentEvent::QueryDue { attempt: 0 }, &POLICY);
    let wrong = Ok(QueryResult::Succeeded {
        channel_txn_id: "T".into(),
        amount: cny(1_000),
    });
    let c = p.apply(
        &PaymentEvent::QueryAnswered {
            attempt: 0,
            result: wrong,
        },
        &POLICY,
    );
    assert!(matches!(c[0], PaymentCommand::Reverse { .. }));
    assert!(
        !c.iter()
            .any(|c| matches!(c, PaymentCommand::PostSale { .. }))
    );
}

#[test]
fn a_charge_that_lands_after_the_till_gave_up_is_reversed_not_booked() {
    let mut p = fresh();
    p.apply(
        &PaymentEvent::Routed {
            decision: decision(&["a", "b"]),
        },
        &POLICY,
    );
    assert!(
        p.apply(&PaymentEvent::Abandoned, &POLICY).is_empty(),
        "the answer decides"
    );
    let charged = Ok(ChargeResult::Succeeded {
        channel_txn_id: "T".into(),
        paid_at: None,
    });
    let c = p.apply(
        &PaymentEvent::ChargeAnswered {
            attempt: 0,
            result: charged,
        },
        &POLICY,
    );
    assert!(matches!(c[0], PaymentCommand::Reverse { attempt: 0, .. }));
    p.apply(
        &PaymentEvent::ReverseAnswered {
            attempt: 0,
            result: Ok(ReverseResult::Reversed),
        },
        &POLICY,
    );
    let c = p.apply(
        &PaymentEvent::QueryAnswered {
            attempt: 0,
            result: Ok(QueryResult::Reversed),
        },
        &POLICY,
    );
    assert_eq!(c, vec![PaymentCommand::Finish]);
    assert_eq!(p.state, PaymentState::Reversed);
    assert_eq!(p.attempts.len(), 1, "no failover after the till gave up");
}

#[test]
fn no_route_fails_at_once() {
    let mut p = fresh();
    let c = p.apply(
        &PaymentEvent::Routed {
            decision: decision(&[]),
        },
        &POLICY,
    );
    assert_eq!(c, vec![PaymentCommand::Finish]);
    assert!(matches!(&p.state, PaymentState::Failed { reason } if reason.contains("no channel")));
}

fn any_event() -> impl Strategy<Value = PaymentEvent> {
    let attempt = 0_usize..3;
    let charge = prop_oneof![
        Just(Ok(ChargeResult::Succeeded {
            channel_txn_id: "T".into(),
            paid_at: None
        })),
        Just(Ok(ChargeResult::Declined {
            code: "NOTENOUGH".into(),
            message: String::new()
        })),
        Just(Ok(ChargeResult::Pending {
            reason: "USERPAYING".into()
        })),
        Just(Err(ChannelError::NotSent {
            reason: "503".into()
        })),
        Just(Err(ChannelError::Unknown {
            reason: "timeout".into()
        })),
    ];
    let query = prop_oneof![
        Just(Ok(QueryResult::Succeeded {
            channel_txn_id: "T".into(),
            amount: cny(10_000)
        })),
        Just(Ok(QueryResult::Pending)),
        Just(Ok(QueryResult::NotCharged {
            reason: "CLOSED".into()
        })),
        Just(Ok(QueryResult::Reversed)),
        Just(Err(ChannelError::Unknown {
            reason: "timeout".into()
        })),
    ];
    let reverse = prop_oneof![
        Just(Ok(ReverseResult::Reversed)),
        Just(Ok(ReverseResult::RetryLater {
            reason: "busy".into()
        })),
        Just(Err(ChannelError::Unknown {
            reason: "timeout".into()
        })),
    ];
    prop_oneof![
        (attempt.clone(), charge)
            .prop_map(|(attempt, result)| PaymentEvent::ChargeAnswered { attempt, result }),
        attempt
            .clone()
            .prop_map(|attempt| PaymentEvent::QueryDue { attempt }),
        (attempt.clone(), query)
            .prop_map(|(attempt, result)| PaymentEvent::QueryAnswered { attempt, result }),
        attempt
            .clone()
            .prop_map(|attempt| PaymentEvent::ReverseDue { attempt }),
        (attempt, reverse)
            .prop_map(|(attempt, result)| PaymentEvent::ReverseAnswered { attempt, result }),
        (0_u8..3, 1_u8..4).prop_map(|(n, k)| PaymentEvent::Notified {
            notification: PaymentNotification {
                notification_id: format!("N{n}"),
                out_trade_no: format!("P-{k}"),
                channel_txn_id: "T".into(),
                amount: cny(10_000),
                succeeded: true,
            },
        }),
        Just(PaymentEvent::Abandoned),
    ]
}

proptest! {
    /// Whatever arrives in whatever order: a new channel is tried only after every earlier
    /// attempt certainly took nothing, the sale is posted at most once and only when
    /// succeeded, and a finished payment stays finished.
    #[test]
    fn no_event_sequence_can_charge_twice_or_post_twice(events in prop::collection::vec(any_event(), 0..40)) {
        let mut p = fresh();
        p.apply(&PaymentEvent::Routed { decision: decision(&["a", "b", "c"]) }, &POLICY);
        let mut posts = 0;
        let mut finished: Option<PaymentState> = None;
        for event in &events {
            let before = p.attempts.clone();
            let commands = p.apply(event, &POLICY);
            for command in &commands {
                match command {
                    PaymentCommand::Submit { attempt, .. } => {
                        prop_assert_eq!(*attempt, before.len());
                        for earlier in &p.attempts[..*attempt] {
                            let certain = matches!(earlier.outcome, AttemptOutcome::NotCharged { .. });
                            prop_assert!(certain, "failover over an open attempt: {:?}", p.attempts);
                        }
                    }
                    PaymentCommand::PostSale { .. } => posts += 1,
                    _ => {}
                }
            }
            if let Some(state) = &finished {
                prop_assert_eq!(state, &p.state, "a final state moved");
                prop_assert!(commands.is_empty());
            } else if p.state.is_final() {
                finished = Some(p.state.clone());
            }
        }
        prop_assert!(posts <= 1);
        prop_assert_eq!(posts == 1, matches!(p.state, PaymentState::Succeeded { .. }));
    }
}
