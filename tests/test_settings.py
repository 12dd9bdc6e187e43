"""Process tuning from the settings."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from app.settings import Environment, Settings, tune_gc


@pytest.fixture
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


@pytest.mark.usefixtures("restore_gc")
def test_the_gc_threshold_is_applied_to_the_process() -> None:
    gc.set_threshold(700, 10, 10)
    tune_gc(Settings(env=Environment.test, gc_threshold=40_000))
    assert gc.get_threshold() == (40_000, 20, 100)


@pytest.mark.usefixtures("restore_gc")
def test_zero_leaves_python_s_default() -> None:
    gc.set_threshold(700, 10, 10)
    tune_gc(Settings(env=Environment.test, gc_threshold=0))
    assert gc.get_threshold() == (700, 10, 10)


def test_the_default_is_raised_and_bounded() -> None:
    assert Settings(env=Environment.test).gc_threshold == 50_000
    with pytest.raises(ValueError, match="gc_threshold"):
        Settings(env=Environment.test, gc_threshold=-1)


def test_trusted_proxies_are_addresses_or_networks_comma_separated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings(env=Environment.test).trusted_proxies == []
    monkeypatch.setenv("RUTA_TRUSTED_PROXIES", " 10.0.0.5, 10.1.0.0/16,fd00::1 ")
    assert Settings(env=Environment.test).trusted_proxies == [
        "10.0.0.5/32",
        "10.1.0.0/16",
        "fd00::1/128",
    ]


@pytest.mark.parametrize("value", ["*", "proxy.internal", "10.0.0.0/33", "10.0.0.5,*"])
def test_trusted_proxies_refuse_wildcards_and_names(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("RUTA_TRUSTED_PROXIES", value)
    with pytest.raises(ValueError, match="RUTA_TRUSTED_PROXIES takes IP addresses"):
        Settings(env=Environment.test)
