"""One settings model: env and pygent.toml, validated."""

import pytest

from pygent.errors import ConfigError
from pygent.settings import get_settings


def test_environment_overrides_defaults_and_is_read_at_call_time(monkeypatch):
    monkeypatch.setenv("PYGENT_IMAGE", "minimal")
    assert get_settings().pygent_image == "minimal"
    monkeypatch.setenv("PYGENT_IMAGE", "python")
    assert get_settings().pygent_image == "python"


def test_pygent_toml_is_read_and_env_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pygent.toml").write_text('pygent_image = "minimal"\npygent_max_tasks = 3\n')
    s = get_settings()
    assert (s.pygent_image, s.pygent_max_tasks) == ("minimal", 3)
    monkeypatch.setenv("PYGENT_MAX_TASKS", "5")
    assert get_settings().pygent_max_tasks == 5


def test_pygent_config_names_another_file(tmp_path, monkeypatch):
    cfg = tmp_path / "other.toml"
    cfg.write_text('pygent_model = "my-model"\n')
    monkeypatch.setenv("PYGENT_CONFIG", str(cfg))
    assert get_settings().pygent_model == "my-model"


@pytest.mark.parametrize("name,value", [("PYGENT_MAX_TASKS", "many"), ("PYGENT_MAX_TASKS", "0"), ("PYGENT_POOL_SIZE", "-1"), ("PYGENT_COMMAND_TIMEOUT", "0")])
def test_bad_environment_values_are_errors_not_ignored(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        get_settings()


def test_unknown_keys_in_pygent_toml_are_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pygent.toml").write_text('pygent_imag = "typo"\n')
    with pytest.raises(ConfigError, match="pygent_imag|PYGENT_IMAG"):
        get_settings()
