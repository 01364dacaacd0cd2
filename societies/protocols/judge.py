"""A judge agent that reads every agent's last reply and decides the unit's answer itself.

Used by ``aggregate: {method: judge, judge: {...}}`` for any protocol, and by MAD after its last
round. The judge is one role call (recorded in ``UnitRecord.final.turn``); its reply is read with
the task's own extraction, so the judge is scored like any agent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from societies.backends.base import Message
from societies.cards import render
from societies.plan import AgentPlan
from societies.protocols.base import Ask, View
from societies.records import Final, Turn


def last_reply(turns: Sequence[Turn]) -> str:
    """The agent's most recent non-empty reply ("" if none).

    Carried turns (idle, stopped) have empty replies; the judge should read what the agent
    last actually said, not the carry.

    >>> t = lambda reply: Turn(agent="a", pattern="answer", reply=reply, answer=None,
    ...                        correct=False)
    >>> last_reply([t("It is 4."), t("")])
    'It is 4.'
    """
    for turn in reversed(turns):
        if turn.reply and not turn.error:
            return turn.reply
    return ""


def judged_replies(view: View, labels: Mapping[str, str] | None = None
                   ) -> list[dict[str, str]]:
    """Each society agent's last reply, labelled (its name unless ``labels`` says otherwise),
    in society order; agents with nothing to show are left out."""
    shown = []
    for agent in view.society.agents:
        reply = last_reply(view.history.get(agent.name, ()))
        if reply:
            label = (labels or {}).get(agent.name, agent.name)
            shown.append({"label": label, "reply": reply, "agent": agent.name})
    return shown


async def judge_final(judge: AgentPlan, view: View, ask: Ask,
                      labels: Mapping[str, str] | None = None) -> Final:
    """Ask ``judge`` for the final answer after reading every agent's last reply.

    Args:
        judge: the judge role agent (its card is its system message).
        view: the unit's state after its last round.
        ask: the engine's role-call function.
        labels: how each agent is named to the judge (default: the agent's name; MAD passes
            the sides).

    Returns:
        Final(method="judge") with the judge's extracted answer, its score and the judge's turn.
    """
    replies = judged_replies(view, labels)
    text = render("judge", question=view.question.text,
                  replies=[{"label": r["label"], "reply": r["reply"]} for r in replies],
                  answer_form=view.task.answer_form)
    messages = [Message("system", judge.card.system_prompt(judge.name)), Message("user", text)]
    turn = await ask(judge, messages, [r["agent"] for r in replies])
    return Final(method="judge", answer=turn.answer, correct=turn.correct, turn=turn)
