"""Joining a dataflow as a node, and leaving quietly when it is already going down.

When one node of a dataflow fails before the dataflow starts (a bad setting, no weights), dora 1.x
refuses every other node's `Node()` with a RuntimeError. Unhandled, each of them prints a traceback that
buries the one sentence that matters, the failed node's; dora itself already says which node failed and
that the others stopped because of it. So a node that finds the dataflow going down exits with a failure
status and says nothing more.
"""

from __future__ import annotations

import sys

# dora 1.1's words for "another node failed before the dataflow started" (in the error's cause chain).
PEER_FAILED = "exited before initializing dora"


def join_dataflow():
    """`dora.Node()`, or a quiet exit (status 1) when another node has already failed the dataflow's start.
    Any other failure to join (no dataflow at all, a daemon that is gone) is raised as dora raises it."""
    from dora import Node

    try:
        return Node()
    except RuntimeError as error:
        if PEER_FAILED not in str(error):
            raise
        sys.exit(1)
