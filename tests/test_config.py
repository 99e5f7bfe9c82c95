"""distribute.config: environment first, then .env; masked settings; a Worker from settings."""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Iterator

import pytest

from distribute import DistributeError, Worker, config, init_remote
from distribute.redact import SECRET_ENV_VARS
from distribute.settings import HEARTBEATS_PER_JOB_LEASE, KINDS, table_default

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "distribute"


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
    assert set(settings) == {row.name for row in config.SETTINGS}
    assert settings["DISTRIBUTE_REMOTE"] == "https://***@git.example/x.git"
    assert "hunter2" not in repr(settings)
    assert settings["DISTRIBUTE_JOB_LEASE_S"] == "100"
    assert settings["DISTRIBUTE_HEARTBEAT_S"] == "20"  # a fifth of the job lease
    assert settings["DISTRIBUTE_GRACE_S"] == "5"
    assert settings["DISTRIBUTE_LOCK_LEASE_S"] == "60"
    assert settings["DISTRIBUTE_RUN"] is None


def test_readers_take_default_and_bounds_from_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    assert config.seconds_setting("DISTRIBUTE_LOCK_LEASE_S") == 60
    assert config.seconds_setting("DISTRIBUTE_LOCK_LEASE_S", 2.5) == 2.5  # what the caller gives
    assert config.seconds_setting("DISTRIBUTE_GRACE_S", 0) == 0  # its row allows zero...
    with pytest.raises(DistributeError, match="DISTRIBUTE_POLL_S must be positive"):
        config.seconds_setting("DISTRIBUTE_POLL_S", 0)  # ... this one does not
    monkeypatch.setenv("DISTRIBUTE_LOCK_LEASE_S", "soon")
    with pytest.raises(DistributeError, match="DISTRIBUTE_LOCK_LEASE_S must be a number"):
        config.seconds_setting("DISTRIBUTE_LOCK_LEASE_S")
    monkeypatch.setenv("DISTRIBUTE_LOCK_LEASE_S", "-1")
    with pytest.raises(DistributeError, match="positive"):
        config.seconds_setting("DISTRIBUTE_LOCK_LEASE_S")
    monkeypatch.setenv("DISTRIBUTE_NET_RETRIES", "101")
    with pytest.raises(DistributeError, match="DISTRIBUTE_NET_RETRIES must be .* at most 100"):
        config.count_setting("DISTRIBUTE_NET_RETRIES")
    monkeypatch.setenv("DISTRIBUTE_SLIM_CLONE", "maybe")
    with pytest.raises(DistributeError, match="DISTRIBUTE_SLIM_CLONE must be one of"):
        config.flag_setting("DISTRIBUTE_SLIM_CLONE")
    assert config.flag_setting("DISTRIBUTE_SLIM_CLONE", False) is False
    with pytest.raises(TypeError, match="DISTRIBUTE_POLL_S is a seconds setting"):
        config.count_setting("DISTRIBUTE_POLL_S")


def test_every_default_in_the_table_passes_its_own_rule() -> None:
    readers = {"seconds": config.seconds_setting, "number": config.number_setting,
               "count": config.count_setting}
    assert {row.kind for row in config.SETTINGS} <= set(KINDS)
    assert len({row.name for row in config.SETTINGS}) == len(config.SETTINGS)
    for row in config.SETTINGS:
        if row.default is None:
            assert row.kind in ("text", "secret") or row.shown, row.name
        elif row.kind in readers:
            assert readers[row.kind](row.name, row.default) == float(row.default), row.name
        elif row.kind == "flag":
            assert config.flag_setting(row.name, row.default) in (True, False)


def _names_read_in_package() -> dict[str, set[str]]:
    """Every string constant in the package that is exactly a setting's name (what readers get)."""
    name = re.compile(r"(DISTRIBUTE|HF|VAST)_[A-Z0-9_]*[A-Z0-9]")
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and name.fullmatch(node.value):
                found.setdefault(node.value, set()).add(str(path.relative_to(PACKAGE)))
    return found


def test_every_setting_read_in_the_package_has_a_row() -> None:
    rows = {row.name for row in config.SETTINGS}
    found = _names_read_in_package()
    # (secrets only masked, never read by the package: the node image's entry script reads them)
    masked_only = set(SECRET_ENV_VARS)
    missing = {name: where for name, where in found.items()
               if name not in rows and name not in masked_only}
    assert not missing, f"settings without a row in distribute.settings.SETTINGS: {missing}"
    assert rows <= set(found), f"rows nobody reads: {rows - set(found)}"


def test_get_settings_shows_the_table_defaults(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # (no .env here or above)
    for row in config.SETTINGS:
        monkeypatch.delenv(row.name, raising=False)
    shown = config.get_settings()
    assert list(shown) == [row.name for row in config.SETTINGS]
    for row in config.SETTINGS:
        if row.name == "DISTRIBUTE_HEARTBEAT_S":  # computed from the job lease
            lease = float(table_default("DISTRIBUTE_JOB_LEASE_S"))
            assert shown[row.name] == f"{lease / HEARTBEATS_PER_JOB_LEASE:g}"
        else:
            assert shown[row.name] == row.shown_default, row.name


def test_hub_settings_defaults_are_the_table_s(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    hub = pytest.importorskip("distribute.hub")
    monkeypatch.chdir(tmp_path)
    for row in config.SETTINGS:
        monkeypatch.delenv(row.name, raising=False)
    monkeypatch.setenv("HF_REPO_ID", "me/results")
    assert hub.settings() == hub.HubSettings(repo_id="me/results")
    assert hub.HubSettings(repo_id="x").commit_jobs == int(
        table_default("DISTRIBUTE_MIRROR_BATCH"))


def _documented_defaults() -> Iterator[tuple[str, str, str]]:
    """``(file, setting, default)`` as README.md and docs/ state them: a ``default`` column, or
    prose like ```NAME` (60)`` and ``(`NAME`, 30)``."""
    prose = re.compile(r"`([A-Z][A-Z0-9_]+)`(?:,| \()\s*([0-9][0-9.]*)")
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        default_column = False
        for line in path.read_text(encoding="utf-8").splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if line.startswith("|") and len(cells) > 1 and cells[1] == "default":
                default_column = True
            elif not line.startswith("|"):
                default_column = False
            elif default_column and cells[0].startswith("`") and not cells[1].startswith("-"):
                yield path.name, cells[0].strip("`"), cells[1]
            for name, value in prose.findall(line):
                yield path.name, name, value


def test_docs_state_the_table_defaults() -> None:
    rows = {row.name: row for row in config.SETTINGS}
    checked = 0
    for where, name, stated in _documented_defaults():
        row = rows.get(name)
        if row is None:
            continue
        value = stated.strip("`").strip()
        if value.startswith("—"):
            assert row.default is None, f"{where}: {name} has the default {row.default}"
        elif row.default is not None:
            same = (float(value) == float(row.default) if row.kind in ("seconds", "number", "count")
                    else value == row.default)
            assert same, f"{where} says {name} defaults to {stated}, the table says {row.default}"
            checked += 1
    assert checked > 10  # (the patterns still find the docs' defaults)


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
