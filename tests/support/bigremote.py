"""Build a remote with many done jobs in seconds, laid out exactly as the library writes it.

``git fast-import`` writes one commit on ``master`` holding the ledger (``done.txt`` with the most
recent records, older ones in ``done/<seq>.txt`` segments), each done job's result under
``updates/<ab>/<cd>/<slug>/`` (or flat ``updates/<slug>/`` for the first layout), the layout file,
and queued jobs. Used by tests and by ``benchmarks/history.py``.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

from distribute.protocol import (DONE_RECENT, FLAT, LAYOUT_FILE, SHARDED, job_path, layout_text,
                                 segment_path)


def build(bare: Path, done: int, queued: int = 50, layout: int = SHARDED,
          segmented: bool = True, branches: bool = False) -> None:
    """Create ``bare`` holding ``done`` finished jobs (``job0000001``...) and ``queued`` queued
    ones (``q0001``...); ``branches`` keeps a job branch per done job (the old library did)."""
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    for key, value in (("uploadpack.allowFilter", "true"), ("uploadpack.allowAnySHA1InWant", "true")):
        subprocess.run(["git", "-C", str(bare), "config", key, value], check=True)
    jobs = [f"job{i:07d}" for i in range(1, done + 1)]
    lines = [f"{j}\tw{i % 8}\t2026-01-01T00:00:00Z\t1\n" for i, j in enumerate(jobs)]
    recent = lines if not segmented else lines[-DONE_RECENT:] if len(lines) >= DONE_RECENT else lines
    older = lines[:len(lines) - len(recent)]
    proc = subprocess.Popen(["git", "fast-import", "--quiet"], cwd=bare, stdin=subprocess.PIPE)
    assert proc.stdin is not None
    out = proc.stdin

    def blob(mark: int, text: str) -> None:
        data = text.encode()
        out.write(f"blob\nmark :{mark}\ndata {len(data)}\n".encode() + data + b"\n")

    blob(1, "".join(recent))
    blob(2, "")
    blob(3, "".join(f"q{i:04d}\n" for i in range(1, queued + 1)))
    blob(4, "a result\n")
    blob(5, layout_text(layout))
    segments = [older[i:i + DONE_RECENT] for i in range(0, len(older), DONE_RECENT)]
    for k, seg in enumerate(segments):
        blob(10 + k, "".join(seg))
    message = b"initialise the distribute job ledger\n"
    out.write(b"commit refs/heads/master\ncommitter w <w@distribute> 1767225600 +0000\n"
              b"data %d\n%s" % (len(message), message))
    out.write(b"M 100644 :1 done.txt\nM 100644 :2 running.txt\nM 100644 :2 failed.txt\n"
              b"M 100644 :3 jobs.txt\n")
    if layout != FLAT:
        out.write(f"M 100644 :5 {LAYOUT_FILE}\n".encode())
    for k in range(len(segments)):
        out.write(f"M 100644 :{10 + k} {segment_path(k + 1)}\n".encode())
    for j in jobs:
        out.write(f"M 100644 :4 {job_path(j, layout)}/result.txt\n".encode())
    out.write(b"\n")
    if branches:
        for i, j in enumerate(jobs):
            out.write(f"reset refs/heads/w{i % 8}/{j}\nfrom refs/heads/master\n\n".encode())
    out.close()
    assert proc.wait() == 0
