#!/usr/bin/env bash
# Deletes what test runs that failed before their cleanup left behind:
# RabbitMQ queues and exchanges (`wharf-test.*`), Redis keys (`wharf-test:*`) and JetStream
# streams and KV buckets of test queues and stores. Nothing else is touched.
# Run before the tests (CI does): a test running meanwhile would lose its own.
set -euo pipefail

# One `rabbitmqctl eval` instead of one slow rabbitmqctl call per queue.
if command -v rabbitmqctl >/dev/null; then
    deleted=$(rabbitmqctl eval '
      Qs = [Q || Q <- rabbit_amqqueue:list(<<"/">>),
                 binary:match(element(4, amqqueue:get_name(Q)), <<"wharf-test.">>) =:= {0, 11}],
      [rabbit_amqqueue:delete(Q, false, false, <<"wharf-sweep">>) || Q <- Qs],
      length(Qs).' 2>&1 | tail -n 1)
    echo "sweep: deleted ${deleted} leftover test queues on RabbitMQ"
    # The exchanges of the binding tests (tests/amqp_bindings.rs).
    deleted=$(rabbitmqctl eval '
      Xs = [element(2, X) || X <- rabbit_exchange:list(<<"/">>),
                             binary:match(element(4, element(2, X)), <<"wharf-test.">>) =:= {0, 11}],
      [rabbit_exchange:delete(N, false, <<"wharf-sweep">>) || N <- Xs],
      length(Xs).' 2>&1 | tail -n 1)
    echo "sweep: deleted ${deleted} leftover test exchanges on RabbitMQ"
else
    echo "sweep: no rabbitmqctl; RabbitMQ skipped"
fi

if command -v redis-cli >/dev/null && [ "$(timeout 3 redis-cli -h 127.0.0.1 ping 2>/dev/null)" = PONG ]; then
    keys=$(redis-cli -h 127.0.0.1 --scan --pattern 'wharf-test:*' | wc -l)
    redis-cli -h 127.0.0.1 --scan --pattern 'wharf-test:*' | xargs -r -n 500 redis-cli -h 127.0.0.1 del >/dev/null
    echo "sweep: deleted ${keys} leftover test keys in Redis"
else
    echo "sweep: Redis not reachable; skipped"
fi

python3 "$(dirname "$0")/sweep_nats.py"
