"""schemathesis hooks for tests/test_openapi.py (loaded by the schemathesis command through SCHEMATHESIS_HOOKS).

Every built-in check runs with its default expected statuses. One is wrapped: schema-valid data must be accepted
(`positive_data_acceptance`), except where the farm refuses it for a reason the OpenAPI document cannot state,
because it depends on the live farm or on what no JSON Schema describes. Each such refusal is excused here only
when the request really is in that case (the check looks at the request, not only at the error code):

- unknown_speaker: the speaker (a segment's voice, the voice_id of ElevenLabs' paths) is neither a built-in speaker
  of the live workers' model nor a saved voice of the caller (both change while the farm runs);
- invalid_latents: a GPT row is not as wide as the live workers' model's GPT (the width belongs to the model the
  workers loaded: 1024 for XTTS-v2, 64 for the dev checkpoint); rows of one width is a rule JSON Schema cannot state
  without knowing it;
- nothing_to_speak: the text has no letter or digit (JSON Schema's regular expressions have no portable class for
  "any letter of any script"), or none is left once it is normalised (a fenced code block, a keycap emoji);
- invalid_ssml: the text is SSML (input_format ssml, or it starts with <speak>) that is not well-formed XML or gives a
  tag a value the farm cannot take, or plain text with a pause tag over the longest pause (XML's grammar is no JSON
  Schema); checked by parsing the text again;
- invalid_lexicon: a lexicon's PLS document is not well-formed XML, not PLS, or has lexemes without an alias;
  checked by reading it again;
- unknown_lexicon: a pronunciation lexicon the request names is not one of the tenant's (they are made and deleted
  while the farm runs);
- invalid_blend: a voice blend (`a:0.7+b:0.3`, or OpenAI's {"blend": [...]}) that does not mix 2 to 4 different
  voices with weights above 0 (a grammar and a count after merging, which JSON Schema cannot state); checked by
  parsing it again;
- min_new_tokens > max_new_tokens (JSON Schema cannot compare two values);
- a JSON body that is not an object: schemathesis mislabels one as positive (see `_excused`);
- invalid_voice_id: a saved voice's path given a voice id its pattern refuses. The stateful phase carries a value
  from one operation's `voice_id` to another's (ElevenLabs' paths name built-in speakers, "Andrew Chipper", spaces
  and all; /saved_voices/{voice_id} documents its pattern) and calls the request positive whatever it holds;
  excused only when the id really breaks the documented pattern;
- a book's document (POST /books: an upload's bytes, a JSON text's markup) that is not one of its format, has nothing
  to read, names a language the farm lacks or fewer chapters than the options name; a redo's new words that make
  more than one segment; a stream's cursor past the segments of the job it names, or past the chunks its segment
  has published so far (the stateful phase finds real jobs, of any length and progress);
- too_many_audio_tokens (413): the text's estimated audio exceeds MAX_TOKENS_PER_REQUEST (an estimate from the
  text's length and speed, not a property of either alone);
- not_audio, unusable_audio, decode_timeout, too_much_reference_audio (413) about seconds: an upload's bytes are not
  decodable audio, or decode to more seconds than allowed (the document can say "binary", not "a recording of at
  most so long"; the number of files is documented, and a refusal for it is not excused).
"""

from __future__ import annotations

import json
import re
from typing import Any

import schemathesis
from schemathesis.openapi.checks import RejectedPositiveData
from schemathesis.specs.openapi.checks import positive_data_acceptance

from shared import blends, ssml
from shared.languages import xtts_language
from shared.pls import InvalidLexicon, read_pls
from voices_store.ids import VOICE_ID_PATTERN

UPLOAD_CODES = {"not_audio", "unusable_audio", "decode_timeout"}
# Audio tokens a generated synthesis request may ask for per segment. The stateful phase finds real speakers (in
# GET /v1/audio/voices, say) and then synthesizes for real: at schemathesis's maximum (605 tokens a segment, at
# speed 0.25) one request took two minutes on two shared cores, past its 30 s timeout. The bound keeps the data
# schema-valid (1 to 605) and changes no answer the farm may give, only how long the synthesis lasts.
MOST_TOKENS = 20
# Operations whose body has `input` but synthesizes nothing (and takes no token bounds).
NOT_SYNTHESIS = frozenset({"/v1/text/normalize", "/books/{book_id}/segments/{index}/redo"})
# What a book's document holds (an uploaded file's bytes, or a JSON text's markup) that no JSON Schema describes: it
# is not a document of its format, has nothing to read, names a language the farm lacks, or has fewer chapters than
# the options name.
DOCUMENT_REFUSALS = (
    "invalid_document",
    "drm_protected",
    "nothing_to_speak",
    "unknown_language",
    "document_too_large",
)
CHAPTER_OPTIONS = ("chapters names chapter",)


@schemathesis.hook
def map_body(context: Any, body: Any) -> Any:
    """Synthesis requests (a body with `text` or `input`) ask for at most MOST_TOKENS audio tokens a segment; token
    bounds outside the schema's 1..605 are left as generated (negative data stays negative)."""
    if not isinstance(body, dict) or not ({"text", "input"} & set(body)):
        return body
    operation = getattr(context, "operation", None)
    if operation is not None and operation.path in NOT_SYNTHESIS:
        return body
    bounded = dict(body)
    for name in ("min_new_tokens", "max_new_tokens"):
        value = bounded.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool) and 1 <= value <= 605:
            bounded[name] = min(value, MOST_TOKENS)
    if bounded.get("max_new_tokens") is None:
        bounded["max_new_tokens"] = MOST_TOKENS
    return bounded


def _body(case: Any) -> dict[str, Any]:
    """The request's fields; a book's upload's options (a JSON form field) as if they were its body."""
    body = case.body if isinstance(case.body, dict) else {}
    options = body.get("options")
    if isinstance(options, str):
        try:
            options = json.loads(options)
        except ValueError:
            options = None
    return options if isinstance(options, dict) and "file" in body else body


def _gpt_rows(body: dict[str, Any]) -> list[Any]:
    latents = body.get("speaker_latents") if isinstance(body.get("speaker_latents"), dict) else body
    gpt = latents.get("gpt_cond_latent")
    if isinstance(gpt, list) and len(gpt) == 1 and isinstance(gpt[0], list) and gpt[0] and isinstance(gpt[0][0], list):
        gpt = gpt[0]  # [1, rows, width]
    return gpt if isinstance(gpt, list) else []


def _text(body: dict[str, Any]) -> Any:
    """A request's text: `text` or `input`, or its `segments`' texts one after another."""
    segments = body.get("segments")
    if isinstance(segments, list):
        texts = [item.get("text") if isinstance(item, dict) else None for item in segments]
        return "\n".join(texts) if all(isinstance(text, str) for text in texts) else None
    return body.get("text", body.get("input"))


def _refused_as_ssml(body: dict[str, Any]) -> bool:
    """Whether the farm's SSML reader refuses this request's text."""
    text, language, given = _text(body), body.get("language", "en"), body.get("input_format")
    if not isinstance(text, str) or not isinstance(language, str):
        return False
    try:
        if isinstance(body.get("segments"), list):  # plain text each, with their pause tags
            ssml.plain_text_spans(text)
        elif given == "ssml" or (given is None and ssml.looks_like_ssml(text)):
            ssml.parse(text, language)
        else:
            ssml.plain_text_spans(text)
    except ssml.InvalidSsml:
        return True
    return False


def _named_voices(body: dict[str, Any], path_voice: Any = None) -> list[Any]:
    """The voices a request names as written: its speaker (a string, {"id"} or {"blend"}; ElevenLabs' voice_id in the
    path), its segments', a blend's."""
    voice = path_voice if path_voice is not None else body.get("speaker_id", body.get("voice", body.get("blend")))
    if isinstance(voice, dict) and isinstance(voice.get("blend"), list):
        voice = "+".join(f"{p.get('voice')}:{p.get('weight')}" for p in voice["blend"] if isinstance(p, dict))
    voice = voice.get("id") if isinstance(voice, dict) else voice
    segments = body.get("segments") if isinstance(body.get("segments"), list) else []
    chapters = body.get("chapters") if isinstance(body.get("chapters"), list) else []  # a book's
    return [voice, *(item.get("voice") for item in segments + chapters if isinstance(item, dict) and item.get("voice"))]


def _voices(body: dict[str, Any], path_voice: Any = None) -> list[Any]:
    """Each voice a request names, a blend's voices one by one."""
    found: list[Any] = []
    for voice in _named_voices(body, path_voice):
        try:
            parts = blends.parse_blend(voice) if isinstance(voice, str) and blends.is_blend(voice) else None
        except blends.InvalidBlend:
            parts = None
        found += [part.voice for part in parts] if parts else [voice]
    return found


def _refused_as_blend(body: dict[str, Any], path_voice: Any = None) -> bool:
    """Whether a blend the request writes is not one the farm can mix (JSON Schema cannot state its grammar)."""
    for voice in _named_voices(body, path_voice):
        if isinstance(voice, str) and (blends.is_blend(voice) or "blend" in body):
            try:
                blends.parse_blend(voice)
                if not blends.is_blend(voice):
                    return True
            except blends.InvalidBlend:
                return True
    return False


def _refused_as_pls(document: Any) -> bool:
    """Whether a lexicon's PLS document is one the farm cannot read (XML and PLS are no JSON Schema)."""
    if not isinstance(document, str):
        return False
    try:
        language, _ = read_pls(document)
    except InvalidLexicon:
        return True
    return language is not None and language.lower() != "und" and xtts_language(language) is None


def _lexicons(body: dict[str, Any]) -> Any:
    """The lexicons a request names (`lexicons`, or ElevenLabs' pronunciation_dictionary_locators)."""
    locators = body.get("pronunciation_dictionary_locators")
    if isinstance(locators, list):
        return [item.get("pronunciation_dictionary_id") for item in locators if isinstance(item, dict)]
    return body.get("lexicons")


def _not_an_object(error: dict[str, Any], case: Any) -> bool | None:
    """Not schema-valid at all: every JSON body of the farm is an object. Schemathesis's coverage phase sends a number
    as the body of an operation with both a query and a JSON body (ElevenLabs' text-to-speech) while it varies the
    query, and calls it positive. None: the body is an object (or none)."""
    if case.body is None or isinstance(case.body, dict) or case.media_type != "application/json":
        return None
    return error.get("code") == "validation_error" and "must be a JSON object" in error.get("message", "")


def _refused_for_what_it_names(error: dict[str, Any], case: Any) -> bool:
    """A book's document is not one the farm can read, a redo's new words make more than one segment (a splitter's
    verdict, not a schema's), or a stream's cursor is past the segments of the job it names or the chunks published
    so far (a job's length and progress)."""
    operation, code, message = getattr(case.operation, "path", None), error.get("code"), error.get("message", "")
    if code == "invalid_cursor" and operation == "/jobs/{job_id}/stream":
        return "past the job's" in message or "past the audio published so far" in message
    if operation == "/books":
        return code in DOCUMENT_REFUSALS or message.startswith(CHAPTER_OPTIONS)
    return operation == "/books/{book_id}/segments/{index}/redo" and "a redo says one sentence" in message


def _excused(error: dict[str, Any], case: Any) -> bool:
    """Whether the farm refused this schema-valid request for a reason the document cannot state."""
    code, details, body = error.get("code"), error.get("details"), _body(case)
    path_voice = (case.path_parameters or {}).get("voice_id")
    if code == "unknown_speaker":
        builtin = details.get("builtin_speakers", []) if isinstance(details, dict) else []
        return any(voice not in builtin for voice in _voices(body, path_voice))
    if code == "invalid_latents":
        widths = {len(row) if isinstance(row, list) else None for row in _gpt_rows(body)}
        if len(widths) > 1:
            return True  # rows of several widths: never all as wide as the model's
        if not isinstance(details, dict) or details.get("field") != "gpt_cond_latent":
            return False  # the speaker embedding's shape is fully documented
        return widths != {details["expected"][2]}
    if code == "nothing_to_speak":
        text = _text(body)
        if "once normalised" in error.get("message", ""):
            return isinstance(text, str) and body.get("normalize", "auto") == "auto"
        return isinstance(text, str) and not any(ch.isalnum() for ch in text)
    if code == "unknown_lexicon":  # lexicons are the tenant's, made and deleted while the farm runs
        named = _lexicons(body)
        missing = details.get("missing") if isinstance(details, dict) else None
        return isinstance(named, list) and isinstance(missing, list) and bool(missing) and set(missing) <= set(named)
    if code == "invalid_blend":
        return _refused_as_blend(body, path_voice)
    if code == "invalid_lexicon":
        return _refused_as_pls(body.get("pls"))
    if code == "invalid_ssml":
        return _refused_as_ssml({**body, "input_format": "text"} if path_voice is not None else body)
    if "min_new_tokens must not exceed max_new_tokens" in error.get("message", ""):
        low, high = body.get("min_new_tokens"), body.get("max_new_tokens")  # JSON Schema's integers include 50.0
        return isinstance(low, int | float) and isinstance(high, int | float) and low > high
    if code == "too_much_reference_audio":  # the seconds of audio the files decode to (their number is documented)
        return "add up to more than" in error.get("message", "")
    off_pattern = isinstance(path_voice, str) and re.fullmatch(VOICE_ID_PATTERN.strip("^$"), path_voice) is None
    return code == "too_many_audio_tokens" or code in UPLOAD_CODES or (code == "invalid_voice_id" and off_pattern)


@schemathesis.check
def positive_data_accepted_or_refused_for_a_live_reason(ctx: Any, response: Any, case: Any) -> bool | None:
    """`positive_data_acceptance` with its default statuses, but for the refusals described above."""
    try:
        return positive_data_acceptance(ctx, response, case)
    except RejectedPositiveData:
        try:
            error = json.loads(response.content)["error"]
        except (ValueError, KeyError, TypeError):
            raise
        if not isinstance(error, dict):
            raise
        refused_as_no_object = _not_an_object(error, case)
        if refused_as_no_object is False or (
            refused_as_no_object is None and not (_excused(error, case) or _refused_for_what_it_names(error, case))
        ):
            raise
        return None
