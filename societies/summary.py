"""The summary format: per-round and per-group metrics as saved in ``summary.json``.

The definitions live in the docstrings here; ``societies.metrics`` computes the values from the
records.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from societies.ledger import Ledger

SUMMARY_SCHEMA_VERSION = 3  # 2: answered-only consensus, truncation, reply counts; 3: social
# (the role tokens, no-call turns, final answers, rounds used and tokens per unit added since
# have defaults, so summaries written before them still load)
BEHAVIOURS = ("stable_correct", "stable_wrong", "correcting", "degrading", "wavering")
SPLIT_KEYS = ("tt", "tf", "ft", "ff")


class RoundMetrics(BaseModel):
    """Metrics of one round over the units of one group that have this round.

    Definitions (rates are fractions in [0, 1]; None where undefined):
        accuracy_per_agent: per agent, the mean of ``correct`` over units.
        mean_accuracy: the mean of ``correct`` over all agents' turns (= mean of the above).
        majority_accuracy: fraction of units whose majority answer (``majority_answer``) exists
            and is correct, i.e. some agent whose answer equals it has correct=True.
        n_clusters: mean number of distinct answers among agents (None is one cluster).
        plurality_share: mean of ``max count / n_agents`` (None counts as an answer here).
        answered_rate: fraction of turns with an answer (not None, no error); with
            parse_failure_rate and error_rate it sums to 1, less the turns that made no call
            and carry no answer. Turns that made no call (pattern stopped: the unit ended
            early; idle: the protocol did not schedule the agent) carry the agent's last
            answer: they count in the round's state (accuracy, majority, consensus) but are
            never a parse failure, an answer change or a conformity step, and cost no tokens
            (GroupMetrics.no_call_turns counts them).
        n_units_answered: units in which at least one agent answered: the base of the two
            answered-only means below (units where nobody answered are left out of them, and
            show up as a low answered_rate instead).
        n_clusters_answered: mean over those units of the number of distinct answers among the
            agents that answered; None when no unit has an answer.
        plurality_share_answered: mean over those units of ``max count / agents that
            answered``; None when no unit has an answer. Three unparseable replies give
            n_clusters 1 and plurality_share 1.0 but no answered-only value at all.
        conformity (k ≥ 1): over agent-steps (unit, agent, k) whose unit had a majority at k−1,
            the fraction whose answer at k equals that majority; None in round 0 or when no
            unit had a majority at k−1. An agent-step counts only when the turn at k made a
            call and the agent held a turn of its own before (not an empty idle turn).
        conformity_split: the conforming agent-steps split by the agent's correctness at
            k−1 → k ("tt", "tf", "ft", "ff"), each as a fraction of all agent-steps counted by
            conformity, so the four sum to the conformity rate; {} when conformity is None.
        strict_conformity (k ≥ 1): among those agent-steps whose answer at k−1 differed from the
            majority of k−1 (minority holders, None included), the fraction whose answer at k
            equals that majority; None when there are no such steps.
        answer_change_rate (k ≥ 1): fraction of agent-steps (counted as for conformity) whose
            answer differs from the same agent's answer at k−1 (None compared as a value); None
            in round 0 or when no agent-step counts.
        parse_failure_rate: fraction of turns with answer None, no error, and a call made
            (truncated ones included).
        error_rate: fraction of turns with an error (a missing turn counts as one).
        truncated_rate: fraction of turns cut at max_tokens (``finish_reason == "length"``, no
            error), whether an answer was read from them or not.
        truncated_answered_rate: fraction of turns cut at max_tokens from which an answer was
            still read; such answers are suspect (often a number from the middle of a
            calculation). truncated_rate − truncated_answered_rate is the truncated share of
            parse_failure_rate.
        parse_failure_rate_untruncated: among turns that ended on their own (no error, not
            truncated), the fraction with no answer: how often the parser fails on complete
            replies. None when there are no such turns.
        The three truncation rates are None when the group holds schema-1 records.
        weighted_majority_accuracy: fraction of units whose confidence-weighted majority
            (each answer weighted by its ``answer_prob``; the largest total wins, a tie none;
            ``societies.analysis.confidence``) is correct; None when no turn of the round has a
            probability.
        prompt_tokens, completion_tokens: sums over units and agents (society members only).
        tokens_per_agent: agent → {"prompt": sum, "completion": sum} over units.
        Role calls' tokens are apart: GroupMetrics.role_tokens.
    """

    model_config = ConfigDict(extra="forbid")
    index: int
    n_units: int
    accuracy_per_agent: dict[str, float]
    mean_accuracy: float
    majority_accuracy: float
    n_clusters: float
    plurality_share: float
    conformity: float | None
    conformity_split: dict[str, float]
    strict_conformity: float | None
    answer_change_rate: float | None
    parse_failure_rate: float
    error_rate: float
    answered_rate: float
    n_units_answered: int
    n_clusters_answered: float | None
    plurality_share_answered: float | None
    truncated_rate: float | None
    truncated_answered_rate: float | None
    parse_failure_rate_untruncated: float | None
    prompt_tokens: int
    completion_tokens: int
    tokens_per_agent: dict[str, dict[str, int]]
    weighted_majority_accuracy: float | None = None


class ReplyCounts(BaseModel):
    """The turns of a group's scored units over all rounds, counted by what became of them.

    ``answered + no_answer + errors == turns`` (a missing turn is an error); ``no_answer`` counts
    parse failures, truncated ones included. Turns that made no call (stopped, idle) are not
    replies and are not counted. ``truncated`` counts turns cut at max_tokens, of
    which ``truncated_answered`` still yielded a (suspect) answer; both are None when the group
    holds schema-1 records, which did not record why a reply ended.
    """

    model_config = ConfigDict(extra="forbid")
    turns: int
    answered: int
    no_answer: int
    errors: int
    truncated: int | None
    truncated_answered: int | None


class Conformity(BaseModel):
    """Conformity to a reference majority over one kind of turn (see SocialMetrics).

    ``turns``: turns of the kind (no error). ``steps``: those whose reference majority
    (``majority_answer`` of the reference answers) exists; ``conforming``: those whose new
    answer equals it; ``rate`` = conforming / steps. ``split``: the conforming steps by the
    agent's correctness before → after ("tt", "tf", "ft", "ff"), each a fraction of ``steps``
    (they sum to ``rate``). ``strict_*``: the same over the steps whose previous answer differed
    from the reference majority (None included), split as a fraction of ``strict_steps``.
    Rates are None and splits {} when their base is 0.
    """

    model_config = ConfigDict(extra="forbid")
    turns: int
    steps: int
    conforming: int
    rate: float | None
    split: dict[str, float]
    strict_steps: int
    strict_conforming: int
    strict_rate: float | None
    strict_split: dict[str, float]


class Share(BaseModel):
    """``count`` of ``steps``; ``rate`` = count / steps (None when steps is 0)."""

    model_config = ConfigDict(extra="forbid")
    steps: int
    count: int
    rate: float | None


class Reaching(BaseModel):
    """When the units reached a state: ``by_round`` maps the first round index (as a string)
    to the number of units that reached it there; ``reached`` units did, out of ``units``;
    ``mean_round`` is the mean first round over those (None when none did)."""

    model_config = ConfigDict(extra="forbid")
    units: int
    reached: int
    mean_round: float | None
    by_round: dict[str, int]


class SocialRound(BaseModel):
    """Social measures of one round (definitions in SocialMetrics).

    ``exposed``/``control`` are None in round 0. ``entropy_bits``: mean over units of the
    Shannon entropy (base 2) of the agents' answers, None (no answer, or an error) counted as
    one more value. ``polarization``: mean over units of the share of agents in the two largest
    answer clusters (None a cluster too). ``flip_debate``/``flip_reflection``: share of that
    round's debate / reflection turns whose answer differs from the agent's previous one (None
    compared as a value; None when there are no such turns, and in round 0).
    """

    model_config = ConfigDict(extra="forbid")
    index: int
    exposed: Conformity | None
    control: Conformity | None
    entropy_bits: float
    polarization: float
    flip_debate: float | None
    flip_reflection: float | None


class SocialMetrics(BaseModel):
    """Social-influence measures of one group, from records alone (``societies.analysis.social``).

    Turns with an error (and missing turns) are left out of every measure below; a parse
    failure is answer None. "Previous answer" means the same agent's answer in round k−1.

    exposed: conformity over debate turns with a non-empty ``saw``; the reference is the
        majority (MachineSoM's rule) of the previous answers of the agents the turn saw, the
        agent's own previous answer not included. A turn that saw a single agent, or a tie,
        has no majority and is counted in ``turns`` only.
    control: the no-exposure control: reflection turns, against the majority of the OTHER
        agents' previous answers (the records do not hold the graph, so all other agents).
    agents, traits: agent keys (as in RoundMetrics) and trait card names, in society order
        (a trait is "?" when the records did not name it).
    influence[source][adopter]: adoptions: debate turns in which the adopter saw the source,
        the source's previous answer was not None and differed from the adopter's previous
        answer, and the adopter's new answer equals the source's previous answer.
        influence_exposures[source][adopter] counts those turns whatever the new answer (the
        opportunities); an adoption from two sources holding the same answer counts for both.
        Both list only pairs with at least one exposure (a missing pair: never exposed), so a
        large society on a sparse graph stores its edges, not every pair.
    trait_influence, trait_influence_exposures: the same summed by trait (source trait →
        adopter trait); trait_influence_rate = adoptions / exposures (None where 0 exposures).
    stubbornness[trait]: over exposed steps where the agent had an answer and the seen
        majority existed and differed from it, the share that kept the same answer.
    persuasion[trait]: over the exposures of sources of that trait, the share adopted (the
        row sums of the trait matrices).
    unanimity: first round in which every agent gave the same answer (not None).
    quorum: first round in which at least ``quorum_q`` of the agents share one answer (not None).
    flip_debate, flip_reflection: answer-change rates over all rounds' debate / reflection turns.
    rounds: per-round values (SocialRound); exposed and control here pool rounds ≥ 1.
    """

    model_config = ConfigDict(extra="forbid")
    rounds: list[SocialRound]
    exposed: Conformity
    control: Conformity
    agents: list[str]
    traits: list[str]
    influence: dict[str, dict[str, int]]
    influence_exposures: dict[str, dict[str, int]]
    trait_influence: dict[str, dict[str, int]]
    trait_influence_exposures: dict[str, dict[str, int]]
    trait_influence_rate: dict[str, dict[str, float | None]]
    stubbornness: dict[str, Share]
    persuasion: dict[str, Share]
    unanimity: Reaching
    quorum: Reaching
    quorum_q: float
    flip_debate: float | None
    flip_reflection: float | None


class GroupMetrics(BaseModel):
    """Metrics of one (society, strategy) group.

    ``n_units`` counts the units scored (status "ok"); ``failed_units`` the units left out.
    ``retries`` sums ``Turn.retries`` over all units, failed ones included (it measures cost).
    ``behaviours`` maps each of ``BEHAVIOURS`` to its share of scored units ({} if none).
    ``replies`` counts the scored units' turns by outcome (see ReplyCounts).
    ``social`` holds the social-influence measures (SocialMetrics; None without scored units or
    in summaries older than schema 3).

    ``role_tokens[k]`` sums round k's role calls (``Round.asides``: summaries, moderators'
    verdicts) over the scored units as {"prompt": ..., "completion": ...}; they are not in the
    round's prompt_tokens/completion_tokens (members only). ``no_call_turns`` counts the scored
    units' turns that made no call (stopped, idle), which ``replies`` leaves out.
    ``final_accuracy`` is the share of scored units whose final answer
    (``UnitRecord.final``: majority, confidence, a judge or a protocol's decider) is correct,
    None when no scored unit recorded one (older records); ``final_methods`` counts the units
    by the method that chose it. ``rounds_used`` is the mean over scored units of the rounds
    after round 0 that ran (``stopped_after`` when a unit stopped early), ``stopped_units``
    how many stopped early. ``final_prompt_tokens``/``final_completion_tokens`` sum the final
    deciders' calls (a judge's); ``tokens_per_unit`` is the mean over scored units of every
    token they spent (members, role calls and the final call): the budget baselines match.
    """

    model_config = ConfigDict(extra="forbid")
    society: str
    strategy: str
    n_units: int
    failed_units: int
    retries: int
    rounds: list[RoundMetrics]
    behaviours: dict[str, float]
    replies: ReplyCounts
    social: SocialMetrics | None = None
    role_tokens: list[dict[str, int]] = []
    no_call_turns: int = 0
    final_accuracy: float | None = None
    final_methods: dict[str, int] = {}
    rounds_used: float | None = None
    stopped_units: int = 0
    final_prompt_tokens: int = 0
    final_completion_tokens: int = 0
    tokens_per_unit: float | None = None


class Summary(BaseModel):
    """All groups of a run, sorted by (society, strategy); saved as summary.json."""

    model_config = ConfigDict(extra="forbid")
    schema_version: int = SUMMARY_SCHEMA_VERSION
    groups: list[GroupMetrics]
    ledger: Ledger | None = None
