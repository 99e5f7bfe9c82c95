"""``distribute.__all__`` is what the API reference calls public, no more and no less (after
httpx's ``tests/test_exported_members.py``)."""
from __future__ import annotations

import importlib
import re
import types
from pathlib import Path
from typing import Any

import distribute

API_PAGE = Path(__file__).resolve().parent.parent / "docs" / "api.md"
#: Documented whole on the API page, and every public member exported from the package root.
EXPORTED_MODULES = ("exceptions",)


def directives() -> list[str]:
    """The objects the API page renders (``::: distribute.NAME``), without ``distribute.``."""
    return re.findall(r"^::: distribute\.([\w.]+)\s*$", API_PAGE.read_text(encoding="utf-8"),
                      flags=re.M)


def resolve(dotted: str) -> Any:
    """The object ``distribute.<dotted>`` names (importing the submodules on the way)."""
    obj: Any = distribute
    for part in dotted.split("."):
        if not hasattr(obj, part) and isinstance(obj, types.ModuleType):
            importlib.import_module(f"{obj.__name__}.{part}")
        obj = getattr(obj, part)
    return obj


def public_members(module: types.ModuleType) -> set[str]:
    """The names a module defines for its users: ``__all__``, else its public non-modules."""
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n, v in vars(module).items()
                 if not n.startswith("_") and not isinstance(v, types.ModuleType)
                 and getattr(v, "__module__", module.__name__) == module.__name__]
    return set(names)


def documented_public() -> set[str]:
    """Every name the API page documents as ``from distribute import NAME``: the objects it
    renders (not modules), the members of :data:`EXPORTED_MODULES`, and the dunder names its text
    mentions as ``distribute.__NAME__`` (but ``__all__``)."""
    names = {d.rpartition(".")[2] for d in directives()
             if not isinstance(resolve(d), types.ModuleType)}
    for module in EXPORTED_MODULES:
        names |= public_members(resolve(module))
    text = API_PAGE.read_text(encoding="utf-8")
    return names | (set(re.findall(r"`distribute\.(__\w+__)`", text)) - {"__all__"})


def test_every_exported_name_exists_and_is_documented() -> None:
    assert len(distribute.__all__) == len(set(distribute.__all__))
    assert [n for n in distribute.__all__ if not hasattr(distribute, n)] == []
    assert sorted(set(distribute.__all__) - documented_public()) == []


def test_every_documented_name_is_exported() -> None:
    assert sorted(documented_public() - set(distribute.__all__)) == []


def test_every_documented_object_is_the_exported_one() -> None:
    """A page entry rendered from a submodule (``distribute.loop.run_worker_loop``) names the
    very object ``distribute`` exports."""
    for dotted in directives():
        obj = resolve(dotted)
        if not isinstance(obj, types.ModuleType):
            assert getattr(distribute, dotted.rpartition(".")[2]) is obj, dotted


def test_every_public_top_level_name_is_exported() -> None:
    """What ``dir(distribute)`` shows beside the submodules is ``__all__`` (and dunders)."""
    public = {n for n in dir(distribute) if not n.startswith("_")
              and not isinstance(getattr(distribute, n), types.ModuleType)}
    assert sorted(public - set(distribute.__all__)) == []
    assert sorted(set(distribute.__all__) - public) == ["__version__"]


def test_star_import_gives_the_exported_names() -> None:
    namespace: dict[str, Any] = {}
    exec("from distribute import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(distribute.__all__)
