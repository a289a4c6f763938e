"""The rendered book as its readers see it: built from the smoke-executed chapters, opened page by page in headless Chromium.

One build and one visit of every page (module-scoped fixtures) feed the checks: no JavaScript error,
every image loads, every internal link and anchor resolves, the widget panels of chapters 1 and 2
render from their saved state, every formula is typeset by MathJax (served with the book), no code
block, table or formula is wider than its column, a chapter's main figure is shown at a readable
size, and the pages show one parameters cell and no progress bar. Screenshots of every page go to
``_build/screenshots/book/`` for review.

The book must read offline: the browser blocks every request that leaves the local server (and,
on a second visit of every page opened as ``file://``, every request that is not a file of the
book), counts them, and the test fails on any. Without that, a page that asks a CDN for its math
renderer would pass here and show TeX source on a laptop without network.

Run by `make check-book` (and CI): executing every chapter and building the book take a few
minutes. HEATUP_BOOK_HTML=_build/html checks a book already built by `make book`.
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
from heatup_lib.pages import is_progress_line
from heatup_lib.reproduce import project_root, stage_book

ROOT = project_root()
SCREENSHOTS = ROOT / "_build" / "screenshots" / "book"
WIDGET_CHAPTERS = ("01", "02")  # chapters whose pages show interactive panels (sliders, buttons)
WIDGET_VIEW = 'script[type="application/vnd.jupyter.widget-view+json"]'
MAIN_FIGURE_WIDTH = 600  # px: the least width at which a chapter's biggest figure is shown in a 1280-px window


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
    math: dict = field(default_factory=dict)               # formulas: how many, typeset, failed, raw TeX in the text
    overflow: list[str] = field(default_factory=list)      # code blocks, tables, formulas wider than the column
    figures: list[dict] = field(default_factory=list)      # output images: natural and displayed width
    cells: dict = field(default_factory=dict)              # parameters cells and progress bars on the page


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


# Formulas: Sphinx writes each one as .math (\( \) inline, \[ \] display) for MathJax to typeset into an
# mjx-container. What is left of TeX in the visible text outside code is math that was never typeset.
_MATH = r"""() => {
    const math = Array.from(document.querySelectorAll('.math'));
    const skip = 'pre, code, script, style, textarea, mjx-container, .highlight';
    const tex = /\\\(|\\\[|\$\$|\\begin\{|\$[^$\n]*\\[A-Za-z]+[^$\n]*\$/;
    const raw = [];
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
        const parent = n.parentElement;
        if (!parent || parent.closest(skip) || !parent.getClientRects().length) continue;
        const m = n.data.match(tex);
        if (m) raw.push(n.data.slice(Math.max(0, m.index - 30), m.index + 50).trim());
    }
    return {
        formulas: math.length,
        typeset: document.querySelectorAll('mjx-container').length,
        untypeset: math.filter(e => !e.querySelector('mjx-container')).map(e => e.textContent.trim().slice(0, 80)),
        errors: Array.from(document.querySelectorAll('mjx-merror'), e => (e.getAttribute('data-mjx-error') || e.textContent).slice(0, 80)),
        raw: raw,
    };
}"""

# Everything that can be wider than the text column: code blocks and outputs, tables, display formulas; and
# the page itself (a sideways scroll bar). A box that scrolls holds something the reader does not see.
_OVERFLOW = """() => {
    const found = [];
    const doc = document.documentElement;
    if (doc.scrollWidth > doc.clientWidth + 1) found.push(`the page scrolls sideways: ${doc.scrollWidth} px in a ${doc.clientWidth}-px window`);
    const article = document.querySelector('article.bd-article');
    if (!article) return found;
    const style = getComputedStyle(article), box = article.getBoundingClientRect();
    const left = box.left + parseFloat(style.paddingLeft), right = box.right - parseFloat(style.paddingRight);
    const label = e => (e.textContent || '').trim().split('\\n')[0].slice(0, 70);
    const check = (kind, e, scroller) => {
        const r = e.getBoundingClientRect();
        if (!r.width || !r.height) return;  // not displayed (a hidden or collapsed cell)
        if (scroller.scrollWidth > scroller.clientWidth + 1)
            found.push(`${kind} needs ${scroller.scrollWidth} px, has ${scroller.clientWidth}: ${label(e)}`);
        else if (r.right > right + 1 || r.left < left - 1)
            found.push(`${kind} ${Math.round(r.width)} px wide sticks out of the ${Math.round(right - left)}-px column: ${label(e)}`);
    };
    article.querySelectorAll('pre').forEach(e => check('code block', e, e));
    article.querySelectorAll('table').forEach(e => check('table', e, e.closest('.pst-scrollable-table-container') || e.parentElement));
    article.querySelectorAll('div.math').forEach(e => check('formula', e, e));
    return found;
}"""

# The images that cells drew (figures and widget images), as drawn and as shown.
_FIGURES = """() => Array.from(document.querySelectorAll('article .cell_output img'), img => ({
    src: (img.getAttribute('src') || '').slice(-60),
    natural: img.naturalWidth, height: img.naturalHeight,
    shown: img.width,  // the displayed width in CSS pixels, without border and padding
}))"""

# The boilerplate a page must not show: more than its chapter's own parameters cell, and tqdm's widget bars
# (an HBox of an HTML, a progress bar and an HTML; a panel's own progress bar sits in a different box).
_CELLS = """() => ({
    parameters: document.querySelectorAll('.cell.tag_parameters').length,
    injected: document.querySelectorAll('.cell.tag_injected-parameters').length,
    parameters_comment: Array.from(document.querySelectorAll('.cell_input pre'))
        .filter(e => e.textContent.trimStart().startsWith('# Parameters')).length,
    widget_bars: Array.from(document.querySelectorAll('.widget-hbox')).filter(b => {
        const kinds = Array.from(b.children, c => c.classList.contains('widget-hprogress') ? 'bar'
                                            : c.classList.contains('widget-html') ? 'html' : 'other');
        return kinds.join() === 'html,bar,html';
    }).length,
})"""


def _wait_for_mathjax(page, report: PageReport) -> None:
    """Let MathJax typeset the page (its first pass; the widget panels queue theirs behind it)."""
    if not page.locator(".math").count():
        return
    try:
        page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise",
                               timeout=30_000, polling=100)
        page.evaluate("() => MathJax.startup.promise")
        page.wait_for_timeout(300)  # the panels' typesetting, queued after the first pass
    except Exception as err:
        report.errors.append(f"MathJax did not start (is it served with the book?): {str(err).splitlines()[0]}")


def _visit(context, base: str, path: str, screenshot: bool = True) -> PageReport:
    """Open one page, let its scripts, widgets and formulas finish, and record what it showed."""
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
        _wait_for_mathjax(page, report)
        # A window as tall as the page, so that every image is laid out and loaded, as when scrolling.
        if screenshot:
            screenshot_whole_page(page, SCREENSHOTS / (path.removesuffix(".html").replace("/", "__") + ".png"))
        page.wait_for_load_state("load")
        report.math = page.evaluate(_MATH)
        report.overflow = page.evaluate(_OVERFLOW)
        report.figures = page.evaluate(_FIGURES)
        report.cells = page.evaluate(_CELLS)
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


def _crawl(context, html: Path, base: str, screenshot: bool) -> dict[str, PageReport]:
    """Visit every page of the book at ``base``; every request that leaves ``base`` is blocked and counted."""
    current = {"page": ""}
    reports: dict[str, PageReport] = {}

    def route(route) -> None:
        url = route.request.url
        if url.startswith(base) or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            reports[current["page"]].external.append(url)
            route.abort()

    context.route("**/*", route)
    try:
        for path in _pages(html):
            current["page"] = path
            reports[path] = PageReport(path)  # the route handler records into it while the page loads
            external = reports[path].external
            reports[path] = _visit(context, base, path, screenshot=screenshot)
            reports[path].external = external
    finally:
        context.unroute("**/*", route)
    assert reports, f"no pages found in {html}"
    return reports


@pytest.fixture(scope="module")
def crawl(book_html: Path, chromium: str) -> dict[str, PageReport]:
    """Every page of the book, served over HTTP on 127.0.0.1 and visited once in headless Chromium."""
    for old in SCREENSHOTS.glob("*.png"):
        old.unlink()
    with serve_directory(book_html) as base, chromium_context(chromium) as context:
        return _crawl(context, book_html, base, screenshot=True)


@pytest.fixture(scope="module")
def crawl_files(book_html: Path, chromium: str) -> dict[str, PageReport]:
    """Every page again, opened as a file (``file://``), as a reader opens ``_build/html/index.html`` without a server."""
    with chromium_context(chromium) as context:
        return _crawl(context, book_html, book_html.as_uri(), screenshot=False)


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


@pytest.mark.parametrize("how", ["http", "file"])
def test_nothing_is_loaded_from_outside_the_book(request: pytest.FixtureRequest, how: str) -> None:
    """The book reads offline: no page asks for anything that is not one of its own files (a CDN, a font host)."""
    reports: dict[str, PageReport] = request.getfixturevalue("crawl" if how == "http" else "crawl_files")
    assert len(reports) >= 5, f"only {len(reports)} pages visited"
    outside = {p: r.external for p, r in reports.items() if r.external}
    count = sum(len(urls) for urls in outside.values())
    assert not outside, (f"{count} request(s) left the book ({how}); serve those files with the book instead "
                         "(book/_static, or an extension that copies them): " + "; ".join(
                             f"{p}: {sorted(set(urls))[:5]}" for p, urls in outside.items()))


def test_pages_opened_as_files_render(crawl_files: dict[str, PageReport]) -> None:
    """Opened as ``file://`` (no server), every page still typesets its math and draws its widgets, without errors."""
    problems = {}
    for path, r in crawl_files.items():
        found = list(r.errors)
        if r.math.get("untypeset"):
            found.append(f"{len(r.math['untypeset'])} formula(s) not typeset, e.g. {r.math['untypeset'][:2]}")
        if r.widgets_rendered < r.widget_views:
            found.append(f"{r.widget_views} saved widget views, {r.widgets_rendered} drawn")
        if found:
            problems[path] = found
    assert not problems, "as file:// pages:\n" + "\n".join(f"{p}:\n  " + "\n  ".join(e) for p, e in problems.items())


def test_math_is_typeset(crawl: dict[str, PageReport]) -> None:
    """Every formula is typeset by MathJax, without errors, and no TeX source is left in the text a reader sees."""
    with_math = {p: r.math for p, r in crawl.items() if r.math.get("formulas")}
    assert any(p.startswith("notebooks/01_") for p in with_math), "chapter 1 shows no formula: is the page built?"
    problems = {}
    for path, m in with_math.items():
        found = []
        if m["untypeset"]:
            found.append(f"{len(m['untypeset'])} of {m['formulas']} formulas not typeset, e.g. {m['untypeset'][:3]}")
        if m["typeset"] < m["formulas"]:
            found.append(f"{m['formulas']} formulas, {m['typeset']} MathJax outputs")
        if m["errors"]:
            found.append(f"TeX errors: {m['errors'][:5]}")
        if found:
            problems[path] = found
    raw = {p: r.math["raw"] for p, r in crawl.items() if r.math.get("raw")}
    problems.update({p: problems.get(p, []) + [f"TeX source in the text: {texts[:5]}"] for p, texts in raw.items()})
    assert not problems, "\n".join(f"{p}:\n  " + "\n  ".join(e) for p, e in problems.items())


def test_nothing_is_wider_than_its_column(crawl: dict[str, PageReport]) -> None:
    """No code block, output, table or formula is cut off or scrolls sideways in a 1280-px window."""
    problems = {p: r.overflow for p, r in crawl.items() if r.overflow}
    assert not problems, "\n".join(f"{p}:\n  " + "\n  ".join(e) for p, e in problems.items())


def test_main_figure_is_readable(crawl: dict[str, PageReport]) -> None:
    """A chapter's biggest figure is shown at least MAIN_FIGURE_WIDTH px wide; no figure is blown up past its pixels."""
    problems = []
    for path, r in sorted(crawl.items()):
        if not path.startswith("notebooks/") or not r.figures:
            continue
        main = max(r.figures, key=lambda f: f["natural"] * f["height"])
        if main["shown"] < MAIN_FIGURE_WIDTH:
            problems.append(f"{path}: the main figure ({main['natural']} x {main['height']} px, ...{main['src'][-30:]}) "
                            f"is shown {main['shown']} px wide, less than {MAIN_FIGURE_WIDTH}")
        problems += [f"{path}: a figure of {f['natural']} px is shown {f['shown']} px wide (blurred)"
                     for f in r.figures if f["shown"] > 1.05 * f["natural"]]
    assert not problems, "\n".join(problems)


def test_chapter_pages_show_one_parameters_cell_and_no_progress_bars(crawl: dict[str, PageReport]) -> None:
    """papermill's injected parameters cell and tqdm's bars are for a live kernel, not for the page."""
    problems = []
    for path, r in sorted(crawl.items()):
        if not path.startswith("notebooks/"):
            continue
        c = r.cells
        if c.get("parameters") != 1:
            problems.append(f"{path}: {c.get('parameters')} cells tagged parameters (one expected)")
        if c.get("injected") or c.get("parameters_comment"):
            problems.append(f"{path}: papermill's injected parameters cell is shown")
        if c.get("widget_bars"):
            problems.append(f"{path}: {c['widget_bars']} tqdm widget bar(s)")
        bars = [line.strip()[:100] for line in r.text.splitlines() if is_progress_line(line)]
        if bars:
            problems.append(f"{path}: progress bars in the text: {bars[:3]}")
    assert not problems, "\n".join(problems)


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


def test_every_saved_widget_is_drawn(crawl: dict[str, PageReport]) -> None:
    """On any page (not only the chapters with panels), every saved widget view is drawn, none as an error."""
    problems = [f"{p}: {r.widget_views} saved widget views, {r.widgets_rendered} drawn"
                for p, r in sorted(crawl.items()) if r.widgets_rendered < r.widget_views]
    problems += [f"{p}: a widget failed to render" for p, r in sorted(crawl.items()) if "Error displaying widget" in r.text]
    assert not problems, "\n".join(problems)


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
