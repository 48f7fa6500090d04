"""Generated files that are committed: write them, or check that the committed copies are current."""

from __future__ import annotations

import sys
from pathlib import Path


def sync_generated(files: dict[Path, str], *, check: bool, regenerate: str) -> int:
    """Write every file (``check=False``) or report the stale ones; returns an exit code."""
    stale = []
    for path, text in files.items():
        if check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    if stale:
        print(f"stale, run `{regenerate}`: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0
