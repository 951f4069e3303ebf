"""Replace a generated block of README.md, between ``<!-- TAG:start -->`` and ``<!-- TAG:end -->``."""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def write_block(tag: str, text: str) -> None:
    """Put ``text`` between the README's markers for ``tag`` (the markers must already be there)."""
    content = README.read_text()
    pattern = rf"<!-- {re.escape(tag)}:start -->.*?<!-- {re.escape(tag)}:end -->"
    if not re.search(pattern, content, flags=re.S):
        raise SystemExit(f"README.md has no <!-- {tag}:start --> ... <!-- {tag}:end --> block")
    block = f"<!-- {tag}:start -->\n{text}\n<!-- {tag}:end -->"
    README.write_text(re.sub(pattern, lambda _: block, content, flags=re.S))
    print(f"updated the {tag} block of {README}", file=sys.stderr)


def read_block(tag: str) -> str:
    """The text between the README's markers for ``tag`` ("" when the block is empty)."""
    content = README.read_text()
    match = re.search(rf"<!-- {re.escape(tag)}:start -->\n?(.*?)\n?<!-- {re.escape(tag)}:end -->", content, flags=re.S)
    if not match:
        raise SystemExit(f"README.md has no <!-- {tag}:start --> ... <!-- {tag}:end --> block")
    return match.group(1)
