"""wsbroadcast: a real-time push sidecar. POST /events in; WebSocket and SSE out."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .app import create_app


def __getattr__(name: str) -> Any:
    # Imported on first use, so `python -m wsbroadcast --help` stays quick.
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(name)


__all__ = ["__version__", "create_app"]
