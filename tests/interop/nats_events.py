"""An event publisher for wharf routes subscribed to NATS subjects, with
plain nats-py.

No wharf code: it follows docs/nats.md ("Events on your own subjects") and
docs/wire-format.md (section "NATS"). tests/nats_subjects.rs runs it
against two wharf services subscribed to patterns of one stream and checks
that each handles every event it subscribed to once.

    .venv/bin/python tests/interop/nats_events.py <prefix> <count> [nats-url]

The stream capturing "<prefix>.>" must exist (the wharf services declared
it when they started). It publishes orders 1..<count> on
"<prefix>.orders.created": the odd ones with core NATS (publish, then
flush), the even ones with a JetStream publish that waits for the stream's
ack; then order <count>+1 on "<prefix>.orders.cancelled" (JetStream). It
prints one JSON line per event.
"""

import asyncio
import json
import sys

import nats


def fail(message):
    print(json.dumps({"error": message}), flush=True)
    sys.exit(1)


async def main():
    if len(sys.argv) not in (3, 4):
        fail("usage: nats_events.py <prefix> <count> [nats-url]")
    prefix, count = sys.argv[1], int(sys.argv[2])
    url = sys.argv[3] if len(sys.argv) == 4 else "nats://127.0.0.1:4222"
    nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        js = nc.jetstream()
        headers = {"content-type": "application/json"}
        for order_id in range(1, count + 1):
            subject = f"{prefix}.orders.created"
            body = json.dumps({"id": order_id}).encode()
            if order_id % 2:
                await nc.publish(subject, body, headers=headers)
                via = "core"
            else:
                await js.publish(subject, body, headers=headers, timeout=5)
                via = "jetstream"
            print(json.dumps({"published": order_id, "via": via}), flush=True)
        await nc.flush()
        body = json.dumps({"id": count + 1}).encode()
        await js.publish(f"{prefix}.orders.cancelled", body, headers=headers, timeout=5)
        print(json.dumps({"published": count + 1, "via": "jetstream"}), flush=True)
    finally:
        await nc.close()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except SystemExit:
        raise
    except Exception as error:  # refused connections, JetStream API errors, …
        fail(f"{error!r}")
