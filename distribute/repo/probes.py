"""``distribute doctor``'s probes: what a host does with the pushes the protocol needs (issue 25).

:func:`probe_host` asks the host once for each thing, in a scratch directory (no clone of the
remote: only refs and tiny commits travel) and cleans up after itself: it reads the refs, pushes
a scratch branch and deletes it, pushes a ref under ``refs/distribute/`` and deletes it (where it
is refused, one under ``refs/heads/_distribute/``, where such a remote keeps them), checks
that ``--atomic`` is supported and applied all or nothing, that a push answered "ok" is there when
read back, whether the host speaks protocol v2, and optionally whether it takes a file of a given
size. Each answer is a :class:`Check`; the advice built on them is in :mod:`distribute.cli.doctor`.
"""
from __future__ import annotations

import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..exceptions import DistributeError
from ..protocol import BRANCH_COORD_PREFIX, COORD_PREFIX
from ..redact import redact
from .diagnosis import diagnose
from .refusals import host_limit_mb, too_large
from .transport import RefUpdate, Transport

_EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"


@dataclass
class Check:
    """One probe's answer: ``ok`` (``None``: could not tell), what was seen, and the time taken."""

    name: str
    ok: Optional[bool]
    detail: str
    ms: float = 0.0


@dataclass
class HostReport:
    """Every probe's :class:`Check` by name, and the host's size limit when it named one."""

    url: str
    checks: dict[str, Check] = field(default_factory=dict)
    file_limit_mb: Optional[float] = None

    def ok(self, name: str) -> Optional[bool]:
        """The answer of probe ``name`` (``None``: not run or could not tell)."""
        check = self.checks.get(name)
        return check.ok if check else None

    def as_dict(self) -> dict[str, Any]:
        """The report as plain data (``--json``)."""
        return {"url": self.url, "file_limit_mb": self.file_limit_mb,
                "checks": {name: asdict(check) for name, check in self.checks.items()}}


class _Prober:
    """Runs the probes in a scratch repository whose ``origin`` is the host."""

    def __init__(self, url: str, scratch: Path) -> None:
        self.report = HostReport(redact(url))
        self.t = Transport(scratch, name="distribute-doctor", retries=1, backoff_s=0.1)
        self.t.exempt_from_budget("distribute doctor: a one-off probe")
        self.t.git("init", "--quiet", str(scratch))
        self.t.git("remote", "add", "origin", "--", url)
        self.tag = uuid.uuid4().hex[:8]
        self.commit = self.t.git("commit-tree", _EMPTY_TREE, "-m", "distribute doctor").strip()

    def add(self, name: str, ok: Optional[bool], detail: str, started: float) -> Check:
        check = Check(name, ok, redact(detail), round((time.monotonic() - started) * 1000, 1))
        self.report.checks[name] = check
        return check

    def push(self, updates: list[RefUpdate], atomic: bool = True) -> tuple[bool, str]:
        """Push ``updates`` once; (applied, why not)."""
        args = ["push", "--porcelain", "--atomic" if atomic else "--no-atomic", "--no-verify"]
        args += [f"--force-with-lease={u.ref}:{u.expect}" for u in updates if u.expect is not None]
        args += ["origin", *[f"{u.new or ''}:{u.ref}" for u in updates]]
        status, out, err = self.t._network(args, what="push")
        if status == 0:
            return True, ""
        refused = [line.split("\t")[-1] for line in out.splitlines() if line.startswith("!")]
        big = too_large(err)
        if big is not None or not refused:
            return False, big or diagnose(err).cause
        return False, f"{refused[0]} ({diagnose(err).cause})"

    def read(self) -> None:
        started = time.monotonic()
        refs = self.t.ls_remote()
        self.add("read", True, f"{len(refs)} refs", started)
        times = []
        for _ in range(3):
            one = time.monotonic()
            self.t.ls_remote("refs/heads/master")
            times.append((time.monotonic() - one) * 1000)
        self.add("round trip", True, f"ls-remote median {sorted(times)[1]:.0f} ms", started)
        started = time.monotonic()
        saved = self.t._env
        self.t._env = {**saved, "GIT_TRACE_PACKET": "1"}
        try:
            _, _, trace = self.t._run(["-c", "protocol.version=2", "ls-remote", "origin",
                                       "refs/heads/master"])
        finally:
            self.t._env = saved
        v2 = "< version 2" in trace
        self.add("protocol v2", v2, "spoken" if v2 else "not offered: protocol v0", started)

    def scratch_ref(self, name: str, ref: str) -> bool:
        """Push ``ref`` (must not exist), read it back, delete it."""
        started = time.monotonic()
        applied, why = self.push([RefUpdate(ref, self.commit, expect="")], atomic=False)
        if not applied:
            self.add(name, False, f"refused: {why}", started)
            return False
        seen = self.t.ls_remote(ref).get(ref)
        deleted, _ = self.push([RefUpdate(ref, None, expect=self.commit)], atomic=False)
        if seen != self.commit:
            self.add(name, True, f"{ref} answered ok, yet not there when read back", started)
            self.add("truthful", False, f"a push of {ref} answered ok was not applied", started)
            return True
        self.add(name, True, f"{ref} pushed and deleted" if deleted
                 else f"{ref} pushed; could not delete it", started)
        return True

    def atomic(self) -> None:
        started = time.monotonic()
        args = ["push", "--dry-run", "--porcelain", "--atomic", "--no-verify", "origin",
                f"{self.commit}:{COORD_PREFIX}doctor-{self.tag}"]
        status, _, err = self.t._network(args, what="push")
        if status != 0 and diagnose(err).kind == "no-atomic":
            self.add("atomic", False, "not supported: the receiving end does not support "
                     "--atomic push", started)
            return
        self.add("atomic", True, "supported", started)
        self.all_or_nothing()

    def all_or_nothing(self) -> None:
        """An atomic push of a new branch and of a ref the host's own ref transaction refuses
        (``…-b/c`` while ``…-b`` exists: a directory/file conflict no client checks) must be
        reported refused and leave the new branch out."""
        started = time.monotonic()
        first, second = (f"refs/heads/distribute-doctor-{self.tag}-{x}" for x in "ab")
        self.push([RefUpdate(second, self.commit, expect="")], atomic=False)
        applied, why = self.push([RefUpdate(first, self.commit, expect=""),
                                  RefUpdate(second + "/c", self.commit, expect="")])
        seen = self.t.ls_remote(first, second)
        self.push([RefUpdate(r, None, expect=self.commit) for r in (first, second) if r in seen],
                  atomic=False)
        if applied and first not in seen:  # (a misreport: atomicity cannot be told)
            self.add("all or nothing", None, "a refused atomic push was answered ok", started)
            self.add("truthful", False, "a refused atomic push was answered ok", started)
        else:
            whole = not applied and first not in seen
            self.add("all or nothing", whole, "an atomic push with one ref refused by the "
                     "host was refused as a whole" if whole else
                     f"a refused atomic push applied part of it ({why})", started)

    def big_file(self, megabytes: float) -> None:
        started = time.monotonic()
        blob = self.t.run_bytes("hash-object", "-w", "--stdin",
                                stdin=b"\0" * int(megabytes * 2**20))[1].decode().strip()
        tree = self.t.run("mktree", stdin=f"100644 blob {blob}\tdoctor.bin\n")[1].strip()
        commit = self.t.git("commit-tree", tree, "-m", "distribute doctor: a big file").strip()
        ref = f"refs/heads/distribute-doctor-{self.tag}-big"
        applied, why = self.push([RefUpdate(ref, commit, expect="")], atomic=False)
        if applied:
            self.push([RefUpdate(ref, None, expect=commit)], atomic=False)
        self.report.file_limit_mb = host_limit_mb(why) if not applied else None
        self.add("file size", applied, f"a {megabytes:g} MB file " + (
            "accepted" if applied else f"refused: {why}"), started)


def probe_host(url: str, file_mb: Optional[float] = None) -> HostReport:
    """Probe the host of ``url`` once (see the module's docstring); the scratch refs it pushes
    are deleted again. Raises :class:`~distribute.exceptions.RemoteError` when the host cannot
    be read at all (unknown host, refused credentials, no repository)."""
    with tempfile.TemporaryDirectory(prefix="distribute-doctor-") as tmp:
        prober = _Prober(url, Path(tmp))
        prober.read()
        for name, ref in (("push", f"refs/heads/distribute-doctor-{prober.tag}"),
                          ("custom refs", f"{COORD_PREFIX}doctor-{prober.tag}"),
                          ("branch refs", f"{BRANCH_COORD_PREFIX}doctor-{prober.tag}")):
            if name == "branch refs" and prober.report.ok("custom refs") is not False:
                continue  # (asked only where the coordination refs would go there)
            try:
                prober.scratch_ref(name, ref)
            except DistributeError as exc:
                prober.add(name, False, str(exc), time.monotonic())
        if prober.report.ok("push"):
            prober.atomic()
            if prober.report.ok("truthful") is None:
                prober.add("truthful", True, "every push answered ok was there when read back",
                           time.monotonic())
            if file_mb:
                prober.big_file(file_mb)
        return prober.report
