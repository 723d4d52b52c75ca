"""Choosing which tasks to label: query strategies, the Pool they rank, embeddings, stopping rules. Pure: no I/O."""

from backend.selection.embeddings import svd_embeddings
from backend.selection.stopping import Round, Signal, StoppingConfig, evaluate, should_stop
from backend.selection.strategies import STRATEGIES, Pool, QueryStrategy, make_strategy

__all__ = [
    "STRATEGIES",
    "Pool",
    "QueryStrategy",
    "Round",
    "Signal",
    "StoppingConfig",
    "evaluate",
    "make_strategy",
    "should_stop",
    "svd_embeddings",
]
