"""MkDocs hooks of this site: pages that may not exist yet, and text generated from the code.

* Pages listed in :data:`OPTIONAL` are left out of the navigation while they do not exist (so
  that ``mkdocs build --strict`` passes before they are written); any other missing page fails.
* ``<!-- generated: settings -->`` becomes the table of every setting, from
  :data:`distribute.settings.SETTINGS` (what ``distribute config`` prints).
* ``<!-- generated: cli -->`` becomes ``distribute COMMAND --help`` of every command, from the
  argument parser itself.
* Sphinx roles in docstrings (``:class:`Worker```) are shown as the code they name.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path
from typing import Any

#: Pages written by others that may not exist yet.
OPTIONAL = ("hub.md", "optuna.md")
_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj|ref):(?=<code>)")


def _prune(nav: list[Any], docs: Path) -> list[Any]:
    out: list[Any] = []
    for item in nav:
        if isinstance(item, dict):
            (title, target), = item.items()
            if isinstance(target, list):
                target = _prune(target, docs)
                if not target:
                    continue
            elif target in OPTIONAL and not (docs / target).exists():
                continue
            out.append({title: target})
        elif not (item in OPTIONAL and not (docs / item).exists()):
            out.append(item)
    return out


def on_config(config: Any) -> Any:
    """Leave the optional pages that do not exist yet out of the navigation."""
    config["nav"] = _prune(config["nav"], Path(config["docs_dir"]))
    return config


def _settings_table() -> str:
    from distribute.settings import SETTINGS

    rows = ["| setting | default | kind | what it is |", "|---|---|---|---|"]
    for row in SETTINGS:
        default = row.shown_default
        shown = f"`{default}`" if default is not None else "—"
        kind = row.kind
        if kind in ("seconds", "number", "count"):
            kind += f" {'≥' if row.zero_ok else '>'} {row.minimum:g}"
            kind += f", ≤ {row.maximum:g}" if row.maximum is not None else ""
        if row.choices:
            kind = "one of " + " / ".join(f"`{choice}`" for choice in row.choices)
        rows.append(f"| `{row.name}` | {shown} | {kind} | {row.help.replace('|', '/')} |")
    return "\n".join(rows)


def _cli_help() -> str:
    from distribute.cli import build_parser

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal: make the page the same anywhere
    try:
        parser = build_parser()
        sub = next(a for a in parser._actions if a.dest == "command")  # noqa: SLF001
        parts = []
        for name, command in sub.choices.items():  # type: ignore[union-attr]
            text = io.StringIO()
            with contextlib.redirect_stdout(text):
                command.print_help()
            parts.append(f"### distribute {name}\n\n```text\n{text.getvalue().rstrip()}\n```\n")
        return "\n".join(parts)
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old


def on_page_markdown(markdown: str, **_: Any) -> str:
    """Fill in the generated parts."""
    if "<!-- generated: settings -->" in markdown:
        markdown = markdown.replace("<!-- generated: settings -->", _settings_table())
    if "<!-- generated: cli -->" in markdown:
        markdown = markdown.replace("<!-- generated: cli -->", _cli_help())
    return markdown


def on_page_content(html: str, **_: Any) -> str:
    """``:class:`Worker``` in a docstring: show just the code."""
    return _ROLE.sub("", html)
