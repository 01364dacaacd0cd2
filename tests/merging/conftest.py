"""Fixtures of the merging tests: the converted SmolLM2 (once per session) and tiny models."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from societies.errors import UserError


def _needs(*modules: str) -> None:
    for module in modules:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install 'societies[merge]')")


@pytest.fixture(scope="session")
def smollm2_hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled SmolLM2 as a Hugging Face checkpoint (converted once per session)."""
    _needs("torch", "transformers", "gguf", "safetensors")
    from societies.merging.convert import gguf_to_hf

    try:
        return gguf_to_hf("bundled:smollm2", out=tmp_path_factory.mktemp("hf") / "smollm2")
    except UserError as err:  # the data package is missing
        pytest.skip(str(err))


def tiny_checkpoint(path: Path, hidden: int = 16, words: tuple[str, ...] = ("a", "b", "c"),
                    seed: int = 0) -> Path:
    """A random 1-layer Llama with a word-level tokenizer: cheap input for shape checks."""
    _needs("torch", "transformers", "tokenizers")
    import torch
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(("<unk>", "<s>", "</s>", *words))}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>")
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                         tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(path)
    fast.save_pretrained(path)
    return path
