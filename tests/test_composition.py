"""Mixed societies: counts and proportions, bad sums, model lists, seeded positions, names."""

from __future__ import annotations

from collections import Counter

import pytest
import yaml

from societies.composition import Member, apportion, compose
from societies.config import ModelRef, parse_config
from societies.errors import ConfigError

HALF = {"overconfident": 0.5, "easy-going": 0.5}


def traits_of(members: list[Member]) -> Counter[str]:
    return Counter(m.trait for m in members)


def test_counts_are_taken_as_given() -> None:
    team = compose(5, {"overconfident": 2, "easy-going": 3}, None, 0, "societies[0]")
    assert traits_of(team) == {"overconfident": 2, "easy-going": 3}
    assert all(m.model is None for m in team)  # None: the society's or defaults' model


def test_thirty_percent_of_ten_is_exactly_three() -> None:
    team = compose(10, {"overconfident": 0.3, "easy-going": 0.7}, None, 0, "societies[0]")
    assert traits_of(team) == {"overconfident": 3, "easy-going": 7}


@pytest.mark.parametrize(("shares", "size", "expected"), [
    # Largest remainder: 3.33.. each, the one spare agent goes to the first listed (a tie).
    ({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, 10, {"a": 4, "b": 3, "c": 3}),
    # Same tie, listed in another order: the first listed still wins it.
    ({"c": 1 / 3, "a": 1 / 3, "b": 1 / 3}, 10, {"c": 4, "a": 3, "b": 3}),
    # 0.29 * 100 is 28.999999999999996 in floats; it must still be 29.
    ({"a": 0.29, "b": 0.71}, 100, {"a": 29, "b": 71}),
    # Quotas 1.5, 1.5, 3.0 → floors 1, 1, 3 and one spare: both tie at .5, the first wins.
    ({"a": 0.25, "b": 0.25, "c": 0.5}, 6, {"a": 2, "b": 1, "c": 3}),
    # Largest fractional part wins over listing order: 0.45*7 = 3.15, 0.55*7 = 3.85.
    ({"a": 0.45, "b": 0.55}, 7, {"a": 3, "b": 4}),
    # A zero share gets nobody; 1 alone is a proportion (everyone), not a count.
    ({"a": 1, "b": 0}, 4, {"a": 4, "b": 0}),
    # Floats say 0.69 * 5 = 3.4499999999999997 < 1.45 = 0.29 * 5; as decimals both are .45,
    # a tie, which goes to b (listed first).
    ({"a": 0.02, "b": 0.29, "c": 0.69}, 5, {"a": 0, "b": 2, "c": 3}),
    ({"a": 0.02, "c": 0.69, "b": 0.29}, 5, {"a": 0, "c": 4, "b": 1}),
    # YAML decimals summing to 1 within 1e-6.
    ({"a": 0.1, "b": 0.2, "c": 0.7000001}, 1000, {"a": 100, "b": 200, "c": 700}),
])
def test_proportions_round_by_largest_remainder(shares: dict[str, float], size: int,
                                                expected: dict[str, int]) -> None:
    assert apportion(shares, size, "traits") == expected


@pytest.mark.parametrize(("traits", "message"), [
    ({"overconfident": 3, "easy-going": 4}, "counts sum to 7, not size 10"),
    ({"overconfident": 0.3, "easy-going": 0.6}, "proportions sum to 0.9, not 1"),
    ({"overconfident": 3, "easy-going": 0.7}, "mixes counts and proportions (sum 3.7)"),
    ({"overconfident": -1, "easy-going": 11}, "overconfident is -1"),
    ({"overconfident": float("nan"), "easy-going": 1}, "overconfident is nan"),
    ({}, "needs traits"),
])
def test_bad_traits_are_one_line_naming_the_field(traits: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        compose(10, traits, None, 0, "societies[2]")
    text = str(err.value)
    assert text.startswith("societies[2].traits: ")
    assert message in text
    assert "\n" not in text


@pytest.mark.parametrize(("size", "message"), [
    (1, "agents:"),  # a single agent: the hint points to agents:
    (0, "2..1000"),
    (1001, "2..1000"),
    (None, "needs size"),
])
def test_bad_size(size: int | None, message: str) -> None:
    with pytest.raises(ConfigError, match=r"^societies\[2\]\.size: ") as err:
        compose(size, HALF, None, 0, "societies[2]")
    assert message in str(err.value)


def test_models_list_gives_agent_i_model_i() -> None:
    models: list[ModelRef] = ["m1", {"backend": "scripted", "replies": ["x"]}, "m3", "m4"]
    team = compose(4, HALF, models, 5, "societies[0]")
    assert [m.model for m in team] == models


@pytest.mark.parametrize("length", [3, 5])
def test_models_list_of_the_wrong_length(length: int) -> None:
    with pytest.raises(ConfigError, match=r"^societies\[1\]\.models: .*"
                                          rf"{length} models for size 4"):
        compose(4, HALF, [f"m{i}" for i in range(length)], 0, "societies[1]")


def test_models_mapping_counts_proportions_and_bad_sums() -> None:
    team = compose(10, HALF, {"smollm2": 0.3, "gemma3": 0.7}, 0, "societies[0]")
    assert Counter(m.model for m in team) == {"smollm2": 3, "gemma3": 7}
    team = compose(10, HALF, {"smollm2": 4, "gemma3": 6}, 0, "societies[0]")
    assert Counter(m.model for m in team) == {"smollm2": 4, "gemma3": 6}
    with pytest.raises(ConfigError, match=r"^societies\[0\]\.models: counts sum to 9, not size"):
        compose(10, HALF, {"smollm2": 4, "gemma3": 5}, 0, "societies[0]")
    with pytest.raises(ConfigError, match=r"^societies\[0\]\.models: an empty mapping"):
        compose(10, HALF, {}, 0, "societies[0]")


def test_same_seed_same_society_other_seed_other_arrangement() -> None:
    def team(seed: int) -> list[Member]:
        return compose(50, {"overconfident": 0.3, "easy-going": 0.7}, {"a": 0.5, "b": 0.5},
                       seed, "societies[0]")

    assert team(3) == team(3)
    assert [m.trait for m in team(3)] != [m.trait for m in team(4)]
    assert [m.model for m in team(3)] != [m.model for m in team(4)]
    assert traits_of(team(3)) == traits_of(team(4))  # same counts, other places


def test_positions_are_spread_not_blocks() -> None:
    team = compose(100, {"overconfident": 0.5, "easy-going": 0.5}, None, 0, "societies[0]")
    first_half = traits_of(team[:50])
    # In listing order the first 50 would all be overconfident; a shuffle mixes both in.
    assert 0 < first_half["overconfident"] < 50


def test_model_assignment_does_not_depend_on_how_traits_are_written() -> None:
    models = {"a": 0.5, "b": 0.5}
    one = compose(20, {"x": 0.5, "y": 0.5}, models, 7, "s")
    other = compose(20, {"q": 5, "r": 10, "s": 5}, models, 7, "s")
    assert [m.model for m in one] == [m.model for m in other]


def test_names_are_unique_readable_and_count_within_each_trait() -> None:
    team = compose(12, {"overconfident": 5, "cards/calm-critic.yaml": 7}, None, 1, "s")
    names = [m.name for m in team]
    assert len(set(names)) == 12
    # Numbered 1.. within each trait in society order; a card path is named by its stem.
    assert [n for n in names if n.startswith("overconfident-")] == [
        f"overconfident-{k}" for k in range(1, 6)]
    assert [n for n in names if n.startswith("calm-critic-")] == [
        f"calm-critic-{k}" for k in range(1, 8)]
    assert {m.trait for m in team} == {"overconfident", "cards/calm-critic.yaml"}


def test_two_card_paths_with_one_stem_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"^societies\[0\]\.traits: .*'critic'"):
        compose(4, {"a/critic.yaml": 2, "b/critic.yaml": 2}, None, 0, "societies[0]")


def test_a_thousand_agents() -> None:
    team = compose(1000, {"overconfident": 0.3, "easy-going": 0.6, "neutral": 0.1},
                   {"smollm2": 0.25, "gemma3": 0.75}, 9, "societies[0]")
    assert len(team) == 1000
    assert len({m.name for m in team}) == 1000
    assert traits_of(team) == {"overconfident": 300, "easy-going": 600, "neutral": 100}
    assert Counter(m.model for m in team) == {"smollm2": 250, "gemma3": 750}


def test_fields_parsed_from_yaml_feed_compose() -> None:
    raw = yaml.safe_load("""
        size: 100
        traits: {overconfident: 0.3, easy-going: 0.7}
        models: {smollm2: 0.5, gemma3: 0.5}
        seed: 3
    """)
    soc = parse_config({"name": "t", "societies": [raw], "task": {"name": "arithmetic"}}
                       ).societies[0]
    team = compose(soc.size, soc.traits, soc.models, soc.seed, "societies[0]")
    assert traits_of(team) == {"overconfident": 30, "easy-going": 70}
    assert Counter(m.model for m in team) == {"smollm2": 50, "gemma3": 50}
