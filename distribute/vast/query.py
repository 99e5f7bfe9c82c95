"""The Vast.ai offer query language, ``-e``/``-p`` option strings, launch modes, request bodies,
API error messages and the node's command line.

Pure functions without I/O, used by :mod:`distribute.vast.api`, :mod:`distribute.vast.nodes` and
the ``distribute offers`` and ``distribute rent`` commands.
"""
from __future__ import annotations

import logging
import re
import shlex
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

from .. import settings

log = logging.getLogger(__name__)

__all__ = ["parse_query", "parse_env", "parse_order", "get_runtype", "node_command", "create_body",
           "api_message", "node_flag", "FIELDS", "FIELD_ALIAS", "FIELD_MULTIPLIER", "RUNTYPES",
           "SELF_DESTRUCT"]

#: The node setting that makes its worker destroy the instance once the queue is done.
SELF_DESTRUCT = "DISTRIBUTE_SELF_DESTRUCT"

#: Offer fields the search endpoint filters on (after aliases are applied).
FIELDS = frozenset({
    "bw_nvlink", "compute_cap", "cpu_arch", "cpu_cores", "cpu_cores_effective", "cpu_ghz",
    "cpu_ram", "cuda_max_good", "datacenter", "direct_port_count", "disk_bw", "disk_space",
    "dlperf", "dlperf_per_dphtotal", "dph_total", "driver_version", "duration", "external",
    "flops_per_dphtotal", "geolocation", "gpu_arch", "gpu_display_active", "gpu_frac",
    "gpu_max_power", "gpu_max_temp", "gpu_mem_bw", "gpu_name", "gpu_ram", "gpu_total_ram",
    "has_avx", "host_id", "id", "inet_down", "inet_down_cost", "inet_up", "inet_up_cost",
    "machine_id", "min_bid", "mobo_name", "num_gpus", "os_version", "pci_gen", "pcie_bw",
    "reliability2", "rentable", "rented", "static_ip", "storage_cost", "total_flops",
    "verification", "verified", "vms_enabled",
})

#: Fields holding text or yes/no; every other field in :data:`FIELDS` holds a number.
TEXT_FIELDS = frozenset({"cpu_arch", "datacenter", "driver_version", "geolocation", "gpu_arch",
                         "gpu_name", "mobo_name", "os_version", "verification"})
BOOL_FIELDS = frozenset({"external", "gpu_display_active", "has_avx", "rentable", "rented",
                         "static_ip", "verified", "vms_enabled"})

#: Friendly names accepted in queries and the API field each stands for.
FIELD_ALIAS: Mapping[str, str] = {
    "cuda_vers": "cuda_max_good", "display_active": "gpu_display_active",
    "reliability": "reliability2", "dlperf_usd": "dlperf_per_dphtotal", "dph": "dph_total",
    "flops_usd": "flops_per_dphtotal",
}

#: Unit conversions from what a person writes to what the API stores: RAM in GB -> MB,
#: ``duration`` in days -> seconds.
FIELD_MULTIPLIER: Mapping[str, float] = {
    "cpu_ram": 1000, "gpu_ram": 1000, "gpu_total_ram": 1000, "duration": 24 * 60 * 60,
}

#: Launch modes the create-instance endpoint accepts.
RUNTYPES = ("args", "ssh", "ssh_proxy", "ssh_direct", "jupyter", "jupyter_proxy", "jupyter_direct")

_OPS = {
    "=": "eq", "==": "eq", "eq": "eq", "!=": "neq", "neq": "neq",
    "<": "lt", "lt": "lt", "<=": "lte", "lte": "lte", ">": "gt", "gt": "gt", ">=": "gte",
    "gte": "gte", "in": "in", "nin": "notin", "notin": "notin",
}
# One comparison: FIELD OP VALUE. Symbolic operators may touch their operands, word operators
# need blanks around them. VALUE is a [bracketed, list] or a run of non-blank characters.
_COMPARISON = re.compile(
    r"(?P<field>[A-Za-z_][A-Za-z0-9_]*)"
    r"(?:\s*(?P<sym>>=|<=|==|!=|=|<|>)\s*|\s+(?P<word>notin|nin|neq|eq|lte|lt|gte|gt|in)\s+)"
    r"(?P<value>\[[^\[\]]*\]|\"[^\"]*\"|'[^']*'|[^\s\[\]<>=!\"'][^\s\[\]\"']*)"
    r"(?=\s|$)")
_WILDCARDS = {"any", "*", "?"}
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def parse_query(query_str: Union[str, Iterable[str], None], res: Optional[dict[str, Any]] = None,
                fields: Optional[Iterable[str]] = FIELDS,
                field_alias: Optional[Mapping[str, str]] = None,
                field_multiplier: Optional[Mapping[str, float]] = None) -> dict[str, Any]:
    """Turn a query such as ``gpu_ram>=16 num_gpus=1 gpu_name in [RTX_4090,RTX_3090]`` into the
    search endpoint's filter object ``{"gpu_ram": {"gte": 16000}, "num_gpus": {"eq": 1}, ...}``.

    Operators: ``= == != < <= > >= in nin notin eq neq lt lte gt gte``. Values: numbers,
    ``true``/``false``, words (``_`` stands for a blank: ``RTX_4090`` is ``RTX 4090``),
    ``"quoted text"`` (taken as it is), ``[a,b,...]`` lists for ``in``/``notin``; ``FIELD=any``
    drops the filter on FIELD. Aliases
    (``reliability`` -> ``reliability2``, ``dph`` -> ``dph_total``...) and unit multipliers (GB ->
    MB for RAM, days -> seconds for ``duration``) are applied. Conditions are merged into ``res``
    (changed in place and returned). ``fields=None`` accepts any field name.

    Raises ``ValueError`` naming the offending part for anything else.
    """
    res = {} if res is None else res
    alias = FIELD_ALIAS if field_alias is None else field_alias
    multiplier = FIELD_MULTIPLIER if field_multiplier is None else field_multiplier
    known = None if fields is None else frozenset(fields)
    text = " ".join(query_str) if not isinstance(query_str, str) and query_str is not None \
        else (query_str or "")
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return res
        m = _COMPARISON.match(text, pos)
        if m is None:
            part = text[pos:pos + 40].rstrip()
            raise ValueError(f"cannot read the query at {part!r} (position {pos}): "
                             "expected FIELD OP VALUE, like gpu_ram>=16")
        pos = m.end()
        name, raw = m.group("field"), m.group("value")
        field = alias.get(name, name)
        if known is not None and field not in known:
            raise ValueError(f"unknown field {name!r} in {m.group(0)!r}")
        op = _OPS[m.group("sym") or m.group("word")]
        if raw.lower() in _WILDCARDS:
            if op != "eq":
                raise ValueError(f"{raw!r} only works with '=' in {m.group(0)!r}")
            res.pop(field, None)
            continue
        if op in ("in", "notin"):
            items = [x.strip() for x in raw.strip("[]").split(",") if x.strip()]
            if not items:
                raise ValueError(f"empty list in {m.group(0)!r}")
            value: Any = [_convert(x, field, multiplier, m.group(0)) for x in items]
        elif raw.startswith("["):
            raise ValueError(f"a [list] only works with 'in' or 'notin' in {m.group(0)!r}")
        else:
            value = _convert(raw, field, multiplier, m.group(0))
        res.setdefault(field, {})[op] = value


def _convert(raw: str, field: str, multiplier: Mapping[str, float], part: str) -> Any:
    if field in multiplier:
        if not _NUMBER.match(raw):
            raise ValueError(f"{field} wants a number, not {raw!r}, in {part!r}")
        number = float(raw) * multiplier[field]
        return int(number) if number.is_integer() else number
    if raw[:1] in "\"'":  # quoted text: taken as it is
        return raw[1:-1]
    low = raw.lower()
    if low in ("true", "false"):
        return low == "true"
    if field in BOOL_FIELDS:
        raise ValueError(f"{field} wants true or false, not {raw!r}, in {part!r}")
    if field in FIELDS and field not in TEXT_FIELDS and not _NUMBER.match(raw):
        raise ValueError(f"{field} wants a number, not {raw!r}, in {part!r}")
    if _NUMBER.match(raw):
        number = float(raw)
        return int(number) if number.is_integer() and re.fullmatch(r"[+-]?\d+", raw) else number
    return raw.replace("_", " ")


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PORT = re.compile(r"^(\d{1,5}):(\d{1,5})(/(tcp|udp))?$")


def parse_env(envs: Union[str, Iterable[str], None]) -> dict[str, str]:
    """Parse docker-style options into the create-instance ``env`` object.

    ``-e KEY=VALUE`` (quotes as in a shell: ``-e 'MSG=hello world'``) gives ``{"KEY": "VALUE"}``;
    ``-p 8080:8080`` (optionally ``/udp`` or ``/tcp``) gives ``{"-p 8080:8080": "1"}``, which is how
    the API takes port mappings. A list of strings is read as one option string per element.
    Raises ``ValueError`` naming the offending option for anything else.
    """
    if envs is None:
        return {}
    text = envs if isinstance(envs, str) else " ".join(shlex.quote(e) for e in envs)
    try:
        words = shlex.split(text)
    except ValueError as exc:  # unbalanced quotes
        raise ValueError(f"cannot read the options {text!r}: {exc}") from None
    out: dict[str, str] = {}
    i = 0
    while i < len(words):
        flag = words[i]
        if flag not in ("-e", "-p", "--env"):
            raise ValueError(f"unexpected {flag!r}: options are -e KEY=VALUE and -p HOST:CONTAINER")
        if i + 1 >= len(words):
            raise ValueError(f"{flag} at the end wants a value")
        arg = words[i + 1]
        i += 2
        if flag == "-p":
            m = _PORT.match(arg)
            if not m or not all(1 <= int(p) <= 65535 for p in m.group(1, 2)):
                raise ValueError(f"-p {arg!r}: expected HOST:CONTAINER ports like 8080:8080")
            out[f"-p {arg}"] = "1"
            continue
        key, sep, value = arg.partition("=")
        if not sep or not _ENV_NAME.match(key):
            raise ValueError(f"{flag} {arg!r}: expected KEY=VALUE with KEY a variable name")
        out[key] = value
    return out


def get_runtype(ssh: bool = False, jupyter: bool = False, direct: bool = False,
                args: bool = False) -> str:
    """The create-instance ``runtype`` for the launch options given.

    ``args`` (the default when nothing is asked for) keeps the image's own ENTRYPOINT, which is
    what the worker image needs; ``ssh`` and ``jupyter`` replace it with Vast's (the worker is
    then started by ``onstart``), through Vast's proxy or, with ``direct``, a direct connection.
    """
    if args and (ssh or jupyter):
        raise ValueError("args keeps the image's entrypoint while ssh/jupyter replace it: "
                         "choose one")
    if direct and not (ssh or jupyter):
        raise ValueError("direct needs ssh or jupyter")
    if jupyter:
        return "jupyter_direct" if direct else "jupyter"
    if ssh:
        return "ssh_direct" if direct else "ssh"
    return "args"


def parse_order(order: str) -> list[list[str]]:
    """``"dph_total"``, ``"-dlperf"`` or ``"dlperf-"`` (descending), comma-separated."""
    out = []
    for part in (p.strip() for p in order.split(",")):
        if part:
            desc = part.startswith("-") or part.endswith("-")
            out.append([part.strip("-"), "desc" if desc else "asc"])
    return out


def node_flag(env: Mapping[str, str], key: str = SELF_DESTRUCT) -> bool:
    """How a node reads the on/off setting ``key`` of its environment ``env`` (not this
    process's): by :func:`distribute.settings.flag`'s rule, unset or empty being off; a malformed
    value is a :class:`~distribute.settings.SettingError` naming ``key``."""
    raw = env.get(key)
    if raw is None or raw == "":
        return False
    return settings.flag(key, False, raw)


def node_command(env: Mapping[str, str]) -> list[str]:
    """What the worker image's entry script runs for an instance ``env`` (before Vast adds
    ``CONTAINER_ID``), for display: the values are passed as data, never through a shell."""
    name = env.get("DISTRIBUTE_NAME") or "vast-$CONTAINER_ID"
    cmd = ["distribute", "worker", f"--run={env.get('DISTRIBUTE_RUN', '')}", f"--name={name}",
           "--idle-exit"]
    if node_flag(env, SELF_DESTRUCT):
        cmd.append("--self-destruct")
    return cmd + ["--", env.get("DISTRIBUTE_REMOTE", "")]


def create_body(image: str, env: Optional[Mapping[str, str]] = None,
                onstart: Optional[str] = None, disk: float = 16, label: Optional[str] = None,
                runtype: str = "args", args: Optional[Sequence[str]] = None,
                price: Optional[float] = None) -> dict[str, Any]:
    """The create-instance request body, checked the way the API checks it; ``price`` (a bid in
    $/h) makes the instance interruptible."""
    if not isinstance(image, str) or not image.strip():
        raise ValueError("image must be a non-empty string")
    env = dict(env or {})
    bad = [k for k, v in env.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise TypeError(f"env must map strings to strings; not so for {bad[:3]!r}")
    if runtype not in RUNTYPES:
        raise ValueError(f"runtype must be one of {', '.join(RUNTYPES)}, not {runtype!r}")
    body: dict[str, Any] = {"client_id": "me", "image": image, "env": env, "disk": float(disk),
                            "runtype": runtype}
    if onstart is not None:
        body["onstart"] = onstart
    if label is not None:
        body["label"] = label
    if args is not None:
        if isinstance(args, str) or not all(isinstance(a, str) for a in args):
            raise TypeError("args must be a list of strings (no shell is involved)")
        body["args"] = list(args)
    if price is not None:
        if isinstance(price, bool) or not isinstance(price, (int, float)) or not price > 0:
            raise ValueError(f"a bid price must be a positive number of $/h, not {price!r}")
        body["price"] = float(price)
    return body


def api_message(resp: Any) -> str:
    """The API's own explanation (``msg``, ``message``, ``detail``, ``error``) or the body."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for name in ("msg", "message", "detail", "error"):
            if body.get(name):
                return str(body[name])[:300]
    text = resp.text.strip()
    if text.lower().startswith(("<!doctype", "<html")) or "html" in resp.headers.get(
            "Content-Type", ""):
        title = re.search(r"<title>(.*?)</title>|<h1>(.*?)</h1>", text, re.I | re.S)
        return "an HTML page" + (f" ({(title.group(1) or title.group(2)).strip()[:80]})"
                                 if title else "")
    return " ".join(text.split())[:300] or resp.reason or "no explanation"
