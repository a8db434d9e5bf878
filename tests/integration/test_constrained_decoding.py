"""Constrained decoding holds on every local engine with the real model: each answer parses and fits its schema.

Only structure is asserted (json.loads, jsonschema, the grammar's words), never the tiny model's wording.
"""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from inferrelay.config.embedded import SMOLLM2
from inferrelay.engines.base import Constraint, Feature, GenerationRequest, Sampling, TokenTextModel
from inferrelay.engines.constrained import grammar_text
from inferrelay.engines.registry import EngineRegistry
from inferrelay.errors import ErrorKind, InferrelayError

pytestmark = pytest.mark.slow

ENGINES = ["llamacpp", "onnx", "torch"]
MAX_TOKENS = 96


def obj(required: list[str] | None = None, **properties: Any) -> dict[str, Any]:
    """A closed object schema (as OpenAI's strict mode asks): every property required unless told otherwise."""
    names = list(properties) if required is None else required
    return {"type": "object", "properties": properties, "required": names, "additionalProperties": False}


def text(max_length: int = 24, **more: Any) -> dict[str, Any]:
    return {"type": "string", "maxLength": max_length, **more}


INTEGER = {"type": "integer", "minimum": 0, "maximum": 9999}
NUMBER = {"type": "number", "minimum": -1000, "maximum": 1000}
BOOLEAN = {"type": "boolean"}

SCHEMAS: dict[str, dict[str, Any]] = {
    "person": obj(name=text(), age={"type": "integer", "minimum": 0, "maximum": 120}),
    "book": obj(title=text(40), year=INTEGER, in_print=BOOLEAN),
    "product": obj(name=text(), price={"type": "number", "minimum": 0, "maximum": 1000}),
    "colour_enum": obj(colour={"enum": ["red", "green", "blue"]}),
    "tags": obj(tags={"type": "array", "items": text(12), "minItems": 1, "maxItems": 3}),
    "address": obj(address=obj(city=text(), zip=text(5, pattern="^[0-9]{5}$"))),
    "optional_fields": obj(["name"], name=text(), nickname=text(), age=INTEGER),
    "scores": obj(scores={"type": "array", "items": INTEGER, "maxItems": 4}),
    "flag": obj(ok=BOOLEAN),
    "code_pattern": obj(code={"type": "string", "pattern": "^[A-Z]{3}-[0-9]{3}$"}),
    "word_lengths": obj(word={"type": "string", "minLength": 3, "maxLength": 8}),
    "level_enum": obj(level={"type": "integer", "enum": [1, 2, 3]}),
    "const_version": obj(version={"const": "v1"}, name=text()),
    "order_lines": obj(items={"type": "array", "items": obj(name=text(16), qty=INTEGER), "minItems": 1, "maxItems": 2}),
    "temperature": obj(city=text(), celsius={"type": "number", "minimum": -50, "maximum": 50}),
    "any_of_id": obj(id={"anyOf": [INTEGER, text(8)]}),
    "nullable_note": obj(note={"type": ["string", "null"], "maxLength": 20}),
    "deep_nesting": obj(a=obj(b=obj(c=INTEGER, d=BOOLEAN))),
    "top_level_array": {"type": "array", "items": NUMBER, "minItems": 1, "maxItems": 3},
    "event": obj(
        title=text(),
        date={"type": "string", "pattern": "^20[0-9]{2}-[01][0-9]-[0-3][0-9]$"},
        attendees={"type": "array", "items": text(16), "maxItems": 3},
        public=BOOLEAN,
    ),
}


@pytest.fixture(scope="module", params=ENGINES)
def decoder(request: pytest.FixtureRequest, test_home: Path) -> TokenTextModel:
    state = EngineRegistry.discover().state(request.param)
    assert state is not None
    assert state.engine is not None, state.probe.reason
    assert Feature.CONSTRAINT in state.engine.honours
    model = state.engine.load(SMOLLM2, "auto", test_home)
    assert isinstance(model, TokenTextModel)
    return model


def ask(content: str, constraint: Constraint | None, max_tokens: int = MAX_TOKENS) -> GenerationRequest:
    messages = [{"role": "user", "content": content}]
    return GenerationRequest(messages=messages, max_tokens=max_tokens, sampling=Sampling(0.0), constraint=constraint)


def fill_in(name: str, schema: dict[str, Any]) -> GenerationRequest:
    content = f"Give an example {name.replace('_', ' ')} as JSON fitting this schema: {json.dumps(schema)}"
    return ask(content, Constraint("json_schema", schema))


def test_twenty_schemas_each_answer_parses_and_validates(decoder: TokenTextModel) -> None:
    failures = []
    for name, schema in SCHEMAS.items():
        answer = decoder.generate(fill_in(name, schema))
        try:
            jsonschema.validate(json.loads(answer.text), schema)
        except (ValueError, jsonschema.ValidationError) as exc:
            failures.append(f"{name}: {answer.text!r} ({answer.finish_reason}): {exc}")
            continue
        if answer.finish_reason != "stop":
            failures.append(f"{name}: complete JSON but finish_reason {answer.finish_reason}")
    assert not failures, f"{decoder.engine_name}:\n" + "\n".join(failures)


def test_json_object_gives_an_object(decoder: TokenTextModel) -> None:
    answers = [
        decoder.generate(ask(question, Constraint("json_object"), 64))
        for question in ('Reply with the JSON {"ok": true}.', "Describe a cat as a short JSON object.")
    ]
    for answer in answers:
        if answer.finish_reason == "stop":
            assert isinstance(json.loads(answer.text), dict)
        else:  # an object the model keeps open may outlast max_tokens: what came is the start of one
            assert answer.text.lstrip().startswith("{")
    assert any(a.finish_reason == "stop" for a in answers), [a.text for a in answers]


def test_lark_grammar_is_obeyed(decoder: TokenTextModel) -> None:
    for question in ("Is the sky blue?", "Is fire cold?", "Do fish fly?"):
        answer = decoder.generate(ask(question, Constraint("lark", 'start: "yes" | "no"')))
        assert answer.text in ("yes", "no")
        assert answer.finish_reason == "stop"
    number = decoder.generate(ask("How many legs has a spider?", Constraint("lark", "start: /[0-9]{1,3}/")))
    assert number.text.isdigit()
    assert 1 <= len(number.text) <= 3


@pytest.mark.parametrize(
    "constraint",
    [
        Constraint("json_schema", {"type": "foo"}),
        Constraint("json_schema", {"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}),
        Constraint("json_schema", {"type": "string", "pattern": "(("}),
        Constraint("json_schema", "not a schema"),
        Constraint("lark", "start: ???"),
    ],
    ids=["bad-type", "dangling-ref", "bad-pattern", "not-an-object", "bad-lark"],
)
def test_a_schema_llguidance_refuses_is_a_bad_request(decoder: TokenTextModel, constraint: Constraint) -> None:
    with pytest.raises(InferrelayError) as caught:
        decoder.generate(ask("Hello", constraint, 8))
    assert caught.value.kind is ErrorKind.BAD_REQUEST
    assert caught.value.param == "response_format"


def test_constrained_stream_adds_up_to_the_whole_answer(decoder: TokenTextModel) -> None:
    request = fill_in("order_lines", SCHEMAS["order_lines"])
    pieces = list(decoder.stream(request))
    assert len(pieces) > 2, "a constrained answer streams in several pieces too"
    whole = decoder.generate(request)
    assert "".join(p.text for p in pieces) == whole.text
    assert pieces[-1].finish_reason == whole.finish_reason == "stop"
    jsonschema.validate(json.loads(whole.text), SCHEMAS["order_lines"])


def test_unconstrained_requests_are_unchanged_after_constrained_ones(decoder: TokenTextModel) -> None:
    plain = ask("Name a colour.", None, 12)
    before = decoder.generate(plain).text
    decoder.generate(fill_in("flag", SCHEMAS["flag"]))
    assert decoder.generate(plain).text == before


def test_without_llguidance_a_constraint_is_a_missing_dependency(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llguidance", None)  # what `import llguidance` meets when not installed
    with pytest.raises(InferrelayError) as caught:
        grammar_text(Constraint("json_object"))
    assert caught.value.kind is ErrorKind.DEPENDENCY_MISSING
    assert "pip install llguidance" in (caught.value.hint or "")


def test_a_constrained_request_pickles_for_the_worker() -> None:
    request = fill_in("event", SCHEMAS["event"])
    assert pickle.loads(pickle.dumps(request)) == request
