"""``launch.py register`` with flows (SPEC section 10): ``--check`` shows the order the steps run
in, and a file with a cycle among its steps changes nothing."""

from __future__ import annotations

import json
import textwrap

from tests.cli.test_launch import EXAMPLES, run, store_of

FLOWS = textwrap.dedent(
    """\
    processes:
      - name: etl
        kind: freerun
        trigger: every 3600
        steps:
          - {name: extract, command: [extract]}
          - {name: transform_a, command: [transform, a], depends_on: [extract]}
          - {name: transform_b, command: [transform, b], depends_on: [extract]}
          - {name: transform_c, worker: "tests.fixtures.workers:Succeeding", depends_on: [extract]}
          - {name: load, command: [load], depends_on: [transform_a, transform_b, transform_c]}
          - {name: cleanup, command: [cleanup], depends_on: [load], run_if: all_done}
      - name: chain
        kind: managed
        time_qualifier: daily
        steps:
          - {name: one, command: [one]}
          - {name: two, command: [two]}
      - name: single
        kind: freerun
        trigger: every 60
        command: ["true"]
    """
)


def test_register_check_prints_the_order_of_the_steps(tmp_path):
    path = tmp_path / "flows.yaml"
    path.write_text(FLOWS, encoding="utf-8")
    result = run(tmp_path, "register", str(path), "--check")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "etl: extract -> [transform_a, transform_b, transform_c] -> load -> cleanup" in lines
    assert "chain: one -> two" in lines
    assert not any(line.strip().startswith("single:") for line in lines)
    # the rest of the output is as before
    assert "  + etl" in lines and lines[-1].startswith("would register (check only): 3 created")


def test_register_stores_the_steps(tmp_path):
    path = tmp_path / "flows.yaml"
    path.write_text(FLOWS, encoding="utf-8")
    assert run(tmp_path, "register", str(path)).returncode == 0
    with store_of(tmp_path) as store:
        record = store.get_process("etl")
    assert [step.name for step in record.entry.steps][-1] == "cleanup"
    assert record.registered["steps"][0] == {"name": "extract", "command": ["extract"]}


def test_register_cycle_among_steps_exits_2_and_changes_nothing(tmp_path):
    # given a registered store
    run(tmp_path, "register", str(EXAMPLES / "process_context.yaml"))
    before = _stored(tmp_path)
    # when a file whose steps form a cycle is registered, checked or not
    path = tmp_path / "cycle.yaml"
    path.write_text(
        FLOWS.replace("depends_on: [extract]}", "depends_on: [extract, cleanup]}", 1),
        encoding="utf-8",
    )
    results = [run(tmp_path, "register", str(path), *flag) for flag in ([], ["--check"])]
    # then both exit 2 naming the process, the step and the cycle, and the store is unchanged
    for result in results:
        assert result.returncode == 2
        assert (
            "process 'etl', field 'steps.transform_a.depends_on': dependency cycle: "
            "transform_a -> cleanup -> load -> transform_a"
        ) in result.stderr
        assert result.stdout == ""
    after = _stored(tmp_path)
    assert after == before
    assert "etl" not in {p["name"] for p in after}


def _stored(tmp_path) -> list[dict]:
    """The registered processes as the API lists them, without what moves with the clock (the
    next fire of a trigger changes when a minute passes between two reads)."""
    listed = json.loads(run(tmp_path, "list", "processes", "--json").stdout)
    return [{k: v for k, v in p.items() if k != "next_fire"} for p in listed]
