"""The quickstart and the other examples run on a fresh machine with nothing but git."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from support.remotes import git_out, ledger_file

from distribute.protocol import job_path

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
README = EXAMPLES.parent / "README.md"


def _shape(line: str) -> str:
    """A line of output with what changes from run to run masked: URLs, numbers, bars, spacing."""
    line = re.sub(r"file://\S+", "URL", line)
    line = re.sub(r"\[[#-]+\]", "[BAR]", line)
    line = re.sub(r"\d+(\.\d+)?", "N", line)
    return " ".join(line.split())


def readme_excerpt() -> list[str]:
    """The lines of the quickstart's output that the README shows."""
    text = README.read_text(encoding="utf-8").split("## Quickstart", 1)[1]
    block = text.split("```", 2)[1]
    return [line for line in block.splitlines() if line.strip() and line.strip() != "…"]


def run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_quickstart_drains_twenty_jobs(tmp_path: Path) -> None:
    out = run(sys.executable, str(EXAMPLES / "quickstart.py"), "--dir", str(tmp_path / "qs")).stdout
    assert "OK: 20/20 jobs done by 4 workers" in out
    shapes = [_shape(line) for line in out.splitlines()]
    for line in readme_excerpt():  # the README shows what the quickstart prints today
        assert any(_shape(line) in shape for shape in shapes), f"not in the output: {line!r}"
    assert "$ distribute status" in out and "0 queued · 0 running · 20 done · 0 failed" in out
    assert "$ distribute log" in out and "finished job task-20" in out
    url = (tmp_path / "qs" / "remote.git").as_uri()
    assert len(ledger_file(url, "done.txt", tmp_path)) == 20
    result = git_out(url, "show", f"master:{job_path('task-07')}/result.json", tmp=tmp_path)
    assert '"square": 49' in result


def test_demo_command(tmp_path: Path) -> None:
    out = run("distribute", "demo", "--jobs", "5", "--workers", "2").stdout
    assert "OK: 5/5 jobs done by 2 workers" in out
    assert "demo-cli added 5 jobs" in out


def test_readme_and_whetlab_examples(tmp_path: Path) -> None:
    out = run(sys.executable, str(EXAMPLES / "readme_loop.py")).stdout
    assert "queue_jobs_func:  ['alpha', 'beta', 'gamma']" in out
    assert "random_jobs_func: ['" in out
    out = run(sys.executable, str(EXAMPLES / "whetlab_loop.py")).stdout
    assert out.startswith("8 trials; best x=")
