"""Behaviour of the chess move-validity task: positions, gold squares, parsing."""

from __future__ import annotations

import chess
import pytest
from hypothesis import given
from hypothesis import strategies as st

from societies.tasks import load_task, validate_task
from societies.tasks.chess_moves import ChessMovesTask, Options, destinations, make_question


def make(n: int = 10, seed: int = 0) -> ChessMovesTask:
    task = load_task(validate_task({"name": "chess", "n": n, "seed": seed}))
    assert isinstance(task, ChessMovesTask)
    return task


PARSER = ChessMovesTask(Options(name="chess", n=1))


def test_gold_is_every_legal_destination_of_a_piece_of_the_side_to_move() -> None:
    for question in make(30).questions():
        board = chess.Board(question.meta["fen"])
        assert not board.is_game_over()
        square = chess.parse_square(question.meta["from_square"])
        piece = board.piece_at(square)
        assert piece is not None and piece.color == board.turn
        expected = sorted(
            {chess.square_name(m.to_square) for m in board.legal_moves if m.from_square == square}
        )
        assert expected and question.gold == expected
        assert question.meta["fen"] in question.text
        assert question.meta["from_square"] in question.text


def test_moves_replay_to_the_position() -> None:
    for question in make(5, seed=11).questions():
        board = chess.Board()
        for uci in question.meta["moves"]:
            move = chess.Move.from_uci(uci)
            assert move in board.legal_moves
            board.push(move)
        assert board.fen() == question.meta["fen"]
        assert len(question.meta["moves"]) <= 40


def test_seeded_and_prefix_stable() -> None:
    first = make(6, seed=5).questions()
    assert first == make(6, seed=5).questions()
    assert make(3, seed=5).questions() == first[:3]
    assert [q.meta["fen"] for q in make(6, seed=6).questions()] != [q.meta["fen"] for q in first]
    assert len({q.id for q in first}) == 6


def test_promotion_counts_once() -> None:
    board = chess.Board("8/4P3/8/8/8/8/k7/4K3 w - - 0 1")
    assert destinations(board, chess.E7) == ["e8"]
    question = make_question(board, [], chess.E7, "p")
    assert question.gold == ["e8"]
    assert "pawn on e7" in question.text


def test_castling_is_the_kings_destination() -> None:
    board = chess.Board("r3k2r/8/8/8/8/8/8/R3K2R w KQkq - 0 1")
    assert {"g1", "c1"} <= set(destinations(board, chess.E1))


def test_question_rejects_a_square_of_the_wrong_side() -> None:
    with pytest.raises(ValueError, match="e7"):
        make_question(chess.Board(), [], chess.E7, "x")


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("The knight can go to f3.", "f3"),
        ("Nf3", "f3"),
        ("e2e4", "e4"),
        ("Options: c3 or a3. I pick **A3**", "a3"),
        ("no squares here", None),
        ("i9 z1", None),
        ("", None),
    ],
)
def test_parse(reply: str, expected: str | None) -> None:
    assert PARSER.parse(reply) == expected


@given(st.text())
def test_parse_never_crashes(reply: str) -> None:
    answer = PARSER.parse(reply)
    assert answer is None or len(answer) == 2


def test_score_against_the_list() -> None:
    task = make(1)
    question = task.questions()[0]
    assert isinstance(question.gold, list)
    assert task.score(task.parse(f"I move it to {question.gold[-1]}"), question.gold)
    assert not task.score(None, question.gold)
    assert not task.score("z9", question.gold)
