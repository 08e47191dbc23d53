"""The agent's exception base (house rule 6: one base per package)."""


class AgentError(Exception):
    """Base of every error the agent raises."""
