"""Cross-tokenizer hand-off with the real models (SmolLM2: byte-level BPE, 49k; Gemma-3:
SentencePiece with byte fallback, 262k), and the transformers token backend."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from societies.backends.base import Message
from societies.ensembles.base import Piece, TokenBackend
from societies.ensembles.decode import TextSync
from societies.ensembles.gguf_file import gguf_vocab_size
from societies.ensembles.hf_tokens import HFTokenBackend
from societies.ensembles.llama_tokens import LlamaTokenBackend

pytestmark = pytest.mark.real

PROMPT = [Message("user", "Say something.")]
CHARS = [*"abcXYZ019 ,.!?\n\t", "  ", "\n\n", " 12", "你", "好", "世界", "😀", "🎉", "é", "ß",
         "→", "𝔘", "中文", " ok"]


@pytest.fixture(scope="module")
def members() -> Iterator[list[LlamaTokenBackend]]:
    pair = [LlamaTokenBackend("bundled:smollm2", n_ctx=512),
            LlamaTokenBackend("bundled:gemma3", n_ctx=512, prompt_format="plain")]
    yield pair
    for m in pair:
        m.close()


def start(members: list[Any]) -> tuple[TextSync, list[list[int]]]:
    prompts = [m.tokenize(m.format_prompt(PROMPT), add_special=True) for m in members]
    for m, p in zip(members, prompts, strict=True):
        m.reset(p)
    return TextSync(members), prompts


def check(sync: TextSync, members: list[Any], prompts: list[list[int]]) -> None:
    for i, m in enumerate(members):
        assert m.tokens[:len(prompts[i])] == prompts[i], "the prompt tokens must never change"
        assert m.detokenize(sync.generated(i)) == bytes(sync.emitted)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(st.sampled_from(CHARS), min_size=1, max_size=12), main=st.integers(0, 1))
def test_pieces_of_either_model_keep_both_byte_exact(members: list[LlamaTokenBackend],
                                                     parts: list[str], main: int) -> None:
    sync, prompts = start(members)
    text = "".join(parts)
    pieces = [Piece(members[main].token_bytes(t), main, t) for t in members[main].tokenize(text)]
    for piece in pieces:
        sync.push(piece)
        check(sync, members, prompts)
    assert bytes(sync.emitted) == b"".join(p.text for p in pieces) == text.encode()


def test_byte_fallback_pieces_reach_the_other_model_as_bytes(
        members: list[LlamaTokenBackend]) -> None:
    smol, gemma = members
    sync, prompts = start(members)
    ids = smol.tokenize("你好")  # byte-level BPE splits these characters mid-UTF-8
    assert any(not _valid(smol.token_bytes(t)) for t in ids)
    for t in ids:
        sync.push(Piece(smol.token_bytes(t), 0, t))
        check(sync, members, prompts)
    assert gemma.detokenize(sync.generated(1)).decode() == "你好"
    byte_piece = next(t for t in range(gemma.vocab_size) if gemma.token_bytes(t) == b"\xf0")
    sync.push(Piece(b"\xf0", 1, byte_piece))  # a lone lead byte from Gemma's byte fallback
    check(sync, members, prompts)


def _valid(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def test_kv_cache_after_handoffs_matches_a_fresh_evaluation(
        members: list[LlamaTokenBackend]) -> None:
    sync, _ = start(members)
    smol = members[0]
    for t in smol.tokenize(" Hi, 你好!"):
        sync.push(Piece(smol.token_bytes(t), 0, t))
        for m in members:
            m.next_logprobs()  # evaluate as the decode loop does, so truncations hit the cache
    for m in members:
        kept, tokens = m.next_logprobs().astype(np.float64), m.tokens
        m.reset([])
        m.reset(tokens)
        fresh = m.next_logprobs().astype(np.float64)
        # Quantized kernels differ slightly between batch sizes (logprobs move by up to ~0.8
        # on unlikely tokens); a stale or misplaced KV entry changes the distribution outright.
        kl = float(np.sum(np.exp(fresh) * (fresh - kept)))
        assert kl < 0.02 and fresh.argmax() == kept.argmax()


def test_llama_backend_basics(members: list[LlamaTokenBackend]) -> None:
    smol, gemma = members
    assert (smol.vocab_size, gemma.vocab_size) == (49152, 262144)
    assert gguf_vocab_size(smol.path) == 49152
    assert smol.tokenize("<|im_end|>", add_special=True) == [2]
    assert 2 in smol.eos_tokens and 106 in gemma.eos_tokens  # <|im_end|>, <end_of_turn>
    assert gemma.format_prompt(PROMPT).endswith("Assistant:")
    assert smol.format_prompt(PROMPT).endswith("<|im_start|>assistant\n")
    assert gemma.token_bytes(gemma.tokenize(" the")[0]) == b" the"  # ▁ is a space
    smol.reset(smol.tokenize("Hi there", add_special=True))
    lp = smol.next_logprobs()
    assert lp.dtype == np.float32 and lp.shape == (49152,) and not lp.flags.writeable
    assert abs(float(np.exp(lp.astype(np.float64)).sum()) - 1) < 1e-4
    with pytest.raises(ValueError, match="truncate"):
        smol.truncate(99)
    emb = smol.input_embeddings()
    assert emb.shape == (49152, 576) and emb.dtype == np.float32


# -- transformers: a tiny random model and tokenizers trained here, offline ----------------

CORPUS = ["Hello world, this is a tiny corpus. The answer is 42.",
          "你好，世界 😀 numbers 12345 and more words", "Indented\n\n  code\tblock"] * 10


def tiny(kind: str) -> HFTokenBackend:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    if kind == "byte_level":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        specials, eos = ["<|endoftext|>", "<|im_end|>"], "<|im_end|>"
        trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False)
    else:  # SentencePiece style: ▁ for spaces, <0xNN> byte fallback
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never")
        specials, eos = ["<unk>", "<s>", "</s>"], "</s>"
        trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                      show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    if kind != "byte_level":  # byte tokens are ordinary vocabulary entries, as in Llama/Gemma
        trained = json.loads(tok.to_str())["model"]
        vocab = dict(trained["vocab"])
        for b in range(256):
            vocab.setdefault(f"<0x{b:02X}>", len(vocab))
        merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" "))
                  for m in trained["merges"]]
        added = json.loads(tok.to_str())["added_tokens"]
        tok = Tokenizer(models.BPE(vocab, merges, byte_fallback=True, unk_token="<unk>"))
        tok.add_special_tokens([a["content"] for a in added])
        tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never")
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                         decoders.Fuse()])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, bos_token_id=None,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=None)
    return HFTokenBackend(LlamaForCausalLM(config), tokenizer, "plain", identity=kind)


@pytest.mark.parametrize("kind", ["byte_level", "sentencepiece"])
def test_hf_backend_bytes_and_cache(kind: str) -> None:
    b = tiny(kind)
    for text in ["Hello world", " 你好 😀 x", "\n\n  a\tb 123"]:
        assert b.detokenize(b.tokenize(text)) == text.encode()
    prompt = b.tokenize("Hello", add_special=True)
    b.reset(prompt)
    first = b.next_logprobs().copy()
    b.append(b.tokenize(" world"))
    second = b.next_logprobs().copy()
    b.truncate(len(prompt))  # crops the DynamicCache; the last prompt token is re-run
    np.testing.assert_allclose(b.next_logprobs(), first, atol=1e-5)
    b.append(b.tokenize(" world"))
    np.testing.assert_allclose(b.next_logprobs(), second, atol=1e-5)
    assert b.input_embeddings().shape == (b.vocab_size, 32)
    assert b.eos_tokens and all(b.token_bytes(t) == b"" for t in b.eos_tokens)


def test_hf_and_llama_members_hand_off(members: list[LlamaTokenBackend]) -> None:
    mixed: list[TokenBackend] = [members[0], tiny("sentencepiece")]
    sync, prompts = start(mixed)
    smol = members[0]
    for t in smol.tokenize(" ok 你好 😀\n\n  done"):
        sync.push(Piece(smol.token_bytes(t), 0, t))
        check(sync, mixed, prompts)
    mixed[1].next_logprobs()
