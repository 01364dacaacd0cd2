"""The one sampling vocabulary: every llama-cpp-python knob is given, no library default is left
in effect, finish reasons are normalised, and each backend names its execution-only options."""

from __future__ import annotations

import importlib
import inspect

import pytest
from llama_cpp import Llama

from societies.backends.base import Settings
from societies.backends.sampling import LLAMA_OFF, finish_reason, llama_kwargs

# Parameters of create_completion / create_chat_completion that are not sampling knobs: what
# to complete, output shape, tools, and hooks we never pass.
NOT_SAMPLING = {
    "self", "prompt", "suffix", "echo", "messages", "functions", "function_call", "tools",
    "tool_choice", "stream", "stop", "response_format", "model", "logits_processor",
    "stopping_criteria", "grammar", "logit_bias", "logprobs", "top_logprobs",
    "mirostat_tau", "mirostat_eta",  # inert: mirostat_mode is given, 0
}


@pytest.mark.parametrize("method", [Llama.create_completion, Llama.create_chat_completion])
def test_every_llama_cpp_sampling_parameter_is_given(method: object) -> None:
    """A parameter we do not pass keeps the library's default: there must be none (a new
    llama-cpp-python knob fails here until it is switched off in LLAMA_OFF)."""
    params = inspect.signature(method).parameters  # type: ignore[arg-type]
    given = llama_kwargs(Settings(temperature=0.7, top_k=5, min_p=0.1, seed=1))
    assert set(params) - NOT_SAMPLING <= set(given), "llama-cpp-python has a knob we leave at "\
        "its default"
    assert set(given) <= set(params), "a knob this llama-cpp-python does not take"


def test_library_defaults_are_overridden_with_off_values() -> None:
    defaults = inspect.signature(Llama.create_chat_completion).parameters
    assert defaults["top_k"].default == 40 and defaults["min_p"].default == 0.05  # why it matters
    given = llama_kwargs(Settings(temperature=0.0, max_tokens=9, seed=4))
    assert (given["top_k"], given["min_p"], given["top_p"]) == (0, 0.0, 1.0)
    assert (given["temperature"], given["max_tokens"], given["seed"]) == (0.0, 9, 4)
    assert {k: given[k] for k in LLAMA_OFF} == LLAMA_OFF
    assert given["repeat_penalty"] == 1.0 and given["typical_p"] == 1.0


@pytest.mark.parametrize(("raw", "expected"), [
    ("stop", "stop"), ("length", "length"), ("eos", "stop"), ("tool_calls", "stop"),
    ("content_filter", "stop"), (None, "stop"), ("", "stop")])
def test_finish_reasons_are_stop_or_length(raw: object, expected: str) -> None:
    assert finish_reason(raw) == expected


@pytest.mark.parametrize("module", [
    "societies.backends.llamacpp", "societies.backends.llamacpp_batch",
    "societies.backends.openai_http", "societies.backends.hf", "societies.backends.scripted"])
def test_execution_options_are_option_fields(module: str) -> None:
    mod = importlib.import_module(module)
    names = mod.EXECUTION_OPTIONS
    assert isinstance(names, frozenset) and names
    assert names <= set(mod.Options.model_fields), names - set(mod.Options.model_fields)
    # What pins a model or shapes its replies is never execution-only.
    assert not names & {"path", "model", "revision", "base_url", "prompt_format", "requantize",
                        "flash_attn", "n_ctx", "n_batch", "replies", "extra_body", "dtype",
                        "device", "sampling_params", "batch_sampled"}
