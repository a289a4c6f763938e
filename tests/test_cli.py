"""`heatup` end to end on the CUB fixture; its refusals: one line and rc 2, a bug keeps its traceback."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from _cli import heatup as _run_heatup
from _cli import python
from heatup_lib import cli


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cub_cache(tmp_path_factory):
    """A prepared cache of the CUB fixture: 4 train and 4 test classes, 6 images each, 40 px."""
    from heatup_lib.data.cache import prepare_dataset
    from trees import write_cub_tree

    root = tmp_path_factory.mktemp("cub_cli")
    write_cub_tree(root / "tree", num_classes=8, images_per_class=6, seed=1)
    prepare_dataset("cub200", root / "tree", root / "cache", size=40, workers=0, progress=False)
    return root


_heatup = _run_heatup


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


# --- every door: one line on stderr and rc 2, never a traceback ----------------------------------

@pytest.fixture(scope="module")
def doors(cub_cache, tmp_path_factory):
    """A trained one-epoch CUB run (via the CLI), its cache, and a prepared SOP cache."""
    from heatup_lib.data.cache import prepare_dataset
    from trees import write_sop_tree

    root = tmp_path_factory.mktemp("doors")
    write_sop_tree(root / "sop", num_classes=8, images_per_class=3, seed=2)
    prepare_dataset("sop", root / "sop", root / "sop-cache", size=40, workers=0, progress=False)
    runs = root / "runs"
    proc = _run_heatup(*_train_args(cub_cache / "cache", runs))
    assert proc.returncode == 0, proc.stderr
    return {"cache": cub_cache / "cache", "tree": cub_cache / "tree", "run": runs / "base",
            "sop": root / "sop", "sop_cache": root / "sop-cache"}


def _train_args(cache: Path, runs: Path, *more: str) -> list[str]:
    """`heatup train` of the base run (one epoch, the image size taken from the cache)."""
    return ["train", "--dataset", "cub200", "--row", "ln", "--data", str(cache), "--preset", "smoke",
            "--epochs", "1", "--batch-size", "8", "--crop-size", "32", "--device", "cpu", "--no-pretrained",
            "--no-progress", "--runs-dir", str(runs), "--run-name", "base", *more]


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('HEATUP_EVIL_MARKER', '/tmp/heatup-evil-marker')}",))


def _door(name: str, d: dict, tmp: Path) -> tuple[list[str], str]:
    """The command line of one probe (after damaging a copy of what it needs) and the message it must print."""
    file = tmp / "a-file"
    file.write_text("not a folder")
    runs = tmp / "runs"
    if name in ("checkpoint-empty", "checkpoint-truncated", "checkpoint-pickle", "params-garbage",
                "metrics-garbage", "metrics-list"):
        run = _copy(d["run"], runs / "base")
        ckpt = run / "checkpoint.pt"
        if name == "checkpoint-empty":
            ckpt.write_bytes(b"")
            return (["evaluate", "--run", str(run), "--device", "cpu"],
                    "checkpoint.pt is not a checkpoint heatup will load: it is damaged or truncated")
        if name == "checkpoint-truncated":
            ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
            (run / "metrics.json").unlink()  # an interrupted run: train resumes it
            return (_train_args(d["cache"], runs), "damaged or truncated")
        if name == "checkpoint-pickle":
            torch.save({"net": _Evil()}, ckpt)
            return (["evaluate", "--run", str(run), "--device", "cpu"],
                    "asks to unpickle Python objects (posix.system)")
        if name == "params-garbage":
            (run / "params.json").write_text("{not json")
            return (["evaluate", "--run", str(run), "--device", "cpu"], "params.json is not valid JSON")
        if name == "metrics-garbage":
            (run / "metrics.json").write_text("\x00\x01garbage")
            return (_train_args(d["cache"], runs), "metrics.json is not valid JSON")
        (run / "metrics.json").write_text("[0.5, 0.25]")
        return (_train_args(d["cache"], runs), "metrics.json holds a JSON list, not an object")
    if name in ("cache-truncated-train", "cache-truncated-prepare", "cache-manifest"):
        cache = _copy(d["cache"], tmp / "cache")
        if name == "cache-manifest":
            (cache / "manifest.json").write_text("{garbage")
            return _train_args(cache, runs), "manifest.json: unreadable manifest"
        images = cache / "train_images.npy"
        images.write_bytes(images.read_bytes()[: images.stat().st_size // 2])
        if name == "cache-truncated-train":
            return _train_args(cache, runs), "train_images.npy is damaged"
        return (["prepare", "cub200", "--root", str(d["tree"]), "--out", str(cache), "--workers", "0", "--size", "40"],
                "train_images.npy is damaged")
    if name == "sop-class-in-both":
        sop = _copy(d["sop"], tmp / "sop")
        base = sop / "Stanford_Online_Products"
        test = (base / "Ebay_test.txt").read_text().splitlines()
        first = test[1].split()
        train_class = (base / "Ebay_train.txt").read_text().splitlines()[1].split()[1]
        test[1] = " ".join([first[0], train_class, first[2], first[3]])
        (base / "Ebay_test.txt").write_text("\n".join(test) + "\n")
        return (["prepare", "sop", "--root", str(sop), "--out", str(tmp / "out"), "--workers", "0"],
                f"class id {train_class} also appears in Ebay_train.txt")
    return {
        "prepare-out-file": (["prepare", "cub200", "--root", str(d["tree"]), "--out", str(file)],
                             f"--out {str(file)!r} is a file, not a folder"),
        "train-runs-dir-file": (_train_args(d["cache"], file), f"--runs-dir {str(file)!r} is a file"),
        "reproduce-out-file": (["reproduce", "--out", str(file / "x"), "--only", "01"], "is a file, not a folder"),
        "reproduce-bad-yaml": (["reproduce", "--out", str(tmp / "x"), "-p", "seed", "[1, 2"],
                               "-p seed '[1, 2': the value is not YAML"),
        "reproduce-unknown-name": (["reproduce", "--out", str(tmp / "x"), "-p", "sed", "1"],
                                   "parameter(s) ['sed'] are declared by none of the chapters run"),
        "train-run-name-escape": (_train_args(d["cache"], runs)[:-1] + ["../../escaped"],
                                  "run_name must be one folder name inside the runs folder"),
        "train-data-file": (_train_args(file, runs), f"--data {str(file)!r} is a file"),
        "train-image-size": (_train_args(d["cache"], runs, "--image-size", "64"),
                             "image_size=64 but the cache"),
        "train-other-dataset": (_train_args(d["sop_cache"], runs), "holds 'sop', not 'cub200'"),
        "evaluate-run-file": (["evaluate", "--run", str(file), "--device", "cpu"],
                              f"run folder {str(file)!r} is a file, not a folder"),
        "evaluate-batch-size-0": (["evaluate", "--run", str(d["run"]), "--device", "cpu", "--batch-size", "0"],
                                  "batch_size must be an integer >= 1, got 0"),
        "evaluate-other-data": (["evaluate", "--run", str(d["run"]), "--device", "cpu", "--data",
                                 str(d["sop_cache"])], "dataset 'sop' (the run: 'cub200')"),
    }[name]


DOORS = ["prepare-out-file", "train-runs-dir-file", "reproduce-out-file", "reproduce-bad-yaml",
         "reproduce-unknown-name", "train-run-name-escape", "train-data-file", "train-image-size",
         "train-other-dataset",
         "evaluate-run-file", "evaluate-batch-size-0", "evaluate-other-data", "checkpoint-empty",
         "checkpoint-truncated", "checkpoint-pickle", "params-garbage", "metrics-garbage", "metrics-list",
         "cache-truncated-train", "cache-truncated-prepare", "cache-manifest", "sop-class-in-both"]


@pytest.mark.parametrize("name", DOORS)
def test_every_door_gives_one_named_error_and_rc_2(doors, tmp_path, monkeypatch, name):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("HEATUP_EVIL_MARKER", str(marker))
    args, message = _door(name, doors, tmp_path)
    proc = _run_heatup(*args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and message in proc.stderr, proc.stderr
    assert proc.stderr.startswith(f"heatup {args[0]}: error: ")
    assert "weights_only=False" not in proc.stderr and not marker.exists()
    if name == "train-run-name-escape":
        assert not (tmp_path.parent / "escaped").exists() and not (tmp_path / "runs").exists()


def test_evaluate_on_other_data_only_with_the_override_and_says_so(doors):
    proc = _run_heatup("evaluate", "--run", str(doors["run"]), "--device", "cpu", "--data", str(doors["sop_cache"]),
                       "--other-data")
    assert proc.returncode == 0, proc.stderr
    assert f"evaluated on other data (--other-data): {doors['sop_cache']}: dataset 'sop'" in proc.stdout
    own = _run_heatup("evaluate", "--run", str(doors["run"]), "--device", "cpu", "--json")
    assert own.returncode == 0 and "other data" not in own.stdout + own.stderr
    recorded = json.loads((doors["run"] / "metrics.json").read_text())
    assert json.loads(own.stdout)["recall@1"] == pytest.approx(recorded["recall@1"], abs=1e-6)


def test_a_prepared_cache_sets_the_image_size_it_was_trained_at(doors):
    params = json.loads((doors["run"] / "params.json").read_text())["extra"]["benchmark"]
    assert params["settings"]["image_size"] == params["data"]["image_size"] == 40


def test_a_bug_keeps_its_traceback_and_a_library_value_error_does_not(doors):
    """The one handler in `main`: a ValueError raised inside numpy is a bug, one raised by heatup is not."""
    def evaluate_raising(body: str):
        return python("import sys, numpy as np; from heatup_lib import cli, benchmark, checks\n"
                      f"def evaluate_run(*a, **k):\n    {body}\n"
                      "benchmark.evaluate_run = evaluate_run\n"
                      f"sys.exit(cli.main(['evaluate', '--run', {str(doors['run'])!r}, '--device', 'cpu']))")

    bug = evaluate_raising("return np.ones(2) + np.ones(3)")
    assert bug.returncode == 1 and "Traceback" in bug.stderr and "could not be broadcast" in bug.stderr
    runtime = evaluate_raising("raise RuntimeError('a bug')")
    assert runtime.returncode == 1 and "Traceback" in runtime.stderr and "RuntimeError: a bug" in runtime.stderr
    named = evaluate_raising("checks.check_int('k', -1, min_value=0)")
    assert named.returncode == 2 and "Traceback" not in named.stderr
    assert named.stderr.strip() == "heatup evaluate: error: k must be an integer >= 0, got -1"
