"""distribute.config: environment first, then .env; masked settings; a Worker from settings."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from distribute import DistributeError, Worker, config, init_remote


@pytest.fixture(autouse=True)
def _fresh_dotenv() -> Iterator[None]:
    """Forget the .env read by an earlier test (the module caches it)."""
    config.use_env_file(None)
    yield
    config.use_env_file(None)


def test_environment_wins_over_dotenv_found_upward(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("DISTRIBUTE_NAME=from-file\nDISTRIBUTE_PATH=/from/file\n"
                                   "DISTRIBUTE_POLL_S=\n")
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    assert config.get_env("DISTRIBUTE_NAME") == "from-file"
    assert config.setting_source("DISTRIBUTE_NAME") == str(tmp_path / ".env")
    monkeypatch.setenv("DISTRIBUTE_NAME", "from-env")
    assert config.get_env("DISTRIBUTE_NAME") == "from-env"
    assert config.setting_source("DISTRIBUTE_NAME") == "environment"
    assert config.get_env("DISTRIBUTE_POLL_S", "7") == "7"  # empty counts as unset
    assert config.get_env("DISTRIBUTE_NOPE") is None
    assert config.setting_source("DISTRIBUTE_NOPE") == "default"


def test_explicit_env_file(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DISTRIBUTE_NAME=default-file\n")
    other = tmp_path / "prod.env"
    other.write_text("DISTRIBUTE_NAME=prod\n")
    config.use_env_file(str(other))
    assert config.get_env("DISTRIBUTE_NAME") == "prod"
    with pytest.raises(DistributeError, match="does not exist"):
        config.use_env_file(str(tmp_path / "missing.env"))


def test_get_settings_resolves_and_masks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("DISTRIBUTE_REMOTE=https://bob:hunter2-secret@git.example/x.git\n"
                                   "DISTRIBUTE_JOB_LEASE_S=100\n")
    monkeypatch.setenv("DISTRIBUTE_GRACE_S", "5")
    settings = config.get_settings()
    assert set(settings) == {name for name, _, _ in config.SETTINGS}
    assert settings["DISTRIBUTE_REMOTE"] == "https://***@git.example/x.git"
    assert "hunter2" not in repr(settings)
    assert settings["DISTRIBUTE_JOB_LEASE_S"] == "100"
    assert settings["DISTRIBUTE_HEARTBEAT_S"] == "20"  # a fifth of the job lease
    assert settings["DISTRIBUTE_GRACE_S"] == "5"
    assert settings["DISTRIBUTE_LOCK_LEASE_S"] == "60"
    assert settings["DISTRIBUTE_RUN"] is None


def test_get_float_checks_values(monkeypatch: pytest.MonkeyPatch) -> None:
    assert config.get_float("DISTRIBUTE_LOCK_LEASE_S", 60) == 60
    assert config.get_float("DISTRIBUTE_LOCK_LEASE_S", 60, 2.5) == 2.5
    monkeypatch.setenv("DISTRIBUTE_LOCK_LEASE_S", "soon")
    with pytest.raises(DistributeError, match="must be a number"):
        config.get_float("DISTRIBUTE_LOCK_LEASE_S", 60)
    monkeypatch.setenv("DISTRIBUTE_LOCK_LEASE_S", "-1")
    with pytest.raises(DistributeError, match="positive"):
        config.get_float("DISTRIBUTE_LOCK_LEASE_S", 60)


def test_create_from_config(file_remote: str, tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DistributeError, match="DISTRIBUTE_REMOTE"):
        config.create_from_config()
    init_remote(file_remote, ["a"])
    (tmp_path / ".env").write_text(f"DISTRIBUTE_REMOTE={file_remote}\nDISTRIBUTE_NAME=cfg\n"
                                   f"DISTRIBUTE_PATH={tmp_path / 'copy'}\n"
                                   "DISTRIBUTE_JOB_LEASE_S=50\n")
    config.use_env_file(None)  # .env is read once per process: forget the earlier (absent) one
    worker = config.create_from_config()
    try:
        assert isinstance(worker, Worker)
        assert (worker.name, worker.path, worker.job_lease_s) == ("cfg", str(tmp_path / "copy"), 50)
        assert worker.heartbeat_s == 10
    finally:
        worker.close()
    worker = config.create_from_config(name="override", path=str(tmp_path / "o"), job_lease_s=9)
    try:
        assert (worker.name, worker.job_lease_s) == ("override", 9)
    finally:
        worker.close()
