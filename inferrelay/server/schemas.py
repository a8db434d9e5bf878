"""OpenAI request bodies, validated strictly: what the engines cannot honour is a 400, not silence."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from inferrelay.config.units import Duration
from inferrelay.engines.base import GenerationRequest, Sampling

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


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def as_template_message(self) -> dict[str, str]:
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
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


class EmbeddingRequest(OpenAIRequest):
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None

    @field_validator("input")
    @classmethod
    def _non_empty(cls, value: str | list[str]) -> str | list[str]:
        texts = [value] if isinstance(value, str) else value
        if not texts:
            raise ValueError("input must not be an empty list")
        if any(not t for t in texts):
            raise ValueError("input must not contain empty strings")
        if len(texts) > 2048:
            raise ValueError("at most 2048 inputs per request")
        return value

    @field_validator("dimensions")
    @classmethod
    def _no_dimensions(cls, value: int | None) -> int | None:
        if value is not None:
            raise ValueError("dimensions is not supported: the models here have fixed sizes")
        return value

    @property
    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)
