"""A partner directory for benchmarks: one national, always-open partner per service with
room for every referral a run makes, so each screening's referrals are matched and written
to the outbox (a held referral would skip half the path being measured)."""

from __future__ import annotations

from pathlib import Path

import yaml

SERVICES = ("medical", "psychological", "legal", "protection")
#: Each partner's role (docs/partners.md, "Partner roles"). The example screening is a
#: presumed minor, whose protection referral only the child-protection authority may take.
ROLES = {
    "medical": "health_facility",
    "psychological": "psychosocial",
    "legal": "legal_aid",
    "protection": "child_protection_authority",
}


def write_directory(path: Path, base_url: str, *, formats: dict[str, str] | None = None) -> Path:
    """Write the directory to ``path``; each partner's endpoint is ``{base_url}/{partner id}``."""
    partners = []
    for service in SERVICES:
        partner_id = f"bench-{service}"
        partners.append(
            {
                "id": partner_id,
                "organisation": {"id": partner_id, "name": f"Bench {service} partner"},
                "name": f"Bench {service} partner (fictional)",
                "services": [service],
                "role": ROLES[service],
                "service_area": {"national": True},
                "languages": ["es", "qu", "ay", "en"],
                "capacity": {"available": 100_000, "maximum": 100_000},
                "hours": {"always_open": True},
                "endpoint": {
                    "url": f"{base_url.rstrip('/')}/{partner_id}",
                    "format": (formats or {}).get(service, "ruta-json"),
                },
                "priority": 10,
            }
        )
    path.write_text(yaml.safe_dump({"version": 1, "partners": partners}, sort_keys=False))
    return path
