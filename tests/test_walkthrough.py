"""The README's walkthrough, step by step, against a real server in development mode:
the service decides, the embedded worker delivers to the demo partner, the partner reports
back, and the auditor verifies."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
EXAMPLE = json.loads((ROOT / "docs" / "examples" / "screening.json").read_text())


@pytest.fixture
def dev_server(database_url: str, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUTA_")}
    env.update(
        {
            "RUTA_ENV": "development",
            "RUTA_DATABASE_URL": database_url,
            "RUTA_PORT": str(port),
            "RUTA_PUBLIC_BASE_URL": base,
            "RUTA_LOG_LEVEL": "WARNING",
        }
    )
    keys_file = tmp_path / "demo-keys.env"
    subprocess.run(
        [str(BIN / "ruta"), "demo", "--keys-file", str(keys_file)],
        env=env,
        check=True,
        capture_output=True,
    )
    keys = dict(line.split("=", 1) for line in keys_file.read_text().splitlines())
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen([str(BIN / "ruta"), "serve"], env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError((tmp_path / "server.log").read_text()) from None
                time.sleep(0.2)
        yield base, keys
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()


def test_the_readme_walkthrough(dev_server: tuple[str, dict[str, str]]) -> None:
    base, keys = dev_server

    def auth(role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {keys[f'RUTA_{role.upper()}_KEY']}"}

    with httpx.Client(base_url=base, timeout=10) as http:
        created = http.post("/v1/screenings", json=EXAMPLE, headers=auth("clinic"))
        assert created.status_code == 201, created.text
        decision = created.json()["decision"]
        # What the README's table says she gets, and why (docs/protocol.md).
        routed = {(r["service"], r["recipient"]): r for r in decision["referrals"]}
        assert set(routed) == {
            ("protection", "child_protection_authority"),
            ("protection", "shelter"),
            ("medical", "provider"),
            ("psychological", "provider"),
        }
        authority = routed["protection", "child_protection_authority"]
        assert authority["legal_basis"] == "child_protection_duty"
        assert authority["urgency"] == "emergency"
        assert authority["partner"]["id"] in ("demuna-tambopata", "upe-mimp-nacional")
        assert routed["protection", "shelter"]["partner"]["id"] == "hogar-refugio-mdd"
        assert routed["psychological", "provider"]["legal_basis"] == "consent"
        assert [s["service"] for s in decision["trace"]["suppressed"]] == ["legal"]
        assert decision["trace"]["rule_set_hash"]
        medical = routed["medical", "provider"]
        assert medical["partner"]["id"] == "hospital-santa-rosa-mdd"
        assert medical["legal_basis"] == "child_protection_duty"
        # Posted after 20 November: more than 120 hours since the sexual violence.
        assert medical["urgency"] == "urgent"
        assert decision["trace"]["adjustments"]["health.hours_since_sexual_violence"]["value"] > 120

        replay = http.post("/v1/screenings", json=EXAMPLE, headers=auth("clinic"))
        assert replay.status_code == 200
        assert replay.json()["decision"]["referrals"][0]["id"] in {
            r["id"] for r in decision["referrals"]
        }

        # The embedded worker delivers to the demo partner's inbox, signed.
        deadline = time.monotonic() + 20
        items: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            inbox = http.get(
                "/demo/partners/hospital-santa-rosa-mdd/inbox", headers=auth("admin")
            ).json()
            items = inbox["items"]
            if items:
                break
            time.sleep(0.2)
        assert items, "the demo partner received nothing"
        # The worker records the attempt just after the partner answers.
        while time.monotonic() < deadline:
            state = http.get(f"/v1/referrals/{medical['id']}", headers=auth("auditor")).json()
            if state["status"] == "delivered":
                break
            time.sleep(0.1)
        body = json.dumps(items[0])
        assert "notes" not in body
        assert EXAMPLE["subject"]["case_code"] not in body
        assert "legal_status" not in body
        assert "migration_status" not in body
        assert '"phone_controlled": true' in body
        # The police unit in the demo directory never receives anything for her.
        police = http.get(
            "/demo/partners/policia-trata-nacional/inbox", headers=auth("admin")
        ).json()
        assert police["items"] == []

        accepted = http.post(
            f"/v1/referrals/{medical['id']}/status",
            json={"status": "accepted"},
            headers=auth("partner"),
        )
        assert accepted.status_code == 200, accepted.text

        explained = http.get(f"/v1/referrals/{medical['id']}", headers=auth("auditor")).json()
        assert [h["to"] for h in explained["history"]][-1] == "accepted"
        assert explained["deliveries"][0]["attempts"][0]["outcome"] == "delivered"
        disclosures = http.get(
            f"/v1/screenings/{EXAMPLE['id']}/disclosures", headers=auth("auditor")
        ).json()["disclosures"]
        assert any(
            d["recipient"].get("partner_id") == "hospital-santa-rosa-mdd" for d in disclosures
        )
        verified = http.get("/v1/audit/verify", headers=auth("auditor")).json()
        assert verified["ok"] is True

        # 3b. The console: the psychological referral waits in the CEM's inbox (it has no
        # endpoint), and the demo partner accepts a new screening's medical referral there.
        psychological = routed["psychological", "provider"]
        assert psychological["partner"]["id"] == "cem-puerto-maldonado"
        while time.monotonic() < deadline:
            cem = http.get(f"/v1/referrals/{psychological['id']}", headers=auth("auditor"))
            if cem.json()["status"] == "delivered":
                break
            time.sleep(0.1)
        [inbox_attempt] = cem.json()["deliveries"][0]["attempts"]
        assert inbox_attempt["outcome"] == "inbox"
        again = dict(EXAMPLE, id="6c1f8b3e-9d2e-4f1b-8c4a-3e7d2b8f0a21")
        second = http.post("/v1/screenings", json=again, headers=auth("clinic")).json()
        fresh = next(r for r in second["decision"]["referrals"] if r["service"] == "medical")
    with httpx.Client(base_url=base, timeout=10) as browser:
        form = browser.get("/console/sign-in")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert token is not None
        signed = browser.post(
            "/console/sign-in",
            data={"credential": keys["RUTA_PARTNER_KEY"], "csrf_token": token.group(1)},
        )
        assert signed.headers["location"] == "/console/inbox"
        inbox_page = browser.get("/console/inbox")
        assert f"/console/referrals/{fresh['id']}" in inbox_page.text
        opened = browser.get(f"/console/referrals/{fresh['id']}")
        assert "Aceptar" in opened.text
        session_token = re.search(r'name="csrf_token" value="([^"]+)"', opened.text)
        assert session_token is not None
        browser.post(
            f"/console/referrals/{fresh['id']}/status",
            data={"csrf_token": session_token.group(1), "status": "accepted"},
        )
    with httpx.Client(base_url=base, timeout=10) as http:
        state = http.get(f"/v1/referrals/{fresh['id']}", headers=auth("auditor")).json()
        assert state["status"] == "accepted"
