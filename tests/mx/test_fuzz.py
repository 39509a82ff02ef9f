"""A fuzz run of the API from its own OpenAPI document (schemathesis, through the WSGI app):
valid and invalid requests of every operation, as an admin, never answered with a 5xx, and
every error in the one error shape.

schemathesis' pytest fixture loader does not run on pytest 9, so each operation's strategy
is driven by Hypothesis directly; the operations are listed from the same document.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from db.credentials import Role
from mx.api.openapi import build_document

#: Examples per operation and generation mode: about 20 operations keep the run under a minute.
EXAMPLES = 50

#: (path, method, mode): every operation with valid input, and those that take input with
#: invalid input too (one without parameters or body has nothing to get wrong).
OPERATIONS = [
    pytest.param(path, method.upper(), mode, id=f"{method.upper()} {path} {mode.value}")
    for path, ops in build_document("test")["paths"].items()
    for method, op in ops.items()
    for mode in GenerationMode
    if mode is GenerationMode.POSITIVE or op.get("parameters") or op.get("requestBody")
]


@pytest.mark.parametrize(("path", "method", "mode"), OPERATIONS)
def test_api_fuzz_never_answers_5xx(app, seed, auth, path, method, mode):
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    operation = schema[path][method]
    token = auth.headers(Role.ADMIN)

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case) -> None:
        response = case.call(headers={**(case.headers or {}), **token})
        assert response.status_code < 500, (case.as_curl_command(), response.text[:500])
        if response.status_code >= 400:
            error = response.json()["error"]
            assert isinstance(error["code"], str) and isinstance(error["message"], str)
            if error["code"] == "invalid_input":
                assert error["field"], response.text

    fuzz()
