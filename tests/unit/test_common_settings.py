"""common/settings.py: node and central read flags and the environment, nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from central.config import CentralSettings
from common.settings import FileSettings
from node.config import NodeSettings


@pytest.mark.parametrize("cls", [NodeSettings, CentralSettings])
def test_one_source_policy(cls: type[FileSettings]) -> None:
    assert issubclass(cls, FileSettings)
    assert cls.settings_customise_sources.__func__ is (  # type: ignore[attr-defined]
        FileSettings.settings_customise_sources.__func__)  # type: ignore[attr-defined]


def test_flags_beat_the_environment_and_a_dotenv_file_is_not_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("BART_HTTP_PORT=1111\nBART_CENTRAL_HTTP_PORT=2222\n")
    for name in ("BART_HTTP_PORT", "BART_CENTRAL_HTTP_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert NodeSettings(data_dir=tmp_path).http_port == 8080
    assert CentralSettings().http_port == 8090
    monkeypatch.setenv("BART_HTTP_PORT", "8181")
    monkeypatch.setenv("BART_CENTRAL_HTTP_PORT", "8191")
    assert NodeSettings(data_dir=tmp_path).http_port == 8181
    assert CentralSettings().http_port == 8191
    assert NodeSettings(data_dir=tmp_path, http_port=9000).http_port == 9000
    assert CentralSettings(http_port=9001).http_port == 9001
