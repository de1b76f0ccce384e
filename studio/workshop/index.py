"""The workshop's index: whatever notebooks a folder holds, with their titles and lengths.

A notebook's title is its first Markdown heading; its length and one-line summary come
from its metadata, ``{"workshop": {"minutes": 20, "summary": "..."}}``. Nothing is
listed by hand, so a notebook added to the folder (say ``04-...``) shows up at once,
in file-name order, in every notebook's navigation strip.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class NotebookEntry:
    file: str  # the file name, which is also the relative link
    title: str
    minutes: int | None
    summary: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NotebookEntry:
        return cls(**dict(data))


def _title(cells: list[dict[str, Any]], fallback: str) -> str:
    for cell in cells:
        if cell.get("cell_type") != "markdown":
            continue
        source = cell.get("source", "")
        text = "".join(source) if isinstance(source, list) else str(source)
        for line in text.splitlines():
            if line.startswith("# "):
                return line[2:].strip()
    return fallback


def read_entry(path: str | Path) -> NotebookEntry:
    """One notebook's entry; a notebook without metadata still gets its file name as title."""
    path = Path(path)
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path.name} is not a readable notebook ({exc}); fix or remove it from the workshop folder") from None
    meta = nb.get("metadata", {}).get("workshop", {})
    minutes = meta.get("minutes")
    return NotebookEntry(
        file=path.name,
        title=_title(nb.get("cells", []), path.stem),
        minutes=int(minutes) if isinstance(minutes, (int, float)) and not isinstance(minutes, bool) else None,
        summary=str(meta.get("summary", "")),
    )


def list_notebooks(folder: str | Path = ".") -> list[NotebookEntry]:
    """Every ``*.ipynb`` directly in ``folder``, by file name (checkpoints and hidden files skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"no workshop folder at {folder}")
    return [read_entry(p) for p in sorted(folder.glob("*.ipynb")) if not p.name.startswith(".")]


def nav_html(entries: list[NotebookEntry], current: str) -> str:
    """A strip of links to every notebook; the current one is marked, not linked."""
    items = []
    for e in entries:
        minutes = f" <span class='workshop-nav-minutes'>{e.minutes} min</span>" if e.minutes else ""
        label = html.escape(e.title)
        if e.file == current:
            items.append(f"<span class='workshop-nav-item workshop-nav-current'>{label}{minutes}</span>")
        else:
            tip = html.escape(e.summary, quote=True)
            href = html.escape(e.file, quote=True)
            items.append(f"<a class='workshop-nav-item workshop-nav-link' href='{href}' title='{tip}'>{label}{minutes}</a>")
    return "<nav class='workshop-nav'><span class='workshop-nav-label'>Workshop</span>" + "".join(items) + "</nav>"


def total_minutes(entries: list[NotebookEntry]) -> int:
    return sum(e.minutes or 0 for e in entries)
