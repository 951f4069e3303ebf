"""Render a report page in headless Chromium with networking disabled: a screenshot, or the DOM as the
browser built it (what a reader's browser shows, checked without a network).

Chromium is found as ``chromium`` (Debian's package), ``chromium-browser`` or ``google-chrome`` on the
PATH, or at ``$ONNXXAI_CHROMIUM``. Every request leaves through a proxy that points nowhere and every
host name resolves to nothing, so a page that needs the network renders without what it fetches.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from onnxxai.errors import InputError

__all__ = ["find_chromium", "chromium_flags", "screenshot", "dump_dom"]

_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """The Chromium executable, or None when none is installed."""
    given = os.environ.get("ONNXXAI_CHROMIUM")
    if given:
        return given if Path(given).exists() else None
    for name in _NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def chromium_flags(profile: str, width: int, height: int) -> list[str]:
    """Headless, no sandbox (root in containers), no GPU, no network (a dead proxy, no name resolution),
    no background traffic, a throwaway profile."""
    return ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
            "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>", "--host-resolver-rules=MAP * ~NOTFOUND",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions",
            "--no-first-run", "--no-default-browser-check", "--metrics-recording-only", "--mute-audio",
            f"--user-data-dir={profile}", f"--window-size={width},{height}"]


def _run(page: Path, extra: list[str], width: int, height: int, timeout: float) -> subprocess.CompletedProcess:
    exe = find_chromium()
    if exe is None:
        raise InputError("no Chromium found (install Debian's chromium package, or set ONNXXAI_CHROMIUM)")
    page = Path(page).resolve()
    if not page.is_file():
        raise InputError(f"{page}: no such page")
    with tempfile.TemporaryDirectory(prefix="onnxxai-chromium-") as profile:
        return subprocess.run([exe, *chromium_flags(profile, width, height), *extra, page.as_uri()],
                              capture_output=True, text=True, timeout=timeout, check=False)


def screenshot(page: str | os.PathLike, png: str | os.PathLike, *, width: int = 1280, height: int = 2400,
               timeout: float = 120) -> Path:
    """Save a ``width`` × ``height`` screenshot of ``page`` (an HTML file) to ``png``."""
    png = Path(png).resolve()
    done = _run(Path(page), [f"--screenshot={png}"], width, height, timeout)
    if not png.is_file() or png.stat().st_size == 0:
        raise InputError(f"Chromium wrote no screenshot of {page} (exit {done.returncode}): {done.stderr.strip()[-500:]}")
    return png


def dump_dom(page: str | os.PathLike, *, width: int = 1280, height: int = 2400, timeout: float = 120) -> str:
    """The serialized DOM of ``page`` after Chromium loaded it."""
    done = _run(Path(page), ["--dump-dom"], width, height, timeout)
    if done.returncode != 0 or "<html" not in done.stdout:
        raise InputError(f"Chromium could not render {page} (exit {done.returncode}): {done.stderr.strip()[-500:]}")
    return done.stdout
