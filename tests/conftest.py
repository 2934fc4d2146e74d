"""Hermetic defaults for every test: the per-user data folder (studio.settings.default_data_dir) lies in a
temporary folder, so a test that builds Settings() without a data_dir never writes to the real home.
Tests import the drawer and vision modules directly, not through the loaders that install the filter of
known harmless library warnings, so the filter is installed here too."""

from __future__ import annotations

from pathlib import Path

import pytest

from studio.library_logs import quiet_known_library_warnings

quiet_known_library_warnings()


@pytest.fixture(autouse=True)
def _private_user_data_folder(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path_factory.mktemp("xdg-data")
    monkeypatch.setenv("XDG_DATA_HOME", str(folder))
    return folder
