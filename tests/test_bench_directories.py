"""The benchmarks' partner directories load as the service would load them.

`make bench` ran without its emergency latency for a while because bench.delivery's
directory had no partner `role` (required since partner roles exist) and the server refused
to start; these catch that before a benchmark run does.
"""

from __future__ import annotations

from pathlib import Path

from app.partners.directory import load_directory
from bench import delivery
from bench.directory import write_directory


def test_bench_directory_loads_in_production(tmp_path: Path) -> None:
    path = write_directory(tmp_path / "directory.yaml", "https://partners.bench.invalid")
    directory = load_directory(path, relaxed=False)
    assert {s for p in directory.partners for s in p.services} == {
        "medical",
        "psychological",
        "legal",
        "protection",
    }


def test_delivery_bench_directory_loads_in_development(tmp_path: Path) -> None:
    """bench.delivery's partner is plain http on loopback, which only development allows."""
    path = tmp_path / "partners.json"
    delivery.write_directory(path, "http://127.0.0.1:9")
    directory = load_directory(path, relaxed=True)
    services = {s for p in directory.partners for s in p.services}
    assert services == {"medical", "psychological", "legal", "protection"}
    assert all(p.role is not None for p in directory.partners)
