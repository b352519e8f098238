"""The OpenAPI document: valid (checked by openapi-spec-validator), and true to what the endpoints send, checked by
fuzzing the running farm with schemathesis (all its default checks, a bounded number of examples)."""

from __future__ import annotations

from datetime import timedelta

import schemathesis
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate
from schemathesis.config import SchemathesisConfig
from schemathesis.generation.modes import GenerationMode

from tools.localfarm import Farm

# Examples per operation and generation mode: with 18 operations on two backends, about a minute and a half here.
MAX_EXAMPLES = 50
# Each example's request must be answered within this (the requests time out at 30 s anyway).
DEADLINE = timedelta(seconds=20)


def test_the_document_is_valid_openapi(client) -> None:
    spec = client.get("/openapi/openapi.json").get_json()
    validate(spec)  # raises on any violation of the OpenAPI 3.1 schema
    assert spec["components"]["securitySchemes"]["apiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": spec["components"]["securitySchemes"]["apiKey"]["description"],
    }
    assert spec["paths"]["/health"]["get"]["security"] == []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            assert "default" not in operation["responses"], f"{method} {path}: statuses must be listed"
            if "429" in operation["responses"]:
                assert "Retry-After" in operation["responses"]["429"]["headers"]


# Schema-valid data may still be refused for what JSON Schema cannot say: a language or speaker the live workers do
# not have, latents of another model's width, an upload that is not audio, a text with nothing to speak. Those
# refusals are 400s with these codes, or a `validation_error` of a rule across fields (min_new_tokens <= max_new_tokens:
# its details name no field). Any other 400 for schema-valid data means the document is wrong, and
# `semantic_refusals_only` fails it. Size limits that are settings answer 413.
SEMANTIC_CODES = {
    "unknown_language",
    "unknown_speaker",
    "invalid_latents",
    "not_audio",
    "unusable_audio",
    "decode_timeout",
    "nothing_to_speak",
    "invalid_input",
}
CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            "positive_data_acceptance": {
                "expected-statuses": ["2xx", "3xx", "400", "401", "403", "404", "409", "413", "429", "5xx"]
            },
            "negative_data_rejection": {
                "expected-statuses": [
                    *("400", "401", "403", "404", "405", "406", "409", "413", "414", "415", "422", "428", "429"),
                    "5xx",
                ]
            },
        }
    }
)


def semantic_refusals_only(ctx, response, case) -> None:  # type: ignore[no-untyped-def]
    """A schema-valid request refused with a 400 must be refused for a reason the schema cannot express."""
    if case.meta is None or not case.meta.generation.mode.is_positive or response.status_code != 400:
        return
    error = response.json()["error"]
    code = error["code"]
    across_fields = code == "validation_error" and all(not d["field"] for d in error.get("details") or [{"field": 1}])
    if code not in SEMANTIC_CODES and not across_fields:
        raise AssertionError(f"schema-valid data refused with {code!r}: the OpenAPI document should refuse it too")


def _fuzz(operation, mode: GenerationMode) -> str | None:  # type: ignore[no-untyped-def]
    """Runs one operation's examples in one generation mode; the failure's report, or None."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=MAX_EXAMPLES, deadline=DEADLINE, database=None, suppress_health_check=list(HealthCheck))
    def run(case) -> None:  # type: ignore[no-untyped-def]
        case.call_and_validate(timeout=30, additional_checks=[semantic_refusals_only])

    try:
        run()
    except (Exception, BaseExceptionGroup) as exc:  # every failing operation is reported, not just the first
        return f"{operation.method.upper()} {operation.path} ({mode.value}): {exc}"
    return None


def _modes(operation) -> list[GenerationMode]:  # type: ignore[no-untyped-def]
    """Schema-violating data needs some input to violate: operations without any get positive data only."""
    takes_input = any(len(p) for p in (operation.path_parameters, operation.query, operation.headers)) or bool(
        list(operation.body)
    )
    return [GenerationMode.POSITIVE, GenerationMode.NEGATIVE] if takes_input else [GenerationMode.POSITIVE]


def test_fuzzing_the_farm_finds_no_server_error_and_no_response_off_its_schema(farm: Farm) -> None:
    """schemathesis's default checks: no 5xx, status codes, content types, headers and bodies as documented,
    schema-invalid data refused with a 4xx, schema-valid data accepted (or refused for a semantic reason), and the
    rest of its built-in checks. Positive and negative data."""
    schema = schemathesis.openapi.from_url(farm.url("/openapi/openapi.json"), config=CONFIG)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 18
    failures = [
        failure
        for operation in operations
        for mode in _modes(operation)
        if (failure := _fuzz(operation, mode)) is not None
    ]
    assert not failures, "\n\n".join(failures)
