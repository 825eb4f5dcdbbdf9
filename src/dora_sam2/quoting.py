"""How a log line quotes what the node did not write, a value a sender chose or an error's text: cut
short, so that no message makes a line as long as itself."""

from __future__ import annotations


def shown(value, limit: int = 60) -> str:
    """A value a sender chose, as a log line may quote it: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def first_line(error: Exception, limit: int = 120) -> str:
    """An error's first line, cut to `limit` characters ("" for an error without text)."""
    text = str(error).strip().splitlines()
    return (text[0] if text else "")[:limit]
