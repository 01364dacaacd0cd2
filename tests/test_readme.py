"""The README's configuration walkthrough is a config that validates, not just an illustration."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from societies.config import parse_config
from societies.plan import build_plan

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_configuration_walkthrough_validates(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    text = README.read_text()
    section = text[text.index("## Configuration walkthrough"):]
    start = section.index("```yaml\n") + len("```yaml\n")
    data = yaml.safe_load(section[start:section.index("```", start)])
    # The example names a card of the reader's own; give it one.
    (tmp_path / "my-cards").mkdir()
    (tmp_path / "my-cards" / "stubborn.yaml").write_text(
        "name: stubborn\nprompt: You are {{ name }}. Keep your answer.\n")
    monkeypatch.chdir(tmp_path)
    plan = build_plan(parse_config(data, "README.md"))
    assert [s.name for s in plan.societies] == ["S2", "society2", "trio"]
    assert plan.config.seeding == "paired" and plan.societies[0].agents[0].settings.top_k == 0


def test_every_whole_experiment_config_in_the_readme_plans() -> None:
    """Each YAML block that is a whole experiment (it has societies and a task) validates."""
    text = README.read_text()
    blocks = text.split("```yaml\n")[1:]
    whole = []
    for block in blocks:
        data = yaml.safe_load(block[:block.index("```")])
        if isinstance(data, dict) and "societies" in data and "task" in data:
            whole.append(data)
    assert len(whole) >= 2  # the walkthrough and the Ray sweep at least
    for data in whole:
        if any("my-cards" in str(v) for v in data.values()):
            continue  # the walkthrough, checked above with its card
        build_plan(parse_config(data, "README.md"))
