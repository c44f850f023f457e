"""Configuration: sources, precedence and the errors a technician sees."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import Config, load_config
from appliance.errors import ConfigError


def test_defaults_without_file_or_environment(tmp_path: Path) -> None:
    config = load_config(tmp_path / "missing.toml", env={})
    assert config == Config()
    assert config.pcrs == (7, 11)
    assert config.trust_dir == Path("/var/lib/appliance/trust")


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    file = tmp_path / "a.toml"
    file.write_text('pcrs = [0, 7]\napi_port = 9000\nstate_dir = "/srv/a"\n')
    env = {"APPLIANCE_API_PORT": "9100", "APPLIANCE_STATE_DIR": "/srv/b"}
    config = load_config(file, env=env, overrides={"state_dir": "/srv/c", "tcti": None})
    assert config.pcrs == (0, 7)
    assert config.api_port == 9100
    assert config.state_dir == Path("/srv/c")
    assert config.tcti is None


def test_the_body_timeout_takes_fractions_of_a_second(tmp_path: Path) -> None:
    file = tmp_path / "t.toml"
    file.write_text("api_body_timeout_seconds = 2.5\n")
    assert load_config(file, env={}).api_body_timeout_seconds == 2.5
    assert Config().api_body_timeout_seconds == 30


def test_config_file_named_by_environment(tmp_path: Path) -> None:
    file = tmp_path / "b.toml"
    file.write_text('pcrs = "11, 7"\n')
    assert load_config(env={"APPLIANCE_CONFIG": str(file)}).pcrs == (7, 11)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("api_port = 70000", "not a port number"),
        ("pcrs = 'seven'", "not a list of PCR numbers"),
        ("colour = 'blue'", "unknown setting 'colour'"),
        ("pcrs = [", "cannot read configuration"),
        ("log_level = 'loud'", "log_level 'loud' is unknown"),
        ("api_body_timeout_seconds = 0", "api_body_timeout_seconds is '0'; it must be a number"),
        ("api_body_timeout_seconds = 'soon'", "seconds above 0"),
        ("api_body_timeout_seconds = nan", "seconds above 0"),
    ],
)
def test_bad_settings_are_named(tmp_path: Path, text: str, message: str) -> None:
    file = tmp_path / "c.toml"
    file.write_text(text + "\n")
    with pytest.raises(ConfigError, match=message):
        load_config(file, env={})


def test_config_is_immutable() -> None:
    with pytest.raises(AttributeError):
        Config().api_port = 1  # type: ignore[misc]
