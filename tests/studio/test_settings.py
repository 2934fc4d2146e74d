"""Settings from STUDIO_* environment variables and a TOML file."""

from __future__ import annotations

from pathlib import Path

import pytest

from studio.settings import Settings


def test_environment_and_toml_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "studio.toml"
    config.write_text(
        'default_preset = "anime"\nmax_subjects = 5\n'
        '[presets.anime]\nkind = "sd15"\nbase = "/models/anime.safetensors"\ndtype = "float16"\n'
        '[llm]\nmodel = "from-file"\n'
    )
    monkeypatch.setenv("STUDIO_CONFIG_FILE", str(config))
    monkeypatch.setenv("STUDIO_LLM__MODEL", "from-env")
    monkeypatch.setenv("STUDIO_LLM__BASE_URL", "")
    monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path / "data"))
    settings = Settings()
    assert settings.preset().base == "/models/anime.safetensors" and settings.preset().dtype == "float16"
    assert settings.max_subjects == 5
    assert settings.llm.model == "from-env"  # the environment wins over the file
    assert settings.llm.base_url is None  # blank means: offline planner
    assert settings.resolved_database_url == f"sqlite:///{(tmp_path / 'data' / 'studio.db').resolve()}"
    with pytest.raises(KeyError, match="unknown model preset"):
        settings.preset("nope")


def test_defaults_need_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("STUDIO_CONFIG_FILE", "STUDIO_DEFAULT_PRESET", "STUDIO_LLM__BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.preset().kind == "tiny" and settings.llm.base_url is None and settings.auth.enabled
    assert {"tiny", "tiny-sdxl", "sd15", "sdxl"} <= set(settings.presets)
