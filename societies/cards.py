"""Trait and role cards (YAML in ``agents/``) and the Jinja2 prompt templates (``prompts/``).

A card is data: ``name``, ``kind`` (trait or role), ``description`` and ``prompt``, a Jinja2
template rendered with the agent's ``name`` into its system message. A new trait needs no code.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
import yaml

from societies.errors import ConfigError
from societies.paths import asset_dir


@dataclass(frozen=True)
class Card:
    """A trait or role card."""

    name: str
    kind: str
    description: str
    prompt: str

    def system_prompt(self, agent_name: str) -> str:
        """The system message for an agent called ``agent_name``."""
        return _compiled(self.prompt).render(name=agent_name).strip()


@cache
def _compiled(source: str) -> jinja2.Template:
    # Compiling is ~40 % of the engine's time per agent-round; a card's prompt never changes.
    return jinja2.Template(source)


def available_cards() -> list[str]:
    """Names of the shipped cards."""
    return sorted(p.stem for p in asset_dir("agents").glob("*.yaml"))


@cache
def load_card(ref: str, where: str = "trait") -> Card:
    """Load a card by shipped name (``easy-going``) or by path to a YAML file.

    Raises:
        ConfigError: unknown name, missing file, or a card without the required fields.
    """
    is_path = ref.endswith((".yaml", ".yml")) or "/" in ref
    path = Path(ref).expanduser() if is_path else asset_dir("agents") / f"{ref}.yaml"
    if not path.is_file():
        if is_path:
            raise ConfigError(f"{where}: trait card file not found: {path}")
        raise ConfigError(f"{where}: unknown trait card {ref!r}; available: "
                          f"{', '.join(available_cards())} (or a path to a YAML card)")
    try:
        data: Any = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{line}: not valid YAML") from None
    if not isinstance(data, dict) or not isinstance(data.get("prompt"), str):
        raise ConfigError(f"{path}: a card needs at least a 'prompt' string")
    return Card(
        name=str(data.get("name", path.stem)),
        kind=str(data.get("kind", "trait")),
        description=str(data.get("description", "")),
        prompt=data["prompt"],
    )


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(asset_dir("prompts")),
        undefined=jinja2.StrictUndefined,  # a typo in a template variable fails loudly
        keep_trailing_newline=False,
        autoescape=False,  # prompts are plain text for models, not HTML
    )


def render(template: str, **variables: Any) -> str:
    """Render ``prompts/<template>.j2`` with ``variables``."""
    return _environment().get_template(f"{template}.j2").render(**variables).strip()


def template_source(template: str) -> str:
    """The text of ``prompts/<template>.j2`` (part of a run's identity)."""
    source, _, _ = _environment().loader.get_source(_environment(), f"{template}.j2")  # type: ignore[union-attr]
    return source
