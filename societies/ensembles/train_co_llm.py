"""Train a Co-LLM deferral head: ``python -m societies.ensembles.train_co_llm``.

Training data are arithmetic questions (``societies.tasks.arithmetic``) with worked solutions
written by Python ("12*3 = 36 and 4*5 = 20, so 7+36+2-20 = 25. The answer is 25."). Both models
are teacher-forced on each solution once. The assistant's probability of a base token ``x_t``
spanning bytes ``[s, e)`` of the solution is ``F(e) / F(s)``, where ``F(x)`` is the assistant's
probability that its text starts with the solution's first ``x`` bytes, along its own
tokenization: whole tokens before ``x`` times, for the token straddling ``x``, the mass of every
vocabulary entry starting with the straddled part. It is exact where the two tokenizers share
boundaries and the products telescope to the assistant's likelihood of the whole solution.
"""

from __future__ import annotations

import argparse
import bisect
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from societies.backends.base import Message
from societies.ensembles.base import TokenBackend
from societies.ensembles.co_llm_chat import LlamaHiddenStates
from societies.tasks.arithmetic import HIGH, LOW, evaluate, expression, parse_integer

ANSWER_FORM = "End your reply with the final result written as a single integer."


def solution(numbers: Sequence[int]) -> str:
    """A worked solution of ``a+b*c+d-e*f`` ending in "The answer is N."."""
    a, b, c, d, e, f = numbers
    value = evaluate(tuple(numbers))
    return (f"{b}*{c} = {b * c} and {e}*{f} = {e * f}, so {a}+{b * c}+{d}-{e * f} = {value}. "
            f"The answer is {value}.")


def examples(n: int, seed: int) -> list[tuple[str, str, str]]:
    """``n`` (question, solution, gold) triples from ``random.Random(seed)``."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        numbers = tuple(rng.randint(LOW, HIGH) for _ in range(6))
        question = (f"Work out the value of {expression(numbers)}. Use the standard order of "
                    f"operations: multiplication comes before addition and subtraction. "
                    f"{ANSWER_FORM}")
        out.append((question, solution(numbers), str(evaluate(numbers))))
    return out


def _spans(member: TokenBackend, tokens: Sequence[int]) -> list[tuple[int, int]]:
    spans, pos = [], 0
    for token in tokens:
        end = pos + len(member.token_bytes(token))
        spans.append((pos, end))
        pos = end
    return spans


class PrefixMass:
    """``F(x)`` of the module docstring for one teacher-forced assistant pass."""

    def __init__(self, vocab: list[bytes]) -> None:
        self.order = np.array(sorted(range(len(vocab)), key=vocab.__getitem__))
        self.sorted = [vocab[i] for i in self.order]

    def mass(self, logprobs: np.ndarray, prefix: bytes) -> float:
        """Log of the total probability of the tokens whose bytes start with ``prefix``."""
        lo = bisect.bisect_left(self.sorted, prefix)
        hi = bisect.bisect_left(self.sorted, prefix + b"\xff" * 8, lo)
        ids = self.order[lo:hi]
        top = float(np.max(logprobs[ids]))
        return top + float(np.log(np.exp(logprobs[ids].astype(np.float64) - top).sum()))

    def curve(self, text: bytes, spans: list[tuple[int, int]], token_lp: np.ndarray,
              logprobs: np.ndarray, offsets: Sequence[int]) -> np.ndarray:
        """``log F(x)`` at each of ``offsets`` (``logprobs[j]`` predicts token ``j``)."""
        ends = np.array([e for _, e in spans])
        cumulative = np.concatenate([[0.0], np.cumsum(token_lp)])
        out = []
        for x in offsets:
            j = int(np.searchsorted(ends, x, side="right"))  # tokens 0..j-1 end by x
            value = cumulative[j]
            if j < len(spans) and spans[j][0] < x:
                value += self.mass(logprobs[j], text[spans[j][0]:x])
            out.append(value)
        return np.array(out)


@dataclass
class ForcedData:
    """Per target token: base features, base and assistant log-probs, whether each model's
    greedy choice is the token (the assistant's: its greedy token agrees with the token's
    bytes), and the example it comes from."""

    features: np.ndarray
    logp_base: np.ndarray
    logp_asst: np.ndarray
    base_hit: np.ndarray
    asst_hit: np.ndarray
    example: np.ndarray


def log_softmax_rows(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64."""
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def collect(base: TokenBackend, asst: TokenBackend, base_forced: LlamaHiddenStates,
            asst_forced: LlamaHiddenStates, data: list[tuple[str, str, str]],
            features: str) -> ForcedData:
    """Teacher-force both models on each solution; ``*_forced`` evaluate the same models."""
    from societies.ensembles.co_llm import logprob_features

    vocab = asst.vocabulary()
    prefix = PrefixMass(vocab)
    rows: list[tuple[np.ndarray, float, float, bool, bool, int]] = []
    for k, (question, target, _) in enumerate(data):
        messages = [Message("user", question)]
        text = target.encode()
        b_prompt = base.tokenize(base.format_prompt(messages), add_special=True)
        b_target = base.tokenize(target)
        hidden, logits = base_forced.all_positions(b_prompt + b_target, len(b_prompt) - 1)
        a_prompt = asst.tokenize(asst.format_prompt(messages), add_special=True)
        a_target = asst.tokenize(target)
        _, a_logits = asst_forced.all_positions(a_prompt + a_target, len(a_prompt) - 1)
        a_lp = log_softmax_rows(a_logits)
        a_token_lp = a_lp[np.arange(len(a_target)), a_target]
        b_spans, a_spans = _spans(base, b_target), _spans(asst, a_target)
        curve = prefix.curve(text, a_spans, a_token_lp, a_lp, [0] + [e for _, e in b_spans])
        a_ends = np.array([e for _, e in a_spans])
        b_lp = log_softmax_rows(logits)
        for t, token in enumerate(b_target):
            x = hidden[t] if features == "hidden" else logprob_features(b_lp[t])
            start, want = b_spans[t][0], text[b_spans[t][0]:b_spans[t][1]]
            j = int(np.searchsorted(a_ends, start, side="right"))  # assistant token at start
            guess = int(np.argmax(a_lp[j]))
            if a_spans[j][0] == start:  # a shared boundary: greedy text must agree with x_t
                got = vocab[guess]
                asst_hit = bool(got) and got[:len(want)] == want[:len(got)]
            else:  # mid-token: it would have written the token it straddles
                asst_hit = guess == a_target[j]
            rows.append((x, float(b_lp[t, token]), min(0.0, curve[t + 1] - curve[t]),
                         int(np.argmax(b_lp[t])) == token, asst_hit, k))
    return ForcedData(np.stack([r[0] for r in rows]).astype(np.float32),
                      *(np.array([r[i] for r in rows]) for i in range(1, 6)))


def main(argv: Sequence[str] | None = None) -> int:
    """Train, pick η on the validation split, save, and print the per-threshold table."""
    parser = argparse.ArgumentParser(prog="python -m societies.ensembles.train_co_llm",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="smollm2", help="base model name")
    parser.add_argument("--assistant", default="gemma3", help="assistant model name")
    parser.add_argument("--out", required=True, help="head file to write (+ .json metadata)")
    parser.add_argument("--train", type=int, default=80, help="training examples")
    parser.add_argument("--val", type=int, default=30, help="validation examples")
    parser.add_argument("--generate", type=int, default=10,
                        help="validation questions decoded per threshold (0: skip)")
    parser.add_argument("--features", choices=("hidden", "logprobs"), default="hidden")
    parser.add_argument("--thresholds", default="0,0.2,0.4,0.5,0.6,0.8,1")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--bce-epochs", type=int, default=50)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-ctx", type=int, default=1024)
    args = parser.parse_args(argv)

    import torch

    from societies.backends.registry import BackendPool
    from societies.ensembles import co_llm
    from societies.ensembles.decode import GreedyPicker, decode
    from societies.ensembles.llama_tokens import from_spec, spec_file

    started = time.time()
    pool = BackendPool({})
    specs = [pool.spec(args.base), pool.spec(args.assistant)]
    base, asst = (from_spec(s, args.n_ctx) for s in specs)
    # The files and kernels the members load (a requantized base is another model).
    reader = LlamaHiddenStates(spec_file(specs[0]), args.n_ctx, hidden=args.features == "hidden",
                               flash_attn=specs[0].options.flash_attn)  # type: ignore[attr-defined]
    asst_forced = LlamaHiddenStates(spec_file(specs[1]), args.n_ctx, hidden=False,
                                    flash_attn=specs[1].options.flash_attn)  # type: ignore[attr-defined]
    train = collect(base, asst, reader, asst_forced, examples(args.train, args.seed),
                    args.features)
    val_examples = examples(args.val, args.seed + 1_000_003)
    val = collect(base, asst, reader, asst_forced, val_examples, args.features)
    print(f"teacher forcing: {len(train.logp_base)} train / {len(val.logp_base)} val tokens, "
          f"{time.time() - started:.0f} s; pseudo-label 1 on "
          f"{np.mean(train.logp_asst > train.logp_base):.1%} of train tokens")
    head, history = co_llm.train_head(train.features, train.logp_base, train.logp_asst,
                               bce_epochs=args.bce_epochs, epochs=args.epochs, seed=args.seed)
    with torch.no_grad():
        pi = torch.sigmoid(head(torch.as_tensor(val.features))).numpy()
        val_nll = float(co_llm.marginal_nll(head(torch.as_tensor(val.features)),
                                     torch.as_tensor(val.logp_base, dtype=torch.float32),
                                     torch.as_tensor(val.logp_asst, dtype=torch.float32)))
    print(f"marginal NLL/token: train {history[0]:.4f} -> {history[-1]:.4f}, val {val_nll:.4f} "
          f"(base alone {-val.logp_base.mean():.4f}, assistant alone {-val.logp_asst.mean():.4f})"
          f"; trained in {time.time() - started:.0f} s")
    thresholds = [float(t) for t in args.thresholds.split(",")]
    best, table = co_llm.pick_threshold(pi, val.logp_base, val.logp_asst, thresholds)
    co_llm.save_head(args.out, head, {"base": base.identity, "assistant": asst.identity,
                               "features": args.features, "threshold": best,
                               "train_examples": args.train, "seed": args.seed})
    print(f"saved {args.out} (+ .json); picked threshold {best}")
    method = co_llm.CoLLM(head, best, args.features, reader if args.features == "hidden" else None)
    method.prepare([base, asst])
    print("threshold  val-NLL  defer(forced)  token-acc(forced)  defer(gen)  answers right")
    for row in table:
        hits = np.where(pi > row["threshold"], val.asst_hit, val.base_hit)
        line = (f"{row['threshold']:9.2f}  {row['nll']:7.4f}  {row['deferral_rate']:13.1%}  "
                f"{hits.mean():17.1%}")
        if args.generate:
            method.threshold = row["threshold"]
            right = deferred = steps = 0
            for question, _, gold in val_examples[:args.generate]:
                messages = [Message("user", question)]
                result = decode([base, asst], method, [m.format_prompt(messages)
                                                       for m in (base, asst)], GreedyPicker(),
                                args.max_tokens, list(asst.stop_strings))
                right += parse_integer(result.text) == gold
                deferred += int(result.info.get("deferred", 0))
                steps += int(result.info.get("steps", 0))
            line += f"  {deferred / max(1, steps):10.1%}  {right}/{args.generate}"
        if not args.generate:
            line += "           -  -"
        print(line, flush=True)
    print(f"total {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
