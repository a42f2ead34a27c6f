//! What a publisher outside wharf can put in wharf's own headers and in the
//! reply address (issue 17, defects 9 and 10): a value wharf cannot use is
//! refused at once with a reason that says so, the same on every broker,
//! and never reported as a failure that did not happen.

use super::{Order, order};
use crate::harness::{Harness, Log, until};
use wharf::{Context, DeadLetter, DeadLetterReason, Message, RouteOptions};

/// `wharf-attempt` means "attempts already made" (a copy wharf made, or a
/// tool that moves messages): a whole number from 0 to 2^32 − 1 is taken
/// as such, anything else is malformed input; attempts already used up
/// are dead-lettered without a run, as such and not as deliveries that
/// died.
pub async fn outside_wharf_attempt_is_read_as_attempts_made_or_refused(h: Harness) {
    let queue = h.queue("outside-attempt");
    let seen = Log::new();
    let log = seen.clone();
    let record = move |ctx: Context, o: Order| {
        let log = log.clone();
        async move { log.push((o.id, ctx.attempt())) }
    };
    let options = RouteOptions::new().max_attempts(5);
    let running = h.app().route_with(&queue, record, options).start().await.unwrap();
    let with_attempt = |id: u64, value: &str| {
        Message::json(&order(id))
            .unwrap()
            .with_header("wharf-attempt", value)
    };
    let client = h.client();
    // Attempts left: run as the next attempt.
    client.send(&queue, with_attempt(1, "3")).await.unwrap();
    client.send(&queue, with_attempt(2, "0")).await.unwrap();
    // Attempts used up.
    client.send(&queue, with_attempt(3, "999")).await.unwrap();
    client.send(&queue, with_attempt(4, "5")).await.unwrap();
    client
        .send(&queue, with_attempt(5, &u32::MAX.to_string()))
        .await
        .unwrap();
    // Not a number of attempts.
    let malformed = ["abc", "9223372036854775807", "4294967296", "-1", "", "2.5"];
    for (i, value) in malformed.iter().enumerate() {
        client
            .send(&queue, with_attempt(10 + i as u64, value))
            .await
            .unwrap();
    }
    let stats = until(&running, &queue, |s| {
        s.acked == 2 && s.dead_lettered == 3 && s.rejected == malformed.len() as u64
    })
    .await;
    assert_eq!(stats.retried, 0, "{stats:?}");
    let mut ran = seen.all();
    ran.sort();
    assert_eq!(
        ran,
        vec![(1, 4), (2, 1)],
        "only the messages with attempts left ran"
    );
    let letters = h.dead_letters(&queue, 3 + malformed.len()).await;
    let id_of = |letter: &DeadLetter| serde_json::from_slice::<Order>(&letter.message.body).unwrap().id;
    for letter in &letters {
        let id = id_of(letter);
        let sent = letter.message.header("wharf-attempt").map(str::to_owned);
        let explanation = letter.error_message().unwrap_or_default().to_owned();
        assert!(
            !explanation.contains("died") && !explanation.contains("without being settled"),
            "order {id}: no made-up failure: {explanation}"
        );
        assert_ne!(letter.error_kind(), Some("redelivered"), "order {id}");
        if id < 10 {
            assert_eq!(letter.reason(), Some(DeadLetterReason::MaxAttempts), "order {id}");
            assert_eq!(letter.error_kind(), Some("attempts-used-up"), "order {id}");
            let carried = match id {
                3 => "999",
                4 => "5",
                _ => "4294967295",
            };
            assert!(
                explanation.contains(&format!("wharf-attempt {carried}"))
                    && explanation.contains("max_attempts is 5"),
                "order {id}: {explanation}"
            );
            assert_eq!(
                letter.attempts().map(|n| n.to_string()).as_deref(),
                Some(carried),
                "order {id}: the attempts made are the ones it came with ({sent:?})"
            );
        } else {
            assert_eq!(
                letter.reason(),
                Some(DeadLetterReason::InvalidHeader),
                "order {id}"
            );
            assert_eq!(letter.error_kind(), Some("invalid-header"), "order {id}");
            assert!(explanation.contains("wharf-attempt"), "order {id}: {explanation}");
        }
    }
    running.shutdown().await;
}

/// A reply address that can never work (empty on every broker; on NATS a
/// subject with a space, an empty token or a wildcard) is refused before
/// the handler runs, with reason `reply`, and not retried; a usable one
/// still gets its reply.
pub async fn unusable_reply_address_is_dead_lettered_without_a_run(h: Harness) {
    let queue = h.queue("bad-reply-to");
    let replies = h.queue("bad-reply-to-replies");
    let ran = Log::new();
    let log = ran.clone();
    let handler = move |o: Order| {
        let log = log.clone();
        async move {
            log.push(o.id);
            Ok::<u64, wharf::Error>(o.id)
        }
    };
    let got = Log::new();
    let replies_log = got.clone();
    let collect = move |id: u64| {
        let log = replies_log.clone();
        async move { log.push(id) }
    };
    let running = h
        .app()
        .route(&queue, handler)
        .route(&replies, collect)
        .start()
        .await
        .unwrap();
    let mut unusable = vec![String::new()];
    if h.broker.kind() == "nats" {
        unusable.extend(["has space", "a..b", "wharf.*.x", "tail.>", ".lead", "trail."].map(String::from));
    }
    for (i, address) in unusable.iter().enumerate() {
        let bad = Message::json(&order(100 + i as u64))
            .unwrap()
            .with_reply_to(address.as_str())
            .with_correlation_id(format!("c-{i}"));
        h.client().send(&queue, bad).await.unwrap();
    }
    let good = Message::json(&order(1))
        .unwrap()
        .with_reply_to(&replies)
        .with_correlation_id("c-good");
    h.client().send(&queue, good).await.unwrap();
    let stats = until(&running, &queue, |s| {
        s.acked == 1 && s.rejected == unusable.len() as u64
    })
    .await;
    assert_eq!((stats.retried, stats.dead_lettered), (0, 0), "{stats:?}");
    until(&running, &replies, |s| s.acked == 1).await;
    assert_eq!(got.all(), vec![1], "the usable address got its reply");
    assert_eq!(
        ran.all(),
        vec![1],
        "the handler never ran for an unusable address"
    );
    let letters = h.dead_letters(&queue, unusable.len()).await;
    for letter in letters {
        assert_eq!(letter.reason(), Some(DeadLetterReason::Reply), "{letter:?}");
        assert_eq!(letter.error_kind(), Some("reply"));
        assert_eq!(letter.attempts(), Some(1), "{letter:?}");
        let explanation = letter.error_message().unwrap();
        assert!(explanation.contains("reply address"), "{explanation}");
    }
    running.shutdown().await;
}
