"""A directory kept in a spreadsheet: ``ruta partners import partners.csv``. A CSV row is
validated exactly as a YAML directory entry is, and every error names the spreadsheet row
and column without quoting what the cell holds."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
import yaml

from app.partners.directory import CSV_COLUMNS, DirectoryError, load_directory

SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVowMTIzNDU="
ENV = {"CASA_SECRET": SECRET}
HEADER = [
    "id",
    "organisation_id",
    "organisation_name",
    "name",
    "role",
    "services",
    "regions",
    "ubigeo_prefixes",
    "national",
    "min_age",
    "max_age",
    "sexes",
    "languages",
    "capacity_available",
    "capacity_maximum",
    "timezone",
    "always_open",
    "schedule",
    "endpoint_url",
    "endpoint_format",
    "endpoint_thin",
    "endpoint_secret",
    "priority",
]
ROWS = [
    {
        "id": "casa-esperanza",
        "organisation_id": "casa-esperanza",
        "organisation_name": "Casa Esperanza (invented)",
        "name": "Casa Esperanza shelter",
        "role": "shelter",
        "services": "protection",
        "regions": "Madre de Dios; cusco",
        "min_age": "18",
        "sexes": "female",
        "languages": "es, qu",
        "capacity_available": "2",
        "capacity_maximum": "6",
        "timezone": "America/Lima",
        "schedule": "mon-fri 08:00-17:00; sat 09:00-12:00",
        "endpoint_url": "https://casa.example.org/ruta",
        "endpoint_secret": "${CASA_SECRET}",
    },
    {
        "id": "demuna-x",
        "organisation_id": "demuna-x",
        "organisation_name": "DEMUNA X (invented)",
        "name": "DEMUNA X",
        "role": "child_protection_authority",
        "services": "protection;legal",
        "ubigeo_prefixes": "1701",
        "national": "no",
        "max_age": "17",
        "languages": "es",
        "capacity_available": "5",
        "capacity_maximum": "5",
        "always_open": "sí",
        "endpoint_url": "https://demuna.example.org/ruta",
        "endpoint_format": "fhir-r4",
        "endpoint_thin": "yes",
        "priority": "10",
    },
]
#: The same directory, as a YAML file.
YAML = {
    "version": 1,
    "partners": [
        {
            "id": "casa-esperanza",
            "organisation": {"id": "casa-esperanza", "name": "Casa Esperanza (invented)"},
            "name": "Casa Esperanza shelter",
            "role": "shelter",
            "services": ["protection"],
            "service_area": {"regions": ["madre_de_dios", "cusco"]},
            "eligibility": {"min_age": 18, "sexes": ["female"]},
            "languages": ["es", "qu"],
            "capacity": {"available": 2, "maximum": 6},
            "hours": {
                "timezone": "America/Lima",
                "schedule": [
                    {
                        "days": ["mon", "tue", "wed", "thu", "fri"],
                        "opens": "08:00",
                        "closes": "17:00",
                    },
                    {"days": ["sat"], "opens": "09:00", "closes": "12:00"},
                ],
            },
            "endpoint": {"url": "https://casa.example.org/ruta", "secrets": ["${CASA_SECRET}"]},
        },
        {
            "id": "demuna-x",
            "organisation": {"id": "demuna-x", "name": "DEMUNA X (invented)"},
            "name": "DEMUNA X",
            "role": "child_protection_authority",
            "services": ["protection", "legal"],
            "service_area": {"national": False, "ubigeo_prefixes": ["1701"]},
            "eligibility": {"max_age": 17},
            "languages": ["es"],
            "capacity": {"available": 5, "maximum": 5},
            "hours": {"always_open": True},
            "endpoint": {
                "url": "https://demuna.example.org/ruta",
                "format": "fhir-r4",
                "thin": True,
            },
            "priority": 10,
        },
    ],
}


def write_csv(path: Path, rows: list[dict[str, str]], header: list[str] = HEADER) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header)
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def errors_of(path: Path) -> list[str]:
    with pytest.raises(DirectoryError) as raised:
        load_directory(path, relaxed=False, env=ENV)
    return raised.value.errors


def test_a_spreadsheet_is_the_same_directory_as_its_yaml(tmp_path: Path) -> None:
    from_csv = load_directory(write_csv(tmp_path / "p.csv", ROWS), relaxed=False, env=ENV)
    yaml_path = tmp_path / "p.yaml"
    yaml_path.write_text(yaml.safe_dump(YAML))
    assert from_csv == load_directory(yaml_path, relaxed=False, env=ENV)
    assert from_csv.partners[0].endpoint.secrets[0].get_secret_value() == SECRET
    assert set(HEADER) == set(CSV_COLUMNS) - {"description", "status"}


def test_every_bad_cell_is_named_by_row_and_column_never_by_value(tmp_path: Path) -> None:
    bad = {
        **ROWS[0],
        "services": "CANARY-SERVICE",
        "regions": "CANARY-REGION",
        "min_age": "CANARY-AGE",
        "timezone": "CANARY/ZONE",
        "schedule": "CANARY 25:00",
        "capacity_available": "9",
        "endpoint_secret": "whsec_CANARY-SECRET",
    }
    no_role = {**ROWS[1], "role": ""}
    errors = errors_of(write_csv(tmp_path / "bad.csv", [ROWS[0], bad, no_role]))
    text = "\n".join(errors)
    assert "CANARY" not in text
    columns = {line.split(", column ", 1)[1].split(":", 1)[0] for line in errors}
    assert {
        "services",
        "regions",
        "min_age",
        "timezone",
        "schedule",
        "endpoint_secret",
        "capacity_available/capacity_maximum",
        "role",
    } <= columns
    assert all(
        line.startswith(("row 3 (id=casa-esperanza)", "row 4 (id=demuna-x)")) for line in errors
    )
    assert "row 4 (id=demuna-x), column role: Field required" in errors


def test_the_url_policy_and_the_roles_rules_apply_as_for_yaml(tmp_path: Path) -> None:
    rows = [
        {**ROWS[0], "endpoint_url": "https://10.0.0.7/ruta"},
        {**ROWS[1], "role": "notification_recipient"},
    ]
    errors = errors_of(write_csv(tmp_path / "p.csv", rows))
    assert any(e.startswith("row 2 (id=casa-esperanza), column endpoint_url:") for e in errors)
    assert any(e.startswith("row 3 (id=demuna-x), column role/services:") for e in errors)


def test_the_header_needs_id_and_role_and_only_known_columns(tmp_path: Path) -> None:
    header = [h for h in HEADER if h != "role"] + ["CANARY-COLUMN"]
    rows = [{k: v for k, v in ROWS[0].items() if k != "role"} | {"CANARY-COLUMN": "x"}]
    errors = errors_of(write_csv(tmp_path / "p.csv", rows, header))
    assert "CANARY" not in "\n".join(errors)
    assert f"column(s) {len(header)} are not directory columns" in errors[0]
    assert "the columns id and role are required" in errors[1]


def test_a_bad_id_is_not_repeated_and_extra_cells_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    write_csv(path, [{**ROWS[0], "id": "CANARY ID"}])
    path.write_text(path.read_text() + ",".join(["x"] * (len(HEADER) + 2)) + "\n")
    errors = errors_of(path)
    assert "CANARY" not in "\n".join(errors)
    assert any(e.startswith("row 2, column id:") for e in errors)
    assert any(e.startswith("row 3, column (row): more cells") for e in errors)
