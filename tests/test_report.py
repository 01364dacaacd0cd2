"""The plain-text report of a small hand-built summary."""

from __future__ import annotations

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
    header, r0, r1 = (line.split() for line in lines[2:])
    assert header == ["round", "acc", "maj", "clusters", "plurality", "conformity", "strict",
                      "conf.", "changes", "parse", "fail", "tokens"]
    assert r0 == ["0", "33.3%", "50.0%", "2.00", "66.7%", "–", "–", "–", "16.7%", "90"]
    assert r1 == ["1", "66.7%", "50.0%", "1.50", "83.3%", "83.3%", "50.0%", "33.3%", "0.0%",
                  "90"]


def test_columns_are_aligned() -> None:
    lines = format_table(small_summary()).split("\n\n")[1].splitlines()[2:]
    assert len({len(line) for line in lines}) == 1


def test_empty_summary_gives_empty_text() -> None:
    assert format_table(Summary(groups=[])) == ""


def test_all_failed_group() -> None:
    text = format_table(summarize([unit([["A", "A", "A"]], "q0", status="failed")]))
    assert text == "society S2 · strategy 0 · 1 unit (1 failed)\nbehaviours: –\n(no scored units)\n"
