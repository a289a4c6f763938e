"""The glyph stand-in (layout read back by the real reader and cache, splits, determinism, no two
classes alike) and the small CPU backbone (shapes, bottleneck bias, selection in the benchmark)."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest
import torch
from torch import nn

from heatup_lib import benchmark as B
from heatup_lib.data import CUB200
from heatup_lib.data import glyphs as G
from heatup_lib.data.cub_layout import write_cub_layout
from heatup_lib.data import standin as S
from heatup_lib.data.augment import CachedBatches
from heatup_lib.data.cache import ImageCache
from heatup_lib.models import SmallConvEmbedder

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _digests(tree) -> dict[str, str]:
    """SHA-256 of every image of a tree, by its path under images/."""
    base = tree / "CUB_200_2011" / "images"
    return {str(p.relative_to(base)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(base.rglob("*.jpg"))}


@pytest.fixture(scope="module")
def glyph_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("glyphs")
    return S.write_glyph_tree(root, num_classes=8, images_per_class=3, size=32, seed=5)


def test_tree_reads_back_with_the_cub_reader(glyph_tree):
    train, test = CUB200(glyph_tree, split="train"), CUB200(glyph_tree, split="test")
    classes = G.glyph_classes(8)
    assert [c.class_id for c in classes] == [1, 2, 3, 4, 101, 102, 103, 104]
    assert sorted(train.class_ids) == [1, 2, 3, 4] and sorted(test.class_ids) == [101, 102, 103, 104]
    assert len(train) == len(test) == 12
    image, label = train[0]
    assert image.size == (32, 32) and image.mode == "RGB" and label == 0
    assert sorted({y for _, y in train.samples}) == [0, 1, 2, 3]
    base = glyph_tree / "CUB_200_2011"
    lines = (base / "classes.txt").read_text().split("\n")
    assert lines[0] == f"1 {classes[0].folder}" and lines[4] == f"101 {classes[4].folder}"
    split = [ln.split() for ln in (base / "train_test_split.txt").read_text().split("\n") if ln]
    labels = dict(ln.split() for ln in (base / "image_class_labels.txt").read_text().split("\n") if ln)
    assert all((int(labels[i]) <= 100) == (s == "1") for i, s in split)
    meta = json.loads((base / "standin.json").read_text(encoding="utf-8"))
    assert meta["synthetic"] is True and meta["note"] == S.STANDIN_NOTE and "synthetic" in S.STANDIN_NOTE
    # boxes hold the glyph: inside the image, inside the region every safe crop keeps
    margin = round(32 * (1 - G.SAFE_CROP))
    for line in (base / "bounding_boxes.txt").read_text().split("\n"):
        if line:
            x, y, w, h = map(float, line.split()[1:])
            assert margin <= x and margin <= y and x + w <= 32 - margin + 1 and y + h <= 32 - margin + 1


def test_splits_are_class_disjoint_and_cover_200_classes():
    classes = G.glyph_classes()
    assert len(classes) == 200 and len(G.GLYPHS) == len(set(G.GLYPHS)) == 200
    train = {c.char for c in classes if c.split == "train"}
    test = {c.char for c in classes if c.split == "test"}
    assert len(train) == len(test) == 100 and not train & test
    assert len({c.name for c in classes}) == 200  # distinct folder names
    assert all(c.name.isascii() for c in classes)
    # every class is drawn by several fonts, and every listed font draws it
    assert min(len(c.fonts) for c in classes) >= 8
    with pytest.raises(ValueError, match="even"):
        G.glyph_classes(7)
    with pytest.raises(ValueError, match="num_classes"):
        G.glyph_classes(202)


def test_missing_glyphs_are_left_out_by_the_character_map():
    assert G.glyph_fonts("\ue000") == ()  # a private-use code point: no font has it
    with pytest.raises(ValueError, match="no font draws"):
        G.render_glyph("\ue000", 32, np.random.default_rng(0))
    # Computer Modern only for ASCII letters and digits (its other slots hold TeX's own glyphs)
    assert any(f.startswith("cm") for f in G.glyph_fonts("A"))
    assert not any(f.startswith("cm") for f in G.glyph_fonts("$"))
    assert not any(f.startswith("cm") for f in G.glyph_fonts("Ж"))


def test_the_tree_is_deterministic_and_image_k_depends_only_on_seed_class_k(tmp_path, glyph_tree):
    again = S.write_glyph_tree(tmp_path / "again", num_classes=8, images_per_class=3, size=32, seed=5)
    assert _digests(again) == _digests(glyph_tree)
    more = S.write_glyph_tree(tmp_path / "more", num_classes=4, images_per_class=4, size=32, seed=5)
    d_more, d_tree = _digests(more), _digests(glyph_tree)
    assert len(d_more) == 16 and all(d_tree[k] == v for k, v in d_more.items() if k in d_tree)
    assert sum(k in d_tree for k in d_more) == 12  # classes 1, 2, 101, 102 x images 1-3
    other = S.write_glyph_tree(tmp_path / "other", num_classes=8, images_per_class=3, size=32, seed=6)
    assert not set(_digests(other).values()) & set(d_tree.values())
    # the same arguments again reuse the tree; other arguments on the same tree are refused
    assert S.write_glyph_tree(glyph_tree, num_classes=8, images_per_class=3, size=32, seed=5) == glyph_tree
    with pytest.raises(FileExistsError, match="seed"):
        S.write_glyph_tree(glyph_tree, num_classes=8, images_per_class=3, size=32, seed=6)


def test_render_glyph_varies_and_keeps_the_glyph_inside_the_safe_crop():
    rng = np.random.default_rng(0)
    margin = round(48 * (1 - G.SAFE_CROP))
    images = []
    for _ in range(20):
        image, (x, y, w, h) = G.render_glyph("R", 48, rng, distortion=0.03, clutter=1)
        assert image.shape == (48, 48, 3) and image.dtype == np.uint8
        assert x >= margin and y >= margin and x + w <= 48 - margin and y + h <= 48 - margin
        assert max(w, h) >= 0.4 * 48
        images.append(image.astype(np.float64))
    assert np.std(np.stack(images), axis=0).mean() > 20  # fonts, colours, positions differ
    with pytest.raises(ValueError, match="distortion"):
        G.render_glyph("R", 48, rng, distortion=0.5)


def test_similarity_flags_the_known_one_class_pairs():
    # homoglyphs across scripts, case pairs that differ only in size, mirror pairs, l/I/1
    pairs = ["AΑ", "AА", "oο", "Oo", "Ss", "Vv", "bd", "pq", "Il", "l1"]
    distinct = ["Kk", "Hh", "Aa"]  # (E/F scores 0.93: the selection is cautious and keeps one)
    chars = sorted(set("".join(pairs + distinct)))
    sim = G.glyph_similarity(chars)
    idx = {c: i for i, c in enumerate(chars)}
    assert np.allclose(sim, sim.T) and np.allclose(np.diag(sim), 1.0)
    for a, b in pairs:
        assert sim[idx[a], idx[b]] >= G.AMBIGUITY_THRESHOLD, (a, b, sim[idx[a], idx[b]])
    for a, b in distinct:
        assert sim[idx[a], idx[b]] < G.SELECTION_THRESHOLD, (a, b, sim[idx[a], idx[b]])
    # the mirror pair b/d is one class only because the pipeline flips: without flips it is not
    no_flip = G.glyph_similarity(["b", "d"], flip=False)
    assert no_flip[0, 1] < G.SELECTION_THRESHOLD


def test_no_two_classes_look_alike():
    sim = G.glyph_similarity(G.GLYPHS)
    np.fill_diagonal(sim, -1.0)
    i, j = np.unravel_index(np.argmax(sim), sim.shape)
    assert sim[i, j] < G.AMBIGUITY_THRESHOLD, (G.GLYPHS[i], G.GLYPHS[j], sim[i, j])


def test_write_cub_layout_checks_its_input(tmp_path):
    image = np.zeros((20, 20, 3), np.uint8)
    with pytest.raises(ValueError, match="class name"):
        write_cub_layout(tmp_path / "a", [(1, image, None)], {1: "bad name"})
    with pytest.raises(ValueError, match="lacks"):
        write_cub_layout(tmp_path / "b", [(2, image, None)], {1: "one"})
    with pytest.raises(ValueError, match="uint8"):
        write_cub_layout(tmp_path / "c", [(1, image.astype(np.float32), None)], {1: "one"})
    assert not (tmp_path / "c" / "CUB_200_2011").exists()  # nothing half-written is left
    root = write_cub_layout(tmp_path / "d", [(1, image, None), (101, image, (2, 3, 4, 5))],
                              {1: "one", 101: "two"})
    base = root / "CUB_200_2011"
    assert (base / "bounding_boxes.txt").read_text() == "1 0.0 0.0 20.0 20.0\n2 2.0 3.0 4.0 5.0\n"
    assert (base / "images.txt").read_text() == "1 001.one/one_0001.jpg\n2 101.two/two_0001.jpg\n"
    assert len(CUB200(root, split="test")) == 1
    with pytest.raises(FileExistsError):
        write_cub_layout(tmp_path / "d", [(1, image, None)], {1: "one"})


def test_standin_cache_builds_once_and_feeds_cached_batches(tmp_path):
    cache = S.standin_cache(tmp_path, images_per_class=4, image_size=32, num_classes=6)
    manifest = cache / "manifest.json"
    stamp = manifest.stat().st_mtime_ns
    assert S.standin_cache(tmp_path, images_per_class=4, image_size=32, num_classes=6) == cache
    assert manifest.stat().st_mtime_ns == stamp  # reused, not rebuilt
    train, test = ImageCache.open(cache, "train"), ImageCache.open(cache, "test")
    assert (len(train), train.num_classes, train.size) == (12, 3, 32)
    assert test.class_ids == [101, 102, 103]
    batches = CachedBatches(train, 4, train=True, crop=28)
    X, y = next(iter(batches.epoch(0, torch.Generator().manual_seed(0))))
    assert X.shape == (4, 3, 28, 28) and X.dtype == torch.float32 and y.shape == (4,)


# --- the small backbone ---------------------------------------------------------------------


@pytest.mark.parametrize("side", [16, 28, 33])
def test_small_backbone_shapes_and_ending(side):
    torch.manual_seed(0)
    net = SmallConvEmbedder(64).eval()
    with torch.no_grad():
        out = net(torch.randn(3, 3, side, side))
    assert out.shape == (3, 64)
    # it ends as the Inception embedder does: global pooling, then a 1x1 conv, no activation
    names = [n for n, _ in net.named_children()]
    assert names == ["backbone", "pool", "bottleneck"]
    assert isinstance(net.pool, nn.AdaptiveAvgPool2d) and net.bottleneck.kernel_size == (1, 1)
    assert net.bottleneck.in_channels == net.widths[-1] and net.bottleneck.out_channels == 64
    assert net.input_normalization == {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    # the output is the bottleneck applied to the pooled features (no activation in between)
    with torch.no_grad():
        X = torch.randn(2, 3, side, side)
        pooled = net.backbone(X).mean(dim=(2, 3))  # (2, C)
        expected = pooled @ net.bottleneck.weight[:, :, 0, 0].T + net.bottleneck.bias
        torch.testing.assert_close(net(X), expected, rtol=1e-5, atol=1e-5)


def test_small_backbone_bias_option_and_errors():
    assert SmallConvEmbedder(8, bottleneck_bias=False).bottleneck.bias is None
    assert SmallConvEmbedder(8, bottleneck_bias=True).bottleneck.bias.shape == (8,)
    net = SmallConvEmbedder(8, widths=(4, 8), convs_per_stage=1)
    convs = [m for m in net.backbone if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(3, 4), (4, 8)]
    with pytest.raises(ValueError, match="embedding_dim"):
        SmallConvEmbedder(0)
    with pytest.raises(ValueError, match="widths"):
        SmallConvEmbedder(8, widths=())
    with pytest.raises(ValueError, match="bottleneck_bias"):
        SmallConvEmbedder(8, bottleneck_bias=1)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        net(torch.randn(2, 1, 16, 16))


def test_the_benchmark_builds_the_small_backbone():
    assert B.BACKBONES == ("inception", "small")
    settings = B.settings_for("cub200", preset="default", backbone="small", pretrained=False,
                              embedding_dim=32)
    net = B.build_backbone(settings, bottleneck_bias=False)
    assert isinstance(net, SmallConvEmbedder) and net.embedding_dim == 32
    assert net.bottleneck.bias is None
    with pytest.raises(ValueError, match="from scratch"):
        B.build_backbone(dataclasses.replace(settings, pretrained=True), bottleneck_bias=True)
    with pytest.raises(ValueError, match="backbone"):
        B.settings_for("cub200", preset="default", backbone="resnet")
