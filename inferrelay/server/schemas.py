"""OpenAI request bodies, validated strictly: what the engines cannot honour is a 400, not silence."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from inferrelay.config.units import Duration
from inferrelay.engines.base import GenerationRequest, Sampling
from inferrelay.errors import bad_request

UNSUPPORTED = {
    "logprobs": "log probabilities are not returned by inferrelay's local engines",
    "top_logprobs": "log probabilities are not returned by inferrelay's local engines",
    "tools": "tool calling is not supported by inferrelay's local engines",
    "tool_choice": "tool calling is not supported by inferrelay's local engines",
    "functions": "function calling is not supported by inferrelay's local engines",
    "function_call": "function calling is not supported by inferrelay's local engines",
    "logit_bias": "logit_bias is not supported by inferrelay's local engines",
    "echo": "echo is not supported by inferrelay's local engines",
    "best_of": "best_of is not supported by inferrelay's local engines",
    "suffix": "suffix is not supported by inferrelay's local engines",
}


class OpenAIRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    user: str | None = None
    keep_alive: Duration | None = Field(
        default=None,
        description="inferrelay's extension, as Ollama's: how long the model stays loaded after this request",
    )

    def forwarded(self) -> dict[str, Any]:
        """The body as the caller sent it, for a remote provider; inferrelay's own extensions stay here."""
        return self.model_dump(exclude_unset=True, exclude={"keep_alive"})

    def require_text(self, model: str) -> None:
        """Raise a 400 for what a local model cannot read (images, token ids); remote providers get it as sent."""

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, data: Any) -> Any:
        """OpenAI's clients send null for an unset optional parameter; it means the default."""
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data

    @field_validator(*UNSUPPORTED, check_fields=False)
    @classmethod
    def _refuse_unsupported(cls, value: Any, info: ValidationInfo) -> Any:
        if value:
            raise ValueError(f"unsupported parameter: {UNSUPPORTED[str(info.field_name)]}")
        return value


class GenerationParams(OpenAIRequest):
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    n: int = Field(default=1, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=-(2**63), lt=2**63)
    stream: bool = False
    stream_options: dict[str, bool] | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: Any = None
    top_logprobs: Any = None
    logit_bias: Any = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int) -> int:
        if n != 1:
            raise ValueError("only n=1 is supported: local engines produce one choice per request")
        return n

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _no_penalty(cls, value: float) -> float:
        if value != 0:
            raise ValueError("presence and frequency penalties are not supported by every engine of a chain")
        return value

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, stop: str | list[str] | None) -> str | list[str] | None:
        if isinstance(stop, list) and len(stop) > 4:
            raise ValueError("at most 4 stop sequences")
        return stop

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
            sampling=Sampling(self.temperature, self.top_p, self.seed),
            **prompt,
        )


class ContentPart(BaseModel):
    """One part of a message: text, or an image, audio or file part, kept as sent for remote providers."""

    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart]
    name: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _string_or_parts(cls, content: Any) -> Any:
        """Say what is wrong with a part, rather than that the content is not a string."""
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
        if isinstance(self.content, str):
            return None
        return next(((i, p.type) for i, p in enumerate(self.content) if p.type != "text"), None)

    def as_template_message(self) -> dict[str, str]:
        text = self.content if isinstance(self.content, str) else "".join(p.text or "" for p in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class ChatCompletionRequest(GenerationParams):
    messages: list[ChatMessage] = Field(min_length=1)
    tools: Any = None
    tool_choice: Any = None
    functions: Any = None
    function_call: Any = None
    response_format: dict[str, Any] | None = None

    @field_validator("response_format")
    @classmethod
    def _text_only(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value and value.get("type") != "text":
            raise ValueError("only response_format {'type': 'text'} is supported")
        return value

    def require_text(self, model: str) -> None:
        for index, message in enumerate(self.messages):
            if (media := message.media_part()) is not None:
                part, kind = media
                param = f"messages.{index}.content.{part}"
                raise bad_request(
                    f"{param}: model {model!r} takes text only, and this part is {kind!r}. "
                    "Send text parts only, or route this model to a remote provider that reads them.",
                    param=param,
                )

    def to_generation(self) -> GenerationRequest:
        return self.generation(messages=[m.as_template_message() for m in self.messages])


class CompletionRequest(GenerationParams):
    prompt: str | list[str]
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None

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

    @field_validator("input", mode="before")
    @classmethod
    def _texts_or_token_ids(cls, value: Any) -> Any:
        """OpenAI's four shapes (a string, strings, token ids, lists of token ids), each named when wrong."""
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            raise ValueError("input must be a string or a list of strings")
        if not items:
            raise ValueError("input must not be an empty list")
        if len(items) > 2048:
            raise ValueError("at most 2048 inputs per request")
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
            raise bad_request(TEXT_ONLY_EMBEDDINGS.format(model=model), param="input")

    @property
    def texts(self) -> list[str]:
        """The inputs, once `require_text` has passed."""
        return [self.input] if isinstance(self.input, str) else [t for t in self.input if isinstance(t, str)]


def _token_ids(items: list[Any]) -> bool:
    return all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in items)
