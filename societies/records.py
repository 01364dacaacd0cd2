"""The record format: one JSON line per finished unit. Records are the single source of truth.

A *unit* is one question answered by one society under one strategy in one repeat. Every number
in a summary, report or plot is computed from these records. ``societies schema`` prints the JSON
Schema generated from these models.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 3  # 2: raw_answer, finish_reason, seed, model, latency_s; 3: asides, final

Pattern = Literal["answer", "debate", "reflection", "alone", "aside", "stopped", "idle"]
FinishReason = Literal["stop", "length", "error"]
Gold = str | list[str]


class Turn(BaseModel):
    """One agent's reply in one round."""

    model_config = ConfigDict(extra="forbid")
    agent: str
    pattern: Pattern = Field(description=(
        "answer (round 0), debate, reflection; alone: due to debate but shown nobody; aside: a "
        "role's call (summary, verdict, judge); stopped: no call, the unit stopped early and the "
        "agent's last answer is carried; idle: no call, the protocol did not schedule the agent "
        "this round (e.g. a Mixture-of-Agents layer), its last answer carried"))
    reply: str = Field(description="the full reply text, untrusted model output")
    answer: str | None = Field(description=(
        "the canonical final answer (what majority, consensus and conformity compare); None if "
        "no answer could be extracted"))
    raw_answer: str | None = Field(None, description="the span the answer was read from")
    correct: bool
    finish_reason: FinishReason = Field("stop", description=(
        "stop (the model ended), length (cut at max_tokens) or error (the call failed)"))
    model: str = Field("", description="the model's name in the config")
    seed: int | None = Field(None, description="the sampling seed of this call")
    latency_s: float = Field(0.0, ge=0, description="seconds the call took (0 when cached)")
    answer_prob: float | None = Field(None, ge=0, le=1, description=(
        "the probability the model gave the extracted answer's tokens (sampling.logprobs on and "
        "a backend that returns log-probabilities); None otherwise"))
    saw: list[str] = Field([], description=(
        "the agents whose latest replies this turn's prompt showed (debate), in society order; "
        "empty for round 0 and reflection, or a debate turn shown nothing"))
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0
    cached: bool = False
    error: str | None = Field(None, description="set when the call failed and the branch ended")


class Round(BaseModel):
    """All agents' turns in one round, in society order."""

    model_config = ConfigDict(extra="forbid")
    index: int
    turns: list[Turn]
    asides: list[Turn] = Field([], description=(
        "calls by role agents in this round (summariser, moderator), not society answers"))


class Final(BaseModel):
    """A unit's final answer and who chose it."""

    model_config = ConfigDict(extra="forbid")
    method: str = Field(description=(
        "majority (MachineSoM's rule), confidence (confidence-weighted majority), judge, or a "
        "protocol's own decider (moderator, aggregator)"))
    answer: str | None
    correct: bool
    turn: Turn | None = Field(None, description="the deciding call, when a model decided")


class UnitRecord(BaseModel):
    """Everything about one finished unit."""

    model_config = ConfigDict(extra="forbid")
    schema_version: int = SCHEMA_VERSION
    unit_id: str = Field(description="society/strategy/repeat/question_id; unique in a run")
    task: str
    question_id: str
    society: str
    strategy: str = Field(description="one symbol per round after round 0; see README")
    repeat: int
    gold: Gold
    agents: list[str]
    traits: list[str] = Field([], description="each agent's trait card name, in society order")
    rounds: list[Round] = Field(description="round 0 (answer) then one per strategy symbol")
    final: Final | None = Field(None, description="the unit's final answer (None if failed)")
    stopped_after: int | None = Field(None, description=(
        "the round after which the unit stopped early (consensus or a moderator); later rounds "
        "carry the last answers without calls"))
    status: Literal["ok", "failed"] = "ok"
    error: str | None = None


def unit_id(society: str, strategy: str, repeat: int, question_id: str) -> str:
    """The key that identifies a unit within a run (and makes resume exact)."""
    return f"{society}/{strategy}/{repeat}/{question_id}"
