"""Train a Zstandard dictionary for app.compact from a benchmark's rows.

    BENCH_CAPTURE_DIR=/tmp/bodies python -m bench.storage --screenings 3000 --keep
    python -m bench.dictionary --database-url postgresql://postgres@127.0.0.1/<kept db> \\
        --bodies /tmp/bodies --out app/dictionaries/1.zdict

Samples are the JSON columns app.compact stores (decisions.trace, referrals.reasons and
match, screenings.data), read from a database before or after revision 0010, and the bodies
the loopback partner received (``BENCH_CAPTURE_DIR``). A dictionary in use never changes: a
new one gets a new file and codec id in app.compact.

The audit trail's dictionary (2, ``audit_events.data``) is trained on the events of a
SQLite database that the real write path filled (``--audit-screenings``: bench.storage's
varied screenings posted in-process, delivered by a ``ruta worker`` to a loopback partner):

    python -m bench.dictionary --audit-screenings 2000 --seed 11 --sqlite /tmp/train.db \\
        --size 16384 --out app/dictionaries/2.zdict
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import orjson
import zstandard
from sqlalchemy.engine import make_url

from app.compact import jsonb_order, unpack

QUERIES = {
    "trace": "SELECT trace FROM decisions",
    "reasons": "SELECT reasons FROM referrals",
    "match": "SELECT match FROM referrals",
    "data": "SELECT data FROM screenings",
}


def _sample(value: object) -> bytes:
    if isinstance(value, bytes):
        return unpack(value)
    document = json.loads(str(value))
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


async def samples(url: str, limit: int) -> list[bytes | bytearray | memoryview[int]]:
    import asyncpg

    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    found: list[bytes | bytearray | memoryview[int]] = []
    try:
        for query in QUERIES.values():
            rows = await conn.fetch(f"{query} LIMIT {int(limit)}")
            found += [_sample(row[0]) for row in rows]
    finally:
        await conn.close()
    return found


def audit_database(path: Path, screenings: int, seed: int) -> None:
    """Fill a new SQLite database at ``path`` through the real write path: intake of
    ``screenings`` varied screenings, then delivery until nothing is pending."""
    from app.migrations import upgrade
    from bench import storage
    from bench.delivery import _process

    url = f"sqlite+aiosqlite:///{path}"
    upgrade(url)
    with tempfile.TemporaryDirectory() as tmp, storage._partner() as partner_url:
        directory = storage._bench_directory(Path(tmp) / "partners.yaml", partner_url)
        env = storage._env(url, directory, storage._fresh_secrets())
        os.environ.update(env)
        key = asyncio.run(storage._create_key())
        with ExitStack() as stack:
            stack.enter_context(_process([storage.RUTA, "worker", "--concurrency", "10"], env))
            asyncio.run(storage._post_share(screenings, seed, key))
            started = time.monotonic()
            while _pending(path) and time.monotonic() - started < 1800:
                time.sleep(2)


def _pending(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        query = "SELECT count(*) FROM deliveries WHERE status = 'pending'"
        return int(conn.execute(query).fetchone()[0])


def audit_samples(path: Path) -> list[bytes | bytearray | memoryview[int]]:
    """Every event's ``data`` as app.compact packs it, twice: with its members in the order
    the service wrote them (SQLite keeps it) and in ``jsonb``'s (PostgreSQL's, for rows
    written before 0014 and after it alike)."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT data FROM audit_events ORDER BY seq").fetchall()
    found: list[bytes | bytearray | memoryview[int]] = []
    for (value,) in rows:
        document = json.loads(unpack(value) if isinstance(value, bytes) else value)
        found.append(orjson.dumps(document, option=orjson.OPT_NON_STR_KEYS))
        found.append(orjson.dumps(jsonb_order(document), option=orjson.OPT_NON_STR_KEYS))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url")
    parser.add_argument("--audit-screenings", type=int, help="audit events of this many screenings")
    parser.add_argument("--sqlite", type=Path, help="the SQLite database --audit-screenings fills")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--bodies", type=Path, help="a directory of captured bodies")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", type=int, default=32 * 1024)
    parser.add_argument("--limit", type=int, default=4000, help="rows per column")
    args = parser.parse_args(argv)
    if args.audit_screenings:
        if args.sqlite is None:
            parser.error("--audit-screenings needs --sqlite")
        if args.sqlite.exists():
            print(f"{args.sqlite} exists: its events are the samples")
        else:
            audit_database(args.sqlite, args.audit_screenings, args.seed)
        found = audit_samples(args.sqlite)
    elif args.database_url:
        found = asyncio.run(samples(args.database_url, args.limit))
    else:
        parser.error("--database-url or --audit-screenings")
    if args.bodies:
        bodies = sorted(args.bodies.iterdir())[: args.limit * 2]
        found += [path.read_bytes() for path in bodies]
    random.Random(0).shuffle(found)
    dictionary = zstandard.train_dictionary(args.size, found, level=9)
    args.out.write_bytes(dictionary.as_bytes())
    print(f"{len(found)} samples -> {args.out} ({len(dictionary.as_bytes())} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
