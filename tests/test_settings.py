"""settings.py: defaults, the settings file, environment overrides, and refusals naming the key."""

from __future__ import annotations

import pytest

from db.errors import InvalidInput
from settings import load_settings


def test_settings_defaults_resolve_against_working_directory(tmp_path):
    s = load_settings({}, cwd=tmp_path)
    assert s.var_dir == str(tmp_path / "var")
    assert s.store_uri == f"sqlite:///{tmp_path / 'var' / 'tactus.db'}"
    assert s.log_dir == str(tmp_path / "var" / "log")
    assert s.pid_dir == str(tmp_path / "var" / "run")
    assert s.admin_token_file == str(tmp_path / "var" / "admin.token")
    assert s.context_file == str(tmp_path / "process_context.py")
    assert (s.broker_uri, s.timezone, s.mx_host, s.mx_port) == ("store", "UTC", "127.0.0.1", 5000)
    assert s.box_id


def test_settings_derived_paths_follow_var_dir(tmp_path):
    s = load_settings({"TACTUS_VAR_DIR": "data"}, cwd=tmp_path)
    assert s.store_uri == f"sqlite:///{tmp_path / 'data' / 'tactus.db'}"
    assert s.pid_dir == str(tmp_path / "data" / "run")


@pytest.mark.parametrize("suffix", [".toml", ".yaml", ".json"])
def test_settings_file_then_environment(tmp_path, suffix):
    # given a settings file in each format, and one environment override
    body = {
        ".toml": 'mx_port = 6000\ntimezone = "Europe/Riga"\nbox_id = "box1"\n',
        ".yaml": "mx_port: 6000\ntimezone: Europe/Riga\nbox_id: box1\n",
        ".json": '{"mx_port": 6000, "timezone": "Europe/Riga", "box_id": "box1"}',
    }[suffix]
    (tmp_path / f"tactus{suffix}").write_text(body)
    env = {"TACTUS_SETTINGS": f"tactus{suffix}", "TACTUS_BOX_ID": "box2"}
    # when
    s = load_settings(env, cwd=tmp_path)
    # then
    assert (s.mx_port, s.timezone, s.box_id) == (6000, "Europe/Riga", "box2")


@pytest.mark.parametrize(
    ("env", "field", "message"),
    [
        ({"TACTUS_MX_PORT": "http"}, "mx_port", "must be an integer port"),
        ({"TACTUS_MX_PORT": "70000"}, "mx_port", "between 1 and 65535"),
        ({"TACTUS_TIMEZONE": "Mars/Olympus"}, "timezone", "unknown IANA zone"),
        ({"TACTUS_STORE_URI": "oracle://x"}, "store_uri", "unknown scheme 'oracle'"),
        ({"TACTUS_STORE_URI": "sqlite://relative.db"}, "store_uri", "sqlite:///path"),
        ({"TACTUS_BROKER_URI": "kafka://x"}, "broker_uri", "must be 'store' or an amqp"),
        ({"TACTUS_BOX_ID": "bad box!"}, "box_id", "use letters"),
        ({"TACTUS_SETTINGS": "missing.toml"}, "TACTUS_SETTINGS", "cannot read"),
    ],
)
def test_settings_bad_value_names_the_key(tmp_path, env, field, message):
    with pytest.raises(InvalidInput) as err:
        load_settings(env, cwd=tmp_path)
    assert err.value.field == field
    assert message in str(err.value)


def test_settings_file_unknown_key_refused(tmp_path):
    (tmp_path / "s.toml").write_text("mx_prot = 5001\n")
    with pytest.raises(InvalidInput) as err:
        load_settings({"TACTUS_SETTINGS": "s.toml"}, cwd=tmp_path)
    assert err.value.field == "mx_prot" and "unknown setting" in str(err.value)


def test_settings_file_that_does_not_parse(tmp_path):
    (tmp_path / "s.toml").write_text("mx_port = = 1\n")
    with pytest.raises(InvalidInput, match="does not parse"):
        load_settings({"TACTUS_SETTINGS": "s.toml"}, cwd=tmp_path)


def test_settings_are_immutable_and_replace_validates(tmp_path):
    s = load_settings({}, cwd=tmp_path)
    with pytest.raises(AttributeError):
        s.mx_port = 1
    assert s.replace(mx_port=5050).mx_port == 5050
    with pytest.raises(InvalidInput):
        s.replace(mx_port=0)


def test_settings_supervisor_keys_defaults_and_overrides(tmp_path):
    # given the defaults, then environment overrides as strings
    s = load_settings({}, cwd=tmp_path)
    assert (s.startsecs, s.startretries, s.stopwaitsecs) == (1.0, 3, 10.0)
    assert (s.backoff_base, s.backoff_cap, s.supervisor_poll, s.stats_interval) == (
        1.0,
        60.0,
        1.0,
        5.0,
    )
    # when
    env = {"TACTUS_STARTSECS": "0.5", "TACTUS_STARTRETRIES": "5", "TACTUS_BACKOFF_CAP": "300"}
    s = load_settings(env, cwd=tmp_path)
    # then
    assert (s.startsecs, s.startretries, s.backoff_cap) == (0.5, 5, 300.0)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("TACTUS_STARTRETRIES", "many", "must be a number"),
        ("TACTUS_STARTRETRIES", "-1", "at least 0"),
        ("TACTUS_STOPWAITSECS", "-2", "at least 0"),
        ("TACTUS_SUPERVISOR_POLL", "0", "at least 0.05"),
    ],
)
def test_settings_supervisor_bad_value_names_the_key(tmp_path, key, value, message):
    with pytest.raises(InvalidInput) as err:
        load_settings({key: value}, cwd=tmp_path)
    assert err.value.field == key.removeprefix("TACTUS_").lower()
    assert message in str(err.value)
