"""Tests of the embedded emoji and Fashion-MNIST data sets (files, checksums, splits)."""
from __future__ import annotations

import importlib.resources
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from rankdml.data import embedded
from rankdml.data.embedded import EMOJI_FILE, FASHION_FILE, load_emoji, load_fashion

# The package's own copy (package data), where the loaders read by default.
DATA = Path(str(importlib.resources.files("rankdml.data.files")))
SPLITS = ("train", "val", "trainval", "test")


@pytest.fixture(scope="module")
def emoji():
    return {split: load_emoji(split) for split in SPLITS}


@pytest.fixture(scope="module")
def fashion():
    return {split: load_fashion(split) for split in SPLITS}


# ---------------------------------------------------------------- emoji

def test_emoji_file_content():
    with np.load(DATA / EMOJI_FILE) as npz:
        images, labels, names = npz["images"], npz["labels"], npz["class_names"]
        styles, style_names = npz["styles"], npz["style_names"]
    assert images.dtype == np.uint8 and images.shape[1:] == (32, 32, 3)
    assert len(images) == len(labels) == len(styles)
    assert list(names) == sorted(names) and len(set(names.tolist())) == len(names) >= 1000
    assert np.bincount(labels, minlength=len(names)).min() >= 3
    # Images ordered by class, then style; one image per (class, style).
    order = np.lexsort((styles, labels))
    assert np.array_equal(order, np.arange(len(labels)))
    assert len({(a, b) for a, b in zip(labels.tolist(), styles.tolist())}) == len(labels)
    assert styles.max() < len(style_names)


def test_emoji_every_class_has_three_images(emoji):
    for split, ds in emoji.items():
        assert np.bincount(ds.labels, minlength=ds.num_classes).min() >= 3, split


def test_emoji_classes_disjoint_and_complete(emoji):
    with np.load(DATA / EMOJI_FILE) as npz:
        all_names = npz["class_names"].tolist()
    train, val = set(emoji["train"].class_names), set(emoji["val"].class_names)
    trainval, test = set(emoji["trainval"].class_names), set(emoji["test"].class_names)
    assert not trainval & test
    assert trainval | test == set(all_names)
    assert train | val == trainval and not train & val
    half = len(all_names) // 2
    assert len(trainval) == half and len(test) == len(all_names) - half
    assert len(val) == round(0.2 * half) and len(train) == half - len(val)
    assert min(test) > max(trainval)  # sorted by name: train is the first half
    assert emoji["trainval"].class_names[-1] < emoji["test"].class_names[0]
    assert sum(len(emoji[s]) for s in ("train", "val")) == len(emoji["trainval"])


def test_emoji_labels_contiguous(emoji):
    for split, ds in emoji.items():
        assert ds.labels.dtype == np.int64
        assert set(ds.labels.tolist()) == set(range(ds.num_classes)), split
        assert ds.class_names == sorted(ds.class_names)


def test_emoji_styles_attributes(emoji):
    ds = emoji["test"]
    assert len(ds.styles) == len(ds) and ds.styles.max() < len(ds.style_names)
    assert ds.style_names[:3] == ["noto", "twemoji", "fluent-emoji-flat"]
    first = np.flatnonzero(ds.labels == 0)
    assert len(set(ds.styles[first].tolist())) == len(first)  # one image per designer


def test_emoji_item_and_transform():
    seen = []

    def transform(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.shape)
        return x.float() / 255

    ds = load_emoji("val", transform=transform)
    image, label = ds[3]
    assert isinstance(image, torch.Tensor) and image.dtype == torch.float32 and image.shape == (3, 32, 32)
    assert isinstance(label, int) and label == ds.labels[3]
    assert seen == [torch.Size([3, 32, 32])]
    assert len(ds) == len(ds.labels) == len(ds.images)
    assert ds.name == "emoji" and ds.split == "val"


def test_load_dataset_registry():
    import rankdml

    ds = rankdml.data.load_dataset("emoji", "test")
    image, _ = ds[0]
    assert image.dtype == torch.float32 and -1.0 <= image.min() and image.max() <= 1.0
    assert "emoji" in repr(ds)


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("loader,filename", [(load_emoji, EMOJI_FILE), (load_fashion, FASHION_FILE)])
def test_checksum_mismatch(tmp_path, loader, filename):
    raw = bytearray((DATA / filename).read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (tmp_path / filename).write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum"):
        loader("test", root=tmp_path)


def test_copy_with_right_bytes_loads(tmp_path):
    shutil.copy(DATA / EMOJI_FILE, tmp_path / EMOJI_FILE)
    assert len(load_emoji("test", root=tmp_path)) == len(load_emoji("test"))


@pytest.mark.parametrize("loader", [load_emoji, load_fashion])
def test_missing_file(tmp_path, loader):
    with pytest.raises(FileNotFoundError, match="build_"):
        loader("train", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="no_such_folder"):
        loader("train", root=tmp_path / "no_such_folder")


def test_files_are_package_data():
    assert DATA == Path(embedded.__file__).resolve().parent / "files"
    for name in (EMOJI_FILE, FASHION_FILE, "benchmarks.json", "EMOJI_LICENSE.md", "FASHION_LICENSE.md"):
        assert (DATA / name).is_file(), name


def test_benchmark_folder_variable_is_ignored(tmp_path, monkeypatch):
    # $RANKDML_DATA names the folder of the large benchmarks; the embedded sets always come from the package.
    monkeypatch.setenv("RANKDML_DATA", str(tmp_path))
    assert len(load_fashion("test")) == 3000


def test_missing_package_file_says_reinstall(tmp_path, monkeypatch):
    monkeypatch.setattr(embedded, "PACKAGE_FILES", tmp_path)
    with pytest.raises(FileNotFoundError, match="reinstall rankdml"):
        load_emoji("test")


@pytest.mark.parametrize("loader", [load_emoji, load_fashion])
def test_unknown_split(loader):
    with pytest.raises(ValueError, match="unknown split"):
        loader("validation")


# ---------------------------------------------------------------- fashion

def test_fashion_counts(fashion):
    expected = {"train": 500, "val": 100, "trainval": 600, "test": 300}
    for split, ds in fashion.items():
        assert ds.num_classes == 10 and ds.class_names == fashion["train"].class_names
        assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
        assert np.bincount(ds.labels, minlength=10).tolist() == [expected[split]] * 10, split
        image, label = ds[0]
        assert image.shape == (1, 28, 28) and 0 <= label < 10


def test_fashion_splits_do_not_overlap(fashion):
    def keys(ds):
        return {bytes(img.numpy().tobytes()) for img in ds.images}

    train, val, test = keys(fashion["train"]), keys(fashion["val"]), keys(fashion["test"])
    assert not train & val and not train & test and not val & test
    assert train | val == keys(fashion["trainval"])


def test_fashion_file_origin():
    with np.load(DATA / FASHION_FILE) as npz:
        origin, images = npz["official_split"], npz["images"]
    assert images.dtype == np.uint8 and images.shape == (9000, 28, 28, 1)
    assert (origin == "train").sum() == 6000 and (origin == "test").sum() == 3000


# --- the family split of the emoji classes (issue 10) ------------------------------------------------

def _emoji_names():
    import numpy as np

    from rankdml.data.embedded import EMOJI_FILE, EMOJI_SHA256, _load

    return np.asarray(_load(EMOJI_FILE, EMOJI_SHA256, None)["class_names"]).tolist()


def test_emoji_family_names():
    from rankdml.data.embedded import emoji_family

    names = {"dog", "dog-face", "sun-with-face"}
    assert {emoji_family(n) for n in ["man-running-facing-right", "woman-running", "person-running"]} == {"running"}
    assert {emoji_family(n) for n in ["old-man", "girl", "person", "older-person"]} == {"person"}
    assert emoji_family("kiss-man-man") == emoji_family("kiss") == "kiss"
    assert emoji_family("merman") == emoji_family("mermaid") == "merperson"
    assert emoji_family("dog-face", names) == "dog" and emoji_family("cat-face", names) == "cat-face"
    assert emoji_family("old-key") == "old-key"  # "old" only drops next to a person word


def test_no_family_is_split_between_train_and_test():
    from rankdml.data.embedded import emoji_family, emoji_split_classes

    names = _emoji_names()
    fam = {n: emoji_family(n, set(names)) for n in names}
    split = {s: emoji_split_classes(names, s, "family") for s in ("train", "val", "trainval", "test")}
    assert not {fam[n] for n in split["trainval"]} & {fam[n] for n in split["test"]}
    assert not {fam[n] for n in split["train"]} & {fam[n] for n in split["val"]}
    assert sorted(split["trainval"] + split["test"]) == sorted(names)
    assert sorted(split["train"] + split["val"]) == sorted(split["trainval"])
    assert abs(len(split["test"]) - len(names) / 2) <= 3 and abs(len(split["val"]) - 0.2 * len(split["trainval"])) <= 3
    # the alphabetical cut does split families (which is why the family protocol exists)
    alpha = {s: emoji_split_classes(names, s, "alphabetical") for s in ("trainval", "test")}
    assert len({fam[n] for n in alpha["trainval"]} & {fam[n] for n in alpha["test"]}) > 10


def test_alphabetical_protocol_is_the_old_split():
    from rankdml.data.embedded import emoji_split_classes
    from rankdml.data.splits import split_classes

    names = _emoji_names()
    for s in ("train", "val", "trainval", "test"):
        assert emoji_split_classes(names, s, "alphabetical") == split_classes(names, len(names) // 2, s)
    assert load_emoji("test").class_names == load_emoji("test", protocol="alphabetical").class_names


def test_family_split_on_a_toy_and_bad_protocol():
    from rankdml.data.splits import family_split_classes

    classes = [f"c{i}" for i in range(12)]
    families = ["a", "a", "a", "b", "b", "c", "d", "d", "e", "f", "f", "f"]
    test = family_split_classes(classes, families, "test", seed=3)
    trainval = family_split_classes(classes, families, "trainval", seed=3)
    fam = dict(zip(classes, families))
    assert not {fam[c] for c in test} & {fam[c] for c in trainval} and sorted(test + trainval) == sorted(classes)
    assert test == family_split_classes(classes, families, "test", seed=3)  # seeded
    with pytest.raises(ValueError, match="family names"):
        family_split_classes(classes, families[:-1], "test")
    with pytest.raises(ValueError, match="unknown emoji protocol"):
        load_emoji("test", protocol="by-colour")


def test_emoji_split_composition_counts():
    from rankdml.data.embedded import emoji_family, emoji_split_classes, emoji_split_composition

    names = _emoji_names()
    family = emoji_split_composition("family")
    alpha = emoji_split_composition("alphabetical")
    for comp, protocol in ((family, "family"), (alpha, "alphabetical")):
        assert sum(row["classes"] for row in comp.values()) == len(names)
        assert sum(row["images"] for row in comp.values()) == len(load_emoji("trainval", protocol=protocol)) + \
            len(load_emoji("test", protocol=protocol))
        assert comp["test"]["images"] == len(load_emoji("test", protocol=protocol))
    assert all(row["families cut"] == 0 for row in family.values())
    assert all(row["families cut"] > 0 for row in alpha.values())
    # a count checked by hand: test classes whose family has another class in the test split
    test = emoji_split_classes(names, "test", "alphabetical")
    fam = [emoji_family(n, set(names)) for n in test]
    assert alpha["test"]["with a sibling here"] == sum(fam.count(f) > 1 for f in fam)
    # the bias the family split removes: variants pile up in the alphabetical test half
    assert alpha["test"]["variant classes"] > 2 * (alpha["train"]["variant classes"] + alpha["val"]["variant classes"])
