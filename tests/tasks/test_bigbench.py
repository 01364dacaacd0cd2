"""The bigbench task: BIG-bench JSON files read into questions, answers read and scored.

Task files are written by the tests (free text, multiple choice, chess squares, bad formats);
the one ``real`` test reads MachineSoM's chess task from the data directory ``make data`` fills.
"""

from __future__ import annotations

import io
import json
import random
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from societies.cli import main
from societies.errors import ConfigError, UserError
from societies.tasks import bigbench_data, load_task, validate_task
from societies.tasks.bigbench import BigbenchTask
from societies.tasks.bigbench_data import PROGRAMMATIC, STAMP, data_dir
from tests.helpers import config

FREE = {
    "name": "capitals",
    "task_prefix": "Name the capital city.\n",
    "example_input_prefix": "\nCountry: ",
    "example_output_prefix": "\nCapital: ",
    "examples": [
        {"input": "France", "target": "Paris"},
        {"input": "Bolivia", "target": ["Sucre", "La Paz"]},
        {"input": "Nowhere", "target": ""},  # skipped: nothing to accept
        {"input": "Japan", "target": ["Tokyo"]},
    ],
}
CHOICE = {
    "name": "sky",
    "examples": [
        {"input": "Colour of the sky?", "target_scores": {"red": 0, "blue": 1, "green": 0}},
        {"input": "A warm colour?", "target_scores": {"red": 1, "orange": 1, "blue": 0}},
    ],
}
# Unfinished games in UCI; the targets are every legal square of the piece that moves next.
SQUARES = {
    "name": "moves",
    "task_prefix": "Complete the last move with its destination square:\n",
    "example_input_prefix": "\n",
    "output_regex": "[a-h][1-8]",
    "examples": [
        {"input": "e2e4 e7e5 g1", "target": ["e2", "f3", "h3"]},
        {"input": "d2d4 d7d5 c1", "target": ["d2", "e3", "f4", "g5", "h6"]},
    ],
}


def write(tmp_path: Path, data: Any, name: str = "t") -> Path:
    folder = tmp_path / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "task.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def task(source: Path | str, **options: Any) -> BigbenchTask:
    key = "path" if isinstance(source, Path) else "task"
    made = load_task(validate_task({"name": "bigbench", key: str(source), **options}))
    assert isinstance(made, BigbenchTask)
    return made


def test_free_text_file(tmp_path: Path) -> None:
    bb = task(write(tmp_path, FREE).parent)  # the directory stands for its task.json
    questions = bb.questions()
    assert [q.id for q in questions] == ["capitals-0", "capitals-1", "capitals-3"]
    assert bb.skipped == 1 and not bb.multiple_choice
    # task_prefix + example_input_prefix + input; the output prefix is not added.
    assert questions[0].text == "Name the capital city.\n\nCountry: France"
    assert [q.gold for q in questions] == [["Paris"], ["Sucre", "La Paz"], ["Tokyo"]]
    assert bb.answer.kind.name == "set" and "Answer:" in bb.answer_form
    bolivia = questions[1]
    for reply in ("I think it is Sucre.\nAnswer: Sucre", "Answer: **la paz**"):
        assert bb.score(bb.extract(reply, bolivia).answer, bolivia.gold)
    assert not bb.score(bb.extract("Answer: Santa Cruz", bolivia).answer, bolivia.gold)


def test_default_input_prefix_is_bigbench_q(tmp_path: Path) -> None:
    data = {"examples": [{"input": "2 + 2?", "target": "4"}]}
    bb = task(write(tmp_path, data, name="adding"))
    assert bb.questions()[0].text == "Q: 2 + 2?"
    assert bb.questions()[0].id == "adding-0"  # no "name" in the file: its directory's
    assert bb.answer.kind.name == "set" and bb.score(bb.parse("Answer: 4.0"), ["4"])


def test_multiple_choice_file(tmp_path: Path) -> None:
    bb = task(write(tmp_path, CHOICE))
    first, second = bb.questions()
    assert bb.multiple_choice and "(X)" in bb.answer_form
    assert first.text == "Q: Colour of the sky?\n\n(A) red\n(B) blue\n(C) green"
    assert first.choices == ("red", "blue", "green") and first.gold == "B"
    assert second.gold == ["A", "B"]  # a tie for the best score: both letters are right
    assert bb.score(bb.extract("Clearly (B).", first).answer, first.gold)
    assert bb.score(bb.extract("It is blue.", first).answer, first.gold)
    assert not bb.score(bb.extract("(A)", first).answer, first.gold)
    assert bb.score(bb.parse("(A)"), second.gold) and bb.score(bb.parse("(B)"), second.gold)
    assert not bb.score(bb.parse("(C)"), second.gold)


def test_both_fields_multiple_choice_unless_the_config_asks_for_targets(tmp_path: Path) -> None:
    data = {"examples": [{"input": "Sky?", "target": "blue",
                          "target_scores": {"red": 0, "blue": 1}}]}
    path = write(tmp_path, data)
    assert task(path).multiple_choice
    free = task(path, answer={"kind": "set"})
    assert not free.multiple_choice and free.questions()[0].gold == ["blue"]
    assert free.questions()[0].text == "Q: Sky?"


def test_chess_squares_every_target_accepted(tmp_path: Path) -> None:
    bb = task(write(tmp_path, SQUARES))
    q = bb.questions()[0]
    assert q.text == "Complete the last move with its destination square:\n\ne2e4 e7e5 g1"
    assert [s.name for s in bb.answer.steps] == ["after_marker", "square"]
    for target in q.gold:
        assert bb.score(bb.extract(f"The knight on g1 can go to {target}.\n{target}", q).answer,
                        q.gold)
        assert bb.score(bb.extract(f"g1{target}", q).answer, q.gold)  # the move in UCI
    assert bb.extract("The knight on g1 moves.", q).answer is None  # g1 is where it stands
    assert not bb.score(bb.extract("g1g3", q).answer, q.gold)


def test_output_regex_reads_the_answer(tmp_path: Path) -> None:
    numbers = {"output_regex": "[-+]?\\d+", "examples": [{"input": "6 * 7?", "target": "42"}]}
    bb = task(write(tmp_path, numbers, "n"))
    assert bb.answer.kind.name == "set" and [s.name for s in bb.answer.steps][-1] == "regex"
    assert bb.score(bb.parse("6 * 7 = 42, so\nAnswer: 42 apples"), ["42"])
    # A leading inline flag stays at the front of the wrapped pattern, where Python needs it.
    flagged = {"output_regex": "(?i)paris|rome", "examples": [{"input": "x", "target": "Rome"}]}
    bb = task(write(tmp_path, flagged, "f"))
    assert bb.score(bb.parse("Maybe Paris... no: ROME is it."), ["Rome"])


def test_numeric_targets_compare_by_value(tmp_path: Path) -> None:
    bb = task(write(tmp_path, {"examples": [{"input": "How many?", "target": ["1000"]}]}))
    assert bb.score(bb.parse("Answer: 1,000"), ["1000"])


def test_long_targets_are_not_taken_for_prose(tmp_path: Path) -> None:
    target = "the quick brown fox jumps over the lazy sleeping dog today"
    bb = task(write(tmp_path, {"examples": [{"input": "Say it.", "target": target}]}))
    assert bb.score(bb.parse(f"Answer: {target.capitalize()}."), [target])


def test_sample_is_seeded_and_in_file_order(tmp_path: Path) -> None:
    data = {"examples": [{"input": f"q{i}", "target": str(i)} for i in range(30)]}
    path = write(tmp_path, data)
    picked = [q.meta["index"] for q in task(path, n=5, seed=3).questions()]
    assert picked == sorted(random.Random(3).sample(range(30), 5))
    assert picked == [q.meta["index"] for q in task(path, n=5, seed=3).questions()]
    assert picked != [q.meta["index"] for q in task(path, n=5, seed=4).questions()]
    assert len(task(path, n=100).questions()) == 30


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{broken", r"task\.json: not valid JSON"),
        ([1, 2], r"task\.json: not a BIG-bench JSON task"),
        ({"name": "x", "description": "no examples"}, r"task\.json: no 'examples' \(not a"),
        ({"examples": []}, r"task\.json: 'examples' must be a non-empty list"),
        ({"examples": [{"target": "a"}]}, r"task\.json: examples\[0\] has no 'input'"),
        ({"examples": [{"input": "a", "target": "b"}, {"input": "c", "answer": "d"}]},
         r"task\.json: examples\[1\] has neither 'target' nor 'target_scores'"),
        ({"examples": [{"input": "a", "target": "b"}, {"input": "c", "target_scores": {"d": 1}}]},
         r"task\.json: examples\[1\] has no 'target' \(not every example"),
        ({"examples": [{"input": "a", "target": {"b": 1}}]},
         r"examples\[0\]\.target must be a string or a list"),
        ({"examples": [{"input": "a", "target_scores": {"b": "yes", "c": 0}}]},
         r"examples\[0\]\.target_scores must map each choice to a number"),
        ({"examples": [{"input": "a", "target_scores": {str(i): i for i in range(27)}}]},
         r"examples\[0\] has 27 choices; 2 to 26 can be lettered"),
        ({"examples": [{"input": "a", "target": ""}]}, r"no example has a non-empty target"),
        ({"output_regex": "(", "examples": [{"input": "a", "target": "b"}]},
         r"output_regex does not compile"),
    ],
)
def test_bad_files_are_one_line_naming_the_file(tmp_path: Path, content: Any,
                                                 message: str) -> None:
    path = write(tmp_path, content)
    with pytest.raises(ConfigError, match=message) as err:
        task(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_other_kinds_of_task_are_named(tmp_path: Path) -> None:
    programmatic = tmp_path / "prog"
    programmatic.mkdir()
    (programmatic / "task.py").write_text("# a programmatic task\n")
    with pytest.raises(ConfigError, match=r"prog: a programmatic BIG-bench task \(task\.py"):
        task(programmatic)
    group = write(tmp_path, {"name": "group", "description": "subtasks below"}, "group")
    write(tmp_path / "group", FREE, "easy")
    write(tmp_path / "group", FREE, "hard")
    with pytest.raises(ConfigError, match=r"no 'examples'; it groups subtasks \(easy, hard\)"):
        task(group)
    with pytest.raises(ConfigError, match=r"missing: no such BIG-bench task file"):
        task(tmp_path / "missing")
    with pytest.raises(ConfigError, match=r"task\.answer\.of: only a set"):
        validate_task({"name": "bigbench", "path": "x", "answer": {"of": "number"}})
    with pytest.raises(ConfigError, match=r"task\.answer\.kind: the bigbench task's answers"):
        validate_task({"name": "bigbench", "path": "x", "answer": {"kind": "number"}})
    with pytest.raises(ConfigError, match=r"examples\[0\]\.target\[0\] 'Paris' is not a number"):
        task(write(tmp_path, FREE), answer={"kind": "set", "of": "number"})


@pytest.mark.parametrize("source", [{}, {"path": "a", "task": "b"}])
def test_path_or_task_exactly_one(source: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"^task: give either path .* or task"):
        validate_task({"name": "bigbench", **source})


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small data directory as ``make data`` leaves it, named by SOCIETIES_DATA_DIR."""
    monkeypatch.setenv("SOCIETIES_DATA_DIR", str(tmp_path / "data"))
    root = data_dir()
    write(root / "games", SQUARES, "short_moves")
    write(root, CHOICE, "sky")
    (root / PROGRAMMATIC).write_text("simple_arithmetic\n")
    (root / STAMP).write_text("test\n")
    return root


def test_task_names_resolve_in_the_data_directory(data: Path, tmp_path: Path) -> None:
    assert data == tmp_path / "data" / "bigbench"  # $SOCIETIES_DATA_DIR/bigbench
    bb = task("games/short_moves", n=1)
    assert bb.path == data / "games" / "short_moves" / "task.json"
    assert bb.questions()[0].id == "moves-1"  # random.Random(0).sample(range(2), 1) == [1]
    with pytest.raises(ConfigError, match=r"task\.task: no BIG-bench task 'games/short_move' "
                                          r".*did you mean games/short_moves\?"):
        task("games/short_move")
    with pytest.raises(ConfigError, match=r"simple_arithmetic is a programmatic BIG-bench"):
        task("simple_arithmetic")
    with pytest.raises(ConfigError, match=r"no BIG-bench task '\.\./x'"):
        task("../x")


def test_missing_data_is_one_line_with_the_fix(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOCIETIES_DATA_DIR", str(tmp_path))
    with pytest.raises(UserError) as err:
        task("chess_state_tracking/synthetic_short")
    assert str(err.value) == (f"BIG-bench data not found at {tmp_path / 'bigbench'}; run "
                              "`make data` (downloads the bigbench sdist, ~360 MB)")


def test_run_end_to_end_and_bad_file_stops_before_the_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Engine logic only (scripted replies): records carry the list gold and the scoring."""
    good = write(tmp_path, SQUARES)
    exp = config(task={"name": "bigbench", "path": str(good)}, rounds=1, strategies=["0"],
                 models={"s": {"backend": "scripted", "replies": ["Knight to f3.\nf3"]}})
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp))
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert {r["question_id"] for r in records} == {"moves-0", "moves-1"}
    by_question = {r["question_id"]: r for r in records}
    turns = by_question["moves-0"]["rounds"][0]["turns"]
    assert by_question["moves-0"]["gold"] == ["e2", "f3", "h3"]
    assert all(t["answer"] == "f3" and t["correct"] for t in turns)
    assert not any(t["correct"] for t in by_question["moves-1"]["rounds"][0]["turns"])
    bad = write(tmp_path, {"examples": [{"input": "x"}]}, "bad")
    exp["task"] = {"name": "bigbench", "path": str(bad)}
    path.write_text(yaml.safe_dump(exp))
    capsys.readouterr()
    assert main(["run", str(path), "--out", str(tmp_path / "run2"), "--quiet"]) == 2
    assert "examples[0] has neither" in capsys.readouterr().err
    assert not (tmp_path / "run2").exists()


def sdist(tmp_path: Path) -> Path:
    """A small archive laid out as the bigbench sdist."""
    members = {
        "bigbench-1.0.0/setup.py": "# not kept",
        "bigbench-1.0.0/bigbench/api/task.py": "# not a task",
        "bigbench-1.0.0/bigbench/benchmark_tasks/moves/task.json": json.dumps(SQUARES),
        "bigbench-1.0.0/bigbench/benchmark_tasks/moves/README.md": "# not kept",
        "bigbench-1.0.0/bigbench/benchmark_tasks/group/task.json": json.dumps({"name": "g"}),
        "bigbench-1.0.0/bigbench/benchmark_tasks/group/sky/task.json": json.dumps(CHOICE),
        "bigbench-1.0.0/bigbench/benchmark_tasks/arith/task.py": "# programmatic",
        "bigbench-1.0.0/bigbench/benchmark_tasks/both/task.py": "# scores a JSON task",
        "bigbench-1.0.0/bigbench/benchmark_tasks/both/task.json": json.dumps(FREE),
    }
    path = tmp_path / "bigbench-1.0.0.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, text in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    return path


def test_make_data_extracts_only_json_tasks_once(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    archive = sdist(tmp_path)
    fetched: list[Path] = []

    def download(target: Path) -> Path:  # no network: the small archive stands in
        fetched.append(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(archive.read_bytes())
        return target

    monkeypatch.setattr(bigbench_data, "download", download)
    root = tmp_path / "data" / "bigbench"
    assert bigbench_data.main(["--dir", str(root)]) == 0
    kept = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert kept == [".complete", "both/task.json", "group/sky/task.json", "group/task.json",
                    "moves/task.json", "programmatic.txt"]
    assert (root / PROGRAMMATIC).read_text() == "arith\n"
    assert not fetched[0].exists()  # the archive is dropped once extracted
    assert bigbench_data.fetch(root) == f"BIG-bench data already at {root}"
    assert len(fetched) == 1  # done once: the stamp stops a second download
    monkeypatch.setenv("SOCIETIES_DATA_DIR", str(tmp_path / "data"))
    assert task("group/sky").multiple_choice
    with pytest.raises(ConfigError, match="arith is a programmatic"):
        task("arith")


def test_download_checks_the_pinned_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    archive = sdist(tmp_path)
    monkeypatch.setattr(bigbench_data, "pip_download",
                        lambda d: shutil.copy(archive, d / "bigbench-1.0.0.tar.gz"))
    target = tmp_path / "downloads" / "bigbench-1.0.0.tar.gz"
    target.parent.mkdir()
    with pytest.raises(UserError, match="does not match the pinned SHA-256"):
        bigbench_data.download(target)
    assert not target.exists() and not list(target.parent.iterdir())
    assert bigbench_data.main(["--dir", str(tmp_path / "d")]) == 2
    assert capsys.readouterr().err.startswith("error: bigbench-1.0.0.tar.gz: downloaded file")
    assert not (tmp_path / "d").exists()


FORMATS = {"choice": (CHOICE, st.sampled_from("ABC")),
           "squares": (SQUARES, st.sampled_from(["e2", "f3", "h3"])),
           "text": (FREE, st.sampled_from(["Paris", "Sucre", "La Paz", "Tokyo"]))}


@pytest.mark.parametrize("name", sorted(FORMATS))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_reply_in_the_asked_form_is_read_back(tmp_path_factory: pytest.TempPathFactory,
                                               name: str, data: st.DataObject) -> None:
    content, values = FORMATS[name]
    bb = task(write(tmp_path_factory.mktemp(name), content))
    template = bb.answer.template
    assert template is not None and bb.answer_form == bb.answer.instruction
    reasoning = data.draw(st.lists(st.sampled_from([
        "Let me think.", "The knight on g1 could reach h3 or e2.", "Option (A) is tempting.",
        "3 + 4 = 7.", "The capital of a country is often its largest city."]), max_size=4))
    value = data.draw(values)
    reply = "\n".join([*reasoning, template.format(answer=value)])
    expected = value if name == "choice" else value.lower()  # text answers are normalised
    for question in (bb.questions()[0], None):
        assert bb.extract(reply, question).answer == expected


def test_shipped_chess_experiment_plans() -> None:
    """experiments/chess_bigbench.yaml validates (its task file is read only when it runs)."""
    from societies.config import load_config
    from societies.plan import build_plan

    root = Path(__file__).resolve().parents[2]
    plan = build_plan(load_config(root / "experiments" / "chess_bigbench.yaml"))
    assert plan.task.model_dump(include={"name", "task", "n", "seed"}) == {
        "name": "bigbench", "task": "chess_state_tracking/synthetic_short", "n": 10, "seed": 0}


@pytest.mark.real
def test_real_chess_state_tracking_synthetic_short() -> None:
    """MachineSoM's chess task from the BIG-bench data (``make data``)."""
    if not (data_dir() / STAMP).is_file():
        pytest.skip(f"no BIG-bench data at {data_dir()}; run `make data`")
    bb = task("chess_state_tracking/synthetic_short", n=1000)
    questions = bb.questions()
    assert len(questions) == 1000 and bb.skipped == 0
    second = questions[1]
    assert second.id == "synthetic_short-1" and second.text.endswith("\n\ng2g3 f7f5 f1")
    assert second.text.startswith("For each of the following (in-progress) chess games")
    assert second.gold == ["h3", "g2"]
    for q in questions:
        for target in q.gold:
            reply = f"The piece that moves stands on {q.text.split()[-1]}.\nAnswer: {target}"
            assert bb.score(bb.extract(reply, q).answer, q.gold), (q.id, target)
    # n: 50, seed: 0 is Python's seeded sample of indices, returned in file order.
    drawn = task("chess_state_tracking/synthetic_short", n=50, seed=0).questions()
    assert [q.meta["index"] for q in drawn] == sorted(random.Random(0).sample(range(1000), 50))
