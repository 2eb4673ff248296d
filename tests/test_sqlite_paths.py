"""``connect()`` on a path whose folder is missing: a message that says so, and
that ``sqlite:///`` (three slashes) is relative. Nothing is created."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import pmsq


def test_a_relative_url_whose_folder_is_missing_says_how_to_write_an_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(pmsq.StorageError) as info:
        pmsq.connect("sqlite:///var/lib/pms/pms.db")
    message = str(info.value)
    assert f"the folder {tmp_path}/var/lib/pms does not exist" in message
    assert "relative to the working directory" in message
    assert "(sqlite:////var/lib/pms/pms.db)" in message
    assert "CANTOPEN" not in message
    assert os.listdir(tmp_path) == []


def test_an_absolute_path_whose_folder_is_missing_names_the_folder(tmp_path: Path) -> None:
    for url in (str(tmp_path / "pms" / "pms.db"), f"sqlite:///{tmp_path}/pms/pms.db"):
        with pytest.raises(pmsq.StorageError) as info:
            pmsq.connect(url)
        message = str(info.value)
        assert f"the folder {tmp_path}/pms does not exist" in message
        assert "four" not in message  # the URL was absolute already: no slash advice
    assert os.listdir(tmp_path) == []


def test_three_and_four_slashes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    with pmsq.connect("sqlite:///pms.db", durability="normal") as b:
        b.declare_queue("calendar")
    assert (tmp_path / "here" / "pms.db").exists()
    with pmsq.connect(f"sqlite:///{tmp_path}/abs.db", durability="normal") as b:
        b.declare_queue("calendar")
    assert (tmp_path / "abs.db").exists()
