"""Localisation: a JSON catalogue per locale, chosen by Accept-Language.

Catalogues are keyed gettext-style by the English text, so a missing translation falls back
to English and adding a language is adding one file (``locales/qu.json`` for Quechua is
next). Validation messages are translated by their error code under ``"codes"``.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

LOCALES_DIR = Path(__file__).parent / "locales"
DEFAULT_LOCALE = "en"


@lru_cache(maxsize=1)
def available_locales() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in LOCALES_DIR.glob("*.json")))


@lru_cache(maxsize=16)
def catalogue(locale: str) -> dict[str, Any]:
    """``locales/<locale>.json``, with the messages of every ``locales/<locale>/*.json``
    merged in (one file per part of Ruta, e.g. ``es/console.json`` for the console)."""
    path = LOCALES_DIR / f"{locale}.json"
    if not path.exists():
        return {"messages": {}, "codes": {}}
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    for part in sorted((LOCALES_DIR / locale).glob("*.json")):
        extra: dict[str, Any] = json.loads(part.read_text(encoding="utf-8"))
        loaded.setdefault("messages", {}).update(extra.get("messages", {}))
        loaded.setdefault("codes", {}).update(extra.get("codes", {}))
    return loaded


@lru_cache(maxsize=256)
def negotiate(accept_language: str | None, default: str = DEFAULT_LOCALE) -> str:
    """Pick the best available locale from an Accept-Language header (RFC 9110 q-values);
    ``default`` when it names none (the API answers in English, the console in Spanish)."""
    if not accept_language:
        return default
    available = available_locales()
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(accept_language.split(",")):
        piece = part.strip()
        if not piece:
            continue
        tag, _, params = piece.partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        ranked.append((-quality, index, tag.strip().lower()))
    for negative_quality, _index, tag in sorted(ranked):
        if negative_quality >= 0:
            continue
        if tag == "*":
            return default
        primary = tag.split("-")[0]
        if primary in available:
            return primary
    return default


def translate(locale: str, text: str, **params: Any) -> str:
    translated = catalogue(locale).get("messages", {}).get(text, text)
    try:
        return str(translated).format(**params) if params else str(translated)
    except (KeyError, IndexError, ValueError):
        return text.format(**params) if params else text


def translate_code(locale: str, code: str, fallback: str) -> str:
    translated = catalogue(locale).get("codes", {}).get(code)
    return str(translated) if translated else fallback
