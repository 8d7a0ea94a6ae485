"""The causal kernel: dots, version vectors, dotted version vector sets, hybrid clocks.

Pure values, no I/O; on the store's hot path (a put is one DVVSet event plus a JSON
round trip).  Laws are pinned by Hypothesis tests in ``tests/test_causal_*.py``.
"""

from __future__ import annotations

from ._dot import Dot, Ordering
from ._dvvset import DVVSet
from ._hlc import HLC, HLCTimestamp
from ._vv import VersionVector

__all__ = ["Dot", "Ordering", "VersionVector", "DVVSet", "HLC", "HLCTimestamp"]
