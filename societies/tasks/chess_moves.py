"""The ``chess`` task: name a legal destination square for a given piece.

Positions come from seeded random games, so they are varied, often unusual, and cannot have been
memorised. Any legal destination is correct, so gold is the list of all of them. The module is
called ``chess_moves`` because a module named ``chess`` would shadow python-chess.
"""

from __future__ import annotations

import random
from typing import ClassVar

import chess

from societies.tasks.answers import configured, default_format
from societies.tasks.base import Question, Task, TaskOptions
from societies.tasks.extract import step

MIN_PLIES, MAX_PLIES = 10, 40

# Any legal destination is right, so gold is a set of squares. The reply's last square that is
# not where a piece stands ("the knight on g1") is its answer, "Nf3", "e2e4" and "to f3." alike.
FORMAT = default_format(
    "set",
    "End your reply with the destination square in algebraic notation, for example e4.",
    "{answer}",
    of="text",
    steps=(step("after_marker"), step("last_square")),
)


def destinations(board: chess.Board, square: chess.Square) -> list[str]:
    """Every square the piece on ``square`` can legally move to, sorted.

    A promotion counts once whatever the piece promoted to, and castling counts as the king's
    destination square (``g1``/``c1``), as a player would say it.
    """
    return sorted(
        {
            chess.square_name(move.to_square)
            for move in board.legal_moves
            if move.from_square == square
        }
    )


def random_position(rng: random.Random) -> tuple[chess.Board, list[chess.Move]]:
    """A position reached by random legal moves in which the game is not over.

    Moves are chosen from the legal moves sorted by UCI, so a seed gives the same game whatever
    order a python-chess version generates moves in.

    Returns:
        The board, and the moves that led to it from the starting position.
    """
    board = chess.Board()
    for _ in range(rng.randint(MIN_PLIES, MAX_PLIES)):
        if board.is_game_over():
            break
        moves = sorted(board.legal_moves, key=lambda move: move.uci())
        board.push(rng.choice(moves))
    if board.is_game_over():
        # The game was not over before the last move (or it would not have been played).
        board.pop()
    return board, list(board.move_stack)


def render_board(board: chess.Board) -> str:
    """The board as text: rank 8 at the top, files labelled, upper case for White."""
    rows = []
    for rank in range(7, -1, -1):
        cells = []
        for file in range(8):
            piece = board.piece_at(chess.square(file, rank))
            cells.append(piece.symbol() if piece else ".")
        rows.append(f"{rank + 1} " + " ".join(cells))
    rows.append("  a b c d e f g h")
    return "\n".join(rows)


def make_question(
    board: chess.Board, moves: list[chess.Move], square: chess.Square, question_id: str
) -> Question:
    """The question asking for a legal destination of the piece on ``square``."""
    piece = board.piece_at(square)
    if piece is None or piece.color != board.turn:
        raise ValueError(f"no piece of the side to move on {chess.square_name(square)}")
    side = "White" if board.turn == chess.WHITE else "Black"
    name = f"{side.lower()} {chess.piece_name(piece.piece_type)}"
    from_name = chess.square_name(square)
    history = chess.Board().variation_san(moves) if moves else "(none)"
    text = (
        f"Here is a chess position with {side} to move.\n\n"
        f"Moves played from the starting position: {history}\n"
        f"FEN: {board.fen()}\n\n"
        "Board (upper case is White, lower case is Black, '.' is an empty square):\n"
        f"{render_board(board)}\n\n"
        f"Give one square that the {name} on {from_name} can legally move to in this position."
    )
    return Question(
        id=question_id,
        text=text,
        gold=destinations(board, square),
        meta={
            "fen": board.fen(),
            "from_square": from_name,
            "piece": piece.symbol(),
            "moves": [move.uci() for move in moves],
        },
    )


class Options(TaskOptions):
    """Options of the ``chess`` task (the common ones; answers are a set of squares)."""

    answer_kinds: ClassVar[tuple[str, ...]] = ("set",)
    set_of: ClassVar[tuple[str, ...]] = ("text",)


class ChessMovesTask(Task):
    """Move-validity questions; question ``i`` comes from ``random.Random(seed + i)``."""

    name = "chess"

    def __init__(self, options: Options) -> None:
        """Keep the options; positions are generated on demand."""
        self.options = options
        self.answer = configured(FORMAT, options.answer)

    def questions(self) -> list[Question]:
        """``n`` questions, each from its own seeded random game.

        One generator per question keeps question ``i`` the same whatever ``n`` is. Ids carry
        the seed so that records from runs with different seeds never share a question id.
        """
        out: list[Question] = []
        for index in range(self.options.n):
            rng = random.Random(self.options.seed + index)
            board, moves = random_position(rng)
            movable = sorted({move.from_square for move in board.legal_moves})
            square = rng.choice(movable)
            out.append(make_question(board, moves, square, f"chess-{self.options.seed}-{index}"))
        return out


def create(options: TaskOptions) -> ChessMovesTask:
    """Build the ``chess`` task from validated options."""
    if not isinstance(options, Options):
        options = Options.model_validate(options.model_dump())
    return ChessMovesTask(options)
