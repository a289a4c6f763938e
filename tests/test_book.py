"""The rendered book as its readers see it: built from the smoke-executed chapters, opened page by page in headless Chromium.

One build and one visit of every page (module-scoped fixtures) feed the checks: no JavaScript error,
every image loads, every internal link and anchor resolves, the widget panels of chapters 1 and 2
render from their saved state, and nothing is loaded from another host except MathJax. Screenshots
of every page go to ``_build/screenshots/book/`` for review.

The browser blocks every request that leaves the local server, so that the test sees the same thing
with or without a network; MathJax (Sphinx loads it from a CDN) is the one outside script the pages may
ask for, and without it formulas show as TeX source in the screenshots.

Run by `make check-book` (and CI), not `make test`: executing every chapter and building the book take
longer than `make test`'s budget. HEATUP_BOOK_HTML=_build/html checks a book already built by `make book`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from _browser import chromium_context, require_chromium, screenshot_whole_page, serve_directory
from heatup_lib.reproduce import project_root, stage_book

ROOT = project_root()
SCREENSHOTS = ROOT / "_build" / "screenshots" / "book"
WIDGET_CHAPTERS = ("01", "02")  # chapters whose pages show interactive panels (sliders, buttons)
WIDGET_VIEW = 'script[type="application/vnd.jupyter.widget-view+json"]'


@dataclass
class PageReport:
    """What one page showed in the browser."""

    path: str                                              # relative to the HTML root, e.g. "notebooks/01_temperature.html"
    errors: list[str] = field(default_factory=list)        # uncaught exceptions, console errors, failed local requests
    external: list[str] = field(default_factory=list)      # requests to other hosts (blocked)
    broken_images: list[str] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)  # (href as written, absolute URL)
    ids: set[str] = field(default_factory=set)
    widget_views: int = 0                                  # saved widget views on the page
    widgets_rendered: int = 0                              # of those, the ones the widget manager drew
    controls: dict[str, int] = field(default_factory=dict)
    panel_context: list[str] = field(default_factory=list)  # text around each panel with sliders or buttons
    text: str = ""


def _console_error_counts(message: object) -> bool:
    """Whether a console error is a real error rather than the echo of a failed request.

    Chromium echoes every failed resource load as a console error "Failed to load resource: ...";
    those requests are checked on their own (local ones must succeed, other hosts are blocked and
    listed), so the echo is not counted twice.
    """
    return not str(getattr(message, "text", message)).startswith("Failed to load resource")


def _is_favicon(url: str) -> bool:
    """Chromium asks every site for /favicon.ico whatever the page says; the book declares none."""
    return urlsplit(url).path == "/favicon.ico"


@pytest.fixture(scope="module")
def chromium() -> str:
    return require_chromium()


@pytest.fixture(scope="module")
def book_html(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The book built as `make book` builds it, from the chapters executed on the smoke preset.

    HEATUP_BOOK_HTML=path checks an existing build instead (e.g. `_build/html` after `make book`).
    """
    if os.environ.get("HEATUP_BOOK_HTML"):
        html = Path(os.environ["HEATUP_BOOK_HTML"]).resolve()
        assert (html / "index.html").is_file(), f"HEATUP_BOOK_HTML={html} holds no built book (no index.html)"
        return html
    tmp = tmp_path_factory.mktemp("book")
    executed = tmp / "executed"
    proc = subprocess.run(
        [sys.executable, "-m", "heatup_lib.cli", "reproduce", "--preset", "smoke", "--out", str(executed),
         "-p", "runs_dir", str(tmp / "runs")],
        cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"heatup reproduce --preset smoke failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    site = stage_book(executed, tmp / "site", ROOT)
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    proc = subprocess.run(
        [str(jupyter_book), "build", str(site), "--path-output", str(tmp), "--warningiserror", "--keep-going"],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"jupyter-book build failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    html = tmp / "_build" / "html"
    assert (html / "index.html").is_file(), f"no index.html in {html}"
    return html


def _pages(html: Path) -> list[str]:
    """Every HTML page of the built book (not the theme's template fragments under _static/)."""
    return sorted(p.relative_to(html).as_posix() for p in html.rglob("*.html")
                  if p.relative_to(html).parts[0] not in ("_static", "_sources", "_images"))


# The text around each rendered panel that has sliders or buttons: the three blocks before its cell and the one after.
_PANEL_CONTEXT = """() => Array.from(document.querySelectorAll('.widget-subarea'))
    .filter(w => w.querySelector('.widget-slider, .widget-button'))
    .map(w => {
        const cell = w.closest('.cell') || w;
        const texts = [];
        let e = cell;
        for (let i = 0; i < 3 && e.previousElementSibling; i++) { e = e.previousElementSibling; texts.push(e.innerText); }
        if (cell.nextElementSibling) texts.push(cell.nextElementSibling.innerText);
        return texts.join(' ');
    })"""


def _visit(context, base: str, path: str) -> PageReport:
    """Open one page, let its scripts and widgets finish, and record what it showed."""
    report = PageReport(path)
    page = context.new_page()
    seen_failures: set[str] = set()

    def on_console(message) -> None:
        if message.type == "error" and _console_error_counts(message):
            where = message.location.get("url", "") if message.location else ""
            report.errors.append(f"console error: {message.text} ({where})")

    def on_response(response) -> None:
        if response.url.startswith(base) and response.status >= 400 and not _is_favicon(response.url):
            seen_failures.add(response.url)
            report.errors.append(f"HTTP {response.status} for {response.url[len(base):]}")

    def on_request_failed(request) -> None:
        url = request.url
        if url.startswith(base) and url not in seen_failures and not _is_favicon(url):
            report.errors.append(f"request failed ({request.failure}) for {url[len(base):]}")

    page.on("pageerror", lambda exc: report.errors.append(f"uncaught exception: {exc}"))
    page.on("console", on_console)
    page.on("response", on_response)
    page.on("requestfailed", on_request_failed)
    try:
        page.goto(f"{base}/{path}", wait_until="load", timeout=60_000)
        report.widget_views = page.locator(WIDGET_VIEW).count()
        if report.widget_views:
            # html-manager draws each saved view into a div.widget-subarea beside its script tag
            page.wait_for_function(
                f"() => document.querySelectorAll('{WIDGET_VIEW}').length <= "
                "document.querySelectorAll('.widget-subarea > .jupyter-widgets').length", timeout=30_000,
                polling=250)
        # A window as tall as the page, so that every image is laid out and loaded, as when scrolling.
        screenshot_whole_page(page, SCREENSHOTS / (path.removesuffix(".html").replace("/", "__") + ".png"))
        page.wait_for_load_state("load")
        report.broken_images = page.evaluate(
            """() => Array.from(document.images)
                   .filter(img => !(img.complete && img.naturalWidth > 0))
                   .map(img => (img.getAttribute('src') || '').slice(0, 120) + ' (alt: ' + (img.alt || '') + ')')""")
        report.widgets_rendered = page.locator(".widget-subarea > .jupyter-widgets").count()
        report.controls = page.evaluate(
            """() => Object.fromEntries(['.widget-slider', '.widget-button', '.widget-dropdown', '.widget-image']
                   .map(s => [s, document.querySelectorAll(s).length]))""")
        report.panel_context = page.evaluate(_PANEL_CONTEXT)
        report.links = [tuple(x) for x in page.evaluate(
            "() => Array.from(document.querySelectorAll('a[href]'), a => [a.getAttribute('href'), a.href])")]
        report.ids = set(page.evaluate(
            "() => Array.from(document.querySelectorAll('[id], a[name]'), e => e.id || e.getAttribute('name'))"))
        report.text = page.inner_text("body")
        page.wait_for_timeout(200)  # late errors of scripts that run after load
    except Exception as err:  # a page that does not load or render is a finding, not a crash of the crawl
        report.errors.append(f"could not inspect the page: {err}")
    finally:
        page.close()
    return report


@pytest.fixture(scope="module")
def crawl(book_html: Path, chromium: str) -> dict[str, PageReport]:
    """Every page of the book, visited once in headless Chromium."""
    for old in SCREENSHOTS.glob("*.png"):
        old.unlink()
    reports: dict[str, PageReport] = {}
    with serve_directory(book_html) as base, chromium_context(chromium) as context:
        external: dict[str, list[str]] = {}

        def route(route) -> None:
            url = route.request.url
            if url.startswith(base) or url.startswith(("data:", "blob:")):
                route.continue_()
            else:
                external.setdefault(route.request.frame.url if route.request.frame else "", []).append(url)
                route.abort()

        context.route("**/*", route)
        for path in _pages(book_html):
            reports[path] = _visit(context, base, path)
            reports[path].external = external.pop(f"{base}/{path}", [])
    assert reports, f"no pages found in {book_html}"
    return reports


def test_book_has_the_chapters(crawl: dict[str, PageReport]) -> None:
    chapters = sorted(p for p in crawl if p.startswith("notebooks/"))
    expected = sorted(f"notebooks/{nb.stem}.html" for nb in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")))
    assert expected, "no chapter notebooks in notebooks/"
    missing = [p for p in expected if p not in crawl]
    assert not missing, f"chapters missing from the built book (is every chapter in _toc.yml?): {missing}"
    assert chapters == expected, f"unexpected pages under notebooks/: {sorted(set(chapters) - set(expected))}"


def test_no_javascript_errors(crawl: dict[str, PageReport]) -> None:
    problems = {p: r.errors for p, r in crawl.items() if r.errors}
    assert not problems, "JavaScript errors or failed requests:\n" + "\n".join(
        f"{p}:\n  " + "\n  ".join(errs) for p, errs in problems.items())


def test_nothing_loaded_from_other_hosts_but_mathjax(crawl: dict[str, PageReport]) -> None:
    outside = {p: [u for u in r.external if "mathjax" not in urlsplit(u).path.lower()] for p, r in crawl.items()}
    outside = {p: urls for p, urls in outside.items() if urls}
    assert not outside, ("pages load files from other hosts (the book must read offline; serve them from "
                         f"book/_static instead): {outside}")


def test_every_image_loads(crawl: dict[str, PageReport]) -> None:
    broken = {p: r.broken_images for p, r in crawl.items() if r.broken_images}
    assert not broken, f"images that did not load: {broken}"


def _ids_of(html: Path, path: str, crawl: dict[str, PageReport]) -> set[str]:
    """The anchors of a page: from the browser when it was visited, else from its file."""
    if path in crawl:
        return crawl[path].ids
    text = (html / path).read_text(errors="replace")
    return set(re.findall(r'\s(?:id|name)="([^"]+)"', text))


def test_internal_links_resolve(crawl: dict[str, PageReport], book_html: Path) -> None:
    broken: list[str] = []
    checked = 0
    for path, report in crawl.items():
        for href, url in report.links:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.hostname != "127.0.0.1":
                continue  # another host (repository, launch buttons, DOIs), mailto:, javascript:
            target = unquote(parts.path).lstrip("/")
            file = book_html / target
            if file.is_dir():
                file, target = file / "index.html", (target.rstrip("/") + "/index.html").lstrip("/")
            checked += 1
            if not file.is_file():
                broken.append(f"{path}: {href!r} -> missing file {target}")
            elif parts.fragment and file.suffix == ".html" and unquote(parts.fragment) not in _ids_of(book_html, target, crawl):
                broken.append(f"{path}: {href!r} -> no anchor #{unquote(parts.fragment)} in {target}")
    assert checked, "no internal links found: the crawl saw nothing"
    broken = sorted(set(broken))
    assert not broken, f"{len(broken)} of {checked} internal links are broken:\n" + "\n".join(broken)


@pytest.mark.parametrize("chapter", WIDGET_CHAPTERS)
def test_chapter_widgets_render_from_saved_state(crawl: dict[str, PageReport], chapter: str) -> None:
    pages = [p for p in crawl if p.startswith(f"notebooks/{chapter}_")]
    assert len(pages) == 1, f"expected one page for chapter {chapter}, found {pages}"
    report = crawl[pages[0]]
    assert report.widget_views > 0, (f"{pages[0]} holds no saved widget view: was the notebook executed with "
                                     "widget state saved, and does its panel cell display the panel?")
    assert report.widgets_rendered >= report.widget_views, (
        f"{pages[0]}: {report.widget_views} saved widget views but {report.widgets_rendered} rendered")
    assert "Error displaying widget" not in report.text, f"{pages[0]}: a widget failed to render"
    assert report.controls.get(".widget-slider", 0) > 0, f"{pages[0]}: no slider in the rendered panels: {report.controls}"

    silent = [text[:200] for text in report.panel_context if not re.search(r"kernel|jupyterlab", text, re.I)]
    assert not silent, (f"{pages[0]}: an interactive panel without a note beside it that it needs a live kernel "
                        f"(JupyterLab); the text around it: {silent}")
