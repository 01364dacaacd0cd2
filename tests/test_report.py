"""The plain-text report of a small hand-built summary."""

from __future__ import annotations

from societies.audit import format_audit
from societies.metrics import Summary, summarize
from societies.records import Round, Turn, UnitRecord
from societies.report import format_table


def unit(rounds: list[list[str | None]], qid: str, *, status: str = "ok",
         society: str = "S2", strategy: str = "0") -> UnitRecord:
    agents = ["a0", "a1", "a2"]
    return UnitRecord(
        unit_id=f"{society}/{strategy}/0/{qid}", task="test", question_id=qid,
        society=society, strategy=strategy, repeat=0, gold="A", agents=agents,
        rounds=[
            Round(index=k, turns=[
                Turn(agent=a, pattern="answer", reply="", answer=x, correct=x == "A",
                     prompt_tokens=10, completion_tokens=5)
                for a, x in zip(agents, answers, strict=True)
            ])
            for k, answers in enumerate(rounds)
        ],
        status="failed" if status == "failed" else "ok",
    )


def small_summary() -> Summary:
    # S2/0, two scored units and one failed:
    #   q0: r0 [A, A, B]  maj A correct   r1 [A, A, A]  maj A correct   -> stable correct
    #   q1: r0 [B, B, None] maj B wrong   r1 [B, B, A]  maj B wrong     -> stable wrong
    # round 0: acc 2/6 = 33.3%, maj 1/2 = 50.0%, clusters (2+2)/2 = 2.00,
    #          plurality (2/3+2/3)/2 = 66.7%, parse fail 1/6 = 16.7%, tokens 6*15 = 90
    # round 1: acc 4/6 = 66.7%, maj 50.0%, clusters (1+2)/2 = 1.50, plurality (1+2/3)/2 = 83.3%,
    #          conformity 5/6 = 83.3% (q1 a2 None->A does not follow B),
    #          strict conf. 1/2 = 50.0% (q0 a2 follows, q1 a2 does not),
    #          changes 2/6 = 33.3%, parse fail 0.0%, tokens 90
    return summarize([
        unit([["A", "A", "B"], ["A", "A", "A"]], "q0"),
        unit([["B", "B", None], ["B", "B", "A"]], "q1"),
        unit([["A", "A", "A"]], "q2", status="failed"),
        unit([["A", "A", "A"]], "q0", society="S1"),
    ])


def test_format_table_numbers() -> None:
    text = format_table(small_summary())
    blocks = text.rstrip("\n").split("\n\n")
    assert len(blocks) == 2  # S1 sorts before S2
    assert blocks[0].startswith("society S1 · strategy 0 · 1 unit (0 failed)\n")

    lines = blocks[1].splitlines()
    assert lines[0] == "society S2 · strategy 0 · 3 units (1 failed)"
    assert lines[1] == ("behaviours: stable correct 50.0% · stable wrong 50.0% · "
                        "correcting 0.0% · degrading 0.0% · wavering 0.0%")
    header, r0, r1 = (line.split() for line in lines[2:5])
    assert header == ["round", "acc", "maj", "clust", "plur", "ans", "clust|ans", "plur|ans",
                      "conform", "strict", "changes", "parse", "trunc", "tokens"]
    # ans: 5/6 and 6/6; clust|ans (2+1)/2 and (1+2)/2; plur|ans (2/3+1)/2 and (1+2/3)/2
    assert r0 == ["0", "33.3%", "50.0%", "2.00", "66.7%", "83.3%", "1.50", "83.3%", "–", "–",
                  "–", "16.7%", "0.0%", "90"]
    assert r1 == ["1", "66.7%", "50.0%", "1.50", "83.3%", "100.0%", "1.50", "83.3%", "83.3%",
                  "50.0%", "33.3%", "0.0%", "0.0%", "90"]


def test_columns_are_aligned() -> None:
    lines = format_table(small_summary()).split("\n\n")[1].splitlines()[2:5]
    assert len({len(line) for line in lines}) == 1


def test_empty_summary_gives_empty_text() -> None:
    assert format_table(Summary(groups=[])) == ""


def test_all_failed_group() -> None:
    text = format_table(summarize([unit([["A", "A", "A"]], "q0", status="failed")]))
    assert text == "society S2 · strategy 0 · 1 unit (1 failed)\nbehaviours: –\n(no scored units)\n"


# --- answered-only consensus and truncation in the table -----------------------------------


def reply(agent: str, answer: str | None, *, finish: str = "stop", text: str = "",
          raw: str | None = None, gold: str = "A", model: str = "m") -> Turn:
    return Turn.model_validate({
        "agent": agent, "pattern": "answer", "reply": text or f"The answer is {answer}.",
        "answer": answer, "raw_answer": raw if raw is not None else answer,
        "correct": answer == gold, "finish_reason": finish, "model": model})


def record(qid: str, rounds: list[list[Turn]], *, strategy: str = "0", gold: str = "A",
           schema: int = 2, society: str = "S2") -> UnitRecord:
    return UnitRecord(
        schema_version=schema, unit_id=f"{society}/{strategy}/0/{qid}", task="test",
        question_id=qid, society=society, strategy=strategy, repeat=0, gold=gold,
        agents=["a0", "a1", "a2"], rounds=[Round(index=k, turns=t) for k, t in enumerate(rounds)])


def table_rows(text: str) -> list[dict[str, str]]:
    lines = [line for line in text.splitlines() if line.split()[:1] in (["round"], ["0"])]
    header = lines[0].split()
    return [dict(zip(header, line.split(), strict=True)) for line in lines[1:]]


def test_unanswered_round_does_not_read_as_consensus() -> None:
    text = format_table(summarize([unit([[None, None, None]], "q0")]))
    (row,) = table_rows(text)
    assert (row["clust"], row["plur"]) == ("1.00", "100.0%")  # MachineSoM's measures
    assert (row["ans"], row["clust|ans"], row["plur|ans"]) == ("0.0%", "–", "–")
    assert max(len(line) for line in text.splitlines()) <= 120


def test_truncation_warning_and_column() -> None:
    units = [record("q0", [[reply("a0", "7", finish="length"), reply("a1", None, finish="length"),
                            reply("a2", "A")]]),
             record("q1", [[reply("a0", "A"), reply("a1", "A"), reply("a2", "A")]])]
    text = format_table(summarize(units))
    assert ("truncated: 2 of 6 replies cut at max_tokens, 1 of them still read as an answer "
            "(suspect)") in text.splitlines()
    assert table_rows(text)[0]["trunc"] == "33.3%"


def test_no_warning_without_truncation_and_dash_for_schema_1() -> None:
    new = record("q0", [[reply("a0", "A"), reply("a1", None), reply("a2", "A")]])
    assert "truncated" not in format_table(summarize([new]))
    old = new.model_copy(update={"schema_version": 1})
    text = format_table(summarize([old]))
    assert "truncated" not in text and table_rows(text)[0]["trunc"] == "–"


# --- the parse audit --------------------------------------------------------------------------


def audit_records() -> list[UnitRecord]:
    # Strategies 0 and 1 share round 0 (its turns appear in both records, one reply each).
    r0 = [reply("a0", "A"), reply("a1", "7", finish="length", text="3*4 = 12,\nso 7"),
          reply("a2", None, text="I cannot tell.")]
    return [
        record("q0", [r0, [reply("a0", "A"), reply("a1", "A"), reply("a2", "A")]],
               strategy="0"),
        record("q0", [r0, [reply("a0", "A"), reply("a1", None, finish="length"),
                           reply("a2", "B")]], strategy="1"),
    ]


def test_audit_counts_each_shared_reply_once_per_agent() -> None:
    text = format_audit(audit_records(), sample=0)
    lines = text.splitlines()
    # 3 round-0 replies + 3 per strategy in round 1
    assert lines[0] == ("parse audit: 9 replies: 6 answered, 1 no answer, 2 truncated "
                        "(1 still read as an answer: suspect), 0 with an error")
    rows = {line.split()[0]: line.split() for line in lines if line.startswith("  a")}
    # agent model replies errors trunc trunc+ans "no answer" "parse fail"
    assert rows["a0"][1:] == ["m", "3", "0", "0", "0", "0", "0.0%"]
    assert rows["a1"][1:] == ["m", "3", "0", "2", "1", "0", "0.0%"]  # 1 complete reply, read
    assert rows["a2"][1:] == ["m", "3", "0", "0", "0", "1", "33.3%"]
    assert "sample" not in text


def sample_lines(text: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("sample of"))
    return lines[start + 2:]


def test_audit_sample_mixes_kinds_and_shows_tail_raw_and_answer() -> None:
    # Kinds are drawn in turn: no answer (the only one), truncated, answered, truncated again.
    text = format_audit(audit_records(), sample=4, seed=0)
    assert "sample of 4 replies (seed 0): 1 no answer, 2 truncated, 1 answered" in text
    kinds = [line.split()[0] for line in sample_lines(text)]
    assert kinds == ["no", "truncated", "truncated", "answered"]
    # kind, unit, round, agent, gold, raw, answer, correct, reply tail
    no_answer, truncated, cut_short, _ = (line.split() for line in sample_lines(text))
    assert no_answer == ["no", "answer", "S2/0/0/q0", "0", "a2", "A", "–", "–", "no", "I",
                         "cannot", "tell."]
    assert truncated[:8] == ["truncated", "S2/0/0/q0", "0", "a1", "A", "7", "7", "no"]
    assert " ".join(truncated[8:]) == "3*4 = 12,\\nso 7"
    assert cut_short[:8] == ["truncated", "S2/1/0/q0", "1", "a1", "A", "–", "–", "no"]
    # the same seed gives the same sample
    assert format_audit(audit_records(), sample=4, seed=0) == text


def test_audit_sample_is_seeded() -> None:
    units = [record(f"q{i}", [[reply("a0", "A"), reply("a1", "B"), reply("a2", "A")]])
             for i in range(10)]
    samples = {tuple(sample_lines(format_audit(units, sample=2, seed=s))) for s in range(4)}
    assert len(samples) > 1
    assert samples == {tuple(sample_lines(format_audit(units, sample=2, seed=s)))
                       for s in range(4)}


def test_audit_tail_is_one_visible_line() -> None:
    long = "x" * 150 + "\nanswer:\t7\x1b[2J\u202e"
    units = [record("q0", [[reply("a0", None, text=long), reply("a1", "A"),
                            reply("a2", "A")]])]
    text = format_audit(units, sample=1)
    (line,) = sample_lines(text)
    tail = line[line.index("…"):]
    assert tail.endswith("x\\nanswer:\\t7\\x1b[2J\\u202e")
    assert tail.startswith("…xxx") and line.split()[-2] == "no"  # correct: no
    assert "\x1b" not in text and "\u202e" not in text and "\t" not in text
    # "…" and the last 100 characters, escapes lengthening them by 1 + 1 + 3 + 5
    assert len(tail) == 1 + 100 + 10


def test_audit_of_schema_1_records() -> None:
    # Schema 1 had no raw_answer and no finish_reason (read as the default "stop").
    first = Turn(agent="a0", pattern="answer", reply="so A", answer="A", correct=True)
    units = [record("q0", [[first, reply("a1", None, finish="length"), reply("a2", "B")]],
                    schema=1)]
    text = format_audit(units, sample=8)
    assert "schema-1 records: raw answers and truncation were not recorded" in text
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.startswith("  a")}
    assert rows["a1"][4:6] == ["–", "–"]  # truncation unknown
    assert rows["a1"][6:] == ["1", "100.0%"]  # so the cut reply counts as no answer
    answered = [line for line in sample_lines(text) if line.startswith("  answered")]
    assert any(line.split()[4:7] == ["A", "–", "A"] for line in answered)


# --- the social block -----------------------------------------------------------------------


def test_social_block_under_the_table() -> None:
    from tests.analysis.test_social import UNITS  # the hand-worked social example

    block = format_table(summarize(UNITS)).rstrip("\n").splitlines()
    assert block[-5:] == [
        "social: exposed conformity 50.0% of 4 (strict 50.0% of 2) · 7 of 11 exposed turns saw "
        "no majority ·",
        "  reflection control 50.0% of 2 (strict 50.0% of 2)",
        "stubbornness (kept its answer against the seen majority): easy 0.0% of 1 · "
        "over 100.0% of 1",
        "consensus: unanimous 2/3 units (mean first round 1.50) · ≥2/3 agree 3/3 "
        "(mean first round 0.00) ·",
        "  flips debate 36.4%, reflection 16.7%"]


def test_social_block_without_later_rounds_is_one_line() -> None:
    block = format_table(small_summary()).split("\n\n")[0].splitlines()
    assert block[-1] == ("consensus: unanimous 1/1 units (mean first round 0.00) · ≥2/3 agree 1/1 "
                         "(mean first round 0.00)")
    assert not any(line.startswith(("social:", "stubbornness")) for line in block)


def test_social_block_wraps_many_traits() -> None:
    from tests.analysis.test_social import UNITS

    traits = [f"trait-with-a-long-name-{i}" for i in range(3)]
    units = [u.model_copy(update={"traits": traits}) for u in UNITS]
    text = format_table(summarize(units))
    social = text.splitlines()[6:]  # header, behaviours, the 4-line table, then the block
    assert social[0].startswith("social:") and max(len(line) for line in social) <= 110
    stubborn = [line for line in text.splitlines() if "trait-with" in line]
    assert len(stubborn) == 2 and stubborn[1].startswith("  ")


def with_final(rec: UnitRecord, answer: str | None, correct: bool, method: str = "majority",
               stopped_after: int | None = None) -> UnitRecord:
    from societies.records import Final

    return rec.model_copy(update={"final": Final(method=method, answer=answer, correct=correct),
                                  "stopped_after": stopped_after})


def test_final_answers_and_rounds_used_beside_the_majority() -> None:
    units = [with_final(unit([["A", "A", "B"], ["A", "A", "A"]], "q0"), "A", True),
             with_final(unit([["B", "B", None], ["B", "B", "B"]], "q1"), "A", True,
                        method="judge", stopped_after=0)]
    text = format_table(summarize(units))
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("final answer"))
    final = " ".join(line.strip() for line in lines[at:at + 2])  # wrapped at 110 characters
    assert final == ("final answer (judge 1, majority 1) 100.0% correct, last-round majority "
                     "50.0% · rounds used 0.50 of 1 (1 of 2 units stopped early) · "
                     "90 tokens per unit")
    # Older records without a final answer: no such line.
    assert "final answer" not in format_table(small_summary())


def test_baselines_are_listed_beside_the_societies_with_their_token_ratio() -> None:
    def one(society: str, rounds: list[list[str | None]], qid: str) -> UnitRecord:
        rec = unit(rounds, qid, society=society, strategy="0" if len(rounds) > 1 else "-")
        return with_final(rec, "A", True)

    units = [one("S2", [["A", "A", "B"], ["A", "A", "A"]], "q0"),   # 6 turns x 15 = 90 tokens
             one("S2", [["A", "A", "B"], ["A", "A", "A"]], "q1"),
             one("baseline-sc@2", [["A", "A", "B"]], "q0"),           # 45 tokens
             one("baseline-sc@2", [["A", "B", "B"]], "q1")]
    text = format_table(summarize(units))
    block = text.split("\n\n")[-1].splitlines()
    assert block[0].startswith("societies and baselines: ")
    assert "(90 tokens)" in block[1]
    rows = [line.split() for line in block[2:]]
    assert rows[0] == ["society", "strategy", "units", "final", "maj", "(last)", "rounds",
                       "tokens/unit", "×", "societies"]
    assert rows[1] == ["S2", "0", "2", "100.0%", "100.0%", "1", "90", "1.00"]
    assert rows[2] == ["baseline-sc@2", "-", "2", "100.0%", "50.0%", "0", "45", "0.50"]
    # Without baselines, no such block.
    assert "societies and baselines" not in format_table(summarize(units[:2]))


def test_role_tokens_get_their_own_column_and_ledger_note() -> None:
    from societies.ledger import build_ledger

    rec = unit([["A", "A", "B"], ["A", "A", "A"]], "q0")
    note = Turn(agent="summ", pattern="aside", reply="s", answer=None, correct=False,
                prompt_tokens=30, completion_tokens=3)
    rec = rec.model_copy(update={"rounds": [rec.rounds[0], rec.rounds[1].model_copy(
        update={"asides": [note]})]})
    summary = summarize([rec])
    summary.ledger = build_ledger([rec])
    text = format_table(summary)
    header, r0, r1 = (line.split() for line in text.splitlines()[2:5])
    assert header[-3:] == ["tokens", "role", "tokens"]
    assert (r0[-2:], r1[-2:]) == (["45", "0"], ["45", "33"])
    assert text.rstrip().endswith("· of which role calls: 1 (0 from cache), 33 tokens")
    # The parse audit reads member replies only; a carried (stopped) turn is not a reply.
    stopped = rec.model_copy(update={"rounds": [*rec.rounds, Round(index=2, turns=[
        t.model_copy(update={"pattern": "stopped", "reply": ""}) for t in rec.rounds[1].turns])]})
    assert format_audit([stopped], sample=0).startswith("parse audit: 6 replies")
