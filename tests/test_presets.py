"""Parameter presets: one file per preset, read by the chapters, the recipes and the command line."""

from __future__ import annotations

import pytest

from heatup_lib.presets import PRESETS, load_preset, preset_path


def test_presets_load_and_carry_their_name() -> None:
    for preset in PRESETS:
        p = load_preset(preset)
        assert p["preset"] == preset and "runs_dir" in p and preset_path(preset).is_file()
    with pytest.raises(ValueError, match="Unknown value 'fast' for argument preset"):
        load_preset("fast")


def test_a_broken_preset_file_is_named(tmp_path) -> None:
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "smoke.yaml").write_text("runs_dir: [1, 2\n")
    with pytest.raises(ValueError, match="smoke.yaml is not valid YAML"):
        load_preset("smoke", root=tmp_path)
    (tmp_path / "params" / "smoke.yaml").write_text("- a list\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        load_preset("smoke", root=tmp_path)
