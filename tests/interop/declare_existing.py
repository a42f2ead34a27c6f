"""Declares a queue (RabbitMQ, pika) or stream (NATS, nats-py) the way
another team might, for a wharf route to take as it is
(`RouteOptions::existing_queue`, docs/amqp.md and docs/nats.md). No wharf
code. tests/existing_queues.rs runs it, then starts the route.

    .venv/bin/python tests/interop/declare_existing.py amqp <queue> [amqp-url]
    .venv/bin/python tests/interop/declare_existing.py nats <queue> [nats-url]

amqp: a queue that is not durable, with a 10-minute message TTL.
nats: the stream WHARF_<enc(queue)> (docs/wire-format.md: letters, digits
and '-' kept, any other byte as _XX) with the ten lane subjects, work-queue
retention and memory storage.
"""

import asyncio
import json
import sys


def fail(message):
    print(json.dumps({"error": message}), flush=True)
    sys.exit(1)


def encode(queue):
    return "".join(
        chr(b) if chr(b).isascii() and (chr(b).isalnum() or chr(b) == "-") else f"_{b:02X}"
        for b in queue.encode()
    )


def amqp(queue, url):
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        connection.channel().queue_declare(
            queue=queue, durable=False, arguments={"x-message-ttl": 600000}
        )
    finally:
        connection.close()


async def nats_stream(queue, url):
    import nats
    from nats.js.api import RetentionPolicy, StorageType, StreamConfig

    nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        await nc.jetstream().add_stream(
            StreamConfig(
                name=f"WHARF_{encode(queue)}",
                subjects=[f"wharf.p{p}.{queue}" for p in range(10)],
                retention=RetentionPolicy.WORK_QUEUE,
                storage=StorageType.MEMORY,
            )
        )
    finally:
        await nc.close()


def main():
    if len(sys.argv) not in (3, 4):
        fail("usage: declare_existing.py amqp|nats <queue> [url]")
    kind, queue = sys.argv[1], sys.argv[2]
    if kind == "amqp":
        amqp(queue, sys.argv[3] if len(sys.argv) == 4 else "amqp://guest:guest@127.0.0.1:5672/%2f")
    elif kind == "nats":
        asyncio.run(nats_stream(queue, sys.argv[3] if len(sys.argv) == 4 else "nats://127.0.0.1:4222"))
    else:
        fail(f"unknown broker {kind}")
    print(json.dumps({"declared": queue, "broker": kind}), flush=True)


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except Exception as error:  # refused connections, broker errors, …
        fail(f"{error!r}")
