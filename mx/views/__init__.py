"""The web page (SPEC section 7): server-rendered blueprints, one per area."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask


def register_views(app: Flask) -> None:
    """Register the page's blueprints on ``app`` (none yet: the pages come later)."""
