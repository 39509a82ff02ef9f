"""The API fuzzed from its own OpenAPI document (schemathesis 4, through the WSGI app), with every
check schemathesis has: no 5xx (``not_a_server_error``), every status, content type and body as
documented (``status_code_conformance``, ``content_type_conformance``,
``response_schema_conformance``, ``response_headers_conformance``), every request the document
allows accepted (``positive_data_acceptance``) and every request it forbids refused
(``negative_data_rejection``), plus the authentication, method and resource checks. Requests are
sent as an admin, so a refusal is about the input, never the role.

How it is bounded, and why:

- ``EXAMPLES`` cases per operation and generation mode (valid, then invalid input), with a fixed
  seed (``derandomize``): 21 operations, 42 runs, about 1,700 requests plus what the checks send
  again (without credentials, with another method). 40 keeps the run under a minute on two cores
  while every operation meets both modes; the same run with 80 (95 s) found nothing more.
- Each operation runs on a fresh installation (the ``seed`` fixture), so a case that deletes or
  skips something cannot make the next one's answer depend on the order.

What ``positive_data_acceptance`` accepts besides 2xx is schemathesis' default and is honest here:
404 (a well-formed name of a process, job or unit of work that does not exist), 409 (a
transition the state machine refuses, a name taken, a freerun at ``max_active``), 401/403 (never
met as an admin) and 5xx (reported by ``not_a_server_error`` instead). A 400 is never accepted
for a valid request.

What the document cannot say in JSON Schema, the generator is told by formats that the document
names and describes (schemathesis' custom formats): ``tactus-trigger`` (the trigger grammar of
docs/triggers.md), ``tactus-timezone`` (an IANA zone), ``tactus-command`` (a string command:
shell words with known placeholders), ``tactus-regex`` (a box pattern) and ``tactus-cursor-*``
(a cursor the list issued: opaque, so only the server's own and the empty one are valid). The
strategies below draw members of those languages; invalid strings of them are covered by the
bad-input tables of test_api_errors.py. Four operations are left out of
``positive_data_acceptance`` only, because whether their input is valid depends on what is
stored, which no JSON Schema can state: ``PUT /registration`` (rules between its entries and the
processes already registered: unique names, dependencies and trees that exist and agree, no
cycles; SPEC section 4), ``PATCH /processes/{name}`` (the fields allowed depend on the kind of
the process named, and the edited entry must still obey the rules of its kind: a freerun keeps a
trigger, one program), ``GET /processes/{name}/why`` (its ``timeperiod`` must be a period of
the named process's grid, and a freerun has none) and ``POST /executor/outcomes`` (rules between
its items: each unit of work once, every lease of one executor, ``next.count`` at most
``next.slots``; tested in test_executor_batch.py). Their document still states every field's
own rule, their valid inputs are tested in test_api_processes.py, test_api_errors.py and
test_why.py, and every other check runs on them. For the same reason the ``steps`` of a valid
body are made a chain before it is sent: named ``s0``, ``s1`` ... and without ``depends_on``
(unique names, and ``depends_on`` naming the entry's other steps without a cycle, are rules
between steps: SPEC section 10, tested in tests/db/test_registration_steps.py). Every other
field of a step is sent as drawn and held to ``positive_data_acceptance``.
NUL characters are refused everywhere (400, documented
in the document's description and tested there too), so the generator does not put them in
valid cases (``allow_x00=False``).
"""

from __future__ import annotations

import zoneinfo

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from db.credentials import Role
from db.models import COMMAND_PLACEHOLDERS
from mx.api.openapi import CURSOR_FORMATS, build_document

#: Cases per operation and generation mode (see the module docstring).
EXAMPLES = 40

#: (path, method, mode): every operation with valid input, and those that take input with
#: invalid input too (one without parameters or body has nothing to get wrong).
OPERATIONS = [
    pytest.param(path, method.upper(), mode, id=f"{method.upper()} {path} {mode.value}")
    for path, ops in build_document("test")["paths"].items()
    for method, op in ops.items()
    for mode in GenerationMode
    if mode is GenerationMode.POSITIVE or op.get("parameters") or op.get("requestBody")
]

#: Operations whose valid bodies obey rules that JSON Schema cannot state (see the module
#: docstring): every check but ``positive_data_acceptance`` runs on them.
RULES_BETWEEN_FIELDS = {
    ("/api/v1/registration", "PUT"),
    ("/api/v1/processes/{name}", "PATCH"),
    ("/api/v1/processes/{name}/why", "GET"),
    ("/api/v1/executor/outcomes", "POST"),
}

#: Triggers of every form (docs/triggers.md).
TRIGGERS = st.one_of(
    st.integers(1, 10**6).map(lambda n: f"every {n}"),
    st.sampled_from(["every 1h30m", "every 2d", "every 45s", "every 10m"]),
    st.tuples(st.integers(0, 23), st.integers(0, 59)).map(lambda t: f"at {t[0]:02d}:{t[1]:02d}"),
    st.sampled_from(["at Mon-Fri 09:30", "at 10:00,22:00", "at Sat 23:59"]),
    st.tuples(st.integers(0, 59), st.integers(0, 23)).map(lambda t: f"{t[0]} {t[1]} * * *"),
    st.sampled_from(["*/5 * * * *", "0 0 1 1 *", "30 1 * * Mon-Fri", "@hourly", "@daily"]),
    st.datetimes(
        min_value=__import__("datetime").datetime(2000, 1, 1),
        max_value=__import__("datetime").datetime(2999, 12, 31),
    ).map(lambda d: f"once {d.replace(microsecond=0).isoformat()}Z"),
)
#: Shell words, with a known placeholder now and then.
WORD = st.text(
    alphabet=st.characters(categories=["L", "N"], max_codepoint=0x2FF), min_size=1, max_size=12
)
COMMANDS = st.lists(
    st.one_of(WORD, st.sampled_from([f"{{{p}}}" for p in sorted(COMMAND_PLACEHOLDERS)])),
    min_size=1,
    max_size=4,
).map(" ".join)


def _as_chain(body: object) -> None:
    """Make a valid body's steps a chain (see the module docstring); still valid by the
    document, since ``depends_on`` is optional and ``s<n>`` is a step name."""
    steps = body.get("steps") if isinstance(body, dict) else None
    for index, step in enumerate(steps if isinstance(steps, list) else []):
        if isinstance(step, dict):
            step["name"] = f"s{index}"
            step.pop("depends_on", None)


def _short_wait(body: object) -> None:
    """Cut a valid claim's long poll (``wait``, up to 30 s) to a tenth of a second: still a
    valid body, and 40 cases stay seconds, not minutes (the wait is tested in
    test_executor_api.py)."""
    if isinstance(body, dict) and isinstance(body.get("wait"), int | float):
        body["wait"] = min(body["wait"], 0.1)


def _cursor_strategy(client, headers, path: str):
    """The empty cursor, and one this list issued (when it has a second page)."""
    page = client.get(f"/api/v1{path}?limit=1", headers=headers).json
    issued = [page["next_cursor"]] if page.get("next_cursor") else []
    return st.sampled_from(["", *issued])


@pytest.fixture
def fuzz_schema(app, client, seed, auth):
    """The document as served, with the strategies of its formats drawn from this server."""
    headers = auth.headers(Role.ADMIN)
    schemathesis.openapi.format("tactus-trigger", TRIGGERS)
    schemathesis.openapi.format(
        "tactus-timezone", st.sampled_from(sorted(zoneinfo.available_timezones()))
    )
    schemathesis.openapi.format("tactus-command", COMMANDS)
    schemathesis.openapi.format("tactus-regex", st.sampled_from([".*", "b[0-9]+", "^box$", "a|b"]))
    for name, path in CURSOR_FORMATS.items():
        schemathesis.openapi.format(name, _cursor_strategy(client, headers, path))
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    schema.config.generation.update(allow_x00=False)
    return schema


@pytest.mark.parametrize(("path", "method", "mode"), OPERATIONS)
def test_api_fuzz_passes_every_check(fuzz_schema, auth, path, method, mode):
    operation = fuzz_schema[path][method]
    token = auth.headers(Role.ADMIN)
    excluded = [positive_data_acceptance] if (path, method) in RULES_BETWEEN_FIELDS else []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case) -> None:
        # Valid cases are sent as an admin. An invalid case may have its credentials mutated
        # (the bearer scheme's header is one of the components the generator breaks): those
        # are sent as generated, so a broken header is refused (401) as it must be, instead
        # of being replaced by a good token and the case counted as accepted invalid data.
        if mode is GenerationMode.NEGATIVE:
            headers = {**token, **(case.headers or {})}
        else:
            headers = {**(case.headers or {}), **token}
            _as_chain(case.body)
            _short_wait(case.body)
        response = case.call_and_validate(headers=headers, excluded_checks=excluded)
        if response.status_code >= 400:
            error = response.json()["error"]
            if error["code"] == "invalid_input":
                assert error["field"], response.text

    fuzz()
