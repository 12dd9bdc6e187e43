"""`make bench`: every benchmark side by side with its baseline, in one run."""

from __future__ import annotations

import sys


def main() -> int:
    from bench import audit, delivery, intake, rules, storage, wire

    print("== rules engine vs a hand-written if-chain ==", flush=True)
    status = rules.main() or 0
    print("\n== intake vs a bare FastAPI endpoint ==", flush=True)
    status |= intake.main() or 0
    print("\n== on the wire: compression and minimal receipts ==", flush=True)
    status |= wire.main([]) or 0
    print("\n== delivery: one worker, and POST-to-partner latency of emergencies ==", flush=True)
    status |= (
        delivery.main(["--saturating-clients", "32", "--saturating-api-processes", "1", "2"]) or 0
    )
    print("\n== audit trail: online and offline verification, export, proofs ==", flush=True)
    status |= audit.main(["--events", "250000"]) or 0
    print("\n== storage per screening on PostgreSQL ==", flush=True)
    status |= storage.main(["--screenings", "2000"]) or 0
    return status


if __name__ == "__main__":
    sys.exit(main())
