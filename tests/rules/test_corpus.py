"""Generated corpora are valid screenings, and the fast view decides like the model."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from app.rules import load_rule_set
from app.rules.corpus import (
    CorpusError,
    ScreeningView,
    generate_document,
    generate_documents,
    parse_corpus_spec,
    read_jsonl,
    screening_view,
    trusted_view,
)
from app.schemas.screening import ScreeningIn
from tests.factories import screening

RULE_SET = load_rule_set()


def test_generated_documents_are_valid_and_seeded() -> None:
    docs = generate_documents(2_000, seed=7)
    models = [ScreeningIn.model_validate(d) for d in docs]
    assert len(models) == 2_000
    again = generate_documents(50, seed=7)
    assert [d["id"] for d in again] == [d["id"] for d in docs[:50]]
    assert generate_documents(5, seed=8)[0]["id"] != docs[0]["id"]


def test_generated_corpus_reaches_every_rule() -> None:
    fired: set[str] = set()
    for doc in generate_documents(5_000, seed=1):
        fired.update(RULE_SET.fired_ids(ScreeningIn.model_validate(doc)))
    assert fired == {c.rule.id for c in RULE_SET.rules}


def test_views_decide_exactly_like_models() -> None:
    for doc in generate_documents(2_000, seed=2):
        model = ScreeningIn.model_validate(doc)
        json_doc = json.loads(model.model_dump_json())
        expected = RULE_SET.evaluate(model, trace=True)
        assert RULE_SET.evaluate(trusted_view(doc), trace=True) == expected
        assert RULE_SET.evaluate(screening_view(json_doc), trace=True) == expected


def test_generated_views_equal_generated_documents() -> None:
    docs = generate_documents(500, seed=4)
    rng = random.Random(4)
    for doc in docs:
        view = generate_document(rng, ScreeningView)
        assert RULE_SET.evaluate(view) == RULE_SET.evaluate(ScreeningIn.model_validate(doc))


def test_screening_view_accepts_region_names_and_ubigeo_like_the_model() -> None:
    for region in ("Madre de Dios", "17", "madre_de_dios"):
        body = screening(subject__region=region, subject__ubigeo=...)
        model = ScreeningIn.model_validate(body)
        assert screening_view(body).subject.region is model.subject.region


def test_screening_view_fills_defaults_like_the_model() -> None:
    body = screening()
    for group in ("safety", "indicators", "health", "mental_health", "legal"):
        body.pop(group)
    model = ScreeningIn.model_validate(body)
    assert RULE_SET.evaluate(screening_view(body)) == RULE_SET.evaluate(model)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("subject", "age"), "16"),
        (("subject", "age"), 500),
        (("subject", "sex"), "robot"),
        (("subject", "sex"), ["female"]),
        (("subject", "region"), "Atlantis"),
        (("consent", "scopes"), "medical"),
        (("indicators", "sectors"), [["mining"]]),
        (("health", "hours_since_sexual_violence"), True),
        (("consent", "given"), "yes"),
        (("indicators", "sectors"), ["gold"]),
        (("subject", "nationality"), "Peru"),
    ],
)
def test_screening_view_rejects_invalid_rule_fields(path: tuple[str, str], value: object) -> None:
    body = screening()
    body[path[0]][path[1]] = value
    with pytest.raises(ValueError, match=".".join(path)):
        screening_view(body)


def test_read_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(screening()) + "\n\n" + json.dumps(screening()) + "\n")
    assert [n for n, _ in read_jsonl(path)] == [1, 3]
    path.write_text(json.dumps(screening()) + "\n{not json\n")
    with pytest.raises(CorpusError, match=":2: invalid JSON"):
        list(read_jsonl(path))


def test_parse_corpus_spec() -> None:
    assert parse_corpus_spec("generated") == ("generated", 10_000)
    assert parse_corpus_spec("generated:5") == ("generated", 5)
    assert parse_corpus_spec("x.jsonl") == ("file", Path("x.jsonl"))
    with pytest.raises(CorpusError):
        parse_corpus_spec("generated:abc")
