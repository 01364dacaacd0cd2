"""Step cost of each token-level method relative to stepping its models alone.

    python experiments/ensembles/bench_steps.py [--steps 24] [--rounds 5]

One step of a single model = next_logprobs (evaluating the last token) + argmax + append.
One step of a method = the decode loop's body: method.step over every member's distribution,
then the hand-off of the chosen piece to every member (re-tokenizing tails where vocabularies
differ). Each round measures SmolLM2 alone (S), Gemma-3 alone (G) and every method back to
back, so a busy machine slows them alike; the table gives per-step milliseconds and the median
over rounds of method / (S + G), the goal being <= 1.25 for UniTE and GaC. Same-vocabulary
methods run SmolLM2 copies, so their fair yardstick is the sum of their own members' steps
(the "own" column).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np

from societies.backends.base import Message
from societies.ensembles.base import Method, TokenBackend
from societies.ensembles.decode import GreedyPicker, LazyLogprobs, TextSync
from societies.ensembles.llama_tokens import LlamaTokenBackend
from societies.ensembles.methods import (
    Contrastive,
    GaC,
    LogitAverage,
    ProbAverage,
    ProxyTuning,
    UniTE,
)

MESSAGES = [Message("user", "Write a long, detailed story about a lighthouse keeper.")]


def start(members: Sequence[TokenBackend]) -> None:
    for m in members:
        m.reset(m.tokenize(m.format_prompt(MESSAGES), add_special=True))
        m.next_logprobs()  # the prompt is evaluated outside the timed steps


def single_step_ms(model: TokenBackend, steps: int) -> float:
    start([model])
    began = time.perf_counter()
    for _ in range(steps):
        model.append([int(np.argmax(model.next_logprobs()))])
    model.next_logprobs()
    return (time.perf_counter() - began) * 1000 / steps


def method_step_ms(method: Method, members: Sequence[TokenBackend], steps: int) -> float:
    start(members)
    sync, picker, done = TextSync(members), GreedyPicker(), 0
    began = time.perf_counter()
    for _ in range(steps):
        piece = method.step(members, LazyLogprobs(members), picker)
        if piece.eos:
            break
        sync.push(piece)
        done += 1
    for m in members:
        m.next_logprobs()  # pending tokens count: the next step would evaluate them
    return (time.perf_counter() - began) * 1000 / max(done, 1)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)

    def smol() -> LlamaTokenBackend:
        return LlamaTokenBackend("bundled:smollm2", n_ctx=1024)

    s, g = smol(), LlamaTokenBackend("bundled:gemma3", n_ctx=1024, prompt_format="plain")
    s2, s3 = smol(), smol()
    cases: dict[str, tuple[Callable[[], Method], list[TokenBackend]]] = {
        "unite (k=10)": (lambda: UniTE(top_k=10), [s, g]),
        "gac": (GaC, [s, g]),
        "gac gate=0.5": (lambda: GaC(gate_threshold=0.5), [s, g]),
        "average (S+S)": (lambda: ProbAverage([0.6, 0.4]), [s, s2]),
        "logit_average (S+S)": (lambda: LogitAverage([0.6, 0.4]), [s, s2]),
        "contrastive (S+S)": (lambda: Contrastive(0.1), [s, s2]),
        "proxy_tuning (S+S+S)": (ProxyTuning, [s, s2, s3]),
    }
    try:
        from societies.ensembles.deepen import DeePEn  # another engineer's; optional here

        cases["deepen"] = (DeePEn, [s, g])
    except ImportError:
        pass
    methods: dict[str, Method] = {}
    for name, (make, members) in cases.items():
        began = time.perf_counter()
        methods[name] = make()
        methods[name].prepare(members)
        print(f"prepare {name}: {time.perf_counter() - began:.2f} s")
    single_step_ms(s, 4), single_step_ms(g, 4)  # warm caches and pages
    times: dict[str, list[float]] = {"S": [], "G": [], **{n: [] for n in cases}}
    for _ in range(args.rounds):
        times["S"].append(single_step_ms(s, args.steps))
        times["G"].append(single_step_ms(g, args.steps))
        for name, (_, members) in cases.items():
            times[name].append(method_step_ms(methods[name], members, args.steps))
    base = [a + b for a, b in zip(times["S"], times["G"], strict=True)]
    print(f"\nper-step ms (median of {args.rounds} rounds x {args.steps} steps)")
    print(f"  S {statistics.median(times['S']):7.1f}   G {statistics.median(times['G']):7.1f}"
          f"   S+G {statistics.median(base):7.1f}")
    print(f"{'method':24} {'ms/step':>8} {'/(S+G)':>8} {'/own':>8}")
    for name, (_, members) in cases.items():
        own = [sum(times["G"][r] if m is g else times["S"][r] for m in members)
               for r in range(args.rounds)]
        ratio = statistics.median(t / b for t, b in zip(times[name], base, strict=True))
        own_ratio = statistics.median(t / o for t, o in zip(times[name], own, strict=True))
        print(f"{name:24} {statistics.median(times[name]):8.1f} {ratio:8.2f} {own_ratio:8.2f}")


if __name__ == "__main__":
    main()
