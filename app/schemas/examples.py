"""Realistic examples for the OpenAPI document and the README. All people are invented."""

from __future__ import annotations

from typing import Any

from fastapi.openapi.models import Example

EXAMPLE_SCREENING: dict[str, Any] = {
    "id": "5b0f7a2e-8c1d-4e0a-9b3f-2d6c1a7e9f10",
    "schema_version": "1",
    "source": {
        "site": "Caravana de la Vida - La Pampa, km 108",
        "screener": "obst-014",
        "tool": {"name": "tvit", "version": "2.1"},
        "interview_language": "es",
        "screened_at": "2026-11-20T09:40:00-05:00",
    },
    "subject": {
        "case_code": "MDD-2026-0173",
        "age": 16,
        "age_estimated": True,
        "sex": "female",
        "nationality": "PE",
        "preferred_language": "qu",
        "speaks_spanish": True,
        "region": "Madre de Dios",
        "ubigeo": "170101",
        "unaccompanied_minor": True,
    },
    "consent": {
        "given": True,
        "scopes": ["medical", "psychological", "protection"],
        "share_identifying": False,
        "method": "verbal",
        "recorded_at": "2026-11-20T09:45:00-05:00",
    },
    "safety": {
        "immediate_danger": False,
        "trafficker_nearby": True,
        "can_return_safely": False,
        "phone_controlled": True,
        "safe_contact": {"channel": "through_clinic", "safe_times": "mornings, via the clinic"},
    },
    "indicators": {
        "exploitation_types": ["sexual"],
        "control_methods": ["debt_bondage", "documents_withheld"],
        "recruitment": ["job_offer"],
        "sectors": ["mining", "bar_nightclub"],
    },
    "health": {
        "injury_severity": "minor",
        "hours_since_sexual_violence": 30,
        "sti_symptoms": True,
        "mining_exposure": True,
    },
    "mental_health": {"suicidal": "ideation", "acute_distress": True, "positive_screen": True},
    "legal": {
        "has_documents": False,
        "documents_withheld": True,
        "migration_status": "national",
        "unpaid_wages": True,
    },
    "needs_expressed": ["medical_care", "shelter", "return_home"],
}

SCREENING_EXAMPLE: dict[str, Example] = {
    "minor_in_mining_camp": Example(
        summary="A 16-year-old girl in a mining camp in Madre de Dios",
        value=EXAMPLE_SCREENING,
    )
}
