"""Debian's Chromium, driven by playwright (no browser download): the click page and rerun's web viewer."""

from __future__ import annotations

import shutil
import time

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# A headless browser that talks to nothing but the page under test.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def launch_chromium(playwright, args=CHROMIUM_ARGS):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=list(args))


def open_when_served(page, url: str, seconds: float = 300) -> None:
    """A browser page at `url` once the node serving it is up (it may still be loading its model)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            page.goto(url, timeout=5_000)
            return
        except Exception:  # the port is not open yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
