"""Central's settings (central/config.py): file, environment, flags, and plain-words errors."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

import central.config
from bart.errors import explain
from central.config import CONFIG_FILE, CentralSettings
from central.errors import CentralConfigError

#: A central.toml as ``bart central init`` wrote it before the settings were
#: pydantic-settings: it must keep loading unchanged.
OLD_FILE = """# Bart central settings. See docs/central.md.

name = "haaglanden"
database_url = ""
public_url = "https://central.example.nl"
http_host = "0.0.0.0"
http_port = 8091
enrol_code_ttl_s = 86400
silent_after_s = 900
max_batch_bytes = 8388608
retention_days = 365
trusted_proxies = ["10.0.0.0/8"]
"""


def _dir(tmp_path: Path, text: str = OLD_FILE) -> Path:
    (tmp_path / CONFIG_FILE).write_text(text, encoding="utf-8")
    return tmp_path


@pytest.fixture(autouse=True)
def _no_central_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CentralSettings.model_fields:
        monkeypatch.delenv(f"BART_CENTRAL_{name.upper()}", raising=False)


def test_doctests() -> None:
    failures, _ = doctest.testmod(central.config)
    assert failures == 0


def test_an_existing_file_loads_unchanged(tmp_path: Path) -> None:
    s = CentralSettings.load(_dir(tmp_path))
    assert (s.name, s.public_url, s.http_host, s.http_port) == (
        "haaglanden", "https://central.example.nl", "0.0.0.0", 8091)
    assert s.trusted_proxies == ["10.0.0.0/8"] and s.origin == "central-haaglanden"


def test_defaults_and_names_stay_as_they_were() -> None:
    s = CentralSettings()
    assert s.model_dump() == {
        "name": "central", "database_url": "", "public_url": "http://127.0.0.1:8090",
        "http_host": "127.0.0.1", "http_port": 8090, "enrol_code_ttl_s": 86_400,
        "silent_after_s": 900, "max_batch_bytes": 8 * 1024 * 1024, "retention_days": 365,
        "trusted_proxies": []}


def test_rendered_file_loads_back_the_same(tmp_path: Path) -> None:
    s = CentralSettings(name="elders", http_port=8123, trusted_proxies=["127.0.0.1"])
    (tmp_path / CONFIG_FILE).write_text(s.render_toml(), encoding="utf-8")
    assert CentralSettings.load(tmp_path) == s


def test_environment_beats_the_file_and_flags_beat_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = _dir(tmp_path)
    monkeypatch.setenv("BART_CENTRAL_HTTP_PORT", "9001")
    monkeypatch.setenv("BART_CENTRAL_TRUSTED_PROXIES", '["192.0.2.1"]')
    monkeypatch.setenv("BART_CENTRAL_DIR", str(tmp_path))  # the data directory, no setting
    s = CentralSettings.load(base)
    assert s.http_port == 9001 and s.trusted_proxies == ["192.0.2.1"]
    assert s.public_url == "https://central.example.nl"  # the file's, where no variable
    assert CentralSettings.load(base, http_port=9002, database_url=None).http_port == 9002


def test_a_wrong_value_in_the_file_is_said_in_words(tmp_path: Path) -> None:
    base = _dir(tmp_path, OLD_FILE.replace("8091", "0").replace('"0.0.0.0"', '"x"')
                .replace('["10.0.0.0/8"]', '["*"]') + 'colour = "blue"\n')
    with pytest.raises(CentralConfigError) as caught:
        CentralSettings.load(base)
    text = str(caught.value)
    assert text.startswith(f"{base / CONFIG_FILE}: ")
    assert "http_port must be at least 1 (not 0)" in text
    assert "trusted_proxies: '*' is not an IP address" in text
    assert "colour is not a setting of central" in text
    assert "pydantic" not in text and "http" not in text.split("http_port", 1)[0]
    said = explain(caught.value).text()  # what `bart central run` prints
    assert "errors.pydantic.dev" not in said and "http_port must be at least 1" in said


def test_a_wrong_value_from_the_environment_names_the_variable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BART_CENTRAL_HTTP_PORT", "many")
    with pytest.raises(CentralConfigError) as caught:
        CentralSettings.load(_dir(tmp_path))
    assert ("http_port (from $BART_CENTRAL_HTTP_PORT) must be a whole number (not 'many')"
            in explain(caught.value).text())


def test_a_broken_or_missing_file_is_said_in_words(tmp_path: Path) -> None:
    with pytest.raises(CentralConfigError, match=r"no central in .* bart central init"):
        CentralSettings.load(tmp_path)
    with pytest.raises(CentralConfigError, match="not valid TOML"):
        CentralSettings.load(_dir(tmp_path, "name = \n"))


def test_a_name_that_is_no_slug_is_told_the_rule(tmp_path: Path) -> None:
    """``bart central init --name Test`` says what a name may hold, with an example."""
    import subprocess
    import sys

    import bart.errors
    from sync.bodies import SLUG

    assert SLUG.pattern == bart.errors._SLUG_PATTERN  # the words follow the one rule
    bart_command = Path(sys.executable).with_name("bart")
    done = subprocess.run([str(bart_command), "central", "init", "--data-dir",
                           str(tmp_path / "c"), "--name", "Test"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert ("--name must be a name of lower-case letters, digits and '-' (not first or "
            "last), at most 63, e.g. escamp-west (not 'Test')") in done.stderr
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())
