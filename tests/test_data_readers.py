"""CUB-200-2011, Cars196 and SOP readers on generated trees in the official layouts: splits, labels, modes, errors."""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import loadmat, savemat

from heatup_lib.data._common import (
    CorruptImageError,
    DatasetNotFoundError,
    DownloadError,
    ListFileError,
    UnsafeArchiveError,
    load_rgb,
    safe_extract,
    to_rgb,
)
from heatup_lib.data.cars import Cars196
from heatup_lib.data.cub import CUB200
from trees import (
    IMAGE_KINDS,
    write_cars_tree,
    write_cub_tree,
    write_sop_tree,
)
from heatup_lib.data.sop import StanfordOnlineProducts


# ----------------------------------------------------------------------------- independent list parsing
def _raw_cub(root: Path) -> list[tuple[str, int]]:
    base = root / "CUB_200_2011"
    paths = dict(line.split() for line in (base / "images.txt").read_text().splitlines())
    labels = dict(line.split() for line in (base / "image_class_labels.txt").read_text().splitlines())
    return [(str(base / "images" / paths[k]), int(labels[k])) for k in sorted(paths, key=int)]


def _raw_cars_official(root: Path) -> list[tuple[str, int]]:
    annos = loadmat(str(root / "cars_annos.mat"))["annotations"][0]
    return [(str(root / str(a["relative_im_path"][0])), int(a["class"][0][0])) for a in annos]


def _raw_sop(root: Path, name: str) -> list[tuple[str, int]]:
    base = root / "Stanford_Online_Products"
    rows = [line.split() for line in (base / name).read_text().splitlines()[1:]]
    return [(str(base / r[3]), int(r[1])) for r in rows]


def _check_split(ds, raw: list[tuple[str, int]], keep) -> None:
    """The split holds exactly the raw records whose class passes ``keep``, labels = rank of the id."""
    expected = [(p, c) for p, c in raw if keep(c)]
    ids = sorted({c for _, c in expected})
    assert ds.class_ids == ids
    assert [(str(p), ds.class_ids[label]) for p, label in ds.samples] == expected
    assert ds.targets == [ids.index(c) for _, c in expected]
    assert sorted(set(ds.targets)) == list(range(len(ids)))


@pytest.fixture(scope="module")
def cub_root(tmp_path_factory) -> Path:
    return write_cub_tree(tmp_path_factory.mktemp("cub"), num_classes=200, images_per_class=1)


@pytest.fixture(scope="module")
def cars_root(tmp_path_factory) -> Path:
    return write_cars_tree(tmp_path_factory.mktemp("cars"), num_classes=196, images_per_class=1)


@pytest.fixture(scope="module")
def sop_root(tmp_path_factory) -> Path:
    return write_sop_tree(tmp_path_factory.mktemp("sop"), num_classes=12, images_per_class=2)


# ----------------------------------------------------------------------------- splits and labels
def test_cub_zero_shot_split(cub_root: Path) -> None:
    raw = _raw_cub(cub_root)
    train, test, everything = (CUB200(cub_root, s) for s in ("train", "test", "all"))
    assert (len(train), len(test), len(everything)) == (100, 100, 200)
    _check_split(train, raw, lambda c: c <= 100)
    _check_split(test, raw, lambda c: c > 100)
    _check_split(everything, raw, lambda c: True)
    assert set(train.class_ids).isdisjoint(test.class_ids)
    assert train.class_ids == list(range(1, 101)) and test.class_ids == list(range(101, 201))
    assert test.classes[0] == "101.Bird_101"
    # The root may also be the CUB_200_2011 folder itself.
    assert [s for s in CUB200(cub_root / "CUB_200_2011", "test").samples] == test.samples


def test_cub_uneven_classes(tmp_path: Path) -> None:
    root = write_cub_tree(tmp_path, num_classes=7, images_per_class=3, seed=1)
    train, test = CUB200(root, "train"), CUB200(root, "test")
    assert (len(train), len(test)) == (12, 9)
    assert train.class_ids == [1, 34, 67, 100] and test.class_ids == [101, 150, 200]
    assert train.targets == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]


@pytest.mark.parametrize("layout", ["official", "kaggle", "torchvision"])
def test_cars_layouts_agree_and_ignore_official_flag(tmp_path: Path, cars_root: Path, layout: str) -> None:
    root = cars_root if layout == "official" else write_cars_tree(tmp_path, num_classes=196, layout=layout)
    train, test = Cars196(root, "train"), Cars196(root, "test")
    assert (len(train), len(test)) == (98, 98)
    assert train.class_ids == list(range(1, 99)) and test.class_ids == list(range(99, 197))
    assert train.classes[0] == "Make001 Model Sedan 1990"
    if layout == "official":
        raw = _raw_cars_official(root)
        _check_split(train, raw, lambda c: c <= 98)
        _check_split(test, raw, lambda c: c > 98)
        flags = {int(a["class"][0][0]): int(a["test"][0][0]) for a in loadmat(str(root / "cars_annos.mat"))["annotations"][0]}
        assert {flags[c] for c in train.class_ids} == {0, 1}  # official test images land in our train split
    else:
        official = Cars196(cars_root, "all")
        here = Cars196(root, "all")
        # Same images (same generator), same class per image, whatever the layout.
        by_class = lambda ds: sorted((ds.class_ids[lab], np.asarray(Image.open(p).convert("L")).shape) for p, lab in ds.samples)
        assert by_class(here) == by_class(official)


def test_sop_official_split(sop_root: Path) -> None:
    train, test, everything = (StanfordOnlineProducts(sop_root, s) for s in ("train", "test", "all"))
    _check_split(train, _raw_sop(sop_root, "Ebay_train.txt"), lambda c: True)
    _check_split(test, _raw_sop(sop_root, "Ebay_test.txt"), lambda c: True)
    assert (len(train), len(test), len(everything)) == (12, 12, 24)
    assert max(train.class_ids) <= 11318 < min(test.class_ids)
    assert train.class_ids[0] == 1 and test.class_ids[-1] == 22634
    rows = {int(r.split()[1]): int(r.split()[2]) for r in (sop_root / "Stanford_Online_Products/Ebay_info.txt").read_text().splitlines()[1:]}
    assert everything.super_class_ids == [rows[c] for c in everything.class_ids]


def test_bad_split_names_accepted_values(cub_root: Path) -> None:
    with pytest.raises(ValueError, match=r"split must be one of \('train', 'test', 'all'\), got 'val'"):
        CUB200(cub_root, "val")


# ----------------------------------------------------------------------------- image modes
@pytest.mark.parametrize("cls, fixture", [(CUB200, "cub_root"), (Cars196, "cars_root"), (StanfordOnlineProducts, "sop_root")])
def test_items_are_rgb_whatever_the_file_mode(request, cls, fixture: str) -> None:
    ds = cls(request.getfixturevalue(fixture), "all")
    seen = set()
    for i in range(min(len(ds), len(IMAGE_KINDS) * 3)):
        path, label = ds.samples[i]
        with Image.open(path) as raw:
            source_mode, source_format = raw.mode, raw.format
            raw.load()
            raw_copy = raw.copy()
        img, target = ds[i]
        seen.add((source_format, source_mode))
        assert img.mode == "RGB" and img.size == raw_copy.size and target == label
        a = np.asarray(img).astype(int)
        if source_mode == "L":
            assert (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all()
            assert (a[..., 0] == np.asarray(raw_copy)).all()
        if source_mode == "CMYK":
            assert (a == np.asarray(raw_copy.convert("RGB"))).all()
        if source_mode == "RGBA":  # composited on white
            rgba = np.asarray(raw_copy).astype(float)
            ref = rgba[..., :3] * rgba[..., 3:] / 255 + 255 * (1 - rgba[..., 3:] / 255)
            assert np.abs(a - ref).max() <= 1.0
    assert {("JPEG", "RGB"), ("JPEG", "L"), ("JPEG", "CMYK"), ("PNG", "RGBA")} <= seen


def test_to_rgb_conversions() -> None:
    p = Image.new("P", (4, 2))
    p.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    p.putpixel((1, 0), 1)
    p.info["transparency"] = 0
    a = np.asarray(to_rgb(p))
    assert (a[0, 1] == [10, 20, 30]).all() and (a[0, 0] == 255).all()  # index 0 transparent -> white
    grey16 = Image.fromarray(np.array([[0, 65535], [32768, 257]], dtype=np.uint16))
    b = np.asarray(to_rgb(grey16))
    assert b[..., 0].tolist() == [[0, 255], [128, 1]] and b.shape == (2, 2, 3)
    la = Image.fromarray(np.array([[[100, 0], [100, 255]]], dtype=np.uint8), mode="LA")
    assert np.asarray(to_rgb(la))[0].tolist() == [[255, 255, 255], [100, 100, 100]]


def test_corrupt_image_is_named(tmp_path: Path) -> None:
    root = write_cub_tree(tmp_path, num_classes=2, images_per_class=2)
    ds = CUB200(root, "train")
    bad = ds.samples[1][0]
    bad.write_bytes(bad.read_bytes()[:40])  # truncated JPEG
    with pytest.raises(CorruptImageError, match=str(bad)):
        ds[1]
    (bad.parent / "x.jpg").write_bytes(b"not an image at all")
    with pytest.raises(CorruptImageError, match="x.jpg"):
        load_rgb(bad.parent / "x.jpg")


# ----------------------------------------------------------------------------- missing / incomplete roots
@pytest.mark.parametrize(
    "cls, expected, where",
    [
        (CUB200, "CUB_200_2011/images.txt", "CUB_200_2011.tgz"),
        (Cars196, "cars_annos.mat", "cars_test_annos_withlabels.mat"),
        (StanfordOnlineProducts, "Stanford_Online_Products/Ebay_train.txt", "lifted_struct"),
    ],
)
def test_missing_root_error_lists_expected_found_and_source(tmp_path: Path, cls, expected: str, where: str) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        cls(tmp_path / "nowhere", "train")
    msg = str(info.value)
    assert expected in msg and "the folder does not exist" in msg and "Where to get it" in msg and where in msg
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "README.txt").write_text("x")
    (tmp_path / "stuff" / "images").mkdir()
    with pytest.raises(FileNotFoundError, match=r"it contains: README.txt, images/"):
        cls(tmp_path / "stuff", "test")


def test_incomplete_roots(tmp_path: Path) -> None:
    cub = write_cub_tree(tmp_path / "cub", num_classes=2)
    (cub / "CUB_200_2011" / "image_class_labels.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match="image_class_labels.txt"):
        CUB200(cub)
    cars = write_cars_tree(tmp_path / "kaggle", num_classes=2, layout="kaggle")
    (cars / "cars_test_annos_withlabels.mat").unlink()  # only the unlabelled devkit file is left
    with pytest.raises(DatasetNotFoundError, match="Hint: the devkit is there but not cars_test_annos_withlabels.mat"):
        Cars196(cars)
    official = write_cars_tree(tmp_path / "official", num_classes=2)
    for f in (official / "car_ims").iterdir():
        f.unlink()
    (official / "car_ims").rmdir()
    with pytest.raises(DatasetNotFoundError, match="cars_annos.mat is there but car_ims/ is not"):
        Cars196(official)
    sop = write_sop_tree(tmp_path / "sop", num_classes=2)
    (sop / "Stanford_Online_Products" / "Ebay_test.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match="Ebay_test.txt"):
        StanfordOnlineProducts(sop)


# ----------------------------------------------------------------------------- list-file validation
def _edit_line(path: Path, line_no: int, new: str) -> None:
    lines = path.read_text().splitlines()
    lines[line_no - 1] = new
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    "file, line, pattern",
    [
        ("images.txt", "2 /etc/passwd", r"images\.txt:2: absolute image path '/etc/passwd'"),
        ("images.txt", "2 ../../secret.jpg", r"images\.txt:2: image path '\.\./\.\./secret\.jpg' leaves the dataset folder"),
        ("images.txt", "2 001.Bird_001/missing.jpg", r"images\.txt:2: image '001\.Bird_001/missing\.jpg' listed but missing"),
        ("images.txt", "2 a b", r"images\.txt:2: malformed line '2 a b': expected 2 whitespace-separated fields, got 3"),
        ("images.txt", "two 001.Bird_001/x.jpg", r"images\.txt:2: malformed line .*image id 'two' is not an integer"),
        ("image_class_labels.txt", "3 201", r"image_class_labels\.txt:3: class id 201 out of range \[1, 200\]"),
        ("image_class_labels.txt", "3 0", r"image_class_labels\.txt:3: class id 0 out of range \[1, 200\]"),
        ("image_class_labels.txt", "3 7.5", r"image_class_labels\.txt:3: malformed line .*class id '7\.5' is not an integer"),
        ("image_class_labels.txt", "99 1", r"image_class_labels\.txt:3: image id 99 is not in images\.txt"),
    ],
)
def test_cub_list_file_errors_name_file_and_line(tmp_path: Path, file: str, line: str, pattern: str) -> None:
    root = write_cub_tree(tmp_path, num_classes=2, images_per_class=2)
    _edit_line(root / "CUB_200_2011" / file, 2 if file == "images.txt" else 3, line)
    with pytest.raises(ListFileError, match=pattern) as info:
        CUB200(root, "all")
    assert str(root / "CUB_200_2011" / file) in str(info.value)


def _rewrite_cars_annos(root: Path, index: int, **changes) -> None:
    mat = loadmat(str(root / "cars_annos.mat"))
    annos = mat["annotations"]
    for key, value in changes.items():
        annos[0, index][key] = np.array([value]) if isinstance(value, str) else np.array([[value]])
    savemat(str(root / "cars_annos.mat"), {"annotations": annos, "class_names": mat["class_names"]})


@pytest.mark.parametrize(
    "change, pattern",
    [
        ({"class": 197}, r"cars_annos\.mat: annotation 2: class id 197 out of range \[1, 196\]"),
        ({"class": 0}, r"cars_annos\.mat: annotation 2: class id 0 out of range"),
        ({"relative_im_path": "/tmp/x.jpg"}, r"cars_annos\.mat:2: absolute image path '/tmp/x\.jpg'"),
        ({"relative_im_path": "car_ims/../../x.jpg"}, r"cars_annos\.mat:2: image path .* leaves the dataset folder"),
        ({"relative_im_path": "car_ims/999999.jpg"}, r"cars_annos\.mat:2: image 'car_ims/999999\.jpg' listed but missing"),
    ],
)
def test_cars_annotation_errors(tmp_path: Path, change: dict, pattern: str) -> None:
    root = write_cars_tree(tmp_path, num_classes=4)
    _rewrite_cars_annos(root, 1, **change)
    with pytest.raises(ListFileError, match=pattern):
        Cars196(root, "train")


def test_cars_unreadable_mat(tmp_path: Path) -> None:
    root = write_cars_tree(tmp_path, num_classes=2)
    (root / "cars_annos.mat").write_bytes(b"garbage")
    with pytest.raises(ListFileError, match=r"cars_annos\.mat: not a readable MATLAB file"):
        Cars196(root)
    savemat(str(root / "cars_annos.mat"), {"something": np.zeros(3)})
    with pytest.raises(ListFileError, match=r"no variable 'annotations'"):
        Cars196(root)


@pytest.mark.parametrize(
    "line_no, line, pattern",
    [
        (1, "id class super path", r"Ebay_train\.txt:1: malformed header"),
        (2, "1 1 1", r"Ebay_train\.txt:2: malformed line '1 1 1': expected 4"),
        (2, "1 22635 1 bicycle_final/x.JPG", r"Ebay_train\.txt:2: class id 22635 out of range \[1, 22634\]"),
        (2, "1 1 13 bicycle_final/x.JPG", r"Ebay_train\.txt:2: class id 13 out of range \[1, 12\]"),
        (2, "1 1 1 ../x.JPG", r"Ebay_train\.txt:2: image path '\.\./x\.JPG' leaves the dataset folder"),
        (2, "1 1 1 /x.JPG", r"Ebay_train\.txt:2: absolute image path"),
        (2, "1 {test_class} 1 {test_path}", r"Ebay_test\.txt:2: class id 11319 also appears in Ebay_train\.txt"),
    ],
)
def test_sop_list_file_errors(tmp_path: Path, line_no: int, line: str, pattern: str) -> None:
    root = write_sop_tree(tmp_path, num_classes=2, images_per_class=2)
    base = root / "Stanford_Online_Products"
    _, test_class, _, test_path = (base / "Ebay_test.txt").read_text().splitlines()[1].split()
    _edit_line(base / "Ebay_train.txt", line_no, line.format(test_class=test_class, test_path=test_path))
    with pytest.raises(ListFileError, match=pattern):
        StanfordOnlineProducts(root, "all")


# ----------------------------------------------------------------------------- archives and download
def _tar_with(path: Path, members: list[tarfile.TarInfo], payload: bytes = b"evil") -> None:
    with tarfile.open(path, "w:gz") as tf:
        for m in members:
            if m.isfile():
                m.size = len(payload)
                tf.addfile(m, io.BytesIO(payload))
            else:
                tf.addfile(m)


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    m = tarfile.TarInfo(name)
    m.type = kind
    m.linkname = link
    return m


@pytest.mark.parametrize(
    "members, pattern",
    [
        ([_member("../evil.txt")], r"'\.\./evil\.txt': path with '\.\.'"),
        ([_member("ok/../../evil.txt")], r"path with '\.\.'"),
        ([_member("/tmp/evil_abs.txt")], r"absolute path"),
        ([_member("link", tarfile.SYMTYPE, "/etc/passwd")], r"link to absolute path '/etc/passwd'"),
        ([_member("a/link", tarfile.SYMTYPE, "../../outside")], r"link to '\.\./\.\./outside' outside"),
        ([_member("hard", tarfile.LNKTYPE, "../outside")], r"outside the extraction folder"),
        ([_member("dev", tarfile.CHRTYPE)], r"special file"),
    ],
)
def test_safe_extract_rejects_malicious_tar(tmp_path: Path, members, pattern: str) -> None:
    archive = tmp_path / "bad.tgz"
    _tar_with(archive, [_member("fine.txt")] + members)
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchiveError, match=pattern):
        safe_extract(archive, dest)
    assert not (tmp_path / "evil.txt").exists() and not (dest / "fine.txt").exists()  # nothing written at all


def test_safe_extract_rejects_malicious_zip(tmp_path: Path) -> None:
    for name in ("../evil.txt", "/abs_evil.txt", "C:/evil.txt"):
        archive = tmp_path / "bad.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("fine.txt", "ok")
            zf.writestr(name, "evil")
        with pytest.raises(UnsafeArchiveError, match="refusing member"):
            safe_extract(archive, tmp_path / "dest")
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = (0o120777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        safe_extract(archive, tmp_path / "dest")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "dest" / "fine.txt").exists()


def test_download_extracts_a_verified_local_archive(tmp_path: Path, monkeypatch) -> None:
    tree = write_cub_tree(tmp_path / "tree", num_classes=4)
    root = tmp_path / "root"
    root.mkdir()
    with tarfile.open(root / "CUB_200_2011.tgz", "w:gz") as tf:
        tf.add(tree / "CUB_200_2011", arcname="CUB_200_2011")
    md5 = hashlib.md5((root / "CUB_200_2011.tgz").read_bytes()).hexdigest()
    monkeypatch.setattr(CUB200, "md5", md5)
    monkeypatch.setattr(CUB200, "mirrors", ("http://127.0.0.1:9/never-contacted.tgz",))
    ds = CUB200(root, "test", download=True)  # archive present and intact: no network needed
    assert len(ds) == 2 and (root / "CUB_200_2011" / "images.txt").is_file()


@pytest.mark.parametrize("cls", [CUB200, StanfordOnlineProducts, Cars196])
def test_download_without_network_fails_clearly(tmp_path: Path, monkeypatch, cls) -> None:
    dead = "http://127.0.0.1:9/dataset.tgz"  # nothing listens on port 9: connection refused at once
    for attr in ("mirrors", "mirrors_images", "mirrors_annos"):
        if hasattr(cls, attr):
            monkeypatch.setattr(cls, attr, (dead,))
    with pytest.raises(DownloadError) as info:
        cls(tmp_path, "train", download=True)
    msg = str(info.value)
    assert dead in msg and "could not download" in msg and "get " in msg


# ----------------------------------------------------------------------------- the protocol's guarantees
@pytest.mark.parametrize("split", ["train", "test", "all"])
def test_sop_class_in_both_lists_is_refused_for_every_split(tmp_path: Path, split: str) -> None:
    root = write_sop_tree(tmp_path, num_classes=4, images_per_class=2)
    base = root / "Stanford_Online_Products"
    train_class = (base / "Ebay_train.txt").read_text().splitlines()[1].split()[1]
    image_id, _, super_id, rel = (base / "Ebay_test.txt").read_text().splitlines()[2].split()
    _edit_line(base / "Ebay_test.txt", 3, f"{image_id} {train_class} {super_id} {rel}")
    with pytest.raises(ListFileError, match=rf"Ebay_test\.txt:3: class id {train_class} also appears in "
                                            r"Ebay_train\.txt; train and test classes must be disjoint"):
        StanfordOnlineProducts(root, split)


def _append(path: Path, line: str) -> None:
    path.write_text(path.read_text() + line + "\n")


@pytest.mark.parametrize("how", ["same", "slashes", "symlink"])
def test_cub_one_image_under_two_ids_is_refused(tmp_path: Path, how: str) -> None:
    root = write_cub_tree(tmp_path, num_classes=2, images_per_class=2)
    base = root / "CUB_200_2011"
    last_id, rel = (base / "images.txt").read_text().splitlines()[-1].split()  # a test image
    other = {"same": rel, "slashes": rel.replace("/", "//"), "symlink": rel + ".link.jpg"}[how]
    if how == "symlink":
        (base / "images" / other).symlink_to(base / "images" / rel)
    _append(base / "images.txt", f"{int(last_id) + 1} {other}")
    _append(base / "image_class_labels.txt", f"{int(last_id) + 1} 101")
    with pytest.raises(ListFileError, match=rf"images\.txt:5: image '{re.escape(other)}' is the file already "
                                            rf"listed at .*images\.txt:4 as '{re.escape(rel)}'"):
        CUB200(root, "test")


def test_cub_duplicate_image_id_is_refused(tmp_path: Path) -> None:
    root = write_cub_tree(tmp_path, num_classes=2, images_per_class=2)
    base = root / "CUB_200_2011"
    _edit_line(base / "images.txt", 4, "3 " + (base / "images.txt").read_text().splitlines()[3].split()[1])
    with pytest.raises(ListFileError, match=r"images\.txt:4: duplicate image id 3 \(first at .*images\.txt:3\)"):
        CUB200(root, "train")


@pytest.mark.parametrize("how", ["id", "path"])
def test_sop_duplicate_image_id_or_path_is_refused(tmp_path: Path, how: str) -> None:
    root = write_sop_tree(tmp_path, num_classes=4, images_per_class=2)
    base = root / "Stanford_Online_Products"
    train = (base / "Ebay_train.txt").read_text().splitlines()
    first_id, cls, super_id, rel = train[1].split()
    if how == "id":
        _append(base / "Ebay_train.txt", f"{first_id} {cls} {super_id} {train[2].split()[3]}")
        pattern = rf"Ebay_train\.txt:{len(train) + 1}: duplicate image id {first_id}"
    else:  # a training image listed again in the test list, under a test class
        test = (base / "Ebay_test.txt").read_text().splitlines()
        _, test_cls, test_super, _ = test[1].split()
        _append(base / "Ebay_test.txt", f"999 {test_cls} {test_super} {rel}")
        pattern = (rf"Ebay_test\.txt:{len(test) + 1}: image '{re.escape(rel)}' is the file already listed at "
                   r".*Ebay_train\.txt:2")
    for split in ("train", "test"):
        with pytest.raises(ListFileError, match=pattern):
            StanfordOnlineProducts(root, split)


def test_cars_one_image_under_two_annotations_is_refused(tmp_path: Path) -> None:
    root = write_cars_tree(tmp_path, num_classes=4)
    first = str(loadmat(str(root / "cars_annos.mat"))["annotations"][0, 0]["relative_im_path"][0])
    _rewrite_cars_annos(root, 2, relative_im_path=first)
    with pytest.raises(ListFileError, match=rf"cars_annos\.mat:3: image '{first}' is the file already listed "
                                            r"at .*cars_annos\.mat:1"):
        Cars196(root, "all")
    kaggle = write_cars_tree(tmp_path / "kaggle", num_classes=4, images_per_class=2, layout="kaggle")
    annos_path = kaggle / "car_devkit" / "devkit" / "cars_train_annos.mat"
    mat = loadmat(str(annos_path))
    mat["annotations"][0, 1]["fname"] = mat["annotations"][0, 0]["fname"]
    savemat(str(annos_path), {"annotations": mat["annotations"]})
    with pytest.raises(ListFileError, match=r"cars_train_annos\.mat:2: image .* is the file already listed"):
        Cars196(kaggle, "train")
