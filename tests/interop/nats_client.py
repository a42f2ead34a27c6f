"""A publisher and requester for wharf handlers, written with plain nats-py.

No wharf code: everything here follows docs/wire-format.md (section "NATS"),
which is what a team writing in another language reads.
tests/nats_interop.rs runs it against a wharf app and checks both sides.

    .venv/bin/python tests/interop/nats_client.py <prefix> [nats-url]

The wharf app must already be running (it creates the streams and the
core NATS subscription):

    <prefix>.orders      a work route with priority(true), payload Order
    <prefix>.quote       a request route (JetStream) answering QuoteRequest
                         with Quote
    <prefix>.quote-core  the same handler on a route with persistent(false):
                         a core NATS service

What it does:

1. reads the streams and consumers of <prefix>.orders and <prefix>.quote
   (JetStream API) and prints what it found ({"stream": ...});
2. publishes two orders to <prefix>.orders with JetStream, both in session
   "py-session-<prefix>": a JSON one on lane 7 (subject
   wharf.p7.<prefix>.orders, sequence "1") and a MessagePack one on lane 3
   (sequence "2"), then the JSON one again with the same Nats-Msg-Id, which
   JetStream must report as a duplicate;
3. sends four durable requests to <prefix>.quote: subscribes to an inbox
   first, then js.publish with a `reply-to: <inbox>` header: a JSON one and
   two MessagePack ones (application/msgpack and the alias
   application/x-msgpack, the latter on lane 5) that get typed replies, and
   one for an item that is out of stock, which gets an error reply;
4. sends three core NATS requests (nc.request) to <prefix>.quote-core: one
   without a content-type header (JSON), a MessagePack one with a
   Nats-Msg-Id but no correlation-id (the reply is correlated by the message
   id), and an out-of-stock one;
5. waits for the two dead letters (the out-of-stock requests) in the streams
   of <prefix>.quote.dlq and <prefix>.quote-core.dlq and prints them as
   stored ({"dead_letter": ...}).

It prints one JSON object per line on stdout for each of these ({"inbox"},
{"stream"}, {"published"}, {"request"}, {"dead_letter"}), and exits
non-zero on any problem, or when a reply has not come within REPLY_TIMEOUT
seconds.
"""

import asyncio
import json
import sys
import uuid

import msgpack
import nats
from nats.errors import NoRespondersError
from nats.js.errors import NoStreamResponseError, NotFoundError

REPLY_TIMEOUT = 10.0
JSON = "application/json"
MSGPACK = "application/msgpack"


def emit(record):
    print(json.dumps(record, sort_keys=True), flush=True)


def fail(message):
    print(f"nats_client.py: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def subject(queue, priority=0):
    """The subject of a queue's priority lane: wharf.p<P>.<queue>."""
    return f"wharf.p{priority}.{queue}"


def stream_name(queue):
    """WHARF_<enc(queue)>: [A-Za-z0-9-] kept, every other byte as _XX."""
    keep = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-"
    return "WHARF_" + "".join(
        chr(b) if b in keep else f"_{b:02X}" for b in queue.encode()
    )


def enum_text(value):
    """nats-py gives JetStream enums as enum members or plain strings."""
    return getattr(value, "value", value)


def lower(headers):
    """Header names are matched case-insensitively."""
    return {k.lower(): v for k, v in (headers or {}).items()}


def decode(content_type, body):
    """A body by its content type, as wharf's codecs read it."""
    kind = (content_type or JSON).split(";")[0].strip().lower()
    if kind == JSON:
        return json.loads(body)
    if kind in (MSGPACK, "application/x-msgpack", "application/vnd.msgpack"):
        return msgpack.unpackb(body, raw=False)
    fail(f"reply with unexpected content type {content_type!r}")


def encode(content_type, payload):
    kind = (content_type or JSON).split(";")[0].strip().lower()
    return json.dumps(payload).encode() if kind == JSON else msgpack.packb(payload)


def reply_record(name, content_type, expected_correlation, msg, via):
    headers = lower(msg.headers)
    return {
        "request": name,
        "via": via,
        "request_content_type": content_type,
        "status": headers.get("wharf-status"),
        "error_kind": headers.get("wharf-error-kind"),
        "content_type": headers.get("content-type"),
        "correlation_id_matches": headers.get("correlation-id") == expected_correlation,
        "reply": decode(headers.get("content-type"), msg.data),
        "headers": sorted(headers),
    }


async def describe_stream(jsm, queue):
    name = stream_name(queue)
    try:
        info = await jsm.stream_info(name)
    except NotFoundError:
        fail(f"no stream {name} for queue {queue} (is the wharf app running?)")
    config = info.config
    consumers = {}
    for consumer in await jsm.consumers_info(name):
        c = consumer.config
        consumers[consumer.name] = {
            "durable": c.durable_name,
            "pull": c.deliver_subject is None,
            "ack_policy": enum_text(c.ack_policy),
            "ack_wait": c.ack_wait,
            "max_deliver": c.max_deliver,
            "filter_subject": c.filter_subject,
        }
    emit(
        {
            "stream": name,
            "queue": queue,
            "subjects": config.subjects,
            "retention": enum_text(config.retention),
            "storage": enum_text(config.storage),
            "duplicate_window": config.duplicate_window,
            "consumers": consumers,
        }
    )


async def publish_orders(js, queue, prefix):
    session = f"py-session-{prefix}"
    orders = [
        {
            "priority": 7,
            "body": json.dumps({"id": 1, "item": "teapot", "quantity": 2}).encode(),
            "headers": {
                "Nats-Msg-Id": "py-order-json-1",
                "content-type": JSON,
                "idempotency-key": f"order-1-{prefix}",
                "session-id": session,
                "sequence": "1",
            },
        },
        {
            "priority": 3,
            "body": msgpack.packb({"id": 2, "item": "kettle", "quantity": 1}),
            "headers": {
                "Nats-Msg-Id": "py-order-msgpack-2",
                "content-type": MSGPACK,
                "idempotency-key": f"order-2-{prefix}",
                "session-id": session,
                "sequence": "2",
            },
        },
    ]
    # The first one again: same Nats-Msg-Id within the stream's duplicate
    # window, so JetStream acknowledges it without storing it.
    for order in orders + orders[:1]:
        to = subject(queue, order["priority"])
        # js.publish waits for JetStream's ack; no stream on the subject
        # raises NoStreamResponseError ("no responders").
        ack = await js.publish(to, order["body"], headers=dict(order["headers"]))
        emit(
            {
                "published": order["headers"]["Nats-Msg-Id"],
                "subject": to,
                "sequence": order["headers"]["sequence"],
                "stream": ack.stream,
                "duplicate": bool(ack.duplicate),
            }
        )


class Requester:
    """Durable requests: subscribe to an inbox, then publish with JetStream
    and a `reply-to` header naming the inbox. Replies are core NATS messages
    to the inbox, matched by their correlation-id header."""

    def __init__(self, nc, js):
        self.nc = nc
        self.js = js
        self.inbox = nc.new_inbox()
        self.sub = None
        self.replies = {}

    async def start(self):
        self.sub = await self.nc.subscribe(self.inbox)
        emit({"inbox": self.inbox})

    async def request(self, queue, name, payload, content_type, priority=0):
        correlation_id = f"{name}-{uuid.uuid4()}"
        headers = {
            "Nats-Msg-Id": f"msg-{correlation_id}",
            "content-type": content_type,
            "correlation-id": correlation_id,
            "reply-to": self.inbox,
        }
        await self.js.publish(
            subject(queue, priority), encode(content_type, payload), headers=headers
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REPLY_TIMEOUT
        while correlation_id not in self.replies:
            left = deadline - loop.time()
            if left <= 0:
                fail(f"no reply to request {name!r} within {REPLY_TIMEOUT} s")
            try:
                msg = await self.sub.next_msg(timeout=left)
            except nats.errors.TimeoutError:
                continue
            self.replies[lower(msg.headers).get("correlation-id")] = msg
        msg = self.replies.pop(correlation_id)
        emit(reply_record(name, content_type, correlation_id, msg, "jetstream"))


async def core_request(
    nc, queue, name, payload, content_type, correlation=True, message_id=True
):
    """A plain core NATS request: the reply comes to nats-py's own inbox
    (the request's NATS reply subject); no reply-to header is needed."""
    correlation_id = f"{name}-{uuid.uuid4()}"
    headers = {}
    if content_type is not None:
        headers["content-type"] = content_type
    if correlation:
        headers["correlation-id"] = correlation_id
    if message_id:
        # Without a correlation-id the reply is correlated by the message id.
        headers["Nats-Msg-Id"] = correlation_id if not correlation else f"msg-{correlation_id}"
    try:
        msg = await nc.request(
            subject(queue), encode(content_type, payload), timeout=REPLY_TIMEOUT, headers=headers
        )
    except NoRespondersError:
        fail(f"request {name!r}: no responders on {subject(queue)}")
    except nats.errors.TimeoutError:
        fail(f"no reply to request {name!r} within {REPLY_TIMEOUT} s")
    emit(reply_record(name, content_type, correlation_id, msg, "core"))


async def dead_letter(jsm, queue):
    """The last dead letter of `queue`, read from its stream as stored."""
    dlq = f"{queue}.dlq"
    name = stream_name(dlq)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + REPLY_TIMEOUT
    while True:
        try:
            info = await jsm.stream_info(name)
            if info.state.messages >= 1:
                break
        except NotFoundError:
            pass
        if loop.time() >= deadline:
            fail(f"no dead letter in stream {name} within {REPLY_TIMEOUT} s")
        await asyncio.sleep(0.05)
    msg = await jsm.get_msg(name, seq=info.state.last_seq)
    emit(
        {
            "dead_letter": queue,
            "stream": name,
            "subjects": info.config.subjects,
            "subject": msg.subject,
            "headers": lower(msg.headers),
            "body": (msg.data or b"").decode(),
        }
    )


async def main():
    if len(sys.argv) not in (2, 3):
        fail("usage: nats_client.py <queue-prefix> [nats-url]")
    prefix = sys.argv[1]
    url = sys.argv[2] if len(sys.argv) == 3 else "nats://127.0.0.1:4222"
    orders, quotes, core = f"{prefix}.orders", f"{prefix}.quote", f"{prefix}.quote-core"

    async def on_error(error):
        print(f"nats_client.py: connection error: {error!r}", file=sys.stderr, flush=True)

    nc = await nats.connect(
        url, connect_timeout=5, max_reconnect_attempts=0, error_cb=on_error
    )
    try:
        js = nc.jetstream(timeout=5)
        jsm = nc.jsm()
        for queue in (orders, quotes):
            await describe_stream(jsm, queue)

        await publish_orders(js, orders, prefix)

        requester = Requester(nc, js)
        await requester.start()
        await requester.request(quotes, "json", {"item": "teapot", "quantity": 3}, JSON)
        await requester.request(quotes, "msgpack", {"item": "kettle", "quantity": 2}, MSGPACK)
        # An alias of the MessagePack content type: the reply names the codec
        # canonically (application/msgpack). Any lane reaches a route without
        # priority.
        await requester.request(
            quotes,
            "x-msgpack",
            {"item": "mug", "quantity": 4},
            "application/x-msgpack",
            priority=5,
        )
        await requester.request(
            quotes, "out-of-stock", {"item": "unobtainium", "quantity": 5}, JSON
        )

        # No content-type header (JSON) and no message id.
        await core_request(
            nc, core, "core-json", {"item": "spoon", "quantity": 6}, None, message_id=False
        )
        # A message id and no correlation-id.
        await core_request(
            nc, core, "core-msgpack", {"item": "fork", "quantity": 7}, MSGPACK, correlation=False
        )
        await core_request(
            nc, core, "core-out-of-stock", {"item": "unobtainium", "quantity": 8}, JSON
        )

        await dead_letter(jsm, quotes)
        await dead_letter(jsm, core)
    finally:
        await nc.close()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except SystemExit:
        raise
    except NoStreamResponseError:
        fail("a JetStream publish got no responders: no stream holds the subject")
    except Exception as error:  # refused connections, JetStream API errors, …
        fail(f"{error!r}")
