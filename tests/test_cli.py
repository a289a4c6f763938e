"""`heatup train` and `heatup evaluate` end to end on the CUB fixture, and their refusal of bad parameters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from heatup_lib import cli


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cub_cache(tmp_path_factory):
    """A prepared cache of the CUB fixture: 4 train and 4 test classes, 6 images each, 40 px."""
    from heatup_lib.data.cache import prepare_dataset
    from heatup_lib.data.fixtures import write_cub_tree

    root = tmp_path_factory.mktemp("cub_cli")
    write_cub_tree(root / "tree", num_classes=8, images_per_class=6, seed=1)
    prepare_dataset("cub200", root / "tree", root / "cache", size=40, workers=0, progress=False)
    return root


def _heatup(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "heatup_lib.cli", *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd=Path(__file__).resolve().parents[1])


def test_train_then_evaluate_end_to_end(cub_cache, tmp_path):
    runs = tmp_path / "runs"
    train = _heatup("train", "--dataset", "cub200", "--row", "hln", "--data", str(cub_cache / "tree"),
                    "--preset", "smoke", "--epochs", "2", "--batch-size", "8", "--image-size", "40",
                    "--crop-size", "32", "--device", "cpu", "--runs-dir", str(runs), "--no-pretrained",
                    "--no-progress", "--run-name", "hln-cli")
    assert train.returncode == 0, train.stderr
    run = runs / "hln-cli"
    assert f"run trained: {run}" in train.stdout
    assert (runs / "cache" / "cub200-40" / "manifest.json").is_file()  # the official tree was decoded once
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [h["alpha"] for h in history] == [16.0, 4.0]
    recorded = json.loads((run / "metrics.json").read_text())
    evaluate = _heatup("evaluate", "--run", str(run), "--device", "cpu", "--json")
    assert evaluate.returncode == 0, evaluate.stderr
    scores = json.loads(evaluate.stdout)
    for key in ("nmi", "recall@1", "recall@8", "map@r"):
        assert scores[key] == pytest.approx(recorded[key], abs=1e-6), key


@pytest.mark.parametrize("args, message", [
    (["--alpha", "-1"], "alpha must be a finite number > 0.0, got -1.0"),
    (["--batch-size", "500"], "batch_size=500 is larger than the training set (24 images)"),
    (["--crop-size", "64"], "crop_size must be an integer >= 16 and <= 40, got 64"),
    (["--data", "/nonexistent/cub"], "data root '/nonexistent/cub' does not exist"),
])
def test_train_refuses_bad_parameters(cub_cache, tmp_path, capsys, monkeypatch, args, message):
    import heatup_lib.benchmark

    monkeypatch.setattr(heatup_lib.benchmark, "fit", lambda *a, **k: pytest.fail("training started"))
    base = ["train", "--dataset", "cub200", "--row", "hbn", "--data", str(cub_cache / "cache"),
            "--preset", "smoke", "--image-size", "40", "--device", "cpu", "--runs-dir", str(tmp_path)]
    assert cli.main(base + args) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("args, message", [
    (["--row", "xyz"], "invalid choice: 'xyz'"),
    (["--dataset", "imagenet"], "invalid choice: 'imagenet'"),
    (["--compile", "fast"], "invalid choice: 'fast'"),
])
def test_train_refuses_unknown_names(capsys, args, message):
    base = {"--dataset": "cub200", "--row": "hbn", "--data": "."}
    base.update(dict(zip(args[::2], args[1::2])))
    with pytest.raises(SystemExit) as info:
        cli.main(["train", *[x for kv in base.items() for x in kv]])
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_evaluate_refuses_a_missing_run(tmp_path, capsys):
    assert cli.main(["evaluate", "--run", str(tmp_path / "nope"), "--device", "cpu"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_prepare_mnist_writes_torchvision_layout(tmp_path: Path) -> None:
    proc = _heatup("prepare", "mnist", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte").stat().st_size == 16 + 60_000 * 784


def test_cli_rejects_unknown_preset() -> None:
    proc = _heatup("reproduce", "--preset", "fast")
    assert proc.returncode == 2 and "invalid choice: 'fast'" in proc.stderr
