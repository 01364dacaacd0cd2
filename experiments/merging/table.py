"""Print the comparison table of experiments/merging/README.md from its run directories.

    python experiments/merging/table.py runs/merging/compare runs/merging/debate

Per society: accuracy of each round (mean over agents; majority too for several agents),
parse failures, prompt and completion tokens, and the seconds its calls took (summed latencies:
with calls in flight together the run's wall time is shorter; a cached call counts 0).
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path


def main(runs: list[str]) -> None:
    from societies.storage import RunStore

    print("| system | round | accuracy | majority (right per agent) | unreadable | prompt tok "
          "| completion tok | call time (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for run in runs:
        groups: dict[str, list] = defaultdict(list)
        for record in RunStore(Path(run)).records():
            groups[record.society].append(record)
        for society, records in groups.items():
            n_rounds = max(len(r.rounds) for r in records)
            for k in range(n_rounds):
                turns = [t for r in records for t in r.rounds[k].turns]
                acc = sum(t.correct for t in turns) / len(turns)
                maj = "–"
                if len(records[0].agents) > 1:
                    each = [sum(r.rounds[k].turns[i].correct for r in records)
                            for i in range(len(records[0].agents))]
                    maj_each = ", ".join(f"{a} {c}" for a, c in zip(records[0].agents, each,
                                                                       strict=True))
                    right = 0
                    for r in records:
                        answers = [t.answer for t in r.rounds[k].turns if t.answer is not None]
                        top = max(set(answers), key=answers.count) if answers else None
                        count = answers.count(top) if top else 0
                        tied = sum(answers.count(a) == count for a in set(answers)) > 1
                        right += bool(top and count >= 2 and not tied and top == r.gold)
                    maj = f"{right}/{len(records)} ({maj_each})"
                unread = sum(t.answer is None for t in turns)
                ptok = sum(t.prompt_tokens for t in turns)
                ctok = sum(t.completion_tokens for t in turns)
                secs = sum(t.latency_s for t in turns)
                print(f"| {society} | {k} | {acc:.1%} ({sum(t.correct for t in turns)}/"
                      f"{len(turns)}) | {maj} | {unread} | {ptok} | {ctok} | {secs:.0f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
