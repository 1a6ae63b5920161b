"""Model backends: the ``Model`` protocol, the default OpenAI-compatible model, and a global override.

Why a protocol: any object with ``chat(messages, model, tools)`` can drive an
agent (an echo model in tests, a local LLM, the official SDK). ``call_model``
is the one place agents call a model through, so every backend's output is
normalised to ``openai_compat.Message`` and every foreign exception becomes a
``ModelError``.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol, runtime_checkable

from . import openai_compat
from .errors import ConfigError, ModelError, PygentError
from .openai_compat import Message
from .settings import DEFAULT_BASE_URL, get_settings

__all__ = ["Model", "OpenAIModel", "call_model", "default_model", "get_custom_model", "set_custom_model"]

NO_MODEL_MESSAGE = (
    "no model configured: set OPENAI_API_KEY (and OPENAI_BASE_URL for another provider), "
    "or pass Agent(model=...) / pygent.models.set_custom_model(...)"
)


@runtime_checkable
class Model(Protocol):
    """Anything that answers a chat: returns the assistant's next message."""

    def chat(self, messages: list[dict], model: str, tools: list[dict]) -> Message: ...


class OpenAIModel:
    """The default model: an OpenAI-compatible endpoint configured by the environment."""

    def __init__(self, model: str | None = None) -> None:
        self.model = model

    def __repr__(self) -> str:
        return f"OpenAIModel(model={self.model!r})"

    def chat(self, messages: list[dict], model: str | None, tools: list[dict] | None) -> Message:
        """Send the conversation and return the first choice's message.

        Raises:
            ModelError: nothing is configured (no key, default endpoint), before anything is sent.
            APIError: any subclass from ``openai_compat.chat.completions.create`` (see pygent.errors).
        """
        settings = get_settings()
        if not settings.openai_api_key and settings.openai_base_url.rstrip("/") == DEFAULT_BASE_URL:
            raise ModelError(NO_MODEL_MESSAGE)
        resp = openai_compat.chat.completions.create(
            model=model or self.model or settings.pygent_model,
            messages=messages,
            tools=tools or None,
            tool_choice="auto" if tools else None,
            timeout=settings.pygent_api_timeout,
        )
        return resp.choices[0].message


_custom_model: Model | None = None
_custom_lock = threading.Lock()


def set_custom_model(model: Model | None) -> None:
    """Use ``model`` for every new agent and delegated task (None restores the default)."""
    global _custom_model
    if model is not None and not isinstance(model, Model):
        raise ConfigError(f"custom model must have a chat(messages, model, tools) method, got {type(model).__name__}")
    with _custom_lock:
        _custom_model = model


def get_custom_model() -> Model | None:
    """The model set by ``set_custom_model``, or None."""
    with _custom_lock:
        return _custom_model


def default_model() -> Model:
    """The custom model if one is set, else a fresh ``OpenAIModel``."""
    custom = get_custom_model()
    return custom if custom is not None else OpenAIModel()


def call_model(model: Model, messages: list[dict], model_name: str, tools: list[dict]) -> Message:
    """Call ``model.chat`` and normalise the result to a Message.

    Pygent errors (APIError, ModelError, ...) pass through unchanged; anything
    else the model raises is wrapped in ModelError so callers catch one type.
    Arguments are passed positionally so user models may name them freely.
    """
    try:
        out: Any = model.chat(messages, model_name, tools)
    except PygentError:
        raise
    except Exception as exc:
        raise ModelError(f"model {type(model).__name__} raised {type(exc).__name__}: {exc}") from exc
    try:
        return openai_compat.coerce_message(out)
    except (ModelError, RecursionError, TypeError, ValueError) as exc:  # any shape we cannot read
        raise ModelError(f"model {type(model).__name__} returned an unusable message: {type(exc).__name__}: {str(exc)[:300]}") from None
