"""Headless Chromium for the browser tests: Debian's /usr/bin/chromium driven by Playwright, never a downloaded browser.

Locally a missing Chromium skips the browser tests (``make browser`` installs it); in CI (``CI=true``) it
fails them, so that CI can never pass without having looked at a page.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# HEATUP_CHROMIUM: another Chromium binary (e.g. chromium-browser on Ubuntu); the default is Debian's.
CHROMIUM = os.environ.get("HEATUP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 900}


def in_ci() -> bool:
    """Whether the tests run in CI (``CI=true``), where nothing may be skipped for want of a browser."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require_chromium() -> str:
    """The Chromium binary; skip the test when it is missing locally, fail when it is missing in CI."""
    path = shutil.which(CHROMIUM) if not os.path.isabs(CHROMIUM) else CHROMIUM
    if path and os.access(path, os.X_OK):
        return path
    message = (f"no Chromium at {CHROMIUM!r} (set HEATUP_CHROMIUM, or install Debian's chromium and "
               f"chromium-driver: `make browser` as root)")
    if in_ci():
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(message)


@contextlib.contextmanager
def chromium_context(executable: str) -> Iterator[Any]:
    """A Playwright browser context on ``executable`` with a fresh user-data-dir, closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw, tempfile.TemporaryDirectory(prefix="heatup-chromium-") as profile:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=executable, headless=True, args=CHROMIUM_ARGS, viewport=VIEWPORT,
            service_workers="block")
        try:
            yield context
        finally:
            context.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """A static file handler that does not log every request to stderr."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (the base class's name)
        pass


@contextlib.contextmanager
def serve_directory(directory: Path) -> Iterator[str]:
    """Serve ``directory`` over HTTP on a free local port; yield its base URL ``http://127.0.0.1:PORT``."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="book-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def screenshot_whole_page(page: Any, path: Path, max_height: int = 30000) -> None:
    """Save a picture of the whole page as a reader sees it in a 1280-pixel-wide window.

    The window is made as tall as the page (at most ``max_height``) instead of using Playwright's
    full-page mode, which lays out the book's theme differently from a real window.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    page.evaluate("() => window.scrollTo(0, 0)")
    height = int(page.evaluate("() => document.documentElement.scrollHeight"))
    page.set_viewport_size({"width": VIEWPORT["width"], "height": max(VIEWPORT["height"], min(height, max_height))})
    page.wait_for_timeout(300)
    page.screenshot(path=str(path))
    page.set_viewport_size(VIEWPORT)
