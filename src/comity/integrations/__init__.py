"""Adapters that let agent frameworks use comity through their own seams.

``comity.integrations.langgraph.ComityStore``: a LangGraph ``BaseStore`` (install
``comity[langgraph]``).  Each adapter imports its framework, so import the module you need.
"""

from __future__ import annotations

__all__: list[str] = []
