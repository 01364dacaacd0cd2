"""The quickstart's wall time (what ``make run`` runs), and what its speed settings buy.

Runs ``experiments/quickstart.yaml`` as shipped, in a fresh directory with the call cache off
(the converted SmolLM2 weights stay cached: converting takes about a second), and prints its wall
time. With ``--compare N`` it then runs the first N questions twice, back to back: as shipped,
and with the execution settings the quickstart had before (the shipped Q4_1 weights through the
one-call-at-a-time ``llamacpp`` backend, three calls in flight). The experiment is the same
(prompts, sampling, seeds); only how calls are executed differs. It prints both times and the
ratio.

This machine's speed drifts with other tenants (we saw llama.cpp's prompt throughput move
between 190 and 340 tokens/s within an hour), so before each timed run a probe measures it:
SmolLM2 Q8_0, a 400-token prompt in chunks of 100, all cores. Compare times only at similar
probe values.

Run: ``python experiments/bench/bench_quickstart.py [--compare 4]``
"""

from __future__ import annotations

import argparse
import copy
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from bench_requant import load, prompt_rate  # this folder is on sys.path when run

from societies.backends.bundled import bundled_path
from societies.backends.requant import requantized
from societies.paths import asset_dir


def probe() -> float:
    """llama.cpp prompt tokens per second right now: SmolLM2 Q8_0, 400 tokens in 100s."""
    llm = load(requantized(bundled_path("smollm2"), "q8_0"), n_ctx=1024, n_batch=512)
    try:
        return prompt_rate(llm, chunk=100)
    finally:
        llm.close()


def timed_run(config: dict[str, Any], limit: int | None, folder: Path) -> float:
    """Wall seconds of ``societies run`` on ``config`` (a fresh run, call cache off)."""
    path = folder / f"{config['name']}.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-c", "from societies.cli import main; raise SystemExit(main())",
               "run", str(path), "--out", str(folder / config["name"]), "--no-cache", "--quiet"]
    if limit:
        command += ["--limit", str(limit)]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def previous_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The same experiment executed as the quickstart was before: Q4_1, one call at a time."""
    old = copy.deepcopy(config)
    old["name"] = "quickstart-previous"
    old["models"] = {config["defaults"]["model"]: {"backend": "llamacpp",
                                                   "path": "bundled:smollm2"}}
    old["run"] = {"concurrency": 3}
    return old


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", type=int, default=0, metavar="N",
                        help="also time the first N questions with the previous settings")
    args = parser.parse_args()
    config = yaml.safe_load((asset_dir("experiments") / "quickstart.yaml").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        speed = probe()
        wall = timed_run(config, None, folder)
        print(f"quickstart as shipped: {wall:.1f} s for {config['task']['n']} questions "
              f"(probe before: {speed:.0f} prompt tokens/s)")
        if args.compare:
            runs = [("as shipped", config), ("previous settings", previous_settings(config))]
            times = {}
            for label, cfg in runs:
                cfg = {**cfg, "name": f"{cfg['name']}-{args.compare}"}
                speed = probe()
                times[label] = timed_run(cfg, args.compare, folder)
                print(f"first {args.compare} questions, {label}: {times[label]:.1f} s "
                      f"(probe before: {speed:.0f} prompt tokens/s)")
            print(f"ratio: {times['previous settings'] / times['as shipped']:.2f}x faster")


if __name__ == "__main__":
    main()
