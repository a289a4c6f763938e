"""heatup_lib.pages: the page's copy of an executed chapter (one parameters cell, no progress bars)."""

from __future__ import annotations

import copy
import json
import zlib
from pathlib import Path

import nbformat
import pytest

from heatup_lib.pages import INJECTED_TAG, REMOVE_TAG, is_progress_line, page_notebook, write_page_notebook

VIEW = "application/vnd.jupyter.widget-view+json"
STATE = "application/vnd.jupyter.widget-state+json"


def _model(name: str, **state: object) -> dict:
    return {"model_module": "@jupyter-widgets/controls", "model_module_version": "2.0.0", "model_name": name,
            "state": state}


def _view(model_id: str, text: str) -> dict:
    return {"output_type": "display_data", "metadata": {},
            "data": {VIEW: {"model_id": model_id, "version_major": 2, "version_minor": 0}, "text/plain": text}}


def _stream(name: str, text: str) -> dict:
    return {"output_type": "stream", "name": name, "text": text}


def _code(source: str, outputs: list[dict], tags: list[str] | None = None) -> dict:
    return {"cell_type": "code", "execution_count": 1, "id": f"cell-{zlib.crc32(source.encode()):08x}",
            "metadata": {"tags": tags} if tags else {}, "outputs": outputs, "source": source}


def _executed() -> dict:
    """A chapter as papermill leaves it: two parameters cells, a tqdm widget bar, a panel, stderr bars."""
    state = {
        # tqdm.notebook's bar: HBox(HTML, FloatProgress, HTML), each with its layout or style
        "bar": _model("HBoxModel", children=["IPY_MODEL_bar-l", "IPY_MODEL_bar-p", "IPY_MODEL_bar-r"],
                      layout="IPY_MODEL_bar-layout"),
        "bar-l": _model("HTMLModel", value="runs: 100%", style="IPY_MODEL_shared-style"),
        "bar-p": _model("FloatProgressModel", value=10, max=10, layout="IPY_MODEL_bar-p-layout"),
        "bar-r": _model("HTMLModel", value=" 10/10 [00:05<00:00,  2.0run/s]"),
        "bar-layout": _model("LayoutModel"),
        "bar-p-layout": _model("LayoutModel"),
        # a panel: HBox(HTML, slider, HTML) is not a bar; it shares a style model with the bar
        "panel": _model("HBoxModel", children=["IPY_MODEL_panel-l", "IPY_MODEL_panel-s", "IPY_MODEL_panel-r"]),
        "panel-l": _model("HTMLModel", value="alpha", style="IPY_MODEL_shared-style"),
        "panel-s": _model("FloatSliderModel", value=16.0),
        "panel-r": _model("HTMLModel", value="16"),
        "shared-style": _model("HTMLStyleModel"),
        # a link between widgets, displayed nowhere
        "link": _model("LinkModel", source=["IPY_MODEL_panel-s", "value"], target=["IPY_MODEL_panel-r", "value"]),
    }
    cells = [
        _code('preset = "default"\nseed = None', [], ["parameters"]),
        _code('# Parameters\npreset = "smoke"\nseed = 0\n', [], [INJECTED_TAG]),
        _code("runs = load_or_train(settings)", [
            _view("bar", "runs:   0%|          | 0/10 [00:00<?, ?run/s]"),
            _stream("stderr", "\rtrain:   0%|          | 0/93 [00:00<?, ?step/s]"
                              "\rtrain: 100%|##########| 93/93 [00:04<00:00, 21.3step/s]\n"
                              "UserWarning: something the reader should see\n"
                              "train: 100% 93/93 [00:04<00:00, 21.3step/s]\n"),
            _stream("stderr", "\rtrain:  50%|#####     | 4/8 [00:01<00:01,  3.1step/s]"),
            _stream("stdout", "Recall@1: 41.2% [seeds 0, 1]\n"),
        ]),
        _code("panel", [_view("panel", "Panel(children=(...))"), _view("gone", "HBox(children=(...))")]),
        _code("closed", [_view("closed-bar", "train: 100%|##########| 930/930 [01:02<00:00, 14.9step/s]")]),
        {"cell_type": "markdown", "id": "md", "metadata": {}, "source": "A 40%|bar| 1/2 [00:01<00:01, 1it/s] in prose"},
    ]
    return {"cells": cells, "nbformat": 4, "nbformat_minor": 5,
            "metadata": {"widgets": {STATE: {"state": state, "version_major": 2, "version_minor": 0}}}}


@pytest.mark.parametrize("line", [
    "runs:   0%|          | 0/10 [00:00<?, ?run/s]",
    "train: 100%|##########| 930/930 [01:02<00:00, 14.9step/s]",
    "train: 100% 930/930 [01:02<00:00, 14.9step/s]",                       # the widget bar's text in a browser
    "train:  40%|████      | 1.2k/3.0k [1:00:01<02:00,  2.50step/s, loss=0.3]",
    "12it [00:01,  9.80it/s]",
    "eval: 3/9 [00:10<00:20,  3.10s/batch]",
])
def test_tqdm_lines_are_bars(line: str) -> None:
    assert is_progress_line(line)


@pytest.mark.parametrize("line", [
    "epoch 1/1: alpha 4, loss 2.442, train accuracy 14.8%, held-out accuracy 15.4%",
    "Recall@1: chance 8.9%, the untrained network 5.0% [seeds 0, 1]",
    "| SM | 41.2 | 52.0 |",
    "alpha at epochs 0, 0.1, 0.25: [0.25, 0.25, 0.25]",
])
def test_other_lines_are_not_bars(line: str) -> None:
    assert not is_progress_line(line)


def test_injected_parameters_cell_is_removed_from_the_page() -> None:
    page = page_notebook(_executed())
    tags = [c["metadata"].get("tags", []) for c in page["cells"]]
    assert tags[0] == ["parameters"], "the chapter's own parameters cell stays on the page"
    assert tags[1] == [INJECTED_TAG, REMOVE_TAG]
    assert sum(REMOVE_TAG in t for t in tags) == 1
    again = page_notebook(copy.deepcopy(page))
    assert again["cells"][1]["metadata"]["tags"] == [INJECTED_TAG, REMOVE_TAG], "tagging twice adds nothing"


def test_progress_bars_are_left_out_and_everything_else_kept() -> None:
    page = page_notebook(_executed())
    runs, panel, closed, prose = page["cells"][2:]
    assert [o["output_type"] for o in runs["outputs"]] == ["stream", "stream"]
    warning, result = runs["outputs"]
    assert warning["name"] == "stderr" and warning["text"] == "UserWarning: something the reader should see\n"
    assert result["text"] == "Recall@1: 41.2% [seeds 0, 1]\n"
    assert [o["data"][VIEW]["model_id"] for o in panel["outputs"]] == ["panel", "gone"], \
        "a widget that is not a bar stays, even when its model is missing"
    assert closed["outputs"] == [], "a bar whose model was closed is recognised by its text"
    assert "40%|bar|" in prose["source"], "markdown is never touched"


def test_a_bar_sent_in_two_pieces_is_left_out_whole() -> None:
    nb = {"cells": [_code("run()", [_stream("stderr", "\rtrain:  50%|#####     "),
                                    _stream("stderr", "| 4/8 [00:01<00:01,  3.1step/s]\n"),
                                    _stream("stdout", "done\n"), _stream("stdout", "and done\n")])],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    outputs = page_notebook(nb)["cells"][0]["outputs"]
    assert outputs == [_stream("stdout", "done\nand done\n")]


def test_bar_models_are_dropped_from_the_widget_state_but_shared_ones_kept() -> None:
    state = page_notebook(_executed())["metadata"]["widgets"][STATE]["state"]
    assert sorted(state) == ["link", "panel", "panel-l", "panel-r", "panel-s", "shared-style"]


def test_write_page_notebook_gives_a_valid_notebook(tmp_path: Path) -> None:
    source, target = tmp_path / "executed.ipynb", tmp_path / "page.ipynb"
    source.write_text(json.dumps(_executed()))
    write_page_notebook(source, target)
    nb = nbformat.read(target, as_version=4)
    nbformat.validate(nb)
    assert json.loads(source.read_text()) == _executed(), "the executed notebook is left as papermill wrote it"
