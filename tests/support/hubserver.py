"""A loopback stand-in for the Hugging Face Hub, for the tests and the mirror benchmark.

It answers the endpoints the real ``huggingface_hub`` client calls for what ``distribute.hub`` does:

==========================================================  ===========================================
``POST /api/repos/create``                                  create_repo (409 when it exists)
``GET  /api/{type}s/{ns}/{name}[/revision/{rev}]``          repo_info / dataset_info
``POST /api/{type}s/{ns}/{name}/preupload/{rev}``           regular or LFS upload mode, remote oid
``POST /api/{type}s/{ns}/{name}/commit/{rev}``              the NDJSON commit
``GET  /api/{type}s/{ns}/{name}/tree/{rev}[/{path}]``       list_repo_tree / list_repo_files (paginated)
``HEAD|GET /[{type}s/]{ns}/{name}/resolve/{rev}/{path}``    hf_hub_download
``POST /[{type}s/]{ns}/{name}.git/info/lfs/objects/batch``  legacy LFS upload (with ``HF_HUB_DISABLE_XET``)
``PUT  /_lfs/{oid}``                                        the LFS upload URL handed out by the batch call
``POST /api/validate-yaml``                                 README.md metadata check
``GET  /api/agent-harnesses``                               the client's once-a-day user-agent registry
==========================================================  ===========================================

Every call except the LFS ``PUT`` must carry ``Authorization: Bearer <token>`` (else 401, like the
Hub's "Invalid credentials" answer). Files live in memory with one snapshot per commit, so tests
can count commits and requests. :meth:`FakeHub.fail` injects HTTP 500, 429, a hanging request
(``timeout``) or a commit that is applied but whose answer is lost (``drop-after-commit``).
:meth:`FakeHub.set_quota` enforces quotas like the Hub's (e.g. commits per hour, requests per
5 minutes) over a sliding window, scaled down for tests: over the limit, HTTP 429 with the Hub's
message and a ``Retry-After`` saying when the oldest counted request leaves the window.
"""
from __future__ import annotations

import base64
import hashlib
import json
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterable, Optional
from urllib.parse import parse_qs, quote, unquote, urlsplit

USER = "tester"
FAIL_MODES = ("500", "429", "timeout", "drop-after-commit")


def git_blob_id(data: bytes) -> str:
    """The id git (and the Hub) give a regular file: sha1 of ``blob <size>\\0<data>``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Stored:
    data: bytes
    lfs: bool = False

    def entry(self, path: str) -> dict:
        out: dict = {"type": "file", "path": path, "size": len(self.data)}
        if self.lfs:
            sha = hashlib.sha256(self.data).hexdigest()
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(self.data)}\n"
            out["oid"] = git_blob_id(pointer.encode())
            out["lfs"] = {"oid": sha, "size": len(self.data), "pointerSize": len(pointer)}
        else:
            out["oid"] = git_blob_id(self.data)
        return out


@dataclass
class Commit:
    oid: str
    title: str
    description: str
    changed: dict[str, Optional[bytes]]  # path -> new content, None when deleted
    files: dict[str, Stored]  # snapshot after the commit


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool = False
    commits: list[Commit] = field(default_factory=list)

    @property
    def head(self) -> dict[str, Stored]:
        return self.commits[-1].files if self.commits else {}

    def at(self, rev: str) -> Optional[dict[str, Stored]]:
        if rev == "main":
            return self.head
        return next((c.files for c in self.commits if c.oid.startswith(rev) and len(rev) >= 7), None)


@dataclass
class Seen:
    method: str
    kind: str
    path: str
    status: str


class _Fault:
    def __init__(self, mode: str, kinds: Optional[set[str]], times: Optional[int], after: int) -> None:
        self.mode, self.kinds, self.left, self.after = mode, kinds, times, after

    def take(self, kind: str) -> Optional[str]:
        if self.kinds is not None and kind not in self.kinds:
            return None
        if self.mode == "drop-after-commit" and kind != "commit":
            return None
        if self.after > 0:
            self.after -= 1
            return None
        if self.left is not None:
            if self.left <= 0:
                return None
            self.left -= 1
        return self.mode


class _Quota:
    """At most ``limit`` requests of ``kinds`` (None: every kind) per sliding ``window_s``."""

    def __init__(self, kinds: Optional[set[str]], limit: int, window_s: float) -> None:
        self.kinds, self.limit, self.window_s = kinds, limit, window_s
        self.times: deque[float] = deque()
        self.refused = 0

    def check(self, kind: str) -> Optional[int]:
        """``None`` if a request of ``kind`` may go on (it is counted), else the seconds to wait."""
        if self.kinds is not None and kind not in self.kinds:
            return None
        now = time.monotonic()
        while self.times and self.times[0] <= now - self.window_s:
            self.times.popleft()
        if len(self.times) >= self.limit:
            self.refused += 1
            return max(1, math.ceil(self.times[0] + self.window_s - now))
        self.times.append(now)
        return None


class FakeHub:
    """The fake Hub: ``with FakeHub(token) as hub: os.environ["HF_ENDPOINT"] = hub.url``."""

    def __init__(self, token: str, page_size: int = 1000, lfs_threshold: int = 10 * 1024 * 1024) -> None:
        self.token = token
        self.page_size = page_size
        self.lfs_threshold = lfs_threshold
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_store: dict[str, bytes] = {}
        self.seen: list[Seen] = []
        self._faults: list[_Fault] = []
        self._quotas: list[_Quota] = []
        self._cleared = 0
        self._lock = threading.RLock()
        self._release = threading.Event()
        self._counter = 0
        handler = type("Handler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    # ---- lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> "FakeHub":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()

    # ---- fault injection ----------------------------------------------------------------------
    def fail(self, mode: str, kinds: Optional[Iterable[str]] = None, times: Optional[int] = None,
             after: int = 0) -> None:
        """Answer requests of ``kinds`` (None: all) with ``mode`` (see :data:`FAIL_MODES`), ``times``
        times (None: until :meth:`heal`), after letting ``after`` of them through."""
        assert mode in FAIL_MODES, mode
        with self._lock:
            self._release.clear()
            self._faults.append(_Fault(mode, set(kinds) if kinds is not None else None, times, after))

    def heal(self) -> None:
        """Stop every injected fault and let hanging requests go (their connections are closed)."""
        with self._lock:
            self._faults.clear()
        self._release.set()

    def set_quota(self, limit: int, window_s: float, kinds: Optional[Iterable[str]] = ("commit",)) -> None:
        """Refuse requests of ``kinds`` (None: all but the client's user-agent lookup and LFS
        uploads) beyond ``limit`` per sliding ``window_s`` seconds with 429 and ``Retry-After``."""
        with self._lock:
            self._quotas.append(_Quota(set(kinds) if kinds is not None else None, limit, window_s))

    def clear_quotas(self) -> None:
        """Stop enforcing every quota (refusals so far are kept in :meth:`refused`)."""
        with self._lock:
            self._cleared = self.refused()
            self._quotas.clear()

    def refused(self) -> int:
        """Requests refused for a quota so far."""
        with self._lock:
            return self._cleared + sum(q.refused for q in self._quotas)

    def _quota_wait(self, kind: str) -> Optional[int]:
        if kind in ("agent-registry", "lfs-upload"):
            return None
        with self._lock:
            for quota in self._quotas:
                wait = quota.check(kind)
                if wait is not None:
                    return wait
        return None

    def _fault_for(self, kind: str) -> Optional[str]:
        if kind == "agent-registry":
            return None
        with self._lock:
            for fault in self._faults:
                mode = fault.take(kind)
                if mode:
                    return mode
        return None

    # ---- inspection ---------------------------------------------------------------------------
    def repo(self, repo_id: str, repo_type: str = "dataset") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def files(self, repo_id: str, repo_type: str = "dataset") -> dict[str, bytes]:
        repo = self.repos.get((repo_type, repo_id))
        return {p: s.data for p, s in repo.head.items()} if repo else {}

    def commits(self, repo_id: str, repo_type: str = "dataset") -> list[Commit]:
        repo = self.repos.get((repo_type, repo_id))
        return list(repo.commits) if repo else []

    def count(self, kind: Optional[str] = None) -> int:
        with self._lock:
            return sum(1 for s in self.seen if kind is None or s.kind == kind)

    def reset_counts(self) -> None:
        with self._lock:
            self.seen.clear()

    # ---- state changes (called by the handler under the lock) ---------------------------------
    def _new_oid(self, *parts: str) -> str:
        self._counter += 1
        return hashlib.sha1("\0".join([str(self._counter), *parts]).encode()).hexdigest()

    def _apply_commit(self, repo: Repo, lines: list[dict]) -> tuple[int, dict]:
        header = next((l["value"] for l in lines if l.get("key") == "header"), None)
        if header is None or not header.get("summary"):
            return 400, {"error": "commit header with a summary is required"}
        parent = header.get("parentCommit")
        if parent and (not repo.commits or not repo.commits[-1].oid.startswith(parent)):
            return 412, {"error": "A commit has happened since. Please refresh and try again."}
        files, changed = dict(repo.head), {}
        for line in lines:
            key, value = line.get("key"), line.get("value") or {}
            path = value.get("path", "")
            if key == "file":
                data = base64.b64decode(value["content"])
                files[path] = Stored(data)
                changed[path] = data
            elif key == "lfsFile":
                data = self.lfs_store.get(value.get("oid", ""))
                if data is None:
                    return 422, {"error": f"LFS object for {path} was not uploaded"}
                files[path] = Stored(data, lfs=True)
                changed[path] = data
            elif key == "deletedFile":
                if path not in files:
                    return 404, {"error": "A file with this name doesn't exist"}
                del files[path]
                changed[path] = None
            elif key == "deletedFolder":
                for p in [p for p in files if p.startswith(path.rstrip("/") + "/")]:
                    del files[p]
                    changed[p] = None
        oid = self._new_oid(repo.repo_id, header["summary"])
        repo.commits.append(Commit(oid, header["summary"], header.get("description", ""), changed, files))
        return 200, {"commitOid": oid, "commitUrl": f"{self.url}/{_prefix(repo.repo_type)}{repo.repo_id}/commit/{oid}",
                     "success": True}


def _prefix(repo_type: str) -> str:
    return "" if repo_type == "model" else f"{repo_type}s/"


def _tree_entries(files: dict[str, Stored], base: str, recursive: bool) -> Optional[list[dict]]:
    base = base.strip("/")
    under = {p: s for p, s in files.items() if not base or p.startswith(base + "/")}
    if base and not under:
        return None
    dirs, entries = set(), []
    for path, stored in sorted(under.items()):
        rel = path[len(base) + 1:] if base else path
        parts = rel.split("/")
        for depth in range(1, len(parts)):
            if recursive or depth == 1:
                dirs.add("/".join(([base] if base else []) + parts[:depth]))
        if recursive or len(parts) == 1:
            entries.append(stored.entry(path))
    entries += [{"type": "directory", "path": d, "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0}
                for d in sorted(dirs)]
    return sorted(entries, key=lambda e: e["path"])


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    # ---- plumbing -----------------------------------------------------------------------------
    def _send(self, status: int, body: object = None, headers: Optional[dict[str, str]] = None,
              raw: Optional[bytes] = None) -> None:
        data = raw if raw is not None else json.dumps(body if body is not None else {}).encode()
        if self._drop and status == 200:  # applied, but the answer is lost
            self.close_connection = True
            self._status = "dropped"
            return
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if raw is None else "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self._status = str(status)

    def _error(self, status: int, message: str, code: Optional[str] = None) -> None:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, {"error": message}, headers)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():  # trailers
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        self._status, self._drop = "?", False
        self._body = self._read_body()
        url = urlsplit(self.path)
        self._query = parse_qs(url.query)
        segments = [unquote(s) for s in url.path.split("/")[1:]]
        kind, route = self._route(self.command, segments)
        try:
            fault = self.hub._fault_for(kind)
            if fault == "timeout":
                self.hub._release.wait(60)
                self.close_connection = True
                self._status = "timeout"
            elif fault == "500":
                self._error(500, "Internal Error - injected by the test")
            elif fault == "429":
                self._send(429, {"error": "rate limited (injected)"}, {"Retry-After": "0"})
            elif kind not in ("lfs-upload", "agent-registry") and self.headers.get("Authorization") != f"Bearer {self.hub.token}":
                self._error(401, "Invalid credentials in Authorization header")
            elif (wait := self.hub._quota_wait(kind)) is not None:
                action = "commit" if kind == "commit" else "api"
                self._send(429, {"error": f"You have exceeded our hourly quotas for action: {action}. "
                                          "We invite you to retry later."},
                           {"Retry-After": str(wait), "X-Error-Message": "quota exceeded"})
            elif route is None:
                self._error(404, f"no such endpoint: {self.command} {url.path}")
            else:
                self._drop = fault == "drop-after-commit"
                with self.hub._lock:
                    route()
        finally:
            with self.hub._lock:
                self.hub.seen.append(Seen(self.command, kind, url.path, self._status))

    def _route(self, method: str, seg: list[str]):  # noqa: ANN202 - (kind, bound handler)
        if seg[:2] == ["api", "repos"] and method == "POST":
            return "create", self._create
        if seg[:2] == ["api", "agent-harnesses"]:  # the client's once-a-day user-agent registry
            return "agent-registry", lambda: self._send(200, {"standardEnvVars": [], "harnesses": {}})
        if seg[:2] == ["api", "validate-yaml"]:
            return "validate-yaml", lambda: self._send(200, {"errors": [], "warnings": []})
        if seg and seg[0] == "_lfs" and method == "PUT":
            return "lfs-upload", lambda: self._lfs_put(seg[1])
        if len(seg) >= 4 and seg[0] == "api" and seg[1] in ("models", "datasets", "spaces"):
            rtype, rid, rest = seg[1][:-1], f"{seg[2]}/{seg[3]}", seg[4:]
            if not rest or rest[0] == "revision":
                return "info", lambda: self._info(rtype, rid, rest[1] if len(rest) > 1 else "main")
            action, rev, tail = rest[0], (rest[1] if len(rest) > 1 else "main"), rest[2:]
            if action == "preupload" and method == "POST":
                return "preupload", lambda: self._preupload(rtype, rid)
            if action == "commit" and method == "POST":
                return "commit", lambda: self._commit(rtype, rid, rev)
            if action == "tree" and method == "GET":
                return "tree", lambda: self._tree(rtype, rid, rev, "/".join(tail))
            return "other", None
        rtype = "model"
        if seg and seg[0] in ("datasets", "spaces"):
            rtype, seg = seg[0][:-1], seg[1:]
        if len(seg) >= 5 and seg[2] == "resolve":
            return "resolve", lambda: self._resolve(rtype, f"{seg[0]}/{seg[1]}", seg[3], "/".join(seg[4:]))
        if len(seg) >= 2 and seg[1].endswith(".git") and seg[2:] == ["info", "lfs", "objects", "batch"]:
            return "lfs-batch", lambda: self._lfs_batch(rtype, f"{seg[0]}/{seg[1][:-4]}")
        return "other", None

    def _repo(self, rtype: str, rid: str) -> Optional[Repo]:
        repo = self.hub.repos.get((rtype, rid))
        if repo is None:
            self._error(404, "Repository not found", "RepoNotFound")
        return repo

    # ---- endpoints ----------------------------------------------------------------------------
    def _create(self) -> None:
        body = json.loads(self._body or b"{}")
        rtype = body.get("type") or "model"
        rid = f"{body.get('organization') or USER}/{body['name']}"
        url = f"{self.hub.url}/{_prefix(rtype)}{rid}"
        if (rtype, rid) in self.hub.repos:
            self._send(409, {"error": f"You already created this {rtype} repo", "url": url})
            return
        self.hub.repos[(rtype, rid)] = Repo(rtype, rid, private=bool(body.get("private")))
        self._send(200, {"url": url, "name": rid, "id": rid})

    def _info(self, rtype: str, rid: str, rev: str) -> None:
        repo = self._repo(rtype, rid)
        if repo is None:
            return
        files = repo.at(rev)
        if files is None:
            self._error(404, "Revision not found", "RevisionNotFound")
            return
        sha = repo.commits[-1].oid if repo.commits and rev == "main" else (rev if repo.commits else None)
        self._send(200, {"id": rid, "sha": sha, "private": repo.private,
                         "siblings": [{"rfilename": p} for p in sorted(files)]})

    def _preupload(self, rtype: str, rid: str) -> None:
        repo = self._repo(rtype, rid)
        if repo is None:
            return
        out = []
        for f in json.loads(self._body).get("files", []):
            lfs = f.get("size", 0) > self.hub.lfs_threshold
            current = repo.head.get(f["path"])
            oid = None
            if current is not None:
                oid = hashlib.sha256(current.data).hexdigest() if lfs else git_blob_id(current.data)
            out.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular",
                        "shouldIgnore": False, "oid": oid})
        self._send(200, {"files": out})

    def _commit(self, rtype: str, rid: str, rev: str) -> None:
        repo = self._repo(rtype, rid)
        if repo is None:
            return
        if rev != "main":
            self._error(404, "Revision not found", "RevisionNotFound")
            return
        try:
            lines = [json.loads(l) for l in self._body.splitlines() if l.strip()]
        except ValueError:
            self._error(400, "malformed NDJSON")
            return
        status, body = self.hub._apply_commit(repo, lines)
        if status == 200:
            self._send(200, body)
        else:
            self._error(status, body["error"], "EntryNotFound" if status == 404 else None)

    def _tree(self, rtype: str, rid: str, rev: str, path: str) -> None:
        repo = self._repo(rtype, rid)
        if repo is None:
            return
        files = repo.at(rev)
        if files is None:
            self._error(404, "Revision not found", "RevisionNotFound")
            return
        recursive = self._query.get("recursive", ["false"])[0].lower() == "true"
        entries = _tree_entries(files, path, recursive)
        if entries is None:
            self._error(404, f"{path} does not exist", "EntryNotFound")
            return
        start = int(self._query.get("cursor", ["0"])[0])
        page = entries[start:start + self.hub.page_size]
        headers = {}
        if start + self.hub.page_size < len(entries):
            nxt = (f"{self.hub.url}/api/{rtype}s/{rid}/tree/{quote(rev, safe='')}"
                   + (f"/{quote(path, safe='')}" if path else "")
                   + f"?recursive={str(recursive).lower()}&expand=false&cursor={start + self.hub.page_size}")
            headers["Link"] = f'<{nxt}>; rel="next"'
        self._send(200, page, headers)

    def _resolve(self, rtype: str, rid: str, rev: str, path: str) -> None:
        repo = self._repo(rtype, rid)
        if repo is None:
            return
        files = repo.at(unquote(rev))
        stored = files.get(path) if files is not None else None
        if stored is None:
            self._error(404, "Entry not found", "EntryNotFound")
            return
        entry = stored.entry(path)
        etag = entry["lfs"]["oid"] if stored.lfs else entry["oid"]
        self._send(200, raw=stored.data, headers={"ETag": f'"{etag}"',
                                                  "X-Repo-Commit": repo.commits[-1].oid})

    def _lfs_batch(self, rtype: str, rid: str) -> None:
        if self._repo(rtype, rid) is None:
            return
        objects = []
        for obj in json.loads(self._body).get("objects", []):
            item = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.hub.lfs_store:
                item["actions"] = {"upload": {"href": f"{self.hub.url}/_lfs/{obj['oid']}", "header": {}}}
            objects.append(item)
        self._send(200, {"transfer": "basic", "objects": objects})

    def _lfs_put(self, oid: str) -> None:
        if hashlib.sha256(self._body).hexdigest() != oid:
            self._error(400, "sha256 mismatch")
            return
        self.hub.lfs_store[oid] = self._body
        self._send(200, {})
