"""Filter element sources of the agent resources' link attributes (RFC 7644 §3.4.2.2 over
``scim_agent_links``): an Agent's read-only ``applications`` and an AgenticApplication's
``agents``. Owners are filtered in the JSON column like any stored attribute."""

from __future__ import annotations

from sqlalchemy import literal, select

from scimgate.scim.errors import InvalidFilter
from scimgate.scim.schema import Attribute
from scimgate.store.filter_predicates import Col, Elements, Operand
from scimgate.store.sql_dialect import Bool
from scimgate.store.tables import agent_links, agentic_applications, agents

_APPLICATION = "application"


class AgentApplications(Elements):
    """Agent ``applications``: the applications whose ``agents`` name this agent."""

    def __init__(self, attr: Attribute):
        self.attr = attr
        self.link = agent_links.alias()
        self.app = agentic_applications.alias()

    def operand(self, sub: Attribute, path: str) -> Operand:
        name = sub.name.lower()
        if name == "value":
            return Col(self.link.c.other_id, sub)
        if name == "type":
            return Col(self.link.c.kind, sub)
        if name == "display":
            return Col(self.app.c.name_lower, sub, lowered=True)
        raise InvalidFilter(f"{path!r} is not filterable")

    def exists(self, cond: Bool | None) -> Bool:
        q = (
            select(literal(1))
            .select_from(self.link.join(self.app, self.app.c.id == self.link.c.other_id))
            .where(self.link.c.agent_id == agents.c.id, self.link.c.relation == _APPLICATION)
            .correlate(agents)
        )
        return q.where(cond).exists() if cond is not None else q.exists()


class ApplicationAgents(Elements):
    """AgenticApplication ``agents`` (abbey-00 §4), from the link rows."""

    def __init__(self, attr: Attribute):
        self.attr = attr
        self.link = agent_links.alias()
        self.agent = agents.alias()

    def operand(self, sub: Attribute, path: str) -> Operand:
        name = sub.name.lower()
        if name == "value":
            return Col(self.link.c.agent_id, sub)
        if name == "type":
            return Col(self.link.c.kind, sub)
        if name == "display":
            return Col(self.agent.c.name_lower, sub, lowered=True)
        raise InvalidFilter(f"{path!r} is not filterable")

    def exists(self, cond: Bool | None) -> Bool:
        q = (
            select(literal(1))
            .select_from(self.link.join(self.agent, self.agent.c.id == self.link.c.agent_id))
            .where(
                self.link.c.other_id == agentic_applications.c.id,
                self.link.c.relation == _APPLICATION,
            )
            .correlate(agentic_applications)
        )
        return q.where(cond).exists() if cond is not None else q.exists()
