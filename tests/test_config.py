from pathlib import Path

import mamlbook.config as config


def test_smoke_switch_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("MAMLBOOK_SMOKE", "1")
    assert config.smoke() and config.pick(20_000, 50) == 50
    monkeypatch.setenv("MAMLBOOK_SMOKE", "0")
    assert not config.smoke() and config.pick(20_000, 50) == 20_000
    monkeypatch.delenv("MAMLBOOK_SMOKE")
    assert not config.smoke()


def test_data_root_prefers_argument_then_environment_then_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("MAMLBOOK_DATA", str(tmp_path / "env"))
    assert config.data_root(tmp_path / "arg") == tmp_path / "arg"
    assert config.data_root() == tmp_path / "env"
    monkeypatch.delenv("MAMLBOOK_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert config.data_root() == Path(tmp_path / "cache" / "mamlbook" / "data")
