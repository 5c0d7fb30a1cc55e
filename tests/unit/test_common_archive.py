"""common/archive.py's restore start, shared by ``bart node restore`` and ``bart central
restore`` (issue 16: the two had the same checks and staging, written twice)."""

from __future__ import annotations

from pathlib import Path

import pytest

from central.backup import CentralBackupInfo, restore_central
from common import archive
from node.backup import BackupInfo, restore_node


def _backup(tmp_path: Path, kind: str) -> Path:
    src = tmp_path / "made"
    (src / "data").mkdir(parents=True)
    (src / "data" / "x.txt").write_text("kept")
    archive.write_manifest(src, {"v": 1, "kind": kind})
    out = tmp_path / f"{kind}.bartbackup"
    archive.pack(src, out)
    return out


def _stagings(parent: Path) -> list[Path]:
    return sorted(parent.glob(".bart-restore-*"))


def test_restoring_yields_the_unpacked_tree_and_always_cleans_up(tmp_path: Path) -> None:
    backup, target = _backup(tmp_path, "node"), tmp_path / "restored"
    with archive.restoring(backup, target, "node") as (staging, manifest):
        assert (staging / "data" / "x.txt").read_text() == "kept"
        assert manifest["kind"] == "node" and staging.parent == tmp_path
    assert _stagings(tmp_path) == []
    with pytest.raises(RuntimeError), archive.restoring(backup, target, "node"):
        raise RuntimeError("a check after unpacking failed")
    assert _stagings(tmp_path) == [] and not target.exists()


def test_restoring_refuses_before_it_unpacks(tmp_path: Path) -> None:
    backup = _backup(tmp_path, "central")
    full = tmp_path / "full"
    full.mkdir()
    (full / "central.toml").write_text("")
    with pytest.raises(archive.ArchiveError, match="is not empty"), \
            archive.restoring(backup, full, "central"):
        pass
    with pytest.raises(archive.ArchiveError, match="does not exist"), \
            archive.restoring(tmp_path / "none", tmp_path / "new", "central"):
        pass
    with pytest.raises(archive.ArchiveError, match="a backup of a central, not of a node"), \
            archive.restoring(backup, tmp_path / "new", "node"):
        pass
    assert _stagings(tmp_path) == []


def test_node_and_central_refuse_in_the_same_words(tmp_path: Path) -> None:
    words = []
    for restore in (restore_node, restore_central):
        with pytest.raises(archive.ArchiveError) as caught:
            restore(tmp_path / "missing.bartbackup", tmp_path / "new")
        words.append(str(caught.value))
    assert words[0] == words[1] == f"{tmp_path / 'missing.bartbackup'} does not exist " \
                                   "(or is not a file)"
    assert issubclass(BackupInfo, archive.BackupInfo)
    assert issubclass(CentralBackupInfo, archive.BackupInfo)
