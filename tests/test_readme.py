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
