"""The parse audit of a run's records: per agent, how replies ended and whether an answer was
read, with a seeded sample of replies to look at (``societies report`` prints it after the
per-round tables)."""

from __future__ import annotations

import random
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from societies.compact import CARRIED
from societies.records import Turn, UnitRecord
from societies.report import DASH, aligned, pct
from societies.strategies import split_label

_TAIL = 100  # characters of a reply's end shown in the audit sample
_SAMPLED = ("no answer", "truncated", "answered")  # kinds drawn in turn, so the sample mixes


@dataclass(frozen=True)
class _Reply:
    """One recorded turn, with where it sits and what became of it."""

    order: int  # position in the deterministic reading order of the records
    unit: UnitRecord
    round: int
    position: int
    turn: Turn

    @property
    def known(self) -> bool:
        """Whether the record says why the reply ended (schema 1 did not)."""
        return self.unit.schema_version >= 2

    @property
    def kind(self) -> str:
        """error, truncated (cut at max_tokens), answered, or no answer (a complete reply)."""
        if self.turn.error is not None:
            return "error"
        if self.known and self.turn.finish_reason == "length":
            return "truncated"
        return "no answer" if self.turn.answer is None else "answered"


def visible(text: str) -> str:
    """``text`` on one line with control and format characters escaped (``\\n``, ``\\x1b``).

    Replies are untrusted model output: a raw escape sequence or a bidirectional override
    could rewrite what the terminal shows.

    Examples:
        >>> visible("42\\n\\x1b[2J\\u202e")
        '42\\\\n\\\\x1b[2J\\\\u202e'
    """
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
    out = []
    for ch in text:
        if ch in named:
            out.append(named[ch])
        elif unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else
                       f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)


def _clip(text: str | None, width: int) -> str:
    if text is None:
        return DASH
    shown = visible(text)
    return shown if len(shown) <= width else shown[: width - 1] + "…"


def _tail(reply: str) -> str:
    return ("…" if len(reply) > _TAIL else "") + visible(reply[-_TAIL:])


def _replies(records: Iterable[UnitRecord]) -> list[_Reply]:
    """Every distinct turn: strategies sharing a prefix repeat its turns in each record."""
    order = sorted(records, key=lambda u: (u.society, u.repeat, u.question_id, u.strategy))
    seen: dict[tuple[str, int, str, int, int, str], _Reply] = {}
    for unit in order:
        symbols = split_label(unit.strategy)
        for rnd in unit.rounds:
            for i, turn in enumerate(rnd.turns):
                if turn.pattern in CARRIED:  # no call was made: nothing was read
                    continue
                key = (unit.society, unit.repeat, unit.question_id, rnd.index, i,
                       "".join(symbols[: rnd.index]))
                if key not in seen:
                    seen[key] = _Reply(len(seen), unit, rnd.index, i, turn)
    return list(seen.values())


def _agent_key(unit: UnitRecord, position: int) -> str:
    # Two agents may share a trait name; positions then keep them apart (the metrics' keys).
    name = unit.agents[position] if position < len(unit.agents) else f"agent{position}"
    return name if len(set(unit.agents)) == len(unit.agents) else f"{name}#{position}"


def _agent_rows(replies: Sequence[_Reply]) -> list[list[str]]:
    rows = [["agent", "model", "replies", "errors", "trunc", "trunc+ans", "no answer",
             "parse fail"]]
    by_agent: defaultdict[tuple[int, str], list[_Reply]] = defaultdict(list)
    for r in replies:
        by_agent[(r.position, _agent_key(r.unit, r.position))].append(r)
    for (_, key), mine in sorted(by_agent.items()):
        kinds = Counter(r.kind for r in mine)
        known = all(r.known for r in mine)
        trunc = [r for r in mine if r.kind == "truncated"]
        complete = kinds["answered"] + kinds["no answer"]
        models = sorted({r.turn.model for r in mine if r.turn.model})
        rows.append([
            key, ",".join(models) or DASH, str(len(mine)), str(kinds["error"]),
            str(len(trunc)) if known else DASH,
            str(sum(r.turn.answer is not None for r in trunc)) if known else DASH,
            str(kinds["no answer"]), pct(kinds["no answer"] / complete if complete else None)])
    return rows


def _sample(replies: Sequence[_Reply], n: int, seed: int) -> list[_Reply]:
    """Up to ``n`` replies drawn at random, taking each kind of ``_SAMPLED`` in turn."""
    rng = random.Random(seed)
    pools = {k: [r for r in replies if r.kind == k] for k in _SAMPLED}
    for pool in pools.values():
        rng.shuffle(pool)
    picked: list[_Reply] = []
    while len(picked) < n and any(pools.values()):
        for kind in _SAMPLED:
            if pools[kind] and len(picked) < n:
                picked.append(pools[kind].pop())
    return sorted(picked, key=lambda r: (_SAMPLED.index(r.kind), r.order))


def format_audit(records: Iterable[UnitRecord], sample: int = 8, seed: int = 0) -> str:
    """The parse audit of a run: is each reply's answer read soundly?

    Every distinct turn of the records (failed units included; a turn shared by strategies with
    a common prefix counted once) is one of: error, truncated (cut at max_tokens; whether an
    answer was still read is shown apart, as such answers are suspect), no answer (a complete
    reply the task could not read) or answered. Per society, one line per agent counts them;
    "parse fail" is no answer / complete replies. Then a seeded sample of replies, mixing the
    kinds when there are several, shows each reply's last 100 characters beside the span the
    answer was read from (raw), the canonical answer, the gold answer and whether it was scored
    correct. Schema-1 records did not record raw answers or why a reply ended: "–" there, and
    their truncated replies count as answered or no answer.

    Args:
        records: the run's unit records.
        sample: how many replies to show (0 for none).
        seed: the sample's random seed.

    Returns:
        The audit text, ending with a newline.
    """
    replies = _replies(records)
    kinds = Counter(r.kind for r in replies)
    trunc = [r for r in replies if r.kind == "truncated"]
    lines = [f"parse audit: {len(replies)} replies: {kinds['answered']} answered, "
             f"{kinds['no answer']} no answer, {len(trunc)} truncated "
             f"({sum(r.turn.answer is not None for r in trunc)} still read as an answer: "
             f"suspect), {kinds['error']} with an error"]
    if not all(r.known for r in replies):
        lines.append("schema-1 records: raw answers and truncation were not recorded")
    for society in sorted({r.unit.society for r in replies}):
        lines += ["", f"society {society}"]
        lines += ["  " + row for row in aligned(
            _agent_rows([r for r in replies if r.unit.society == society]), left=2)]
    picked = _sample(replies, sample, seed)
    if picked:
        shown = Counter(r.kind for r in picked)
        lines += ["", f"sample of {len(picked)} replies (seed {seed}): "
                  + ", ".join(f"{shown[k]} {k}" for k in _SAMPLED if shown[k])]
        rows = [["kind", "unit", "round", "agent", "gold", "raw", "answer", "correct",
                 "reply tail"]]
        for r in picked:
            gold = r.unit.gold if isinstance(r.unit.gold, str) else ",".join(r.unit.gold)
            rows.append([r.kind, r.unit.unit_id, str(r.round), _agent_key(r.unit, r.position),
                         _clip(gold, 16), _clip(r.turn.raw_answer, 24), _clip(r.turn.answer, 16),
                         "yes" if r.turn.correct else "no", _tail(r.turn.reply)])
        lines += ["  " + row for row in aligned(rows, left=9)]
    return "\n".join(lines) + "\n"
