#!/usr/bin/env bash
# Deletes RabbitMQ queues left behind by test runs that failed before their
# cleanup (test queues are named `wharf-test.*`; nothing else is touched).
# One `rabbitmqctl eval` instead of one slow rabbitmqctl call per queue.
set -euo pipefail
command -v rabbitmqctl >/dev/null || { echo "sweep: no rabbitmqctl; skipped"; exit 0; }
deleted=$(rabbitmqctl eval '
  Qs = [Q || Q <- rabbit_amqqueue:list(<<"/">>),
             binary:match(element(4, amqqueue:get_name(Q)), <<"wharf-test.">>) =:= {0, 11}],
  [rabbit_amqqueue:delete(Q, false, false, <<"wharf-sweep">>) || Q <- Qs],
  length(Qs).' 2>&1 | tail -n 1)
echo "sweep: deleted ${deleted} leftover test queues"
