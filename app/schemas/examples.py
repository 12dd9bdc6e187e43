"""Realistic examples for the OpenAPI document and the README. All people are invented."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.openapi.models import Example

from app.models.delivery import webhook_id_of
from app.partners import fhir

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


# --- Responses and other request bodies --------------------------------------------------
# Invented but shaped exactly like what Ruta answers; tests/test_openapi.py validates each
# one against the schema it documents.

SCREENING_ID = EXAMPLE_SCREENING["id"]
DECISION_ID = "9e1d2c00-fc15-4382-aaa0-e627b8077ade"
REFERRAL_ID = "61367e7a-23c6-4975-b221-429427533d26"
DELIVERY_ID = "60af99db-7651-46af-ba6a-7a4c45f4f8cf"
#: Its ``webhook-id``, derived from its id as every delivery's is.
WEBHOOK_ID = webhook_id_of(uuid.UUID(DELIVERY_ID))
SUBJECT_ID = "0d6f4c1e-2a7b-4c39-9e0f-5b8d7a3c2e11"
RULE_SET_HASH = "5b0b0ce38a63d906f15c2133f9aea70d6ffc3404519784e33d5ecaf6c409f2aa"
HOSPITAL = {"id": "hospital-santa-rosa-mdd", "name": "Hospital Santa Rosa - Puerto Maldonado"}

REASON: dict[str, Any] = {
    "rule_id": "sexual-violence-72h",
    "guideline": "WHO, UNFPA, UNHCR. Clinical management of rape and intimate partner "
    "violence survivors (2020): HIV PEP within 72 hours",
    "text": {
        "es": "Violencia sexual hace 72 horas o menos: profilaxis post-exposición. "
        "No se exige denuncia policial.",
        "en": "Sexual violence within 72 hours: post-exposure prophylaxis. "
        "No police report is required.",
    },
    "urgency": "emergency",
    "legal_basis": "consent",
}

FIRED_RULE: dict[str, Any] = {
    "rule_id": "minor-protection",
    "guideline": "UNICEF Guidelines on the Protection of Child Victims of Trafficking (2006)",
    "service": "protection",
    "text": {
        "es": "Presunta persona menor de edad: se trata como niña, niño o adolescente hasta "
        "verificar su edad.",
        "en": "Presumed minor: treated as a child until the age is verified.",
    },
    "inputs": {"subject.age": 16, "subject.age_disputed": False},
}

TRACE: dict[str, Any] = {
    "rule_set_version": "2026.12.1",
    "rule_set_hash": RULE_SET_HASH,
    "fired": [FIRED_RULE],
    "suppressed": [
        {
            "service": "legal",
            "urgency": "routine",
            "reason": "outside_scope",
            "rule_ids": ["documents-withheld", "debt-bondage"],
        }
    ],
    "facts_as_of": "2026-11-20T14:52:10.120000Z",
    "adjustments": {
        "health.hours_since_sexual_violence": {
            "source": "elapsed_since_screening",
            "at_screening": 30.0,
            "elapsed_hours": 0.2,
            "value": 30.2,
        }
    },
}

REFERRAL: dict[str, Any] = {
    "id": REFERRAL_ID,
    "service": "medical",
    "recipient": "provider",
    "urgency": "emergency",
    "legal_basis": "child_protection_duty",
    "identifying": True,
    "flags": ["interpreter_needed", "no_police_report_required", "phone_controlled"],
    "status": "queued",
    "partner": HOSPITAL,
    "respond_by": "2026-11-21T14:52:10.120000+00:00",
    "needs_human": False,
    "human_reason": None,
    "data_categories": ["clinical", "demographics", "location", "needs", "safe_contact"],
    "reasons": [REASON],
}

DECISION_VIEW: dict[str, Any] = {
    "id": DECISION_ID,
    "rule_set": {"version": "2026.12.1", "sha256": RULE_SET_HASH},
    "non_identifying_notification": False,
    "notification_recipient": None,
    "referrals": [REFERRAL],
    "trace": TRACE,
}

RECEIPT: dict[str, Any] = {
    "id": SCREENING_ID,
    "organisation": "Caravana de la Vida",
    "status": "decided",
    "schema_version": "1",
    "screened_at": "2026-11-20T14:40:00Z",
    "received_at": "2026-11-20T14:52:10.120000Z",
    "replayed": False,
    "decision": DECISION_VIEW,
}

SCREENING_DETAIL: dict[str, Any] = {
    **RECEIPT,
    "screening": {
        "id": SCREENING_ID,
        "schema_version": "1",
        "source": EXAMPLE_SCREENING["source"],
        "subject": {**EXAMPLE_SCREENING["subject"], "region": "madre_de_dios"},
        "consent": EXAMPLE_SCREENING["consent"],
    },
    "personal_fields": ["safety.safe_contact"],
}

BATCH_IN: dict[str, Any] = {"screenings": [EXAMPLE_SCREENING]}

BATCH_RESULT: dict[str, Any] = {
    "created": 1,
    "replayed": 0,
    "failed": 1,
    "results": [
        {
            "index": 0,
            "id": SCREENING_ID,
            "status": "created",
            "http_status": 201,
            "receipt": RECEIPT,
            "problem": None,
        },
        {
            "index": 1,
            "id": "c1f0e7d2-3b4a-4f5e-8a9b-0c1d2e3f4a5b",
            "status": "invalid",
            "http_status": 422,
            "receipt": None,
            "problem": {
                "type": "/problems/validation",
                "title": "The request is not valid",
                "status": 422,
                "errors": [
                    {
                        "path": "subject.case_code",
                        "pointer": "#/subject/case_code",
                        "message": "Field required",
                        "code": "missing",
                    }
                ],
            },
        },
    ],
}

ERASURE_IN: dict[str, Any] = {
    "organisation": "Caravana de la Vida",
    "case_code": "MDD-2026-0173",
    "reason": "data_subject_request",
}
ERASURE_OUT: dict[str, Any] = {
    "subject_id": SUBJECT_ID,
    "erased_at": "2026-11-28T10:05:00Z",
    "screenings_made_unreadable": 2,
}
PERSONAL_OUT: dict[str, Any] = {
    "screening_id": SCREENING_ID,
    "purpose": "care_coordination",
    "erased": False,
    "personal": {
        "safety.safe_contact": {"channel": "through_clinic", "safe_times": "mornings"},
    },
}

# --- Audit --------------------------------------------------------------------------------

EVENT: dict[str, Any] = {
    "seq": 14,
    "prev_hash": "a3d2647abcfdc6fd0eeb260cfaaa6415a9548eeb38f742d237abb9de16b8f1a3",
    "hash": "c2881c2849b63e1535e1cf06c1aa4d64e2675ac8ab32390290ccf2b6832cba7c",
    "occurred_at": "2026-11-20T14:52:10.572430Z",
    "action": "referral.forwarded",
    "actor": {"type": "system", "id": "delivery", "role": None},
    "refs": {
        "screening_id": SCREENING_ID,
        "referral_id": REFERRAL_ID,
        "partner_id": HOSPITAL["id"],
        "subject_id": SUBJECT_ID,
        "request_id": "18b45c4576694c929d6237cc09fbf33a",
    },
    "data": {
        "delivery_id": DELIVERY_ID,
        "payload_hash": "c6d101a65a5cb1dc3dba3fd16accbfb0215e339dfa6306677f557fafed5ecab9",
        "fields_shared": ["clinical", "demographics", "location"],
        "legal_basis": "child_protection_duty",
        "service": "medical",
        "attempt": 1,
    },
}
EVENT_PAGE: dict[str, Any] = {"events": [EVENT], "next_cursor": "YXVkaXQ6MTQ"}
VERIFY_OUT: dict[str, Any] = {
    "ok": True,
    "scope": "incremental",
    "from_seq": 12001,
    "verified_through": 12018,
    "complete": True,
    "events_checked": 18,
    "first_seq": 12001,
    "last_seq": 12018,
    "head_hash": "c2881c2849b63e1535e1cf06c1aa4d64e2675ac8ab32390290ccf2b6832cba7c",
    "checkpoints_checked": 1,
    "first_bad_seq": None,
    "reason": None,
    "detail": None,
    "checkpoint_seq": None,
    "checkpoint_source": None,
    "unchecked_checkpoints": [],
    "advice": [],
    "full_walk": {
        "status": "ok",
        "started_at": "2026-11-20T03:00:00Z",
        "progress_seq": 11873,
        "to_seq": 11873,
        "last_finished_at": "2026-11-20T03:00:02Z",
        "last_ok": True,
        "last_to_seq": 11873,
        "last_first_bad_seq": None,
        "last_reason": None,
        "last_checkpoint_seq": None,
    },
}
AUDIT_KEY_ID = "fff7b47d68d6151d"
AUDIT_PUBLIC_KEY = "RCmTBlAEqh5MSPTdAVgZTAI0m8xmTNluQA6iaZGKjVE="
AUDIT_ORIGIN = f"ruta-audit/{AUDIT_KEY_ID}"
CHECKPOINT_PAGE: dict[str, Any] = {
    "key_id": AUDIT_KEY_ID,
    "public_key": AUDIT_PUBLIC_KEY,
    "checkpoints": [
        {
            "type": "checkpoint",
            "seq": 10,
            "hash": "9a1f2e3d4c5b6a79881726354433221100ffeeddccbbaa998877665544332211",
            "time": "2026-11-20T15:00:00.000000Z",
            "key_id": AUDIT_KEY_ID,
            "signature": "2yH0KuXz/SH75L151IP9Dyr3gLn1Ie66X7aD8BH/5x+wRegpei7a4f8mvnm3df/xmKZht2"
            "zDw0+o3PwVz62sbVqnNAI=",
            "root": "SBNJTRN+FjG7owHVrKtue7eqdM4RhdRWVl71HXN2d7I=",
            "note": f"{AUDIT_ORIGIN}\n10\nSBNJTRN+FjG7owHVrKtue7eqdM4RhdRWVl71HXN2d7I=\n\n"
            f"\u2014 {AUDIT_ORIGIN} 2yH0KuXz/SH75L151IP9Dyr3gLn1Ie66X7aD8BH/5x+wRegpei7a4f8mvnm3"
            "df/xmKZht2zDw0+o3PwVz62sbVqnNAI=\n",
        }
    ],
    "next_cursor": None,
}
PUBLIC_KEY_OUT: dict[str, Any] = {
    "algorithm": "Ed25519",
    "key_id": AUDIT_KEY_ID,
    "public_key": AUDIT_PUBLIC_KEY,
    "pem": "-----BEGIN PUBLIC KEY-----\n"
    f"MCowBQYDK2VwAyEA{AUDIT_PUBLIC_KEY}\n"
    "-----END PUBLIC KEY-----\n",
    "origin": AUDIT_ORIGIN,
    "verifier_key": f"{AUDIT_ORIGIN}+db21f42a+AUQpkwZQBKoeTEj03QFYGUwCNJvMZkzZbkAOommRio1R",
}

# --- Rules --------------------------------------------------------------------------------

RULE_SET_INFO: dict[str, Any] = {
    "version": "2026.12.1",
    "sha256": RULE_SET_HASH,
    "title": "Ruta default protocol (docs/protocol.md)",
    "rules": 27,
}
EVALUATE_OUT: dict[str, Any] = {
    "rule_set": RULE_SET_INFO,
    "decision": {
        "referrals": [
            {
                "service": "medical",
                "urgency": "emergency",
                "legal_basis": "child_protection_duty",
                "identifying": False,
                "flags": ["interpreter_needed", "phone_controlled", "treat_as_child"],
                "reasons": [REASON],
            }
        ],
        "non_identifying_notification": False,
        "trace": TRACE,
    },
}

# --- Partners -----------------------------------------------------------------------------

PARTNER_IN: dict[str, Any] = {
    "id": "hospital-santa-rosa-mdd",
    "organisation": {"id": "diresa-mdd", "name": "DIRESA Madre de Dios"},
    "name": "Hospital Santa Rosa - Puerto Maldonado",
    "role": "health_facility",
    "services": ["medical"],
    "service_area": {"regions": ["madre_de_dios"]},
    "eligibility": {"min_age": 0},
    "languages": ["es", "qu"],
    "capacity": {"available": 3, "maximum": 10},
    "hours": {"always_open": True},
    "endpoint": {"url": "https://hospital-santa-rosa.example.org/ruta/referrals"},
    "priority": 10,
}
PARTNER_OUT: dict[str, Any] = {
    "id": "hospital-santa-rosa-mdd",
    "organisation": {"id": "diresa-mdd", "name": "DIRESA Madre de Dios"},
    "name": "Hospital Santa Rosa - Puerto Maldonado",
    "role": "health_facility",
    "description": None,
    "services": ["medical"],
    "service_area": {"national": False, "regions": ["madre_de_dios"], "ubigeo_prefixes": []},
    "eligibility": {"min_age": 0, "max_age": None, "sexes": []},
    "languages": ["es", "qu"],
    "capacity": {"available": 3, "maximum": 10, "updated_at": "2026-11-20T08:00:00Z"},
    "hours": {"timezone": "America/Lima", "always_open": True, "schedule": []},
    "endpoint": {
        "url": "https://hospital-santa-rosa.example.org/ruta/referrals",
        "format": "ruta-json",
        "thin": False,
        "has_signing_secret": True,
        "secret_rotated_at": "2026-11-20T08:00:00Z",
    },
    "status": "active",
    "priority": 10,
    "source": "api",
    "overridden": [],
    "created_at": "2026-11-20T08:00:00Z",
    "updated_at": "2026-11-20T08:00:00Z",
}
PARTNER_PAGE: dict[str, Any] = {"items": [PARTNER_OUT], "next_cursor": "aG9zcGl0YWwtc2FudGE"}
PARTNER_PATCH: dict[str, Any] = {
    "capacity": {"maximum": 12},
    "languages": ["es", "qu", "ay"],
    "endpoint": {"thin": True},
}
CAPACITY_REPORT: dict[str, Any] = {"available": 2}
ROTATED_SECRET: dict[str, Any] = {
    "partner_id": "hospital-santa-rosa-mdd",
    "secret": "whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVowMTIzNDU=",
    "rotated_at": "2026-11-28T09:00:00Z",
    "previous_valid_until": "2026-11-29T09:00:00Z",
}

# --- Referrals ----------------------------------------------------------------------------

STATUS_REPORTED: dict[str, Any] = {"id": REFERRAL_ID, "reported": "accepted"}
CONSENT_WITHDRAWN: dict[str, Any] = {
    "revoked": ["3f2a1b0c-9d8e-4f7a-8b6c-5d4e3f2a1b0c"],
    "standing": [{"id": REFERRAL_ID, "service": "medical", "legal_basis": "child_protection_duty"}],
}
REFERRAL_LIST_ITEM: dict[str, Any] = {
    **REFERRAL,
    "status": "accepted",
    "screening_id": SCREENING_ID,
    "created_at": "2026-11-20T14:52:10.120000+00:00",
    "region": "madre_de_dios",
}
REFERRAL_PAGE: dict[str, Any] = {
    "items": [REFERRAL_LIST_ITEM],
    "next_cursor": "MjAyNi0xMS0yMFQxNDo1MjoxMC4xMiswMDowMHw2MTM2N2U3YQ",
}
REFERRAL_EXPLANATION: dict[str, Any] = {
    **REFERRAL,
    "status": "accepted",
    "screening_id": SCREENING_ID,
    "created_at": "2026-11-20T14:52:10.120000+00:00",
    "tried_partners": [],
    "decision": {
        "id": DECISION_ID,
        "rule_set": {"version": "2026.12.1", "sha256": RULE_SET_HASH},
        "trace": TRACE,
    },
    "match": {
        "service": "medical",
        "partner_id": HOSPITAL["id"],
        "fallback_ids": ["linea-salud-nacional"],
        "chosen_because": ["offers_service", "serves_region", "speaks_language", "has_capacity"],
        "passed_over": [{"partner_id": "hospital-regional-cusco", "reason": "out_of_area"}],
        "needs_human": False,
        "respond_by": "2026-11-21T14:52:10.120000Z",
    },
    "history": [
        {
            "at": "2026-11-20T14:52:10.120000+00:00",
            "from": None,
            "to": "queued",
            "reason": None,
            "partner_id": HOSPITAL["id"],
            "actor_role": "clinic",
        },
        {
            "at": "2026-11-20T14:52:10.561574+00:00",
            "from": "queued",
            "to": "delivered",
            "reason": None,
            "partner_id": HOSPITAL["id"],
            "actor_role": "system",
        },
        {
            "at": "2026-11-20T16:03:41.469102+00:00",
            "from": "delivered",
            "to": "accepted",
            "reason": None,
            "partner_id": HOSPITAL["id"],
            "actor_role": "partner",
        },
    ],
    "deliveries": [
        {
            "id": DELIVERY_ID,
            "webhook_id": WEBHOOK_ID,
            "partner_id": HOSPITAL["id"],
            "event_type": "referral.created",
            "status": "delivered",
            "body_sha256": "c6d101a65a5cb1dc3dba3fd16accbfb0215e339dfa6306677f557fafed5ecab9",
            "replays": 0,
            "attempts": [
                {
                    "attempt": 1,
                    "started_at": "2026-11-20T14:52:10.316441+00:00",
                    "latency_ms": 21,
                    "status_code": 200,
                    "outcome": "delivered",
                    "error": None,
                },
            ],
        }
    ],
}
DISCLOSURES: dict[str, Any] = {
    "screening_id": SCREENING_ID,
    "disclosures": [
        {
            "seq": 14,
            "at": "2026-11-20T14:52:10.572430+00:00",
            "kind": "forwarded",
            "recipient": HOSPITAL,
            "referral_id": REFERRAL_ID,
            "categories": ["clinical", "demographics", "location", "needs", "safe_contact"],
            "fields": [],
            "legal_basis": "child_protection_duty",
            "purpose": None,
        },
        {
            "seq": 31,
            "at": "2026-11-21T09:12:00.000000+00:00",
            "kind": "read",
            "recipient": {
                "actor_role": "clinic",
                "actor_id": "34b03972-e086-4a44-bf65-d8d4114a17d5",
            },
            "referral_id": None,
            "categories": ["safe_contact"],
            "fields": ["safety.safe_contact"],
            "legal_basis": None,
            "purpose": "care_coordination",
        },
    ],
}
REFERRAL_DETAILS: dict[str, Any] = {
    "type": "referral.details",
    "format": "ruta-json/1",
    "thin": False,
    "referral": {
        "id": REFERRAL_ID,
        "partner_id": HOSPITAL["id"],
        "service": "medical",
        "urgency": "emergency",
        "respond_by": "2026-11-21T14:52:10.120000+00:00",
        "status_url": f"https://ruta.example.org/v1/referrals/{REFERRAL_ID}/status",
        "legal_basis": "child_protection_duty",
        "identifying": False,
        "flags": ["interpreter_needed", "phone_controlled"],
        "reasons": [{k: REASON[k] for k in ("rule_id", "guideline", "text")}],
        "referring_organisation": "Caravana de la Vida",
    },
    "contact_instructions": {
        "phone_controlled": True,
        "do_not_contact_caregiver": False,
        "channel": "through_clinic",
        "safe_times": "mornings, via the clinic",
        "contact_through_referrer": True,
        "instructions": [
            {
                "es": "Contacte a la persona solo a través de la organización que deriva.",
                "en": "Contact the person only through the referring organisation.",
            }
        ],
    },
    "screening": {
        "subject": {
            "age": 16,
            "sex": "female",
            "preferred_language": "qu",
            "region": "madre_de_dios",
        },
        "health": {"hours_since_sexual_violence": 30.0, "sti_symptoms": True},
    },
    "data_categories": ["clinical", "demographics", "location", "needs", "safe_contact"],
}

# --- What partners receive (the webhooks) ---------------------------------------------------

REFERRAL_CREATED: dict[str, Any] = {**REFERRAL_DETAILS, "type": "referral.created"}
REFERRAL_CREATED_THIN: dict[str, Any] = {
    "type": "referral.created",
    "format": "ruta-json/1",
    "thin": True,
    "referral": {
        **{k: REFERRAL_DETAILS["referral"][k] for k in ("id", "partner_id", "service")},
        **{k: REFERRAL_DETAILS["referral"][k] for k in ("urgency", "respond_by", "status_url")},
        "details_url": f"https://ruta.example.org/v1/referrals/{REFERRAL_ID}/details",
    },
}
REFERRAL_REVOKED: dict[str, Any] = {
    "type": "referral.revoked",
    "format": "ruta-json/1",
    "referral": {
        "id": REFERRAL_ID,
        "partner_id": HOSPITAL["id"],
        "reason": "consent_withdrawn",
        "stands": False,
        "instruction": {
            "es": "La persona retiró su consentimiento: suspenda la derivación y elimine los "
            "datos recibidos según su política de protección de datos. Ya no puede consultar "
            "sus datos en Ruta.",
            "en": "The person withdrew consent: stop the referral and delete the data you "
            "received under your data-protection policy. You can no longer read the person's "
            "data in Ruta.",
        },
    },
}
REFERRAL_CONSENT_WITHDRAWN: dict[str, Any] = {
    "type": "referral.consent_withdrawn",
    "format": "ruta-json/1",
    "referral": {
        "id": REFERRAL_ID,
        "partner_id": "upe-mimp-nacional",
        "reason": "consent_withdrawn",
        "stands": True,
        "legal_basis": "child_protection_duty",
        "instruction": {
            "es": "La persona retiró su consentimiento, pero esta derivación no se basa en él: "
            "se mantiene por el deber de proteger a la niñez. Continúe la atención y use los "
            "datos solo para ese fin.",
            "en": "The person withdrew consent, but this referral does not rest on it: it "
            "stands on child-protection duty. Continue the care, and use the data for that "
            "purpose only.",
        },
    },
}
NOTIFICATION_CREATED: dict[str, Any] = {
    "type": "notification.created",
    "format": "ruta-json/1",
    "notification": {
        "id": "6c3f2f4e-7d0b-4a8e-9b1c-2d3e4f5a6b7c",
        "reason": "adult_declined_consent",
        "month": "2026-11",
        "referring_organisation": "Caravana de la Vida",
    },
    "case": {
        "region": "madre_de_dios",
        "age_band": "25-34",
        "sex": "male",
        "exploitation_types": ["labour"],
        "control_methods": ["debt_bondage"],
        "recruitment": ["job_offer"],
        "sectors": ["mining"],
    },
}
#: The fhir-r4 forms, rendered from the ruta-json examples by the real renderer.
_HOSPITAL_ORG = {"id": "hospital-santa-rosa", "name": HOSPITAL["name"]}
FHIR_REFERRAL_CREATED: dict[str, Any] = fhir.referral_bundle(
    REFERRAL_CREATED, organisation=_HOSPITAL_ORG, public_base_url="https://ruta.example.org"
)
FHIR_REFERRAL_REVOKED: dict[str, Any] = fhir.notice_bundle(
    REFERRAL_REVOKED, organisation=_HOSPITAL_ORG, public_base_url="https://ruta.example.org"
)
FHIR_REFERRAL_CONSENT_WITHDRAWN: dict[str, Any] = fhir.notice_bundle(
    REFERRAL_CONSENT_WITHDRAWN,
    organisation={"id": "upe-mimp", "name": "UPE - MIMP"},
    public_base_url="https://ruta.example.org",
)
FHIR_REFERRAL_DETAILS: dict[str, Any] = fhir.referral_bundle(
    REFERRAL_DETAILS, organisation=_HOSPITAL_ORG, public_base_url="https://ruta.example.org"
)
FHIR_CODE_SYSTEM: dict[str, Any] = fhir.code_system(  # type: ignore[assignment]
    "service-category",
    public_base_url="https://ruta.example.org",
    rules=(),
    rules_version="",
    fields=(),
)
_SERVICE_ID = "8c5e1f5a-2f7e-5a7b-9a55-0a1b2c3d4e5f"
_HOSPITAL_ORG_ID = "1e0d3c8b-6b8a-5f0e-8d3c-2a1b0c9d8e7f"


def _term(taxonomy: str, code: str, name: str, n: int) -> dict[str, Any]:
    return {
        "id": f"0000000{n}-1b2c-5d3e-8f4a-5b6c7d8e9f00",
        "link_id": _SERVICE_ID,
        "link_type": taxonomy,
        "link_entity": "service",
        "value": code,
        "label": name,
        "taxonomy_term": {
            "id": f"1000000{n}-1b2c-5d3e-8f4a-5b6c7d8e9f00",
            "code": code,
            "name": name,
            "description": f"{taxonomy}: {name}",
            "taxonomy": taxonomy,
        },
    }


SERVICE_PAGE: dict[str, Any] = {
    "total_items": 1,
    "total_pages": 1,
    "page_number": 1,
    "size": 1,
    "first_page": True,
    "last_page": True,
    "empty": False,
    "contents": [
        {
            "id": _SERVICE_ID,
            "organization_id": _HOSPITAL_ORG_ID,
            "name": HOSPITAL["name"],
            "description": "Emergency and general medicine; mercury and malaria screening.",
            "status": "active",
            "eligibility_description": "Any age; any sex.",
            "minimum_age": None,
            "maximum_age": None,
            "languages": [
                {
                    "id": "2b3c4d5e-6f70-5182-9384-a5b6c7d8e9f0",
                    "service_id": _SERVICE_ID,
                    "code": "es",
                }
            ],
            "service_areas": [
                {
                    "id": "3c4d5e6f-7081-5293-a4b5-c6d7e8f90a1b",
                    "service_id": _SERVICE_ID,
                    "name": "madre_de_dios",
                    "description": "Department (region) of Peru",
                    "extent_type": None,
                    "extent": None,
                }
            ],
            "schedules": [
                {
                    "id": "4d5e6f70-8192-53a4-b5c6-d7e8f90a1b2c",
                    "service_id": _SERVICE_ID,
                    "freq": "WEEKLY",
                    "byday": "MO,TU,WE,TH,FR,SA,SU",
                    "opens_at": None,
                    "closes_at": None,
                    "timezone": None,
                    "description": "Always open (24 hours, every day).",
                }
            ],
            "capacities": [
                {
                    "id": "5e6f7081-92a3-54b5-86d7-e8f90a1b2c3d",
                    "unit": {"id": "6f708192-a3b4-55c6-97e8-f90a1b2c3d4e", "name": "new referrals"},
                    "available": 3,
                    "maximum": 10,
                    "description": "New referrals the partner can take now (it reports them).",
                    "updated": "2026-11-20T08:00:00+00:00",
                }
            ],
            "attributes": [
                _term("ruta_partner_id", HOSPITAL["id"], HOSPITAL["id"], 1),
                _term("ruta_partner_role", "health_facility", "Health facility", 2),
                _term("ruta_service_category", "medical", "Medical", 3),
            ],
            "organization": {
                "id": _HOSPITAL_ORG_ID,
                "name": HOSPITAL["name"],
                "description": HOSPITAL["name"],
                "identifiers": [
                    {
                        "id": "708192a3-b4c5-56d7-a8f9-0a1b2c3d4e5f",
                        "identifier_scheme": "ruta",
                        "identifier_type": "ruta_organisation_id",
                        "identifier": "hospital-santa-rosa",
                    }
                ],
            },
        }
    ],
}

# --- Deliveries ---------------------------------------------------------------------------

DELIVERY: dict[str, Any] = {
    "id": DELIVERY_ID,
    "webhook_id": WEBHOOK_ID,
    "referral_id": REFERRAL_ID,
    "partner_id": HOSPITAL["id"],
    "event_type": "referral.created",
    "status": "dead",
    "attempts": 14,
    "replays": 0,
    "last_error": "http_503",
    "needs_human": True,
    "created_at": "2026-11-20T14:52:10.120000+00:00",
    "finished_at": "2026-11-23T14:58:02.000000+00:00",
}
DELIVERY_DETAIL: dict[str, Any] = {
    **DELIVERY,
    "attempt_log": [
        {
            "attempt": 14,
            "started_at": "2026-11-23T14:58:01.700000+00:00",
            "latency_ms": 300,
            "status_code": 503,
            "outcome": "retry",
            "error": "http_503",
            "response_excerpt": "Service Unavailable",
        }
    ],
}
REPLAYED: dict[str, Any] = {
    **DELIVERY,
    "status": "pending",
    "attempts": 0,
    "replays": 1,
    "needs_human": False,
    "finished_at": None,
}
DEAD_LETTERS: dict[str, Any] = {"items": [DELIVERY]}

# --- Health and the demo inbox --------------------------------------------------------------

HEALTHY: dict[str, Any] = {"status": "ok"}
READY: dict[str, Any] = {"status": "ready", "database_revision": "0005"}
INBOX_RECEIPT: dict[str, Any] = {"received": True, "duplicate": False}
INBOX: dict[str, Any] = {
    "partner_id": HOSPITAL["id"],
    "items": [
        {
            "partner_id": HOSPITAL["id"],
            "webhook_id": WEBHOOK_ID,
            "received_at": "2026-11-20T14:52:10.516882+00:00",
            "payload": {**REFERRAL_DETAILS, "type": "referral.created"},
        }
    ],
}
