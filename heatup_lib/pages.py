"""What the book's pages show of an executed chapter: papermill's parameters cell hidden, progress bars left out.

An executed notebook keeps everything a live kernel printed; a page of the book is read later, by
someone for whom a progress bar at 100% or a second parameters cell is noise. ``page_notebook``
makes the page's copy of an executed notebook (the notebooks themselves keep their bars, and
``heatup reproduce`` keeps the executed ones as papermill wrote them):

- papermill's injected ``# Parameters`` cell (tag ``injected-parameters``) gets jupyter-book's
  ``remove-cell`` tag, so that a page shows its chapter's own ``parameters`` cell once;
- tqdm's output is dropped: the widget bars of ``tqdm.notebook`` (an HBox of HTML, progress bar,
  HTML; their models are dropped from the saved widget state too) and the text bars a worker
  process writes to stderr (the lines of the stream that are bars; the rest of it is kept;
  consecutive outputs of one stream are first merged, as the page shows them anyway).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

__all__ = ["INJECTED_TAG", "REMOVE_TAG", "is_progress_line", "page_notebook", "write_page_notebook"]

INJECTED_TAG = "injected-parameters"   # papermill's tag on the cell it adds
REMOVE_TAG = "remove-cell"             # jupyter-book / myst-nb: the cell is not rendered at all
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"

# tqdm's default formats: "desc: 40%|####      | 4/10 [00:01<00:02, 2.50it/s]" and, without a total,
# "desc: 12it [00:01, 9.80it/s]"; the counters may carry SI prefixes (1.2k), the rate any unit ("?run/s", "3.1s/step").
_BAR = re.compile(
    r"(?:\d{1,3}%\|[^|\n]*\|\s*\S+/\S+|\d+(?:\.\d+)?[kMGTPEZY]?\w*)"
    r"\s+\[\d+:\d{2}(?::\d{2})?(?:<[^,\]\n]*)?,[^\]\n]*(?:/s|s/)[^\]\n]*\]")
_PROGRESS_MODELS = ("FloatProgressModel", "IntProgressModel")


def is_progress_line(text: str) -> bool:
    """Whether one line of a stream (between carriage returns and newlines) is a tqdm bar."""
    return bool(_BAR.search(text))


def _strip_bars(text: str) -> str:
    """``text`` without its progress-bar lines; a line redrawn with ``\\r`` counts as a bar if any redraw is one."""
    lines = text.split("\n")
    kept = []
    for i, line in enumerate(lines):
        parts = [p for p in line.split("\r") if p.strip()]
        if parts and any(is_progress_line(p) for p in parts):
            continue  # the bar and its newline
        shown = parts[-1] if parts else line.replace("\r", "")  # a line drawn over shows its last drawing
        kept.append(shown + ("\n" if i < len(lines) - 1 else ""))
    return "".join(kept)


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value or "")


def _references(model: dict[str, Any]) -> set[str]:
    """The model ids that a widget model's state refers to (``"IPY_MODEL_<id>"`` strings, at any depth)."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, str) and value.startswith("IPY_MODEL_"):
            found.add(value.removeprefix("IPY_MODEL_"))
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(model.get("state", {}))
    return found


def _is_bar_model(model_id: str, state: dict[str, Any]) -> bool:
    """Whether a saved widget is tqdm.notebook's bar: an HBox of an HTML, a progress bar and an HTML."""
    model = state.get(model_id)
    if not model or model.get("model_name") != "HBoxModel":
        return False
    children = [state.get(str(c).removeprefix("IPY_MODEL_"), {}).get("model_name")
                for c in model.get("state", {}).get("children", [])]
    return len(children) == 3 and children[0] == children[2] == "HTMLModel" and children[1] in _PROGRESS_MODELS


def _is_bar_output(output: dict[str, Any], state: dict[str, Any]) -> bool:
    """Whether a display output is a tqdm widget bar (or, its model gone from the saved state, says it is one)."""
    view = output.get("data", {}).get(WIDGET_VIEW)
    if not isinstance(view, dict):
        return False
    model_id = view.get("model_id", "")
    if model_id in state:
        return _is_bar_model(model_id, state)
    return is_progress_line(_text(output["data"].get("text/plain", "")))


def _drop_models(state: dict[str, Any], roots: set[str]) -> None:
    """Remove the models of ``roots`` and what they alone refer to (layouts, styles, children) from ``state``."""
    candidates: set[str] = set()
    todo = [r for r in roots if r in state]
    while todo:
        mid = todo.pop()
        if mid in candidates or mid not in state:
            continue
        candidates.add(mid)
        todo.extend(_references(state[mid]))
    still_used: set[str] = set()
    for mid, model in state.items():
        if mid not in candidates:
            still_used |= _references(model)
    for mid in candidates - still_used:
        del state[mid]


def _merge_streams(outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Consecutive outputs of one stream as one (as the page shows them, ``nb_merge_streams``), so that a bar
    that the kernel sent in two pieces is seen whole."""
    merged: list[dict[str, Any]] = []
    for output in outputs:
        last = merged[-1] if merged else None
        if (output.get("output_type") == "stream" and last is not None and last.get("output_type") == "stream"
                and last.get("name") == output.get("name")):
            merged[-1] = {**last, "text": _text(last.get("text")) + _text(output.get("text"))}
        else:
            merged.append(output)
    return merged


def page_notebook(nb: dict[str, Any]) -> dict[str, Any]:
    """The page's copy of an executed notebook (a notebook as JSON, changed in place and returned); see the module."""
    widgets = nb.get("metadata", {}).get("widgets", {}).get(WIDGET_STATE, {})
    state = widgets.get("state", {}) if isinstance(widgets, dict) else {}
    dropped_views: set[str] = set()
    for cell in nb.get("cells", []):
        tags = cell.setdefault("metadata", {}).get("tags", [])
        if INJECTED_TAG in tags and REMOVE_TAG not in tags:
            cell["metadata"]["tags"] = [*tags, REMOVE_TAG]
        if cell.get("cell_type") != "code":
            continue
        outputs = []
        for output in _merge_streams(cell.get("outputs", [])):
            if output.get("output_type") == "stream":
                text = _strip_bars(_text(output.get("text", "")))
                if not text.strip():
                    continue
                output = {**output, "text": text}
            elif _is_bar_output(output, state):
                dropped_views.add(output["data"][WIDGET_VIEW].get("model_id", ""))
                continue
            outputs.append(output)
        cell["outputs"] = outputs
    if dropped_views and state:
        _drop_models(state, dropped_views)
    return nb


def write_page_notebook(source: str | Path, target: str | Path) -> Path:
    """Write the page's copy of the executed notebook ``source`` to ``target``."""
    source, target = Path(source), Path(target)
    nb = json.loads(source.read_text(encoding="utf-8"))
    target.write_text(json.dumps(page_notebook(nb), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return target
