"""societies: societies of collaborating language models.

Agents with trait cards answer a task, then debate or reflect over rounds on a networkx
communication graph; any agent's model may itself be a token-level ensemble.
"""

__version__ = "0.1.0"
