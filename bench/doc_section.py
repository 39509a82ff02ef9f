"""Recording a benchmark's result in docs/benchmarks.md: each benchmark owns the text between
its two marker comments and leaves the rest of the file as it is."""

from __future__ import annotations

from pathlib import Path


def replace_section(path: Path, text: str, begin: str, end: str) -> None:
    """Put ``text`` (which starts with ``begin`` and ends with ``end``) in place of the marked
    section of ``path``, or append it when the file has no such section yet."""
    doc = path.read_text() if path.exists() else ""
    if begin in doc and end in doc:
        head, rest = doc.split(begin, 1)
        doc = head + text + rest.split(end, 1)[1]
    else:
        doc = doc.rstrip("\n") + "\n\n" + text + "\n"
    path.write_text(doc)
