"""Protocols by name, imported lazily; each module provides ``build(options, ctx)``.

A protocol is chosen in the config as ``protocol: du`` or ``protocol: {name: mad, ...}``; its
module's ``build`` validates the options (unknown keys are errors naming the field) and returns
the :class:`~societies.protocols.base.Protocol`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from societies.errors import ConfigError
from societies.plan import AgentPlan
from societies.protocols.base import (
    Ask,
    Decision,
    Protocol,
    RoundPrompt,
    View,
    options,
)
from societies.protocols.policies import DebatePolicy

PROTOCOLS: dict[str, str] = {
    "machinesom": "societies.protocols.machinesom",
    "du": "societies.protocols.du",
    "chateval": "societies.protocols.chateval",
    "mad": "societies.protocols.mad",
    "moa": "societies.protocols.moa",
}

__all__ = ["PROTOCOLS", "Ask", "BuildContext", "Decision", "Protocol", "RoundPrompt", "View",
           "build_protocol", "options"]


@dataclass(frozen=True)
class BuildContext:
    """What a protocol's ``build`` may use.

    Attributes:
        policy: the run's debate-prompt policy (``debate:`` in the config).
        rounds: the run's rounds after round 0.
        make_agent: turns an agent mapping (``{name, trait, model, sampling}``) at a field path
            into a role agent whose model is loaded with the society's.
    """

    policy: DebatePolicy
    rounds: int
    make_agent: Callable[[Mapping[str, Any], str], AgentPlan]


def build_protocol(raw: str | Mapping[str, Any], ctx: BuildContext,
                   where: str = "protocol") -> Protocol:
    """The protocol a config names, its options validated.

    Raises:
        ConfigError: an unknown protocol name or a bad option (naming ``protocol.<key>``).
    """
    spec = {"name": raw} if isinstance(raw, str) else dict(raw)
    name = spec.get("name", "machinesom")
    if name not in PROTOCOLS:
        raise ConfigError(f"{where}.name: unknown protocol {name!r}; known: "
                          f"{', '.join(sorted(PROTOCOLS))}")
    module = importlib.import_module(PROTOCOLS[name])
    protocol: Protocol = module.build(spec, ctx, where)
    return protocol
