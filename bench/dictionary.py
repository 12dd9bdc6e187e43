"""Train a Zstandard dictionary for app.compact from a benchmark's rows.

    BENCH_CAPTURE_DIR=/tmp/bodies python -m bench.storage --screenings 3000 --keep
    python -m bench.dictionary --database-url postgresql://postgres@127.0.0.1/<kept db> \\
        --bodies /tmp/bodies --out app/dictionaries/2.zdict

Samples are the JSON columns app.compact stores (decisions.trace, referrals.reasons and
match, screenings.data), read from a database before or after revision 0010, and the bodies
the loopback partner received (``BENCH_CAPTURE_DIR``). A dictionary in use never changes: a
new one gets a new file and codec id in app.compact.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
from pathlib import Path

import zstandard
from sqlalchemy.engine import make_url

from app.compact import unpack

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--bodies", type=Path, help="a directory of captured bodies")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", type=int, default=32 * 1024)
    parser.add_argument("--limit", type=int, default=4000, help="rows per column")
    args = parser.parse_args(argv)
    found = asyncio.run(samples(args.database_url, args.limit))
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
