"""A publisher and requester for wharf handlers, written with plain pika.

No wharf code: everything here follows docs/wire-format.md (section "AMQP
0-9-1 (RabbitMQ)"), which is what a team writing in another language reads.
tests/amqp_interop.rs runs it against a wharf app and checks both sides.

    .venv/bin/python tests/interop/amqp_client.py <prefix> [amqp-url]

The wharf app must already be running (it declares the queues):

    <prefix>.orders   a work route with priority(true), payload Order
    <prefix>.quote    a request route answering QuoteRequest with Quote

What it does:

1. publishes two orders to <prefix>.orders, both in session
   "py-session-<prefix>": a JSON one (sequence 1 as an AMQP integer) and a
   MessagePack one (sequence "2" as a decimal string);
2. sends four requests to <prefix>.quote through RabbitMQ's direct
   reply-to: a JSON one and two MessagePack ones (application/msgpack and
   the alias application/x-msgpack) that get typed replies, and one for an
   item that is out of stock, which gets an error reply.

It prints one JSON object per line on stdout for each published message
({"published": ...}) and each reply ({"request": ..., "status": ...}), and
exits non-zero on any problem, or when a reply has not come within
REPLY_TIMEOUT seconds.
"""

import json
import sys
import time
import uuid

import msgpack
import pika

REPLY_TIMEOUT = 10.0
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
JSON = "application/json"
MSGPACK = "application/msgpack"


def emit(record):
    print(json.dumps(record, sort_keys=True), flush=True)


def fail(message):
    print(f"amqp_client.py: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def decode(content_type, body):
    """A body by its content type, as wharf's codecs read it."""
    kind = (content_type or JSON).split(";")[0].strip().lower()
    if kind == JSON:
        return json.loads(body)
    if kind in (MSGPACK, "application/x-msgpack", "application/vnd.msgpack"):
        return msgpack.unpackb(body, raw=False)
    fail(f"reply with unexpected content type {content_type!r}")


def header_text(value):
    """pika gives long-string headers as str, byte arrays as bytes."""
    return value.decode() if isinstance(value, bytes) else value


def publish_orders(channel, queue, prefix):
    session = f"py-session-{prefix}"
    orders = [
        {
            # sequence as an AMQP integer: pika encodes a small int as a
            # signed 32-bit field ('I'); 64-bit ('l') with pika.compat.long.
            "message_id": "py-order-json-1",
            "content_type": JSON,
            "body": json.dumps({"id": 1, "item": "teapot", "quantity": 2}).encode(),
            "priority": 7,
            "headers": {
                "idempotency-key": f"order-1-{prefix}",
                "session-id": session,
                "sequence": 1,
            },
        },
        {
            # sequence as a decimal string (long string 'S').
            "message_id": "py-order-msgpack-2",
            "content_type": MSGPACK,
            "body": msgpack.packb({"id": 2, "item": "kettle", "quantity": 1}),
            "priority": 3,
            "headers": {
                "idempotency-key": f"order-2-{prefix}",
                "session-id": session,
                "sequence": "2",
            },
        },
    ]
    for order in orders:
        properties = pika.BasicProperties(
            content_type=order["content_type"],
            message_id=order["message_id"],
            priority=order["priority"],
            delivery_mode=2,
            headers=order["headers"],
        )
        # Default exchange, routing key = queue name. With publisher confirms
        # and mandatory, pika raises if the broker nacks or cannot route it.
        channel.basic_publish(
            exchange="",
            routing_key=queue,
            body=order["body"],
            properties=properties,
            mandatory=True,
        )
        emit({"published": order["message_id"], "sequence": order["headers"]["sequence"]})


class Requester:
    """Requests over direct reply-to: consume amq.rabbitmq.reply-to with
    auto-ack on a channel, then publish requests on that same channel."""

    def __init__(self, connection, channel):
        self.connection = connection
        self.channel = channel
        self.replies = {}
        channel.basic_consume(
            queue=DIRECT_REPLY_TO, on_message_callback=self.on_reply, auto_ack=True
        )

    def on_reply(self, _channel, _method, properties, body):
        self.replies[properties.correlation_id] = (properties, body)

    def request(self, queue, name, payload, content_type):
        correlation_id = f"{name}-{uuid.uuid4()}"
        body = json.dumps(payload).encode() if content_type == JSON else msgpack.packb(payload)
        self.channel.basic_publish(
            exchange="",
            routing_key=queue,
            body=body,
            properties=pika.BasicProperties(
                content_type=content_type,
                correlation_id=correlation_id,
                message_id=f"msg-{correlation_id}",
                reply_to=DIRECT_REPLY_TO,
                delivery_mode=2,
            ),
            mandatory=True,
        )
        deadline = time.monotonic() + REPLY_TIMEOUT
        while correlation_id not in self.replies:
            left = deadline - time.monotonic()
            if left <= 0:
                fail(f"no reply to request {name!r} within {REPLY_TIMEOUT} s")
            self.connection.process_data_events(time_limit=min(left, 0.2))
        properties, body = self.replies.pop(correlation_id)
        headers = {k: header_text(v) for k, v in (properties.headers or {}).items()}
        emit(
            {
                "request": name,
                "request_content_type": content_type,
                "status": headers.get("wharf-status"),
                "error_kind": headers.get("wharf-error-kind"),
                "content_type": properties.content_type,
                "correlation_id_matches": properties.correlation_id == correlation_id,
                "reply": decode(properties.content_type, body),
            }
        )


def main():
    if len(sys.argv) not in (2, 3):
        fail("usage: amqp_client.py <queue-prefix> [amqp-url]")
    prefix = sys.argv[1]
    url = sys.argv[2] if len(sys.argv) == 3 else "amqp://guest:guest@127.0.0.1:5672/%2f"
    orders, quotes = f"{prefix}.orders", f"{prefix}.quote"

    params = pika.URLParameters(url)
    params.socket_timeout = 5
    params.blocked_connection_timeout = 10
    connection = pika.BlockingConnection(params)
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        # wharf declared the queues; a passive declare only checks they exist
        # (declaring them with other arguments would close the channel).
        for queue in (orders, quotes):
            channel.queue_declare(queue=queue, passive=True)

        publish_orders(channel, orders, prefix)

        requester = Requester(connection, channel)
        requester.request(quotes, "json", {"item": "teapot", "quantity": 3}, JSON)
        requester.request(quotes, "msgpack", {"item": "kettle", "quantity": 2}, MSGPACK)
        # An alias of the MessagePack content type: the reply names the codec
        # canonically (application/msgpack).
        requester.request(
            quotes, "x-msgpack", {"item": "mug", "quantity": 4}, "application/x-msgpack"
        )
        requester.request(quotes, "out-of-stock", {"item": "unobtainium", "quantity": 5}, JSON)
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
