"""Stanford Online Products from its official list files (``Ebay_train.txt`` / ``Ebay_test.txt``)."""

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

__all__ = ["StanfordOnlineProducts", "SOP_CATEGORIES"]

SOP_CATEGORIES = (
    "bicycle", "cabinet", "chair", "coffee_maker", "fan", "kettle",
    "lamp", "mug", "sofa", "stapler", "table", "toaster",
)  # super_class_id 1..12, folders "<name>_final/"

_HEADER = ("image_id", "class_id", "super_class_id", "path")


class StanfordOnlineProducts(ImageListDataset):
    """Stanford Online Products (120,053 images, 22,634 products) with its official zero-shot split.

    ``root`` is the folder holding ``Stanford_Online_Products/`` (as extracted from
    ``Stanford_Online_Products.zip``) or that folder itself. ``Ebay_train.txt`` (59,551 images,
    classes 1-11,318) and ``Ebay_test.txt`` (60,502 images, classes 11,319-22,634) each start
    with the header ``image_id class_id super_class_id path``; paths are relative to the folder
    (``bicycle_final/111085122871_0.JPG``). ``split="all"`` joins both. Labels are 0..C-1 within
    the split; ``class_ids`` keeps the original ids and ``super_class_ids`` the 12 categories.
    """

    name = "sop"
    num_total_classes = 22634
    required = ("Ebay_train.txt", "Ebay_test.txt")
    base_folder = "Stanford_Online_Products"
    mirrors = ("ftp://cs.stanford.edu/cs/cvgl/Stanford_Online_Products.zip",)
    filename = "Stanford_Online_Products.zip"
    md5 = "7f73d41a2f44250d4779881525aea32e"
    where = (
        "Stanford_Online_Products.zip (2.9 GB) from the project page "
        "https://cvgl.stanford.edu/projects/lifted_struct/ (the FTP address is often down; "
        "copies circulate on Google Drive and Kaggle); extract it so that "
        "root/Stanford_Online_Products/Ebay_train.txt exists."
    )
    expected = (
        "Stanford_Online_Products/Ebay_train.txt",
        "Stanford_Online_Products/Ebay_test.txt",
        "Stanford_Online_Products/<category>_final/<image>.JPG",
    )

    def _load(self, base: Path) -> None:
        # Both files are read whatever the split: a class in both is refused for every split.
        self.base = base
        records: list[tuple[Path, int]] = []
        supers: dict[int, int] = {}
        seen: dict[int, str] = {}
        unique = UniqueImages()
        for name in ("Ebay_train.txt", "Ebay_test.txt"):
            path = base / name
            for line_no, line, (sid, sclass, ssuper, rel) in read_list_file(path, 4, header=_HEADER):
                where = f"{path}:{line_no}"
                unique.add_id(parse_int(sid, path, line_no, line, "image_id"), name, where, line)
                class_id = check_label(parse_int(sclass, path, line_no, line, "class_id"), 1,
                                       self.num_total_classes, path, line_no, line)
                super_id = check_label(parse_int(ssuper, path, line_no, line, "super_class_id"), 1,
                                       len(SOP_CATEGORIES), path, line_no, line)
                if seen.setdefault(class_id, name) != name:
                    raise ListFileError(
                        f"{where}: class id {class_id} also appears in {seen[class_id]}; "
                        f"train and test classes must be disjoint: {line!r}"
                    )
                records.append((check_relpath(rel, base, path, line_no, line, unique), class_id))
                supers[class_id] = super_id
        self._set_records(records, {}, {c for c, name in seen.items() if name == "Ebay_train.txt"})
        self.super_class_ids = [supers[c] for c in self.class_ids]
