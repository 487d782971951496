"""Headless Chromium for report tests (Debian package ``chromium``), with the network blocked."""

from __future__ import annotations

import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    # nothing may be fetched from the network: resolve every host to nowhere
    "--host-resolver-rules=MAP * ~NOTFOUND",
]

MISSING = (
    "Chromium is not installed (Debian: apt-get install -y chromium; `make test` does it as root)"
)


def chromium() -> str | None:
    """The Chromium executable, or ``None``."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def skip_without_chromium() -> bool:
    """Whether the rendering tests are skipped: Chromium missing, and CI not requiring it.

    ``.ci/run`` sets ``MEDCLS_REQUIRE_BROWSER=1``: there a missing browser fails the tests.
    """
    return chromium() is None and not os.environ.get("MEDCLS_REQUIRE_BROWSER")


def _command(profile: Path) -> list[str]:
    exe = chromium()
    if exe is None:
        raise RuntimeError(MISSING)
    return [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]


def render_dom(page: Path, profile: Path) -> str:
    """The DOM after the page loaded and its scripts ran."""
    result = subprocess.run(
        [*_command(profile), "--virtual-time-budget=5000", "--dump-dom", page.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise RuntimeError(f"chromium failed: {result.stderr[-2000:]}")
    return result.stdout


def screenshot(page: Path, out: Path, profile: Path, size: tuple[int, int] = (1280, 2400)) -> Path:
    """A PNG screenshot of the page's top ``size`` pixels."""
    result = subprocess.run(
        [
            *_command(profile),
            f"--window-size={size[0]},{size[1]}",
            "--hide-scrollbars",
            f"--screenshot={out}",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0 or not out.is_file():
        raise RuntimeError(f"chromium screenshot failed: {result.stderr[-2000:]}")
    return out


class PageElements(HTMLParser):
    """Images, tables, the body's attributes and any external reference of a page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.images: list[dict[str, str]] = []
        self.tables: list[dict[str, str]] = []
        self.external: list[str] = []
        self.body: dict[str, str] = {}
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = {k: v or "" for k, v in attrs}
        if tag == "img":
            self.images.append(attrs)
        if tag == "table":
            self.tables.append(attrs)
        if tag == "body":
            self.body = attrs
        for key in ("src", "href"):
            value = attrs.get(key) or ""
            if value and not value.startswith(("data:", "#")):
                self.external.append(value)
        if tag == "link":
            self.external.append(str(attrs))

    def loaded_figures(self) -> set[str]:
        """``data-figure`` of the images the browser decoded (marked by the page's script)."""
        return {i["data-figure"] for i in self.images if i.get("data-loaded") == "1"}
