"""An event publisher for wharf routes bound to an exchange, with plain pika.

No wharf code: it follows docs/wire-format.md ("AMQP 0-9-1 (RabbitMQ)",
Publishing) and docs/amqp.md ("Exchanges and routing keys").
tests/amqp_bindings.rs runs it against two wharf services bound to one
topic exchange and checks that each handles every event it subscribed to
once.

    .venv/bin/python tests/interop/amqp_events.py <exchange> <count> [amqp-url]

The exchange must exist (the wharf services declared it when they started;
a passive declare only checks). It publishes orders 1..<count> with routing
key "orders.created" and order <count>+1 with "orders.cancelled", as JSON,
persistent, with publisher confirms, and prints one JSON line per event.
"""

import json
import sys

import pika


def fail(message):
    print(json.dumps({"error": message}), flush=True)
    sys.exit(1)


def main():
    if len(sys.argv) not in (3, 4):
        fail("usage: amqp_events.py <exchange> <count> [amqp-url]")
    exchange, count = sys.argv[1], int(sys.argv[2])
    url = sys.argv[3] if len(sys.argv) == 4 else "amqp://guest:guest@127.0.0.1:5672/%2f"
    params = pika.URLParameters(url)
    params.socket_timeout = 5
    connection = pika.BlockingConnection(params)
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.exchange_declare(exchange=exchange, passive=True)
        events = [(n, "orders.created") for n in range(1, count + 1)]
        events.append((count + 1, "orders.cancelled"))
        for order_id, key in events:
            # Not mandatory: an event nobody subscribed to is not an error.
            channel.basic_publish(
                exchange=exchange,
                routing_key=key,
                body=json.dumps({"id": order_id}).encode(),
                properties=pika.BasicProperties(
                    content_type="application/json",
                    delivery_mode=2,
                    message_id=f"order-{order_id}-{key}",
                ),
            )
            print(json.dumps({"published": order_id, "key": key}), flush=True)
    finally:
        if connection.is_open:
            connection.close()


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except Exception as error:  # pika's errors, refused connections, …
        fail(f"{error!r}")
