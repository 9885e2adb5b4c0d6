"""MT routing: which connectors, in failover order, carry a message.

A route matches on the destination's E.164 prefix ("+33", "+336", or "*" for any), and
optionally on the account and the category. The longest matching prefix wins; among routes
with the same prefix length, one naming the account (or category) beats a general one, and
then the order in the file decides. Pure: built once from the config, looked up per message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True, slots=True)
class RouteRule:
    destinations: tuple[str, ...]
    connectors: tuple[str, ...]
    accounts: tuple[str, ...] | None = None
    category: str | None = None


class RouteTable:
    def __init__(self, rules: Iterable[RouteRule]) -> None:
        # (prefix digits, specificity, -position, rule): sorted so the best match comes first.
        entries = []
        for position, rule in enumerate(rules):
            specificity = (rule.accounts is not None) + (rule.category is not None)
            for dest in rule.destinations:
                prefix = "" if dest == "*" else dest.lstrip("+")
                entries.append((len(prefix), specificity, -position, prefix, rule))
        entries.sort(key=lambda e: e[:3], reverse=True)
        self._entries = [(prefix, rule) for _, _, _, prefix, rule in entries]

    def connectors_for(self, e164: str, account: str, category: str) -> tuple[str, ...]:
        """Connector names in failover order; empty when no route matches."""
        digits = e164.lstrip("+")
        for prefix, rule in self._entries:
            if not digits.startswith(prefix):
                continue
            if rule.accounts is not None and account not in rule.accounts:
                continue
            if rule.category is not None and rule.category != category:
                continue
            return rule.connectors
        return ()
