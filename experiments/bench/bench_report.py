"""Reading and reporting a big run: seconds and peak memory over 10,000 unit records.

A MachineSoM S3 society (3 agents) on ``arithmetic``, ``rounds: 3`` (round 0 plus three
debate/reflection rounds, so 4 x 3 = 12 turns per unit), all 8 strategies of 3 symbols, 1,250
questions: 10,000 units. Records are made by a scripted-style generator rather than a model:
replies of ~300 characters ending in "The answer is N.", answers right about 60% of the time
and pulled towards the previous round's majority, strategies that share a prefix sharing those
rounds' turns (as a real run stores them). They are written with ``RunStore.append`` one
question (8 units) at a time into a run directory prepared from the config, like ``societies
run`` does.

Each stage is run twice: once for the time (``perf_counter``), once under ``tracemalloc`` for
the peak of Python allocations (numpy and pandas report theirs too), so the tracing does not
inflate the seconds. Stages: the index pass alone; ``records()`` (a list) vs ``iter_records()``
(a stream); ``check_readable``; ``summarize`` over each; and, where the modules exist,
``stats.intervals`` (bootstrap) and ``html_report.write_report``.

Run: ``python experiments/bench/bench_report.py [--units 10000] [--n-boot 2000] [--keep DIR]``
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import platform
import random
import resource
import tempfile
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from machine import cpu_model  # experiments/bench/machine.py (the script's folder)

from societies.config import parse_config
from societies.metrics import summarize
from societies.plan import build_plan
from societies.records import Round, Turn, UnitRecord, unit_id
from societies.storage import RunStore

STRATEGIES = [f"{i:03b}" for i in range(8)]
WORDS = ("first", "add", "the", "two", "numbers", "then", "check", "carry", "so", "we", "get",
         "result", "digits", "sum", "careful", "again", "other", "agents", "said", "agree")


def experiment(questions: int) -> dict[str, Any]:
    """The config of the run the records pretend to come from."""
    return {
        "name": "bench-report",
        "models": {"s": {"backend": "scripted", "replies": ["The answer is 1."]}},
        "defaults": {"model": "s", "sampling": {"temperature": 0.0, "max_tokens": 128}},
        "societies": [{"machinesom": "S3"}],
        "rounds": 3,
        "strategies": STRATEGIES,
        "task": {"name": "arithmetic", "n": questions, "seed": 0},
        "run": {"concurrency": 4, "cache": False},
    }


def reply_text(rng: random.Random, answer: str) -> str:
    """About 300 characters of reasoning-like words, then the answer."""
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < 280:
        words.append(rng.choice(WORDS))
    return " ".join(words).capitalize() + f". The answer is {answer}."


def question_units(rng: random.Random, qid: str, gold: str, agents: list[str],
                   traits: list[str]) -> list[UnitRecord]:
    """The 8 units of one question; strategies sharing a prefix share those rounds' turns."""
    shared: dict[str, Round] = {}

    def make_round(prefix: str) -> Round:
        if prefix in shared:
            return shared[prefix]
        k = len(prefix)
        pattern = "answer" if k == 0 else ("debate" if prefix[-1] == "0" else "reflection")
        before = shared[prefix[:-1]] if k else None
        majority = Counter(t.answer for t in before.turns).most_common(1)[0][0] if before else None
        turns = []
        for i, name in enumerate(agents):
            if majority is not None and rng.random() < 0.5:
                answer = majority
            else:
                answer = gold if rng.random() < 0.6 else str(rng.randint(0, 99))
            text = reply_text(rng, answer)
            saw = [a for a in agents if a != name] if pattern == "debate" else []
            turns.append(Turn(agent=name, pattern=pattern, reply=text, raw_answer=answer,
                              answer=answer, correct=answer == gold, model="s",
                              seed=rng.randint(0, 2**31), latency_s=round(rng.random(), 3),
                              saw=saw, prompt_tokens=80 + 120 * k,
                              completion_tokens=len(text.split()) + i))
        shared[prefix] = Round(index=k, turns=turns)
        return shared[prefix]

    units = []
    for strategy in STRATEGIES:
        rounds = [make_round(strategy[:k]) for k in range(len(strategy) + 1)]
        units.append(UnitRecord(
            unit_id=unit_id("S3", strategy, 0, qid), task="arithmetic", question_id=qid,
            society="S3", strategy=strategy, repeat=0, gold=gold, agents=agents,
            traits=traits, rounds=rounds))
    return units


def build_run(root: Path, units: int) -> RunStore:
    """Prepare ``root`` from the config and append ``units`` generated records."""
    questions = units // len(STRATEGIES)
    cfg = parse_config(experiment(questions))
    plan = build_plan(cfg)
    society = plan.societies[0]
    agents = [a.name for a in society.agents]
    traits = [a.card.name for a in society.agents]
    store = RunStore(root)
    store.prepare(cfg.model_dump(mode="json"), "bench-report")
    rng = random.Random(0)
    for q in range(questions):
        gold = str(rng.randint(0, 99))
        store.append(question_units(rng, f"q{q:05d}", gold, agents, traits))
    return store


def measure(fn: Callable[[], Any]) -> tuple[float, float]:
    """Seconds of one call, and peak MiB traced over a second call."""
    gc.collect()
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return seconds, peak / 2**20




def stages(store: RunStore, out: Path, n_boot: int) -> Iterator[tuple[str, Callable[[], Any]]]:
    """The stages to measure, those of modules that exist in this checkout included."""
    yield "index pass (unit ids + offsets)", store.index
    yield "records() -> list", store.records
    yield "iter_records() consumed", lambda: sum(1 for _ in store.iter_records())
    yield "check_readable()", store.check_readable
    yield "summarize(records())", lambda: summarize(store.records())
    yield "summarize(iter_records())", lambda: summarize(store.iter_records())
    if importlib.util.find_spec("societies.analysis.stats"):
        from societies.analysis import stats

        yield (f"stats.intervals(n_boot={n_boot})",
               lambda: stats.intervals(store.root, n_boot=n_boot))
    if importlib.util.find_spec("societies.analysis.html_report"):
        from societies.analysis.html_report import write_report

        yield "html_report.write_report", lambda: write_report([store.root], out / "report")


def main() -> None:
    """Build the run, measure every stage, print a table and the memory ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=10_000)
    parser.add_argument("--n-boot", type=int, default=2000)
    parser.add_argument("--keep", type=Path, help="build the run here and keep it")
    args = parser.parse_args()
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"CPU: {cpu_model()}; {threads} threads available; Python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp) / "run"
        start = time.perf_counter()
        store = build_run(root, args.units)
        size = store.records_path.stat().st_size / 2**20
        print(f"built {args.units} records ({size:.1f} MiB records.jsonl) in "
              f"{time.perf_counter() - start:.1f} s\n")
        results: dict[str, tuple[float, float]] = {}
        print(f"{'stage':<36} {'seconds':>8} {'peak MiB':>9}")
        for name, fn in stages(store, Path(tmp), args.n_boot):
            try:
                results[name] = measure(fn)
            except Exception as err:  # another module's work in progress: say so, go on
                print(f"{name:<36} failed: {type(err).__name__}: {err}", flush=True)
                continue
            print(f"{name:<36} {results[name][0]:8.2f} {results[name][1]:9.1f}", flush=True)
    lst, it = results["records() -> list"], results["iter_records() consumed"]
    s_lst, s_it = results["summarize(records())"], results["summarize(iter_records())"]
    print(f"\niter_records / records(): memory {it[1] / lst[1]:.3f}, time {it[0] / lst[0]:.2f}")
    print(f"summarize over the iterator / over the list: memory {s_it[1] / s_lst[1]:.3f}, "
          f"time {s_it[0] / s_lst[0]:.2f}")
    print(f"process max RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB")


if __name__ == "__main__":
    main()
