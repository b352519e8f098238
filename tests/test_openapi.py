"""The OpenAPI document: valid (checked by openapi-spec-validator), and true to what the endpoints do, checked by
running schemathesis against the running farm with every one of its checks (`schemathesis run --checks all`)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import requests
from openapi_spec_validator import validate
from schemathesis.config._checks import NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES

from api.schemas.common import MAX_REQUEST_SEGMENTS
from shared.languages import XTTS_V2_LANGUAGES
from tests.farms import TWO_WORKERS
from tools.localfarm import ROOT, VENV_BIN, Farm
from voices_store.latents import MAX_GPT_ROWS, MAX_GPT_WIDTH


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


# Examples per operation and generation mode in the fuzzing phases (the coverage phase adds its own boundary cases):
# about 45 s here.
MAX_EXAMPLES = 25
# Two statuses refuse schema-violating data here that schemathesis's default list of refusals lacks, both RFC 9110's
# for the case and both in the document: 413 Content Too Large, for a body over a documented size bound (a text over
# MAX_TEXT_CHARS, more reference files than MAX_REFERENCE_PARTS), and 414 URI Too Long, which gunicorn answers
# itself for a request line over 4094 bytes (a query of long values). Nothing else is added to any check's defaults.
NEGATIVE_STATUSES = [*NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES, "413", "414"]


# The audio tokens one generated request may cost (MAX_TOKENS_PER_REQUEST, an API-only setting: the common farm's
# API restarts with it). Long generated texts are then refused with 413 too_many_audio_tokens, which
# tests/openapi_checks.py excuses, instead of being synthesized for real (a text of thousands of characters is dozens
# of segments: about 12 s of this test here). 200 tokens still lets any short text through.
MOST_TOKENS_PER_REQUEST = 200
# Seconds schemathesis waits for a response, and the slowest response it accepts (max_response_time).
REQUEST_TIMEOUT = 30


def test_schemathesis_with_every_check_finds_nothing_wrong_with_the_farm(farm_with, tmp_path: Path) -> None:
    """`schemathesis run --checks all`, every phase (examples, coverage, fuzzing, stateful), positive and negative
    data: no server error; statuses, content types, headers and bodies as documented; schema-violating data refused;
    schema-valid data accepted, but for the refusals tests/openapi_checks.py excuses one by one (what depends on the
    live farm or cannot be said in JSON Schema); a 405 with Allow; no use after delete; and the rest of its checks."""
    farm: Farm = farm_with(**TWO_WORKERS, MAX_TOKENS_PER_REQUEST=str(MOST_TOKENS_PER_REQUEST))
    config = tmp_path / "schemathesis.toml"
    # `--checks all` includes max_response_time, 10 s unless set: a whole synthesis answered at once (POST /tts, the
    # ElevenLabs non-streaming endpoints) beside schemathesis's other requests passed it on a loaded 2-core CI
    # machine (10.03 s). Speed is the benchmark's to measure; here the limit is the request timeout, which a hang
    # still exceeds.
    config.write_text(
        f"[checks]\nmax_response_time = {REQUEST_TIMEOUT}\n\n"
        f"[checks.negative_data_rejection]\nexpected-statuses = {json.dumps(NEGATIVE_STATUSES)}\n"
    )
    command = [
        str(VENV_BIN / "schemathesis"),
        "--config-file",
        str(config),
        "run",
        farm.url("/openapi/openapi.json"),
        "--checks",
        "all",
        # Replaced by its wrapper in tests/openapi_checks.py (the same check with its default statuses, and the
        # excused refusals).
        "--exclude-checks",
        "positive_data_acceptance",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--request-timeout",
        str(REQUEST_TIMEOUT),
        # One worker: with several, hypothesis's source inspection races in threads ("AST constructor recursion
        # depth mismatch", an error of the test run, not of the farm).
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--no-color",
    ]
    # Run in tmp_path, so that what schemathesis leaves behind stays out of the checkout; the hooks come from it.
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.openapi_checks", "PYTHONPATH": str(ROOT)}
    try:
        run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900, check=False)
    finally:
        # The lexicons and aliases it made would change later requests of the farm's tenant: gone with it.
        for listing, key in (("/lexicons", "lexicons"), ("/voice_aliases", "aliases")):
            for made in requests.get(farm.url(listing), headers=farm.headers, timeout=30).json()[key]:
                requests.delete(farm.url(f"{listing}/{made['name']}"), headers=farm.headers, timeout=30)
    report = run.stdout[-20_000:] + run.stderr[-5_000:]
    # Exit status 0: every check passed (a failure is 1; hooks that do not load, or any other error, 2).
    assert run.returncode == 0, report
    tested = re.search(r"Tested: (\d+)", run.stdout)
    assert tested is not None and int(tested[1]) >= 23, report


def test_the_document_states_what_the_farm_enforces(client) -> None:
    """What the schemathesis run found undocumented, stated: the languages, the text's bound, the GPT rows of
    latents, the number of reference files, and the rules across fields JSON Schema can state."""
    schemas = client.get("/openapi/openapi.json").get_json()["components"]["schemas"]
    tts, speech = schemas["TtsRequest"], schemas["SpeechRequest"]
    for request in (tts, speech):
        assert request["properties"]["language"]["enum"] == list(XTTS_V2_LANGUAGES)
    text = tts["properties"]["text"]["anyOf"][0]  # nullable: either text or segments
    assert text["maxLength"] == speech["properties"]["input"]["maxLength"] == 100_000
    assert {"required": ["segments"]}.items() <= tts["allOf"][0]["oneOf"][1].items()
    assert tts["properties"]["segments"]["anyOf"][0]["maxItems"] == MAX_REQUEST_SEGMENTS
    rows = tts["properties"]["gpt_cond_latent"]["anyOf"][0]["anyOf"][0]  # nullable: [rows, width] or [1, rows, width]
    assert (rows["minItems"], rows["maxItems"], rows["items"]["maxItems"]) == (1, MAX_GPT_ROWS, MAX_GPT_WIDTH)
    assert {"properties": {"response_format": {"enum": ["wav", "pcm"]}}} in tts["anyOf"]  # add_wav_header false
    assert schemas["CloneForm"]["properties"]["wav_file"]["maxItems"] == 5
    assert schemas["CloneForm"]["properties"]["options"]["anyOf"][1]["required"] == ["save_id"]
    assert tts["properties"]["speaker_id"]["anyOf"][0]["pattern"] == r"^[^\x00]*$"
