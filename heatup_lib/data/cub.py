"""CUB-200-2011 in its official layout, with the zero-shot split (classes 1-100 train, 101-200 test)."""

from __future__ import annotations

from pathlib import Path

from ._common import (
    ImageListDataset,
    ListFileError,
    UniqueImages,
    check_label,
    check_relpath,
    parse_int,
    read_list_file,
)

__all__ = ["CUB200"]


class CUB200(ImageListDataset):
    """Caltech-UCSD Birds-200-2011 with the paper's class-disjoint split (SPEC §6).

    ``root`` is the folder holding ``CUB_200_2011/`` (as extracted from ``CUB_200_2011.tgz``) or
    that folder itself. Read: ``images.txt`` (``<image_id> <path under images/>``),
    ``image_class_labels.txt`` (``<image_id> <class_id 1..200>``) and, for names,
    ``classes.txt``. The official ``train_test_split.txt`` and bounding boxes are not used:
    ``split="train"`` holds classes 1-100 (5,864 images), ``"test"`` classes 101-200 (5,924),
    ``"all"`` both. Labels are 0..C-1 within the split; ``class_ids`` keeps the original ids.
    """

    name = "cub200"
    num_total_classes = 200
    train_classes = range(1, 101)
    required = ("images.txt", "image_class_labels.txt", "images/")
    base_folder = "CUB_200_2011"
    mirrors = (
        "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz",
        "http://www.vision.caltech.edu/visipedia-data/CUB-200-2011/CUB_200_2011.tgz",
    )
    filename = "CUB_200_2011.tgz"
    md5 = "97eceeb196236b17998738112f37df78"
    where = (
        "CUB_200_2011.tgz (1.1 GB) from https://www.vision.caltech.edu/datasets/cub_200_2011/ "
        "(Caltech DATA record 65de6-vp158); extract it so that root/CUB_200_2011/images.txt exists."
    )
    expected = (
        "CUB_200_2011/images.txt",
        "CUB_200_2011/image_class_labels.txt",
        "CUB_200_2011/classes.txt (optional, class names)",
        "CUB_200_2011/images/<class folder>/<image>.jpg",
    )

    def _load(self, base: Path) -> None:
        self.base = base
        records, names = self._read(base)
        self._set_records(records, names, self.train_classes)


    @classmethod
    def _read(cls, base: Path) -> tuple[list[tuple[Path, int]], dict[int, str]]:
        images_txt, labels_txt, classes_txt = base / "images.txt", base / "image_class_labels.txt", base / "classes.txt"
        paths: dict[int, tuple[Path, int]] = {}
        unique = UniqueImages()
        for line_no, line, (sid, rel) in read_list_file(images_txt, 2):
            image_id = parse_int(sid, images_txt, line_no, line, "image id")
            unique.add_id(image_id, images_txt.name, f"{images_txt}:{line_no}", line)
            path = check_relpath(rel, base / "images", images_txt, line_no, line, unique)
            paths[image_id] = (path, line_no)
        labels: dict[int, int] = {}
        for line_no, line, (sid, slabel) in read_list_file(labels_txt, 2):
            image_id = parse_int(sid, labels_txt, line_no, line, "image id")
            label = parse_int(slabel, labels_txt, line_no, line, "class id")
            check_label(label, 1, cls.num_total_classes, labels_txt, line_no, line)
            if image_id not in paths:
                raise ListFileError(f"{labels_txt}:{line_no}: image id {image_id} is not in {images_txt.name}: {line!r}")
            if image_id in labels:
                raise ListFileError(f"{labels_txt}:{line_no}: duplicate image id {image_id}: {line!r}")
            labels[image_id] = label
        for image_id, (_, line_no) in paths.items():
            if image_id not in labels:
                raise ListFileError(f"{images_txt}:{line_no}: image id {image_id} has no line in {labels_txt.name}")
        names: dict[int, str] = {}
        if classes_txt.is_file():
            for line_no, line, (sid, name) in read_list_file(classes_txt, 2):
                cid = parse_int(sid, classes_txt, line_no, line, "class id")
                names[check_label(cid, 1, cls.num_total_classes, classes_txt, line_no, line)] = name
        records = [(paths[i][0], labels[i]) for i in sorted(paths)]
        return records, names
