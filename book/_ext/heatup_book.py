"""Sphinx fixes for the book's HTML pages, loaded by jupyter-book as a local extension (``_config.yml``)."""

from __future__ import annotations

from typing import Any


def _dedupe_scripts(app: Any, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    """Drop repeated inline scripts from a page.

    sphinx-thebe 0.3 registers its inline configuration script (``const THEBE_JS_URL = ...``) in a
    way that Sphinx 7 emits twice on every page, and the browser then throws "Identifier
    'THEBE_JS_URL' has already been declared". Scripts with the same source, body and attributes are
    kept once, in their first position.
    """
    scripts = context.get("script_files")
    if not isinstance(scripts, list):
        return
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    kept = []
    for script in scripts:
        attributes = getattr(script, "attributes", {}) or {}
        key = (str(getattr(script, "filename", script) or ""), tuple(sorted((k, str(v)) for k, v in attributes.items())))
        if key in seen:
            continue
        seen.add(key)
        kept.append(script)
    context["script_files"] = kept


def setup(app: Any) -> dict[str, Any]:
    """Register the fixes with Sphinx."""
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
