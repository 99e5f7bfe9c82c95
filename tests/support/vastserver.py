"""A loopback HTTP server that plays the Vast.ai REST API for the tests and the benchmark.

It speaks the real endpoints and JSON shapes (base ``/api/v0``):

``POST /bundles/``                  offer search: filter object + ``order``/``type``/``limit``
``PUT /asks/{offer}/``              create an instance -> ``{"success": true, "new_contract": id}``
``GET /instances/``                 ``{"instances_found": n, "instances": [...]}``
``GET /instances/{id}/``            ``{"instances": {...}}``
``DELETE /instances/{id}/``         ``{"success": true, ...}``
``PUT /instances/request_logs/{id}/`` ``{"success": true, "result_url": ...}``; the log itself is
                                    served (without auth) at ``/logs/<token>.log``, 404 at first

Errors look like the API's: ``{"success": false, "error": "...", "msg": "..."}``; 429 answers are
the plain text ``API requests too frequent``. Every call but the log download needs
``Authorization: Bearer <key>`` (401 otherwise): the account key, or an instance's own key
(``container_keys``, what Vast puts in the instance's ``CONTAINER_API_KEY``), which is good only
for showing and destroying that instance while it exists (403 for anything else). Request bodies are checked the way the API checks
them (image required, env an object of strings, known runtypes...). Faults are injected with
:meth:`FakeVast.fail`; :meth:`FakeVast.take_meanwhile` makes an offer vanish between search and
create; ``min_interval_s`` makes it refuse requests that come too fast after the previous one to
the same endpoint, as the real API's rate limit does (429 without ``Retry-After``).

With ``node_command`` set it also plays the node: creating an ``args`` instance starts
``node_command + args`` as a local process with the instance's env, ``CONTAINER_ID``,
``CONTAINER_API_KEY`` and ``VAST_CONTAINERLABEL`` (as Vast sets them); destroying the instance
stops that process.

The life of an instance, in the fields the API reports (``actual_status``, ``intended_status``,
``cur_state``, ``status_msg``): ``loading`` for ``boot_delay_s`` after the create (the image being
pulled), then ``running`` (the node process starts); an instance on a machine in ``duds`` stays
``loading`` forever. A node process that ends makes it ``exited``. An interruptible instance
(created with a bid, ``"price"`` in the create body; offers of a ``"type": "bid"`` search carry
``min_bid``) may be preempted (:meth:`FakeVast.preempt`, as when a higher bid takes the machine):
the container gets SIGTERM, then SIGKILL after a grace, and the instance stays, ``actual_status``
``stopped`` with its disk kept (``intended_status`` still ``running``: the renter did not ask for
it), until it is destroyed. Billing is per instance (:meth:`FakeVast.cost`, :meth:`FakeVast.spent`):
``dph_total`` $/h (the bid, for an interruptible one) while running; the disk's storage
(``storage_cost`` $/GB/month x ``disk_space``) from the create until the destroy, in every state.
``GET /users/current/`` reports the account's ``credit`` (``credit`` minus what was spent).
"""
from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Optional
from urllib.parse import parse_qs, urlsplit

RUNTYPES = {"args", "ssh", "ssh_proxy", "ssh_direct", "jupyter", "jupyter_proxy", "jupyter_direct"}
OPS = {"eq", "neq", "lt", "lte", "gt", "gte", "in", "notin"}
SEARCH_KEYS = {"order", "type", "limit", "disable_bundling", "allocated_storage"}


@dataclass
class Call:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    authorization: Optional[str]
    status: int = 0
    at: float = field(default_factory=time.monotonic)  # when it arrived (monotonic clock)


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    status: int
    times: int
    body: str
    content_type: str
    retry_after: Optional[str]
    after: bool  # do the work first, then answer with the fault (outcome unknown to the client)


@dataclass
class Reply:
    status: int
    body: Any
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def error(status: int, code: str, msg: str) -> Reply:
    return Reply(status, {"success": False, "error": code, "msg": msg})


def make_offer(offer_id: int, dph_total: float, **fields: Any) -> dict[str, Any]:
    """An offer shaped like the search endpoint's (fields that matter here, plausible values)."""
    offer = {"id": offer_id, "ask_contract_id": offer_id, "bundle_id": offer_id + 500_000,
             "machine_id": offer_id % 9973, "host_id": 7, "dph_total": dph_total,
             "dph_base": round(dph_total * 0.9, 6), "gpu_name": "RTX 4090", "num_gpus": 1,
             "gpu_ram": 24564, "cpu_ram": 64000, "cpu_cores_effective": 8.0, "disk_space": 200.0,
             "reliability2": 0.995, "geolocation": "Oslo, NO", "cuda_max_good": 12.4,
             "inet_down": 900.0, "inet_up": 800.0, "verified": True, "verification": "verified",
             "external": False, "rentable": True, "rented": False, "is_bid": False,
             "min_bid": round(dph_total * 0.4, 6), "storage_cost": 0.1}
    offer.update(fields)
    return offer


class FakeVast:
    """The fake API; use as a context manager. ``url`` is what ``VAST_API_URL`` should be."""

    def __init__(self, api_key: str = "test-vast-key-5f2a9c", offers: Optional[list[dict]] = None,
                 node_command: Optional[list[str]] = None,
                 node_env: Optional[dict[str, str]] = None,
                 workdir: Optional[Path] = None, min_interval_s: float = 0.0,
                 kill_delay_s: float = 5.0, boot_delay_s: float = 0.0,
                 duds: Optional[set[int]] = None, credit: float = 100.0) -> None:
        self.api_key = api_key
        self.offers: dict[int, dict[str, Any]] = {o["id"]: dict(o) for o in offers or []}
        self.node_command = node_command
        self.node_env = dict(node_env or {})
        self.workdir = Path(workdir) if workdir else None
        self.min_interval_s = min_interval_s
        self.kill_delay_s = kill_delay_s
        self.boot_delay_s = boot_delay_s
        #: Machine ids whose instances never finish loading (the node never starts).
        self.duds: set[int] = set(duds or ())
        self.credit = credit
        #: Per instance: ``{"state", "since", "accrued", "dph", "storage_dph"}`` (destroyed too).
        self.meters: dict[int, dict[str, Any]] = {}
        #: Instances preempted so far (ids, in order).
        self.preempted: list[int] = []
        self.instances: dict[int, dict[str, Any]] = {}
        self.instance_env: dict[int, dict[str, str]] = {}
        self.container_keys: dict[int, str] = {}  # instance id -> its CONTAINER_API_KEY
        self.destroyed: list[tuple[int, Optional[str]]] = []  # (id, Authorization header)
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.calls: list[Call] = []
        self._faults: list[Fault] = []
        self._gone_on_create: set[int] = set()
        self._logs: dict[str, dict[str, Any]] = {}
        self._last: dict[str, float] = {}
        self._next_id = 7_000_001
        self._lock = threading.RLock()
        self._httpd: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # --- control -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> FakeVast:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._httpd is not None
        self._httpd.shutdown()
        self._httpd.server_close()
        for proc in list(self.processes.values()):
            _stop(proc, signal.SIGKILL)
            proc.wait()

    def add_offer(self, offer_id: int, dph_total: float, **fields: Any) -> None:
        with self._lock:
            self.offers[offer_id] = make_offer(offer_id, dph_total, **fields)

    def take_meanwhile(self, *offer_ids: int) -> None:
        """These offers still show in searches but are gone when someone tries to rent them."""
        with self._lock:
            self._gone_on_create.update(offer_ids)

    def fail(self, method: str, path: str, status: int, times: int = 1, body: Any = None,
             content_type: Optional[str] = None, retry_after: Optional[int] = None,
             after: bool = False) -> None:
        """Answer the next ``times`` requests ``method`` on paths matching regex ``path`` with
        ``status``. Default bodies: 429 plain text, 5xx an HTML page, others a JSON error."""
        if body is None:
            if status == 429:
                body, content_type = "API requests too frequent", content_type or "text/plain"
            elif status >= 500:
                body = f"<html><head><title>{status} Bad Gateway</title></head><body>oops</body>"
                content_type = content_type or "text/html"
            else:
                body = json.dumps({"success": False, "error": "injected", "msg": "injected"})
        elif not isinstance(body, str):
            body = json.dumps(body)
        with self._lock:
            self._faults.append(Fault(method, re.compile(path), status, times, body,
                                      content_type or "application/json",
                                      None if retry_after is None else str(retry_after), after))

    def preempt(self, instance_id: int, grace_s: float = 2.0) -> None:
        """Preempt interruptible instance ``instance_id`` (a higher bid took its machine): the
        container gets SIGTERM, SIGKILL ``grace_s`` later; the instance stays, stopped, its disk
        still billed, until it is destroyed."""
        with self._lock:
            row = self.instances[instance_id]
            if not row.get("is_bid"):
                raise ValueError(f"instance {instance_id} is on-demand: it cannot be preempted")
            row.update(actual_status="stopped", cur_state="stopped", next_state="stopped",
                       status_msg="Instance stopped: outbid (a higher bid took the machine)")
            self._bill(instance_id, "stopped")
            self.preempted.append(instance_id)
            proc = self.processes.get(instance_id)
        if proc is not None:
            _stop(proc, signal.SIGTERM)
            timer = threading.Timer(grace_s, _stop, (proc, signal.SIGKILL))
            timer.daemon = True
            timer.start()

    def cost(self, instance_id: int) -> float:
        """What instance ``instance_id`` has cost so far, in dollars."""
        with self._lock:
            meter = self.meters[instance_id]
            return meter["accrued"] + self._rate(meter) * (time.time() - meter["since"]) / 3600

    def spent(self) -> float:
        """What every instance ever created has cost so far, in dollars."""
        with self._lock:
            return sum(self.cost(iid) for iid in self.meters)

    def states(self) -> dict[int, str]:
        """``{instance id: actual_status}`` of the instances that exist."""
        with self._lock:
            return {iid: str(row.get("actual_status")) for iid, row in self.instances.items()}

    @staticmethod
    def _rate(meter: dict[str, Any]) -> float:
        if meter["state"] == "destroyed":
            return 0.0
        return meter["dph"] if meter["state"] == "running" else meter["storage_dph"]

    def _bill(self, iid: int, state: str) -> None:
        """Close the meter's current period and go on in ``state``."""
        meter, now = self.meters[iid], time.time()
        meter["accrued"] += self._rate(meter) * (now - meter["since"]) / 3600
        meter.update(state=state, since=now)

    def requests(self, method: Optional[str] = None, prefix: str = "") -> list[Call]:
        with self._lock:
            return [c for c in self.calls if (method is None or c.method == method)
                    and c.path.startswith(prefix)]

    def wait_nodes(self, timeout: float) -> dict[int, int]:
        """Wait for every node process to end; their exit codes by instance id."""
        deadline = time.monotonic() + timeout
        codes = {}
        for iid, proc in list(self.processes.items()):
            codes[iid] = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        return codes

    def node_log(self, instance_id: int) -> str:
        if self.workdir is None:
            return ""
        path = self._node_dir(instance_id) / "node.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # --- the API -------------------------------------------------------------------------
    def handle(self, method: str, raw_path: str, headers: Any, raw_body: bytes) -> Reply:
        parts = urlsplit(raw_path)
        path, query = parts.path, parse_qs(parts.query)
        try:
            body = json.loads(raw_body) if raw_body else None
            bad_json = False
        except ValueError:
            body, bad_json = raw_body.decode("utf-8", "replace"), True
        call = Call(method, path, query, body, headers.get("Authorization"))
        with self._lock:
            self.calls.append(call)
            fault = next((f for f in self._faults if f.times > 0 and f.method == method
                          and f.path.search(path)), None)
            if fault is not None:
                fault.times -= 1
            if fault is not None and not fault.after:
                reply = self._fault_reply(fault)
            else:
                reply = self._dispatch(method, path, query, headers, body, bad_json)
                if fault is not None:
                    reply = self._fault_reply(fault)
            call.status = reply.status
            return reply

    def _fault_reply(self, fault: Fault) -> Reply:
        headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
        return Reply(fault.status, fault.body, fault.content_type, headers)

    def _dispatch(self, method: str, path: str, query: dict, headers: Any, body: Any,
                  bad_json: bool) -> Reply:
        m = re.fullmatch(r"/logs/(\w+)\.log", path)
        if m and method == "GET":
            return self._log_file(m.group(1))
        routes = [("POST", r"/api/v0/bundles/?", self._search),
                  ("PUT", r"/api/v0/asks/(\d+)/?", self._create),
                  ("GET", r"/api/v0/instances/?", self._list),
                  ("PUT", r"/api/v0/instances/request_logs/(\d+)/?", self._request_logs),
                  ("GET", r"/api/v0/instances/(\d+)/?", self._show),
                  ("DELETE", r"/api/v0/instances/(\d+)/?", self._destroy),
                  ("GET", r"/api/v0/users/current/?", self._user)]
        for verb, pattern, func in routes:
            m = re.fullmatch(pattern, path)
            if m and verb == method:
                break
        else:
            return error(404, "not_found", f"no endpoint {method} {path}")
        auth = headers.get("Authorization") or ""
        keys = ([auth[len("Bearer "):]] if auth.startswith("Bearer ") else []) + \
            (query.get("api_key") or [])
        if self.api_key not in keys:
            owner = next((i for i, k in self.container_keys.items()
                          if k in keys and i in self.instances), None)
            if owner is None:
                return error(401, "auth_error", "Invalid user key")
            own = func in (self._show, self._destroy) and m.groups() == (str(owner),)
            if not own:
                return error(403, "forbidden", f"this key is only good for instance {owner}")
        if self.min_interval_s:
            now, key = time.monotonic(), f"{method} {pattern}"
            if now - self._last.get(key, -1e9) < self.min_interval_s:
                return Reply(429, f"API requests too frequent: endpoint threshold="
                                  f"{self.min_interval_s}", "text/plain")
            self._last[key] = now
        if bad_json:
            return error(400, "invalid_args", "request body is not valid JSON")
        return func(body, *(int(g) for g in m.groups()))

    def _search(self, body: Any) -> Reply:
        if not isinstance(body, dict):
            return error(400, "invalid_args", "search wants a JSON object")
        offers = [o for o in self.offers.values()]
        for name, cond in body.items():
            if name in SEARCH_KEYS:
                continue
            if not isinstance(cond, dict) or not set(cond) <= OPS:
                return error(400, "invalid_args", f"bad filter for {name}: {cond!r}")
            offers = [o for o in offers if all(_compare(o.get(name), op, v)
                                               for op, v in cond.items())]
        if body.get("type", "on-demand") not in ("on-demand", "bid", "reserved"):
            return error(400, "invalid_args", f"bad type {body.get('type')!r}")
        for fname, direction in reversed(body.get("order") or []):
            offers.sort(key=lambda o: o.get(fname) or 0, reverse=direction == "desc")
        if body.get("limit"):
            offers = offers[:int(body["limit"])]
        return Reply(200, {"offers": [dict(o) for o in offers]})

    def _create(self, body: Any, offer_id: int) -> Reply:
        problem = _check_create(body)
        if problem:
            return error(400, "invalid_args", problem)
        offer = self.offers.get(offer_id)
        if offer is None:
            return error(404, "no_such_ask", f"Instance type by id {offer_id} is not available.")
        if offer["rented"] or offer_id in self._gone_on_create:
            offer.update(rented=True, rentable=False)
            return error(410, "no_such_ask", f"Instance type by id {offer_id} is not available.")
        bid = body.get("price")
        if bid is not None and (isinstance(bid, bool) or not isinstance(bid, (int, float))
                                or bid < float(offer.get("min_bid") or 0)):
            return error(400, "invalid_args", f"bid price {bid!r} is below the offer's minimum "
                                              f"bid {offer.get('min_bid')}")
        offer.update(rented=True, rentable=False)
        iid, self._next_id = self._next_id, self._next_id + 1
        env = dict(body.get("env") or {})
        self.instance_env[iid] = env
        self.container_keys[iid] = f"container-key-{iid}-{secrets.token_hex(6)}"
        self.instances[iid] = {
            "id": iid, "actual_status": "running", "intended_status": "running",
            "cur_state": "running", "next_state": "running", "label": body.get("label"),
            "image_uuid": body["image"], "image_runtype": body.get("runtype", "ssh"),
            "image_args": body.get("args") or [], "onstart": body.get("onstart"),
            "extra_env": [[k, v] for k, v in env.items()], "machine_id": offer["machine_id"],
            "gpu_name": offer["gpu_name"], "num_gpus": offer["num_gpus"],
            "dph_total": offer["dph_total"], "geolocation": offer["geolocation"],
            "start_date": time.time(), "status_msg": "success, running",
            "ssh_host": f"ssh{iid % 10}.vast.example", "ssh_port": 20000 + iid % 1000,
            "is_bid": bid is not None, "min_bid": offer.get("min_bid"),
            "disk_space": float(body.get("disk", 10)),
            "storage_cost": float(offer.get("storage_cost") or 0.1)}
        row = self.instances[iid]
        if bid is not None:
            row["dph_total"] = float(bid)
        storage_dph = row["storage_cost"] * row["disk_space"] / 730
        self.meters[iid] = {"state": "loading", "since": time.time(), "accrued": 0.0,
                            "dph": row["dph_total"], "storage_dph": storage_dph}
        argv = None
        if self.node_command and body.get("runtype", "ssh") == "args":
            argv = self.node_command + list(body.get("args") or [])
        if self.boot_delay_s > 0 or offer["machine_id"] in self.duds:
            row.update(actual_status="loading", cur_state="running",
                       status_msg="pulling image")
        if offer["machine_id"] in self.duds:
            pass
        elif self.boot_delay_s > 0:
            timer = threading.Timer(self.boot_delay_s, self._boot, (iid, argv, env))
            timer.daemon = True
            timer.start()
        else:
            self._boot(iid, argv, env)
        return Reply(200, {"success": True, "new_contract": iid})

    def _boot(self, iid: int, argv: Optional[list[str]], env: dict[str, str]) -> None:
        """The image is there: the container runs (the node process, in node mode)."""
        with self._lock:
            row = self.instances.get(iid)
            if row is None or row["actual_status"] not in ("loading", "running"):
                return
            row.update(actual_status="running", status_msg="success, running")
            self._bill(iid, "running")
            if argv is not None:
                self._start_node(iid, argv, env)

    def _exited(self, iid: int, proc: subprocess.Popen[bytes]) -> None:
        """The container's process ended: a running instance is ``exited`` from now on."""
        code = proc.wait()
        with self._lock:
            row = self.instances.get(iid)
            if row is not None and row["actual_status"] == "running":
                row.update(actual_status="exited", status_msg=f"container exited ({code})")
                self._bill(iid, "exited")

    def _user(self, body: Any) -> Reply:
        spent = self.spent()
        return Reply(200, {"id": 1, "username": "tester", "credit": round(self.credit - spent, 6),
                           "balance": 0.0})

    def _list(self, body: Any) -> Reply:
        rows = [dict(i) for i in self.instances.values()]
        return Reply(200, {"instances_found": len(rows), "instances": rows})

    def _show(self, body: Any, iid: int) -> Reply:
        if iid not in self.instances:
            return error(404, "no_such_instance", f"Instance {iid} not found.")
        return Reply(200, {"instances": dict(self.instances[iid])})

    def _destroy(self, body: Any, iid: int) -> Reply:
        if iid not in self.instances:
            return error(404, "no_such_instance", f"Instance {iid} not found.")
        del self.instances[iid]
        self._bill(iid, "destroyed")
        self.destroyed.append((iid, self.calls[-1].authorization))
        proc = self.processes.get(iid)
        if proc is not None and proc.poll() is None:  # the container is stopped a bit later
            timer = threading.Timer(self.kill_delay_s, _stop, (proc, signal.SIGTERM))
            timer.daemon = True
            timer.start()
        return Reply(200, {"success": True, "msg": f"destroying instance {iid}."})

    def _request_logs(self, body: Any, iid: int) -> Reply:
        if iid not in self.instances:
            return error(404, "no_such_instance", f"Instance {iid} not found.")
        tail = (body or {}).get("tail", "1000") if isinstance(body, dict) else "1000"
        if not str(tail).isdigit():
            return error(400, "invalid_args", f"tail must be a number, not {tail!r}")
        token = secrets.token_hex(8)
        self._logs[token] = {"id": iid, "tail": int(tail), "misses": 1}
        return Reply(200, {"success": True, "result_url": f"{self.url}/logs/{token}.log",
                           "msg": "Logs will be uploaded shortly."})

    def _log_file(self, token: str) -> Reply:
        entry = self._logs.get(token)
        if entry is None:
            return Reply(404, "<Error><Code>NoSuchKey</Code></Error>", "application/xml")
        if entry["misses"] > 0:  # not uploaded yet
            entry["misses"] -= 1
            return Reply(404, "<Error><Code>NoSuchKey</Code></Error>", "application/xml")
        text = self.node_log(entry["id"]) or "".join(
            f"instance {entry['id']} line {i}\n" for i in range(1, 2001))
        lines = text.splitlines(keepends=True)[-entry["tail"]:]
        return Reply(200, "".join(lines), "text/plain")

    # --- playing the node -----------------------------------------------------------------
    def _node_dir(self, iid: int) -> Path:
        assert self.workdir is not None, "node_command needs workdir"
        return self.workdir / f"node-{iid}"

    def _start_node(self, iid: int, argv: list[str], env: dict[str, str]) -> None:
        home = self._node_dir(iid)
        home.mkdir(parents=True, exist_ok=True)
        penv = {"HOME": str(home), **self.node_env}
        penv.update({k: v for k, v in env.items() if not k.startswith("-")})
        penv.update(CONTAINER_ID=str(iid), VAST_CONTAINERLABEL=f"C.{iid}",
                    CONTAINER_API_KEY=self.container_keys[iid])
        with open(home / "node.log", "wb") as out:
            self.processes[iid] = subprocess.Popen(
                argv, env=penv, cwd=home, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)
        threading.Thread(target=self._exited, args=(iid, self.processes[iid]),
                         daemon=True).start()


def _stop(proc: subprocess.Popen[bytes], sig: int) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass


def _compare(value: Any, op: str, wanted: Any) -> bool:
    if op == "eq":
        return value == wanted
    if op == "neq":
        return value != wanted
    if op in ("in", "notin"):
        inside = isinstance(wanted, list) and value in wanted
        return inside if op == "in" else not inside
    if value is None or isinstance(value, bool) or not isinstance(wanted, (int, float)):
        return False
    return {"lt": value < wanted, "lte": value <= wanted, "gt": value > wanted,
            "gte": value >= wanted}[op]


def _check_create(body: Any) -> Optional[str]:
    """What the API would reject in a create-instance body, or ``None``."""
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    image = body.get("image")
    if not isinstance(image, str) or not image.strip():
        return "image is required"
    if len(image) > 1024:
        return "image is too long"
    env = body.get("env", {})
    if env is not None and (not isinstance(env, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env.items())):
        return "env must be an object of strings"
    if body.get("runtype", "ssh") not in RUNTYPES:
        return f"unknown runtype {body.get('runtype')!r}"
    disk = body.get("disk", 10)
    if isinstance(disk, bool) or not isinstance(disk, (int, float)) or disk < 8:
        return "disk must be a number of GB, at least 8"
    for name in ("label", "onstart"):
        if body.get(name) is not None and not isinstance(body[name], str):
            return f"{name} must be a string"
    if len(body.get("onstart") or "") > 4048:
        return "onstart is limited to 4048 characters"
    args = body.get("args")
    if args is not None and (not isinstance(args, list) or not all(isinstance(a, str)
                                                                   for a in args)):
        return "args must be a list of strings"
    return None


class _Handler(BaseHTTPRequestHandler):
    fake: FakeVast
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # no 40 ms delayed-ACK stalls between headers and body
    wbufsize = -1  # headers and body leave in one write (flushed after each request)

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            reply = self.fake.handle(self.command, self.path, self.headers, raw)
        except Exception as exc:  # noqa: BLE001 - a bug in the fake: answer like a broken server
            reply = Reply(500, f"<html><title>500 {type(exc).__name__}: {exc}</title></html>",
                          "text/html")
        data = (reply.body if isinstance(reply.body, str) else json.dumps(reply.body)).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass
