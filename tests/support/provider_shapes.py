"""Chat-completion response bodies in the shapes OpenAI-compatible providers document.

Why: users point OPENAI_BASE_URL at whatever serves their model, and each
server fills the OpenAI shape a little differently (extra fields, missing
ids, content as parts, reasoning fields, odd finish reasons). Each entry here
is one provider's documented (or, where marked, commonly returned) response,
written from its public API reference, with a `bash` tool call or a text
answer. tests/agent/test_provider_shapes.py serves each through FakeOpenAI to
our client, to the seed's HTTPModel, to Agent()'s default model and to the
official `openai` SDK.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

CREATED = 1_767_225_600


@dataclass(frozen=True)
class Shape:
    """One provider response: ``body(cmd)`` holds a bash call of ``cmd`` (or, when ``text`` is set, that answer)."""

    name: str
    source: str  #: whose documentation (or observed behaviour) the shape follows
    body: Callable[[str], dict[str, Any]]
    text: str | None = None  #: the content a text-only shape must come out as
    reasoning: str | None = None  #: the reasoning the message must carry, when the shape has one


def _args(cmd: str) -> str:
    return json.dumps({"cmd": cmd})


def _bash(cmd: str, call_id: str | None, **extra: Any) -> dict[str, Any]:
    """A bash tool call in OpenAI's key order; ``extra`` adds the provider's own keys."""
    return {**({"id": call_id} if call_id is not None else {}), "type": "function",
            "function": {"name": "bash", "arguments": _args(cmd)}, **extra}


def _usage(prompt: int, completion: int, **extra: Any) -> dict[str, Any]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion, **extra}


def _head(completion_id: str, model: str) -> dict[str, Any]:
    """The top-level keys most servers put first."""
    return {"id": completion_id, "object": "chat.completion", "created": CREATED, "model": model}


def openai_chat(cmd: str) -> dict[str, Any]:
    """OpenAI Chat Completions API reference: the full object, with every detail field."""
    return {
        **_head("chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG", "gpt-4o-2024-08-06"),
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": None, "tool_calls": [_bash(cmd, "call_62136354")], "refusal": None, "annotations": []},
            "logprobs": None,
            "finish_reason": "tool_calls",
        }],
        "usage": {
            "prompt_tokens": 82, "completion_tokens": 17, "total_tokens": 99,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
        },
        "service_tier": "default",
        "system_fingerprint": "fp_fc9f1d7035",
    }


def openai_two_choices(cmd: str) -> dict[str, Any]:
    """OpenAI with n=2: several choices, the first one is used."""
    body = openai_chat(cmd)
    second = json.loads(json.dumps(body["choices"][0]))
    second["index"] = 1
    second["message"]["tool_calls"][0]["function"]["arguments"] = _args("echo second-choice-must-not-run")
    body["choices"].append(second)
    return body


def azure_openai(cmd: str) -> dict[str, Any]:
    """Azure OpenAI (REST reference): OpenAI's shape plus content-filter results per prompt and per choice."""
    filters = {k: {"filtered": False, "severity": "safe"} for k in ("hate", "self_harm", "sexual", "violence")}
    return {
        **_head("chatcmpl-7R1nGnsXO8n4oi9UPz2f3UHdgAYMn", "gpt-4o-2024-11-20"),
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": filters}],
        "choices": [{
            "index": 0,
            "finish_reason": "tool_calls",
            "logprobs": None,
            "content_filter_results": {},
            "message": {"role": "assistant", "content": None, "refusal": None, "annotations": [],
                        "tool_calls": [_bash(cmd, "call_Zc0IbgsCXsGBvNRwjVQUQGyY")]},
        }],
        "usage": {"prompt_tokens": 90, "completion_tokens": 18, "total_tokens": 108,
                  "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}},
        "system_fingerprint": "fp_ee1d74bde0",
    }


def vllm(cmd: str) -> dict[str, Any]:
    """vLLM's OpenAI-compatible server (--enable-auto-tool-choice): stop_reason, null reasoning, extra top-level keys."""
    return {
        **_head("chatcmpl-5d1c6c0f8a3e4b6c9d2e1f0a7b8c9d0e", "Qwen/Qwen2.5-7B-Instruct"),
        "choices": [{
            "index": 0,
            "message": {
                "role": "assistant",
                "reasoning_content": None,
                "content": None,
                "tool_calls": [_bash(cmd, "chatcmpl-tool-3a25abfa70e041c8958862ab6a6550e9")],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
            "stop_reason": None,
        }],
        "usage": {"prompt_tokens": 301, "total_tokens": 329, "completion_tokens": 28, "prompt_tokens_details": None},
        "prompt_logprobs": None,
        "kv_transfer_params": None,
    }


def vllm_reasoning(cmd: str) -> dict[str, Any]:
    """vLLM with a reasoning parser: the thinking in reasoning_content, an empty tool_calls list, finish_reason "length"."""
    return {
        **_head("chatcmpl-9f8e7d6c5b4a39281706f5e4d3c2b1a0", "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"),
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "reasoning_content": "The user wants a greeting.", "content": "vllm says hi", "tool_calls": []},
            "logprobs": None,
            "finish_reason": "length",
            "stop_reason": None,
        }],
        "usage": {"prompt_tokens": 12, "total_tokens": 40, "completion_tokens": 28, "prompt_tokens_details": None},
        "prompt_logprobs": None,
    }


def llama_cpp(cmd: str) -> dict[str, Any]:
    """llama.cpp's llama-server (--jinja): reasoning_content, timings, a system_fingerprint naming the build."""
    return {
        "choices": [{
            "finish_reason": "tool_calls",
            "index": 0,
            "message": {
                "role": "assistant",
                "reasoning_content": "I should run the command.",
                "content": None,
                "tool_calls": [{"type": "function", "function": {"name": "bash", "arguments": _args(cmd)}, "id": "kQ2vAFaLq8hBjxGfyS0TP9rYPmMr3cuA"}],
            },
        }],
        "created": CREATED,
        "model": "gpt-3.5-turbo",
        "system_fingerprint": "b6100-2bf9d539",
        "object": "chat.completion",
        "usage": {"completion_tokens": 31, "prompt_tokens": 210, "total_tokens": 241},
        "id": "chatcmpl-8BMU4AODpZ0YHsaJOBtI0n4NhZMkWycG",
        "timings": {"prompt_n": 210, "prompt_ms": 112.5, "prompt_per_token_ms": 0.53, "prompt_per_second": 1866.6,
                    "predicted_n": 31, "predicted_ms": 402.1, "predicted_per_token_ms": 12.97, "predicted_per_second": 77.1},
    }


def bare_tool_call(cmd: str) -> dict[str, Any]:
    """The shape issue 17 reports (older llama.cpp builds, some proxies): a tool call without id or type, no usage."""
    return {
        "object": "chat.completion",
        "model": "local",
        "choices": [{"index": 0, "finish_reason": "tool_calls",
                     "message": {"role": "assistant", "content": None,
                                 "tool_calls": [{"function": {"name": "bash", "arguments": _args(cmd)}}]}}],
    }


def arguments_object(cmd: str) -> dict[str, Any]:
    """Arguments as a JSON object instead of a string, no finish_reason, no id at the top (seen from some proxies)."""
    return {
        "choices": [{"message": {"role": "assistant", "content": "",
                                 "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "bash", "arguments": {"cmd": cmd}}}]}}],
    }


def ollama(cmd: str) -> dict[str, Any]:
    """Ollama's OpenAI compatibility (/v1/chat/completions): content "", an index on each tool call, fp_ollama."""
    return {
        **_head("chatcmpl-471", "llama3.2"),
        "system_fingerprint": "fp_ollama",
        "choices": [{
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "",
                "tool_calls": [_bash(cmd, "call_k3d8a2b1", index=0)],
            },
            "finish_reason": "tool_calls",
        }],
        "usage": _usage(160, 22),
    }


def ollama_thinking(cmd: str) -> dict[str, Any]:
    """Ollama with a thinking model: the thinking comes as `reasoning`."""
    return {
        **_head("chatcmpl-872", "qwen3:8b"),
        "system_fingerprint": "fp_ollama",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ollama says hi", "reasoning": "Say hi."}, "finish_reason": "stop"}],
        "usage": _usage(11, 30),
    }


def lm_studio(cmd: str) -> dict[str, Any]:
    """LM Studio's OpenAI-compatible server: numeric-string tool call ids, `stats`, the model as fingerprint."""
    return {
        **_head("chatcmpl-gb1t1uqzefudice8ntxd9i", "qwen2.5-7b-instruct"),
        "choices": [{
            "index": 0,
            "logprobs": None,
            "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": "",
                        "tool_calls": [_bash(cmd, "365174485")]},
        }],
        "usage": _usage(247, 26),
        "stats": {},
        "system_fingerprint": "qwen2.5-7b-instruct",
    }


def hosted_router(cmd: str) -> dict[str, Any]:
    """A hosted router (OpenRouter's API reference): provider, native_finish_reason, reasoning, cost in usage."""
    return {
        "id": "gen-1767225600-aBcDeFgHiJkLmNoPqRsT",
        "provider": "OpenAI",
        "model": "openai/gpt-4o-mini",
        "object": "chat.completion",
        "created": CREATED,
        "choices": [{
            "logprobs": None,
            "finish_reason": "tool_calls",
            "native_finish_reason": "tool_calls",
            "index": 0,
            "message": {
                "role": "assistant", "content": "", "refusal": None, "reasoning": None,
                "tool_calls": [_bash(cmd, "call_Vz3rCzF9nW2cK1eT0yQ8", index=0)],
            },
        }],
        "usage": {"prompt_tokens": 95, "completion_tokens": 15, "total_tokens": 110, "cost": 0.0000233,
                  "is_byok": False, "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}},
    }


def cloud_compat(cmd: str) -> dict[str, Any]:
    """A cloud vendor's compatibility layer (Gemini's OpenAI-compatible endpoint): no content key, an empty tool
    call id, vendor data under extra_content, no top-level id."""
    return {
        "choices": [{
            "finish_reason": "tool_calls",
            "index": 0,
            "message": {
                "role": "assistant",
                "tool_calls": [{"function": {"arguments": _args(cmd), "name": "bash"}, "id": "", "type": "function",
                                "extra_content": {"google": {"thought_signature": "CpcBAdHtim9+"}}}],
            },
        }],
        "created": CREATED,
        "model": "gemini-2.5-flash",
        "object": "chat.completion",
        "usage": {"completion_tokens": 18, "prompt_tokens": 77, "total_tokens": 95},
    }


def content_parts(cmd: str) -> dict[str, Any]:
    """A cloud vendor (Mistral's reasoning models) answering with content parts: thinking, then text parts."""
    return {
        **_head("cmpl-e5cc70bb28c444948073e77776eb30ef", "magistral-medium-latest"),
        "choices": [{
            "index": 0,
            "finish_reason": "stop",
            "message": {"role": "assistant", "tool_calls": None, "prefix": False,
                        "content": [{"type": "thinking", "thinking": [{"type": "text", "text": "Short answer."}]},
                                    {"type": "text", "text": "parts "}, {"type": "text", "text": "joined"}]},
        }],
        "usage": {"prompt_tokens": 9, "total_tokens": 29, "completion_tokens": 20},
    }


SHAPES: list[Shape] = [
    Shape("openai", "OpenAI Chat Completions API reference", openai_chat),
    Shape("openai-n2", "OpenAI, n=2", openai_two_choices),
    Shape("azure", "Azure OpenAI REST reference", azure_openai),
    Shape("vllm", "vLLM OpenAI-compatible server, tool calling", vllm),
    Shape("vllm-reasoning", "vLLM reasoning outputs", vllm_reasoning, text="vllm says hi", reasoning="The user wants a greeting."),
    Shape("llama.cpp", "llama.cpp server README (/v1/chat/completions)", llama_cpp, reasoning="I should run the command."),
    Shape("bare-tool-call", "issue 17: no id, no type", bare_tool_call),
    Shape("arguments-object", "arguments as an object, minimal body", arguments_object),
    Shape("ollama", "Ollama OpenAI compatibility", ollama),
    Shape("ollama-thinking", "Ollama OpenAI compatibility, thinking model", ollama_thinking, text="ollama says hi", reasoning="Say hi."),
    Shape("lm-studio", "LM Studio OpenAI-compatible endpoints", lm_studio),
    Shape("hosted-router", "OpenRouter API reference", hosted_router),
    Shape("cloud-compat", "Gemini OpenAI compatibility", cloud_compat),
    Shape("content-parts", "Mistral chat completions, reasoning models", content_parts, text="parts joined"),
]
