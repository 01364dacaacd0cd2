"""A :class:`TokenBackend` over a transformers causal LM, with a cropped ``DynamicCache``.

Token bytes are derived from the tokenizer's own pieces, so they are exact where
``decode([id])`` is not: byte-level BPE pieces ("Ġthe") map back through the GPT-2 byte
alphabet, SentencePiece pieces ("▁the", "<0xE6>") through "▁" = space and byte fallback.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from societies.backends.base import ContextOverflowError, Message
from societies.backends.llamacpp import PLAIN_STOPS, plain_prompt
from societies.ensembles.base import TokenBackend, reusable_prefix
from societies.errors import ConfigError

_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_END_PIECES = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|endoftext|>", "<|end|>")


def _gpt2_byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's printable byte alphabet (byte-level BPE spells byte b as chr(...))."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def token_byte_table(tokenizer: Any, size: int) -> list[bytes]:
    """Exact bytes of ids ``0..size-1`` (b"" for special tokens and padding rows)."""
    n = len(tokenizer)
    pieces: list[str | None] = [*tokenizer.convert_ids_to_tokens(list(range(n))),
                                *[None] * max(0, size - n)]
    special = set(tokenizer.all_special_ids) | {
        t for t, added in tokenizer.added_tokens_decoder.items() if added.special}
    decoder = json.dumps(json.loads(tokenizer.backend_tokenizer.to_str()).get("decoder"))
    byte_level = '"ByteLevel"' in decoder
    table = _gpt2_byte_decoder() if byte_level else {}
    out: list[bytes] = []
    for token, piece in enumerate(pieces[:size]):
        if piece is None or token in special:
            out.append(b"")
        elif byte_level and all(c in table for c in piece):
            out.append(bytes(table[c] for c in piece))
        elif (match := _BYTE_PIECE.fullmatch(piece)) and not byte_level:
            out.append(bytes([int(match.group(1), 16)]))
        else:
            out.append(piece.replace("▁", " ").encode("utf-8"))
    return out


class HFTokenBackend(TokenBackend):
    """A transformers causal LM stepped token by token (pending tokens run in one forward).

    Args:
        model: a loaded ``AutoModelForCausalLM`` (eval mode).
        tokenizer: its fast tokenizer.
        prompt_format: ``chat`` uses the tokenizer's chat template, ``plain`` a transcript.
        identity: what pins the weights (defaults to the model's name or path).
        n_ctx: the most tokens the sequence may hold.
    """

    def __init__(self, model: Any, tokenizer: Any, prompt_format: Literal["chat", "plain"] = "chat",
                 identity: str | None = None, n_ctx: int | None = None) -> None:
        if prompt_format not in ("chat", "plain"):
            raise ValueError(f"prompt_format must be 'chat' or 'plain', got {prompt_format!r}")
        if prompt_format == "chat" and not tokenizer.chat_template:
            raise ConfigError("the tokenizer has no chat template; use prompt_format: plain")
        import torch

        self._torch = torch
        self.model, self.tokenizer, self.prompt_format = model.eval(), tokenizer, prompt_format
        self.n_ctx = n_ctx or int(getattr(model.config, "max_position_embeddings", 1 << 20))
        self._n_vocab = int(model.get_output_embeddings().weight.shape[0])
        name = identity or getattr(model.config, "_name_or_path", "") or type(model).__name__
        self._identity = f"transformers-tokens:{name}:{prompt_format}"
        self._pieces = token_byte_table(tokenizer, self._n_vocab)
        self._tokens: list[int] = []
        self._prompt: list[int] = []  # the tokens of the last reset
        self._n_eval = 0  # tokens whose keys/values are in the cache
        self._cache: Any = None
        self._logits: Any = None  # logits at position _n_eval - 1, None if stale
        self._logprobs: np.ndarray | None = None

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def vocab_size(self) -> int:
        return self._n_vocab

    @property
    def stop_strings(self) -> tuple[str, ...]:
        return PLAIN_STOPS if self.prompt_format == "plain" else ()

    def token_bytes(self, token: int) -> bytes:
        return self._pieces[token]

    def vocabulary(self) -> list[bytes]:
        return self._pieces

    def tokenize(self, text: str, add_special: bool = False) -> list[int]:
        ids = list(self.tokenizer(text, add_special_tokens=add_special)["input_ids"])
        bos = self.tokenizer.bos_token_id
        if add_special and bos is not None and ids[:2] == [bos, bos]:
            ids = ids[1:]  # the chat template wrote BOS and the tokenizer added one more
        return ids

    def format_prompt(self, messages: Sequence[Message]) -> str:
        if self.prompt_format == "plain":
            return plain_prompt(messages)
        chat = [{"role": m.role, "content": m.content} for m in messages]
        prompt: str = self.tokenizer.apply_chat_template(chat, add_generation_prompt=True,
                                                         tokenize=False)
        return prompt

    @property
    def eos_tokens(self) -> frozenset[int]:
        ids = {self.tokenizer.eos_token_id}
        configured = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ids.update(configured if isinstance(configured, list) else [configured])
        vocab = self.tokenizer.get_vocab()
        ids.update(vocab[p] for p in _END_PIECES if p in vocab)
        return frozenset(int(t) for t in ids if t is not None and 0 <= t < self._n_vocab)

    @property
    def tokens(self) -> list[int]:
        return list(self._tokens)

    def reset(self, tokens: Sequence[int]) -> None:
        keep = reusable_prefix(self._prompt, tokens, self._n_eval)
        self.truncate(keep)
        self.append(tokens[keep:])
        self._prompt = list(tokens)

    def append(self, tokens: Sequence[int]) -> None:
        if len(self._tokens) + len(tokens) > self.n_ctx:
            raise ContextOverflowError(f"{self._identity}: {len(self._tokens) + len(tokens)} "
                                       f"tokens exceed the context of {self.n_ctx}")
        if tokens:
            self._tokens.extend(int(t) for t in tokens)
            self._logprobs = None

    def truncate(self, length: int) -> None:
        if not 0 <= length <= len(self._tokens):
            raise ValueError(f"truncate: length {length} not in [0, {len(self._tokens)}]")
        if length == len(self._tokens):
            return
        del self._tokens[length:]
        self._logprobs = None
        if length < self._n_eval:
            self._crop(length)
            self._logits = None

    def _crop(self, length: int) -> None:
        if length == 0:
            self._cache = None
        elif self._cache is not None and length < self._n_eval:
            # A negative count removes that many tokens, in transformers 4.x and 5.x alike.
            self._cache.crop(length - self._n_eval)
        self._n_eval = length

    def next_logprobs(self) -> np.ndarray:
        if self._logprobs is None:
            torch = self._torch
            if self._n_eval == len(self._tokens) and self._logits is None:
                if not self._tokens:
                    raise RuntimeError("next_logprobs on an empty sequence: reset() first")
                self._crop(self._n_eval - 1)  # re-run only the last token for its logits
            if self._n_eval < len(self._tokens):
                from transformers import DynamicCache

                if self._cache is None:
                    self._cache = DynamicCache(config=self.model.config)
                ids = torch.tensor([self._tokens[self._n_eval:]], device=self.model.device)
                with torch.inference_mode():
                    out = self.model(input_ids=ids, past_key_values=self._cache, use_cache=True)
                self._cache = out.past_key_values
                self._logits = out.logits[0, -1].float()
                self._n_eval = len(self._tokens)
            logprobs = torch.log_softmax(self._logits, dim=-1).cpu().numpy()
            logprobs.flags.writeable = False  # shared with callers: nobody may edit it
            self._logprobs = logprobs
        return self._logprobs

    def input_embeddings(self) -> np.ndarray:
        weight = self.model.get_input_embeddings().weight
        return np.asarray(weight.detach().float().cpu().numpy(), dtype=np.float32)


def from_spec(spec: Any, n_ctx: int | None = None) -> HFTokenBackend:
    """Load a member from a registry ``ModelSpec`` of backend ``transformers``."""
    from societies.backends.hf import TransformersBackend

    loader = TransformersBackend(spec.options)
    loader._load()  # the chat backend's loader: same files, dtype and device choices
    return HFTokenBackend(loader._model, loader._tokenizer, spec.options.prompt_format,
                          loader.identity, n_ctx)
