//! The behaviour suite: every wharf semantic, written once and run against
//! every transport. A transport is correct when this whole suite passes on it.
//!
//! `cargo test --all-features` runs it on `memory` and on each broker
//! transport compiled in, and on each broker again with every route bound
//! to an exchange or subscribed to an event subject (`bound.rs`). Broker cases skip loudly when their broker is not
//! reachable, and fail instead when `CI=true`.

mod bound;
mod cases;
mod faults;
mod harness;
// The skip policy and the broker start-up, shared with the crate's tests.
#[path = "../../src/test_support.rs"]
mod test_support;

/// Expands to one `#[tokio::test]` per case for a transport.
macro_rules! transport_suite {
    ($transport:ident, [$($case:ident),* $(,)?]) => {
        mod $transport {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(harness) = crate::harness::Harness::connect(stringify!($transport)).await else {
                        return;
                    };
                    let cleanup = harness.cleanup();
                    crate::cases::$case(harness).await;
                    cleanup.run().await;
                }
            )*
        }
    };
}

/// The list of cases, handed to `transport_suite!` for each transport.
macro_rules! for_every_case {
    ($transport:ident) => {
        transport_suite!(
            $transport,
            [
                // payloads and codecs
                json_payload_is_decoded_and_acked,
                msgpack_payload_is_decoded_by_content_type,
                extractors_see_metadata_state_and_attempt,
                concurrency_limit_is_respected,
                handlers_that_block_still_run_in_parallel,
                // request/reply
                request_gets_typed_reply,
                reply_uses_the_request_content_type,
                reply_goes_to_a_named_queue_with_the_correlation_id,
                many_requests_in_flight_on_one_client,
                every_client_of_a_broker_shares_one_reply_consumer,
                error_reply_surfaces_as_typed_error_not_timeout,
                request_without_responder_times_out,
                unit_handler_replies_null,
                trace_context_follows_a_request_through_workers,
                // retries and dead letters
                retryable_error_is_retried_then_succeeds,
                retry_waits_without_holding_a_slot,
                backoff_delay_is_respected,
                exhausted_retries_are_dead_lettered_with_reasons,
                permanent_error_is_dead_lettered_at_once,
                middleware_refuses_replies_and_lets_through,
                panic_counts_as_a_failed_attempt,
                timeout_counts_as_a_failed_attempt,
                dead_letters_can_be_listed_replayed_and_purged,
                // bad input
                garbage_bytes_are_dead_lettered_byte_for_byte,
                unknown_content_type_is_dead_lettered,
                oversized_body_is_dead_lettered,
                non_numeric_sequence_is_dead_lettered,
                session_without_sequence_is_dead_lettered,
                priority_out_of_range_is_dead_lettered_or_refused,
                bad_request_gets_an_error_reply,
                // idempotency
                duplicate_is_acked_without_running_the_handler,
                duplicate_request_gets_the_original_reply,
                concurrent_duplicates_do_not_both_run,
                failed_attempt_releases_the_idempotency_key,
                idempotency_keys_are_scoped_per_queue,
                // sessions
                session_messages_run_in_sequence_order,
                one_session_runs_one_message_at_a_time,
                different_sessions_run_concurrently,
                stale_and_repeated_sequence_numbers_are_acked_and_counted,
                gap_timeout_dead_letters_the_waiting_messages,
                gap_timeout_skip_ahead_continues_with_the_next_waiting,
                early_arrivals_beyond_the_buffer_go_back_to_the_broker,
                retried_session_message_blocks_only_its_session,
                dead_lettered_session_message_lets_the_session_continue,
                session_state_checkpoint_is_kept_between_messages,
                replayed_session_dead_letter_runs_again,
                busy_sessions_published_in_order_flow_without_waiting,
                // priority
                higher_priority_is_handled_first,
                low_priority_is_not_starved,
                a_starting_worker_takes_high_priority_first,
                // shutdown
                shutdown_lets_in_flight_handlers_finish,
                shutdown_returns_unfinished_messages_after_the_grace_period,
                shutdown_returns_waiting_session_messages,
                a_stopping_workers_unstarted_messages_go_to_another_at_once,
                readiness_follows_the_lifecycle,
                unsettled_delivery_goes_back_when_its_task_dies,
                // found by mutation testing
                waiting_session_messages_run_as_soon_as_their_turn_comes,
                repeated_sequence_number_waits_while_its_first_copy_runs,
                woken_session_messages_respect_the_concurrency_limit,
                woken_session_message_runs_with_concurrency_one,
                deferred_messages_do_not_use_attempts,
                replayed_keyed_dead_letter_runs_again,
                key_runs_again_after_the_idempotency_window,
                duplicate_request_of_a_published_message_gets_its_reply,
                body_exactly_at_the_limit_is_accepted,
                overlong_idempotency_key_is_dead_lettered,
                sequence_zero_is_dead_lettered,
                replayed_message_carries_no_dead_letter_headers,
                error_reply_uses_the_request_content_type,
                // found in review
                sessions_keep_order_with_prefetch_one,
                a_gap_filled_while_the_watcher_looks_is_not_a_gap,
                skip_ahead_never_moves_a_session_backwards,
                a_duplicate_still_uses_up_its_sequence_number,
                gap_dead_letters_are_stored_before_the_session_moves_on,
                sequence_beyond_the_limit_is_dead_lettered,
                a_scheduled_retry_outlives_its_worker,
                a_panicking_store_does_not_stop_the_consumer,
                a_store_failing_over_after_a_run_neither_stalls_nor_repeats,
                // found by outside users (issue 17)
                a_message_waiting_for_a_claim_keeps_its_attempts,
                a_redelivered_message_waiting_for_a_claim_keeps_its_count,
                outside_wharf_attempt_is_read_as_attempts_made_or_refused,
                unusable_reply_address_is_dead_lettered_without_a_run,
            ]
        );
    };
}

for_every_case!(memory);
#[cfg(feature = "amqp")]
for_every_case!(amqp);
// RabbitMQ with quorum work queues (`?queue_type=quorum`): they count
// redeliveries in `x-delivery-count` where classic queues only flag them, so
// the cases about attempts, copies and redelivery run on them too. (Quorum
// queues have no priorities; the other cases do not depend on the queue type.)
#[cfg(feature = "amqp")]
transport_suite!(
    amqp_quorum,
    [
        extractors_see_metadata_state_and_attempt,
        retryable_error_is_retried_then_succeeds,
        exhausted_retries_are_dead_lettered_with_reasons,
        panic_counts_as_a_failed_attempt,
        timeout_counts_as_a_failed_attempt,
        dead_letters_can_be_listed_replayed_and_purged,
        replayed_message_carries_no_dead_letter_headers,
        concurrent_duplicates_do_not_both_run,
        failed_attempt_releases_the_idempotency_key,
        replayed_keyed_dead_letter_runs_again,
        deferred_messages_do_not_use_attempts,
        early_arrivals_beyond_the_buffer_go_back_to_the_broker,
        shutdown_returns_unfinished_messages_after_the_grace_period,
        unsettled_delivery_goes_back_when_its_task_dies,
        a_scheduled_retry_outlives_its_worker,
        a_message_waiting_for_a_claim_keeps_its_attempts,
        a_redelivered_message_waiting_for_a_claim_keeps_its_count,
        outside_wharf_attempt_is_read_as_attempts_made_or_refused,
    ]
);
#[cfg(feature = "nats")]
for_every_case!(nats);
// Every case again with routes bound to an exchange or subscribed to an
// event subject (bound.rs).
#[cfg(feature = "amqp")]
for_every_case!(amqp_bound);
#[cfg(feature = "nats")]
for_every_case!(nats_bound);
// And on NATS read through a durable consumer named for each route.
#[cfg(feature = "nats")]
for_every_case!(nats_consumed);
