"""Envelope encryption: associated data binds each ciphertext to its row; KEK rotation
re-wraps data keys without re-encrypting data."""

from __future__ import annotations

import base64
import os
import uuid

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import crypto
from app.models import Screening, Subject
from app.services.keys import rewrap_data_keys
from app.settings import Settings
from tests.conftest import KeyFactory, bearer
from tests.factories import screening


def test_field_ciphertext_is_bound_to_table_column_and_row() -> None:
    dek = crypto.new_dek()
    row_a, row_b = uuid.uuid4(), uuid.uuid4()
    blob = crypto.encrypt_field(
        dek, b"secret", table="screenings", column="personal_ct", row_id=row_a
    )
    assert (
        crypto.decrypt_field(dek, blob, table="screenings", column="personal_ct", row_id=row_a)
        == b"secret"
    )
    for table, column, row in (
        ("screenings", "personal_ct", row_b),
        ("deliveries", "personal_ct", row_a),
        ("screenings", "notes_ct", row_a),
    ):
        with pytest.raises(crypto.DecryptionError):
            crypto.decrypt_field(dek, blob, table=table, column=column, row_id=row)
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(crypto.DecryptionError):
        crypto.decrypt_field(dek, tampered, table="screenings", column="personal_ct", row_id=row_a)


async def test_ciphertext_swapped_between_rows_fails_to_decrypt(
    http: httpx.AsyncClient, api_key: KeyFactory, app: FastAPI
) -> None:
    key = await api_key("clinic", "Caravana de la Vida")
    # Same subject (same case code), so the same data key: only the row binding differs.
    first = screening(subject__name="CANARY-SWAP-A", subject__case_code="MDD-SWAP-1")
    second = screening(subject__name="CANARY-SWAP-B", subject__case_code="MDD-SWAP-1")
    for body in (first, second):
        assert (
            await http.post("/v1/screenings", json=body, headers=bearer(key))
        ).status_code == 201
    maker: async_sessionmaker[AsyncSession] = app.state.sessionmaker
    async with maker() as session:
        a = await session.get(Screening, uuid.UUID(first["id"]))
        assert a is not None
        assert a.personal_ct is not None
        await session.execute(
            update(Screening)
            .where(Screening.id == uuid.UUID(second["id"]))
            .values(personal_ct=a.personal_ct)
        )
        await session.commit()
    ok = await http.get(
        f"/v1/screenings/{first['id']}/personal",
        params={"purpose": "care_coordination"},
        headers=bearer(key),
    )
    assert ok.json()["personal"]["subject.name"] == "CANARY-SWAP-A"
    swapped = await http.get(
        f"/v1/screenings/{second['id']}/personal",
        params={"purpose": "care_coordination"},
        headers=bearer(key),
    )
    assert swapped.status_code == 500
    assert swapped.json()["type"] == "/problems/undecryptable"
    assert "CANARY" not in swapped.text


async def test_kek_rotation_rewraps_keys_and_leaves_data_untouched(
    settings: Settings, app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    old = base64.b64encode(os.urandom(32)).decode()
    new = base64.b64encode(os.urandom(32)).decode()
    before_settings = settings.model_copy(update={"encryption_kek": _secret(old)})
    app.state.settings = before_settings
    key = await api_key("clinic", "Caravana de la Vida")
    body = screening(subject__name="CANARY-ROTATE")
    assert (await http.post("/v1/screenings", json=body, headers=bearer(key))).status_code == 201
    maker: async_sessionmaker[AsyncSession] = app.state.sessionmaker
    async with maker() as session:
        ciphertext = (await session.execute(select(Screening.personal_ct))).scalar_one()
        old_wrapped = (await session.execute(select(Subject.wrapped_dek))).scalar_one()

    rotated = settings.model_copy(
        update={"encryption_kek": _secret(new), "encryption_kek_previous": _secret(old)}
    )
    async with maker() as session:
        assert await rewrap_data_keys(session, rotated) == 1
        await session.commit()
    async with maker() as session:
        assert await rewrap_data_keys(session, rotated) == 0
        assert (await session.execute(select(Screening.personal_ct))).scalar_one() == ciphertext
        assert (await session.execute(select(Subject.wrapped_dek))).scalar_one() != old_wrapped

    # The new KEK alone now reads the data; the old one alone no longer does.
    app.state.settings = settings.model_copy(update={"encryption_kek": _secret(new)})
    url = f"/v1/screenings/{body['id']}/personal"
    read = await http.get(url, params={"purpose": "care_coordination"}, headers=bearer(key))
    assert read.json()["personal"]["subject.name"] == "CANARY-ROTATE"
    app.state.settings = settings.model_copy(update={"encryption_kek": _secret(old)})
    stale = await http.get(url, params={"purpose": "care_coordination"}, headers=bearer(key))
    assert stale.status_code == 500
    assert stale.json()["type"] == "/problems/undecryptable"


def _secret(value: str) -> object:
    from pydantic import SecretStr

    return SecretStr(value)
