"""OpenAI request bodies, validated strictly; what a request asks beyond plain text is computed once (`needs`), so
the walk can skip the steps that cannot honour it (routing/needs.py)."""

from __future__ import annotations

import contextlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from inferrelay.config.units import Duration
from inferrelay.engines.base import Constraint, Feature, GenerationRequest, Sampling
from inferrelay.errors import ErrorKind, InferrelayError
from inferrelay.routing.needs import Need, Needs

NO_LOCAL_ENGINE = {
    "functions": "legacy function calling: send tools instead",
    "function_call": "legacy function calling: send tool_choice instead",
    "logit_bias": "logit biases",
    "echo": "the prompt echoed back",
    "best_of": "best of several completions",
    "suffix": "a suffix after the completion",
}
"""Parameters no local engine honours: a request with one goes to the remote steps that receive it as sent."""


class OpenAIRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # unknown fields go to remote providers as sent; no engine knows them

    model: str = Field(min_length=1)
    user: str | None = None
    keep_alive: Duration | None = Field(
        default=None,
        description="inferrelay's extension, as Ollama's: how long the model stays loaded after this request",
    )

    def forwarded(self) -> dict[str, Any]:
        """The body as the caller sent it, for a remote provider; inferrelay's own extensions stay here."""
        return self.model_dump(exclude_unset=True, exclude={"keep_alive"}, by_alias=True)

    def require_text(self, model: str) -> None:
        """Refuse, as `unsupported`, what a local model cannot read (images, token ids): the walk goes on to the
        remote steps, which get the request as sent, and answers 400 when none is left."""

    def needs(self) -> Needs:
        """What this request asks beyond plain text, and what a local engine must honour for it."""
        wanted = [Need(p, what, None) for p, what in NO_LOCAL_ENGINE.items() if getattr(self, p, None)]
        unknown = [Need(p, "a parameter inferrelay's engines do not know", None) for p in self.model_extra or {}]
        return Needs((*wanted, *unknown))

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, data: Any) -> Any:
        """OpenAI's clients send null for an unset optional parameter; it means the default."""
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data


class GenerationParams(OpenAIRequest):
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    n: int = Field(default=1, ge=1, le=128)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=-(2**63), lt=2**63)
    stream: bool = False
    stream_options: dict[str, bool] | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None

    def wanted_logprobs(self) -> int | None:
        """How many alternatives each token's log probability comes with; None: no log probabilities."""
        return None

    def needs(self) -> Needs:
        wanted = list(super().needs().items)
        if self.wanted_logprobs() is not None:
            wanted.append(Need("logprobs", "log probabilities", frozenset({Feature.LOGPROBS})))
        for penalty in ("presence_penalty", "frequency_penalty"):
            if getattr(self, penalty):
                wanted.append(Need(penalty, penalty.replace("_", " "), frozenset({Feature.PENALTIES})))
        if self.n > 1 and self.stream:
            wanted.append(Need("n", "several choices in one stream", None))  # local: several choices, not streamed
        return Needs(tuple(wanted))

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _penalty_range(cls, value: float) -> float:
        if not -2 <= value <= 2:
            raise ValueError("must be between -2 and 2")
        return value

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> GenerationParams:
        if self.stream_options is not None and not self.stream:
            raise PydanticCustomError("stream_options", "stream_options is only allowed when stream is true")
        return self

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.get("include_usage"))

    def generation(self, **prompt: Any) -> GenerationRequest:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return GenerationRequest(
            max_tokens=self.max_completion_tokens or self.max_tokens,
            stop=stop,
            sampling=Sampling(
                self.temperature,
                self.top_p,
                self.seed,
                self.presence_penalty,
                self.frequency_penalty,
                self.wanted_logprobs(),
            ),
            **prompt,
        )


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1, max_length=64)
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None
    description: str | None = None


class ResponseFormat(BaseModel):
    """OpenAI's response_format: text, any JSON object, or JSON that validates against a schema."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_with_its_type(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise PydanticCustomError("response_format", "json_schema goes with type 'json_schema', and only there")
        return self

    def constraint(self) -> Constraint | None:
        if self.type == "json_object":
            return Constraint("json_object")
        if self.json_schema is not None:
            return Constraint("json_schema", self.json_schema.schema_)
        return None


class ContentPart(BaseModel):
    """One part of a message: text, or an image, audio or file part, kept as sent for remote providers."""

    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    tool_calls: list[dict[str, Any]] | None = None  # an assistant's earlier calls, sent back with their results
    tool_call_id: str | None = Field(default=None, validate_default=True)  # a tool message: the call it answers
    content: str | list[ContentPart] | None = Field(default=None, validate_default=True)
    name: str | None = None
    refusal: str | None = None

    @field_validator("tool_calls")
    @classmethod
    def _calls_are_the_assistants(cls, calls: list[dict[str, Any]] | None, info: ValidationInfo) -> Any:
        if calls is not None and info.data.get("role") != "assistant":
            raise ValueError("tool_calls belong to an assistant message")
        return calls

    @field_validator("tool_call_id")
    @classmethod
    def _tool_results_name_their_call(cls, call_id: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("role") == "tool" and not call_id:
            raise ValueError("a tool message needs the tool_call_id of the call it answers")
        return call_id

    @field_validator("content", mode="before")
    @classmethod
    def _string_or_parts(cls, content: Any, info: ValidationInfo) -> Any:
        """Say what is wrong with a part, rather than that the content is not a string."""
        if content is None:
            if info.data.get("role") == "assistant" and info.data.get("tool_calls"):
                return content
            raise ValueError("Field required (an assistant message may send tool_calls instead)")
        if isinstance(content, str):
            return content
        if not isinstance(content, list):
            raise ValueError("must be a string or a list of content parts")
        for index, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise ValueError(f"part {index} must be an object with a string 'type' (text, image_url, ...)")
            if part["type"] == "text" and (not isinstance(part.get("text"), str) or set(part) != {"type", "text"}):
                raise ValueError(f"part {index}: a text part is {{'type': 'text', 'text': a string}}")
        return content

    def media_part(self) -> tuple[int, str] | None:
        """The index and type of the first part that is not text."""
        if self.content is None or isinstance(self.content, str):
            return None
        return next(((i, p.type) for i, p in enumerate(self.content) if p.type != "text"), None)

    def as_template_message(self) -> dict[str, Any]:
        """The message as chat templates read it: text content, the developer role as system, tool calls kept."""
        content = self.content or ""
        text = content if isinstance(content, str) else "".join(p.text or "" for p in content)
        message: dict[str, Any] = {"role": "system" if self.role == "developer" else self.role, "content": text}
        if self.tool_calls:
            message["tool_calls"] = [_template_call(call) for call in self.tool_calls]
        if self.tool_call_id:
            message["tool_call_id"] = self.tool_call_id
        return message


def _template_call(call: dict[str, Any]) -> dict[str, Any]:
    """Templates (transformers' and llama.cpp's) expect the arguments as an object, OpenAI sends a JSON string."""
    function = dict(call.get("function") or {})
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        with contextlib.suppress(ValueError):  # not JSON: the template gets the text as sent
            function["arguments"] = json.loads(arguments)
    return {**call, "function": function}


class ChatCompletionRequest(GenerationParams):
    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    functions: Any = None
    function_call: Any = None
    response_format: ResponseFormat | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)

    def wanted_logprobs(self) -> int | None:
        """top_logprobs alone also asks for them (OpenAI refuses it without logprobs; it is meant all the same)."""
        return (self.top_logprobs or 0) if self.logprobs or self.top_logprobs else None

    def needs(self) -> Needs:
        wanted = list(super().needs().items)
        if self.tools and self.tool_choice not in (None, "auto", "none"):
            wanted.append(Need("tools", "a required tool call", frozenset({Feature.CONSTRAINT})))
        if self.response_format is not None and self.response_format.type != "text":
            wanted.append(Need("response_format", self.response_format.type, frozenset({Feature.CONSTRAINT})))
        return Needs(tuple(wanted))

    def require_text(self, model: str) -> None:
        for index, message in enumerate(self.messages):
            if (media := message.media_part()) is not None:
                part, kind = media
                param = f"messages.{index}.content.{part}"
                raise InferrelayError(
                    ErrorKind.UNSUPPORTED,
                    f"{param}: model {model!r} takes text only, and this part is {kind!r}. "
                    "Send text parts only, or route this model to a remote provider that reads them.",
                    param=param,
                )

    def to_generation(self) -> GenerationRequest:
        constraint = self.response_format.constraint() if self.response_format else None
        return self.generation(messages=[m.as_template_message() for m in self.messages], constraint=constraint)


class CompletionRequest(GenerationParams):
    prompt: str | list[str]
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None
    logprobs: int | None = Field(default=None, ge=0, le=5)  # the legacy API's: how many alternatives per token

    def wanted_logprobs(self) -> int | None:
        return self.logprobs

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, prompt: str | list[str]) -> str | list[str]:
        if isinstance(prompt, list) and len(prompt) != 1:
            raise ValueError("exactly one prompt per request (a list of one string is accepted)")
        return prompt

    def to_generation(self) -> GenerationRequest:
        text = self.prompt if isinstance(self.prompt, str) else self.prompt[0]
        return self.generation(prompt=text)


EmbeddingInput = str | list[str] | list[int] | list[list[int]]

TEXT_ONLY_EMBEDDINGS = (
    "input: model {model!r} embeds text only, and input holds token ids: send strings. "
    "LangChain's OpenAIEmbeddings sends token ids unless it is built with check_embedding_ctx_length=False."
)


class EmbeddingRequest(OpenAIRequest):
    input: EmbeddingInput
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    truncate: bool | None = Field(
        default=None,
        description="inferrelay's extension, as TEI's and infinity's: an input past the model's window is cut to "
        "it (true) or refused with 400 context_length_exceeded (false); absent: the model's `truncate` (true)",
    )

    def forwarded(self) -> dict[str, Any]:
        """Without `truncate`: OpenAI refuses a field it does not know."""
        body = super().forwarded()
        body.pop("truncate", None)
        return body

    @field_validator("input", mode="before")
    @classmethod
    def _texts_or_token_ids(cls, value: Any) -> Any:
        """OpenAI's four shapes (a string, strings, token ids, lists of token ids), each named when wrong."""
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            raise ValueError("input must be a string or a list of strings")
        if not items:
            raise ValueError("input must not be an empty list")
        if all(isinstance(t, str) for t in items):
            if not all(items):
                raise ValueError("input must not contain empty strings")
        elif not (_token_ids(items) or all(isinstance(t, list) and t and _token_ids(t) for t in items)):
            raise ValueError("input must be a string, a list of strings, or token ids (lists of integers)")
        return value

    @field_validator("dimensions")
    @classmethod
    def _no_dimensions(cls, value: int | None) -> int | None:
        if value is not None:
            raise ValueError("dimensions is not supported: the models here have fixed sizes")
        return value

    def require_text(self, model: str) -> None:
        if not isinstance(self.input, str) and not isinstance(self.input[0], str):
            raise InferrelayError(ErrorKind.UNSUPPORTED, TEXT_ONLY_EMBEDDINGS.format(model=model), param="input")

    @property
    def texts(self) -> list[str]:
        """The inputs, once `require_text` has passed."""
        return [self.input] if isinstance(self.input, str) else [t for t in self.input if isinstance(t, str)]


def _token_ids(items: list[Any]) -> bool:
    return all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in items)
