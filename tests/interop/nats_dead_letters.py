"""Lists and replays the dead letters of a wharf queue on NATS, with plain nats-py.

No wharf code: everything here follows docs/wire-format.md (section "NATS",
"Reading and replaying dead letters"). tests/nats_interop.rs runs it
against a wharf app and checks both sides.

    .venv/bin/python tests/interop/nats_dead_letters.py list <queue> [nats-url]
    .venv/bin/python tests/interop/nats_dead_letters.py replay <queue> [nats-url] [<seq> ...]

`<queue>` is the queue whose dead letters to read (the route's queue, not
`<queue>.dlq`). `list` prints every dead letter, oldest first, one JSON
object per line: {"seq", "subject", "headers", "body", "body_base64"}.
`replay` sends the given dead letters (by stream sequence, as `list`
prints it; all of them when none is given) back to the queue they came
from, as wharf's own `DeadLetters::replay` does, and prints
{"replayed": seq, "to": subject, ...} for each, or {"gone": seq} for one
that is no longer there.

Why not a consumer: the dead-letter stream has WorkQueue retention and
wharf's consumer `wharf` on it, and NATS refuses a second consumer on a
WorkQueue stream ("multiple non-filtered consumers not allowed on
workqueue stream", err_code 10099; a filtered one: "filtered consumer not
unique on workqueue stream", 10100). The stream message API reads a message
by sequence without a consumer ($JS.API.STREAM.MSG.GET.<stream>,
`{"seq": N, "next_by_subj": "<subject>"}`: the first message at or after
N on the subject, nats-server 2.9 and later), and deletes one
($JS.API.STREAM.MSG.DELETE.<stream>). A replay deletes a dead letter only
once JetStream has acknowledged its copy in the origin queue, so stopping
half-way loses nothing; a copy whose deletion did not happen is
republished with the same Nats-Msg-Id when the script runs again, and
JetStream drops it as a duplicate within the queue's 2-minute window.

Exits non-zero on any problem.
"""

import asyncio
import base64
import datetime
import json
import sys
import uuid

import nats
from nats.js.errors import NotFoundError

# The headers wharf adds to a dead letter, which a replay removes (wharf's
# DeadLetter::original), and the transport's own bookkeeping, which wharf
# does not pass on either. Headers starting with Nats- are JetStream's.
FAILURE_HEADERS = {
    "wharf-dead-letter-reason",
    "wharf-error-kind",
    "wharf-error-message",
    "wharf-origin-queue",
    "wharf-handler",
    "wharf-failed-at",
    "wharf-attempt",
    "wharf-replayed-at",
}
BOOKKEEPING_HEADERS = {"wharf-not-before", "wharf-lane"}


def emit(record):
    print(json.dumps(record, sort_keys=True), flush=True)


def fail(message):
    print(f"nats_dead_letters.py: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def stream_name(queue):
    """WHARF_<enc(queue)>: [A-Za-z0-9-] kept, every other byte as _XX."""
    keep = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-"
    return "WHARF_" + "".join(chr(b) if b in keep else f"_{b:02X}" for b in queue.encode())


def lower(headers):
    """Header names are matched case-insensitively."""
    return {k.lower(): v for k, v in (headers or {}).items()}


async def dead_letters(jsm, queue):
    """Every dead letter of `queue`, oldest first, read without a consumer."""
    dlq = f"{queue}.dlq"
    stream = stream_name(dlq)
    info = await jsm.stream_info(stream)  # NotFoundError: no such queue
    seq = max(info.state.first_seq, 1)
    while True:
        try:
            # {"seq": seq, "next_by_subj": "wharf.*.<queue>.dlq"}: the first
            # message at or after seq on any lane (acked or deleted ones are gone).
            msg = await jsm.get_msg(stream, seq=seq, subject=f"wharf.*.{dlq}", next=True)
        except NotFoundError:
            return
        yield msg
        seq = msg.seq + 1


def replay_copy(queue, msg):
    """The subject and headers wharf's DeadLetters::replay publishes a dead letter with."""
    stored = lower(msg.headers)
    headers = {
        name: value
        for name, value in stored.items()
        if name not in FAILURE_HEADERS
        and name not in BOOKKEEPING_HEADERS
        and not name.startswith("nats-")
    }
    # The message id: the original's, which the dead letter keeps in
    # wharf-message-id (its own Nats-Msg-Id is the copy's).
    message_id = stored.get("wharf-message-id") or stored.get("nats-msg-id")
    if message_id:
        headers["wharf-message-id"] = message_id
    # A fresh de-duplication id, the same on every run for this dead letter.
    copy_id = stored.get("nats-msg-id") or f"{msg.seq}-{uuid.uuid4()}"
    headers["Nats-Msg-Id"] = f"replay-{copy_id}"
    # Lets a session message run although its session has moved past it.
    now = datetime.datetime.now(datetime.timezone.utc)
    headers["wharf-replayed-at"] = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    # Back to the lane it was on: wharf.p<P>.<queue>.dlq -> wharf.p<P>.<origin>.
    lane = msg.subject.split(".")[1]
    origin = stored.get("wharf-origin-queue", queue)
    return f"wharf.{lane}.{origin}", headers


async def replay(js, jsm, queue, msg):
    """Publishes the dead letter to its origin queue, then deletes it."""
    subject, headers = replay_copy(queue, msg)
    ack = await js.publish(subject, msg.data or b"", headers=headers)  # waits for JetStream
    await jsm.delete_msg(stream_name(f"{queue}.dlq"), msg.seq)
    return subject, headers, ack


async def main():
    args = sys.argv[1:]
    if len(args) < 2 or args[0] not in ("list", "replay"):
        fail("usage: nats_dead_letters.py list|replay <queue> [nats-url] [<seq> ...]")
    command, queue, rest = args[0], args[1], args[2:]
    url = "nats://127.0.0.1:4222"
    if rest and not rest[0].isdigit():
        url, rest = rest[0], rest[1:]
    wanted = {int(seq) for seq in rest}

    nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        js = nc.jetstream(timeout=5)
        jsm = nc.jsm(timeout=5)
        seen = set()
        async for msg in dead_letters(jsm, queue):
            if command == "list":
                body = msg.data or b""
                try:
                    text = body.decode()
                except UnicodeDecodeError:
                    text = None
                emit(
                    {
                        "seq": msg.seq,
                        "subject": msg.subject,
                        "headers": lower(msg.headers),
                        "body": text,
                        "body_base64": base64.b64encode(body).decode(),
                    }
                )
            elif not wanted or msg.seq in wanted:
                subject, headers, ack = await replay(js, jsm, queue, msg)
                seen.add(msg.seq)
                emit(
                    {
                        "replayed": msg.seq,
                        "to": subject,
                        "headers": lower(headers),
                        "stream": ack.stream,
                        "stream_seq": ack.seq,
                        "duplicate": bool(ack.duplicate),
                    }
                )
        for seq in sorted(wanted - seen):
            emit({"gone": seq})
    finally:
        await nc.close()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except SystemExit:
        raise
    except NotFoundError:
        fail("no dead-letter stream for that queue (has a worker declared it?)")
    except Exception as error:  # refused connections, JetStream API errors, …
        fail(f"{error!r}")
