"""The why panel of the job and process pages: the reasons of ``GET
/api/v1/processes/<name>/why`` (:func:`mx.services.why.explain`), with each fact already put in
words for the template."""

from __future__ import annotations

import json
from typing import Any

from mx.runtime import runtime
from mx.services import why


def why_panel(process: str, timeperiod: str | None = None) -> dict[str, Any]:
    """The explanation of ``process`` (at ``timeperiod``) as the panel shows it: the API's
    answer, each reason with ``shown`` (its facts as ``(name, text)``) and ``facts_json`` (the
    facts as the API gives them, for scripts and tests reading the page)."""
    rt = runtime()
    answer = why.explain(
        rt.store,
        process,
        timeperiod,
        now=rt.clock.now(),
        liveness=rt.liveness,
        default_timezone=rt.settings.timezone,
    )
    reasons = [
        {
            **item,
            "shown": [(key, _text(value)) for key, value in sorted(item["facts"].items())],
            "facts_json": json.dumps(item["facts"], sort_keys=True),
        }
        for item in answer["reasons"]
    ]
    return {**answer, "reasons": reasons}


def _text(value: Any) -> str:
    """A fact in words: strings as they are, nothing as a dash, the rest as JSON."""
    if value is None:
        return "—"
    return value if isinstance(value, str) else json.dumps(value)
