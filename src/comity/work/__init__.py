"""Services: the task board, decisions on paths, and the causal history of work."""

from __future__ import annotations

from .agent import Agent
from .decisions import Decision, acknowledge, decide, decisions
from .tasks import OPEN_PREFIX, TASK_PREFIX, Board, Claim, parse_task_id, task_key
from .verbs import VERB, VERBS, Param, Verb, bind
from .why import why

__all__ = ["Agent", "VERBS", "VERB", "Verb", "Param", "bind", "Board", "Claim", "why", "parse_task_id", "task_key", "TASK_PREFIX", "OPEN_PREFIX",
           "Decision", "decide", "decisions", "acknowledge"]
