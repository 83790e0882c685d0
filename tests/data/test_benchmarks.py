"""Loaders of the real benchmarks on tiny FAKE trees in the exact published layouts, and download().

Each fake image is a flat 8x8 JPEG whose red channel encodes its ORIGINAL class id, so decoding an
item checks that the path -> label association survives the relabelling.
"""
from __future__ import annotations

import hashlib
import importlib
import io
import json
import socket
import tarfile
import threading
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from rankdml.data import benchmarks as B

# `rankdml.data.download` is also the name of the function re-exported by rankdml.data, which
# shadows the submodule as an attribute; import the module itself.
D = importlib.import_module("rankdml.data.download")

_JPEGS: dict[int, bytes] = {}


def write_image(path: Path, code: int) -> None:
    """An 8x8 RGB JPEG with red = `code` (0..255); bytes cached per code, since many files repeat."""
    if code not in _JPEGS:
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), (code, 40, 200)).save(buffer, format="JPEG", quality=95)
        _JPEGS[code] = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_JPEGS[code])


def red_of(image: torch.Tensor) -> float:
    return image[0].float().mean().item()


# ----------------------------------------------------------------------------------------------
# Fake trees (scaled down; the split boundaries 100 / 98 / Ebay files are the real ones)
# ----------------------------------------------------------------------------------------------

def make_cub(root: Path) -> Path:
    """200 classes, 1 image each plus a second one for classes 1 and 101 -> 101 train / 101 test."""
    folder = root / "CUB_200_2011"
    images, labels, classes = [], [], []
    for c in range(1, 201):
        cname = f"{c:03d}.Bird_{c}"
        classes.append(f"{c} {cname}")
        for k in range(2 if c in (1, 101) else 1):
            rel = f"{cname}/Bird_{c}_{k:04d}_{c * 10 + k}.jpg"
            write_image(folder / "images" / rel, c)
            images.append(rel)
            labels.append(c)
    # The real lists are in image-id order, which is class-folder order; shuffle ids to make sure we join by id.
    ids = np.random.default_rng(0).permutation(len(images)) + 1
    (folder / "images.txt").write_text("".join(f"{i} {p}\n" for i, p in zip(ids, images)))
    order = np.argsort(ids)
    (folder / "image_class_labels.txt").write_text("".join(f"{ids[j]} {labels[j]}\n" for j in order))
    (folder / "classes.txt").write_text("\n".join(classes) + "\n")
    (folder / "train_test_split.txt").write_text("".join(f"{i} 1\n" for i in sorted(ids)))
    return folder


def make_cars(root: Path) -> Path:
    """196 classes, 1 image each plus a second one for classes 1 and 196 -> 99 train / 99 test."""
    fields = ["relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"]
    records = []
    classes = list(range(1, 197)) + [1, 196]
    for n, c in enumerate(classes, start=1):
        rel = f"car_ims/{n:06d}.jpg"
        write_image(root / rel, c)
        # Same cell layout as the real file: 1x1 char/uint arrays inside a 1xN struct array.
        records.append((np.array([rel]), np.array([[3]], np.uint8), np.array([[4]], np.uint8),
                        np.array([[7]], np.uint16), np.array([[6]], np.uint16), np.array([[c]], np.uint8),
                        np.array([[n % 2]], np.uint8)))  # the classification flag, to be ignored
    annotations = np.empty((1, len(records)), dtype=[(f, object) for f in fields])
    for j, rec in enumerate(records):
        annotations[0, j] = rec
    class_names = np.empty((1, 196), dtype=object)
    for c in range(1, 197):
        class_names[0, c - 1] = np.array([f"Make{c} Model {2000 + c % 13}"])
    scipy.io.savemat(root / "cars_annos.mat", {"annotations": annotations, "class_names": class_names})
    return root


SOP_SUPER = ["bicycle", "cabinet", "chair"]


def make_sop(root: Path) -> Path:
    """Ebay_train.txt: classes 1..10 with 2 images; Ebay_test.txt: classes 11..16 with 3 images."""
    folder = root / "Stanford_Online_Products"
    image_id = 1
    for fname, class_ids, per_class in (("Ebay_train.txt", range(1, 11), 2), ("Ebay_test.txt", range(11, 17), 3)):
        lines = ["image_id class_id super_class_id path"]
        for c in class_ids:
            sup = (c - 1) % len(SOP_SUPER) + 1
            for k in range(per_class):
                rel = f"{SOP_SUPER[sup - 1]}_final/{111085122800 + c}_{k}.JPG"
                write_image(folder / rel, c * 10)
                lines.append(f"{image_id} {c} {sup} {rel}")
                image_id += 1
        (folder / fname).write_text("\n".join(lines) + "\n")
    return folder


INSHOP_TRAIN = [f"id_{i:08d}" for i in range(1, 7)]  # 6 training items x 3 images
INSHOP_TEST = [f"id_{i:08d}" for i in range(7, 11)]  # 4 test items: 2 query + 2 gallery images each
INSHOP_GALLERY_ONLY = "id_00000011"  # an item with gallery images only


def make_inshop(root: Path) -> Path:
    folder = root / "InShop"
    rows = []
    for item in INSHOP_TRAIN:
        rows += [(f"img/WOMEN/Dresses/{item}/0{k + 1}_1_front.jpg", item, "train") for k in range(3)]
    for item in INSHOP_TEST:
        rows += [(f"img/MEN/Denim/{item}/0{k + 1}_{k + 1}_side.jpg", item, "query") for k in range(2)]
        rows += [(f"img/MEN/Denim/{item}/0{k + 3}_{k + 3}_back.jpg", item, "gallery") for k in range(2)]
    rows += [(f"img/MEN/Tees_Tanks/{INSHOP_GALLERY_ONLY}/01_1_front.jpg", INSHOP_GALLERY_ONLY, "gallery")]
    for rel, item, _ in rows:
        write_image(folder / rel, int(item[3:]) * 10)
    # The original pads columns with runs of spaces and ends lines with a space.
    lines = [f"{len(rows)}", "image_name item_id evaluation_status"]
    lines += [f"{rel:<52}{item}{' ' * 11}{status} " for rel, item, status in rows]
    (folder / "Eval").mkdir(parents=True, exist_ok=True)
    (folder / "Eval" / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> Path:
    """One base folder with a sub-folder per data set, as under $RANKDML_DATA."""
    base = tmp_path_factory.mktemp("benchmarks")
    for name, make in (("cub200", make_cub), ("cars196", make_cars), ("sop", make_sop), ("inshop", make_inshop)):
        (base / name).mkdir()
        make(base / name)
    return base


LOADERS = {"cub200": B.load_cub200, "cars196": B.load_cars196, "sop": B.load_sop, "inshop": B.load_inshop}

# name -> split -> (images, classes) on the fake trees
EXPECTED = {
    "cub200": {"trainval": (101, 100), "val": (20, 20), "train": (81, 80), "test": (101, 100)},
    "cars196": {"trainval": (99, 98), "val": (20, 20), "train": (79, 78), "test": (99, 98)},
    "sop": {"trainval": (20, 10), "val": (4, 2), "train": (16, 8), "test": (18, 6)},
    "inshop": {"trainval": (18, 6), "val": (3, 1), "train": (15, 5)},
}


def original_code(name: str, ds, label: int) -> int:
    """The red value make_* wrote for class `label` of `ds`, from its class name."""
    cname = ds.class_names[label]
    if name == "cub200":
        return int(cname[:3])
    if name == "cars196":
        return int(cname.split()[0][4:])
    if name == "sop":
        return int(cname) * 10
    return int(cname[3:]) * 10


# ----------------------------------------------------------------------------------------------
# Loaders
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(EXPECTED))
def test_split_sizes_disjoint_contiguous(trees, name):
    loaded = {}
    for split, (n_images, n_classes) in EXPECTED[name].items():
        ds = LOADERS[name](split, root=trees / name)
        assert (len(ds), ds.num_classes) == (n_images, n_classes), split
        assert ds.name == name and ds.split == split
        assert sorted(set(ds.labels.tolist())) == list(range(n_classes))  # contiguous 0..C-1, none empty
        assert all(p.is_file() for p in ds.paths)
        loaded[split] = set(ds.class_names)
    assert loaded["train"].isdisjoint(loaded["val"])
    assert loaded["train"] | loaded["val"] == loaded["trainval"]
    if "test" in loaded:
        assert loaded["trainval"].isdisjoint(loaded["test"])


def test_split_boundaries_are_the_published_ones(trees):
    cub = B.load_cub200("trainval", root=trees / "cub200")
    assert cub.class_names[0] == "001.Bird_1" and cub.class_names[-1] == "100.Bird_100"
    assert B.load_cub200("test", root=trees / "cub200").class_names[0] == "101.Bird_101"
    cars = B.load_cars196("test", root=trees / "cars196")
    assert cars.class_names[0].startswith("Make99 ") and cars.class_names[-1].startswith("Make196 ")
    assert B.load_sop("test", root=trees / "sop").class_names == [str(c) for c in range(11, 17)]


@pytest.mark.parametrize("name,split", [("cub200", "test"), ("cars196", "train"), ("sop", "val"),
                                        ("inshop", "trainval"), ("inshop", "query")])
def test_items_decode_with_the_right_label(trees, name, split):
    ds = LOADERS[name](split, root=trees / name)
    for index in (0, len(ds) // 2, len(ds) - 1):
        image, label = ds[index]
        assert image.dtype == torch.uint8 and image.shape == (3, 8, 8)
        assert label == ds.labels[index]
        assert abs(red_of(image) - original_code(name, ds, label)) < 6  # JPEG is nearly lossless on flat colour


def test_transform_is_applied(trees):
    ds = B.load_sop("test", root=trees / "sop", transform=lambda x: x.float() / 255)
    image, _ = ds[0]
    assert image.dtype == torch.float32 and image.max() <= 1


def test_inshop_query_gallery_share_labels(trees):
    query = B.load_inshop("query", root=trees / "inshop")
    gallery = B.load_inshop("gallery", root=trees / "inshop")
    test = B.load_inshop("test", root=trees / "inshop")
    assert (len(query), len(gallery), len(test)) == (8, 9, 17)
    assert query.class_names == gallery.class_names == test.class_names == INSHOP_TEST + [INSHOP_GALLERY_ONLY]
    for path, label in zip(query.paths, query.labels):
        item = path.parent.name  # img/<gender>/<category>/<item id>/<file>
        assert query.class_names[label] == item
        assert sum(g.parent.name == item for g in gallery.paths) == 2
        assert set(gallery.labels[[g.parent.name == item for g in gallery.paths]]) == {label}
    assert sorted(test.paths) == sorted(query.paths + gallery.paths)
    train = B.load_inshop("trainval", root=trees / "inshop")
    assert set(train.class_names).isdisjoint(test.class_names)


def test_root_resolution(trees, monkeypatch, tmp_path):
    # The data set folder itself works as root, too.
    assert len(B.load_cub200("test", root=trees / "cub200" / "CUB_200_2011")) == 101
    assert len(B.load_sop("test", root=trees / "sop" / "Stanford_Online_Products")) == 18
    assert len(B.load_inshop("query", root=trees / "inshop" / "InShop")) == 8
    # No root: $RANKDML_DATA/<name>, else ~/.cache/rankdml/<name>.
    monkeypatch.setenv("RANKDML_DATA", str(trees))
    assert len(B.load_cars196("trainval")) == 99
    monkeypatch.delenv("RANKDML_DATA")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert B.default_root("sop") == tmp_path / ".cache" / "rankdml" / "sop"


@pytest.mark.parametrize("name,expected", [("cub200", "CUB_200_2011"), ("cars196", "cars_annos.mat"),
                                           ("sop", "Ebay_train.txt"), ("inshop", "list_eval_partition.txt")])
def test_missing_root_explains_what_to_do(tmp_path, name, expected):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as info:
        LOADERS[name]("trainval", root=missing)
    message = str(info.value)
    assert expected in message and str(missing) in message
    assert f"rankdml.data.download({name!r}" in message and "benchmarks.json" in message
    assert "layout" in message


def test_unknown_split_is_a_value_error(trees):
    with pytest.raises(ValueError, match="unknown split"):
        B.load_cub200("query", root=trees / "cub200")
    with pytest.raises(ValueError, match="unknown split"):
        B.load_inshop("validation", root=trees / "inshop")


def test_inshop_rejects_a_file_without_header(tmp_path):
    folder = tmp_path / "InShop"
    (folder / "img").mkdir(parents=True)
    (folder / "Eval").mkdir()
    (folder / "Eval" / "list_eval_partition.txt").write_text("img/a.jpg id_00000001 train\n")
    with pytest.raises(ValueError, match="header"):
        B.load_inshop("train", root=tmp_path)


def test_registry_reaches_the_loaders(trees):
    from rankdml.data import DATASETS

    assert DATASETS["sop"] is B.load_sop and DATASETS["inshop"] is B.load_inshop


# ----------------------------------------------------------------------------------------------
# Manifest
# ----------------------------------------------------------------------------------------------

def test_manifest_matches_the_loaders():
    manifest = D.load_manifest()
    assert set(manifest["datasets"]) == set(B.SPECS)
    for name, entry in manifest["datasets"].items():
        assert tuple(entry["layout"]) == B.SPECS[name].layout, name  # one layout, no drift
        for key in ("title", "homepage", "files", "counts", "license", "citation", "manual"):
            assert key in entry, (name, key)
        for f in entry["files"]:
            assert f["urls"] and f["filename"]
            assert f["md5"] is None and f["md5_note"] == "unknown" or len(f["md5"]) == 32
    assert manifest["datasets"]["cub200"]["files"][0]["md5"] == "97eceeb196236b17998738112f37df78"
    assert manifest["datasets"]["inshop"]["manual"] is True


# ----------------------------------------------------------------------------------------------
# download()
# ----------------------------------------------------------------------------------------------

def make_tgz(source: Path, arcname: str, archive: Path) -> str:
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(source, arcname=arcname)
    return hashlib.md5(archive.read_bytes()).hexdigest()


@pytest.fixture
def fake_manifest(tmp_path, monkeypatch, trees):
    """A manifest whose CUB entry points at a local tgz of the fake tree (file:// works offline)."""
    archive = tmp_path / "served" / "CUB_200_2011.tgz"
    archive.parent.mkdir()
    md5 = make_tgz(trees / "cub200" / "CUB_200_2011", "CUB_200_2011", archive)
    manifest = D.load_manifest()
    manifest["datasets"]["cub200"]["files"][0].update(urls=[archive.as_uri()], md5=md5)
    path = tmp_path / "benchmarks.json"
    path.write_text(json.dumps(manifest))
    monkeypatch.setattr(D, "MANIFEST_PATH", path)
    return path, archive


def test_download_fails_fast_without_network(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    start = time.monotonic()
    with pytest.raises(D.NoConnectionError) as info:
        D.download("cub200", tmp_path, timeout=2)
    assert time.monotonic() - start < 2.5
    assert isinstance(info.value, ConnectionError) and isinstance(info.value, RuntimeError)
    message = str(info.value)
    assert "No internet" in message and "data.caltech.edu" in message and "CUB_200_2011.tgz" in message
    assert str(tmp_path) in message and "CUB_200_2011/images.txt" in message
    assert "97eceeb196236b17998738112f37df78" in message
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_download_does_not_hang_on_a_stuck_host(tmp_path, monkeypatch):
    """A host that never answers (as a stuck DNS lookup does) costs `timeout` seconds, no more."""
    release = threading.Event()

    def hang(*args, **kwargs):
        release.wait(30)
        raise urllib.error.URLError("released")

    monkeypatch.setattr(urllib.request, "urlopen", hang)
    start = time.monotonic()
    try:
        with pytest.raises(D.NoConnectionError, match="no answer within 0.5 s"):
            D.download("sop", tmp_path, timeout=0.5)
        assert time.monotonic() - start < 1.5
    finally:
        release.set()


def test_download_fails_fast_on_an_unreachable_address(tmp_path, monkeypatch, fake_manifest):
    path, _ = fake_manifest
    with socket.socket() as s:  # a port nobody listens on: the connection is refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    manifest = json.loads(path.read_text())
    manifest["datasets"]["cub200"]["files"][0]["urls"] = [f"http://127.0.0.1:{port}/CUB_200_2011.tgz"]
    path.write_text(json.dumps(manifest))
    start = time.monotonic()
    with pytest.raises(D.NoConnectionError, match=f"127.0.0.1:{port}"):
        D.download("cub200", tmp_path / "root", timeout=3)
    assert time.monotonic() - start < 3.5


def test_manual_dataset_gives_instructions(tmp_path):
    with pytest.raises(D.ManualDownloadRequired) as info:
        D.download("inshop", tmp_path, timeout=1)
    message = str(info.value)
    assert "drive.google.com" in message and "img.zip" in message and "list_eval_partition.txt" in message
    assert str(tmp_path / "InShop" / "Eval") in message and "InShop/img/" in message


def test_download_fetches_checks_and_unpacks(tmp_path, fake_manifest):
    root = tmp_path / "root"
    folder = D.download("cub200", root, timeout=5)
    assert folder == root / "CUB_200_2011"
    assert len(B.load_cub200("test", root=root)) == 101
    assert not list(root.glob("*.part")) and not list(root.glob(".unpacking-*"))
    assert D.download("cub200", root, timeout=5) == folder  # already there: returns at once


def test_download_uses_an_archive_put_there_by_hand(tmp_path, fake_manifest, monkeypatch):
    _, archive = fake_manifest
    root = tmp_path / "root"
    root.mkdir()
    (root / archive.name).write_bytes(archive.read_bytes())
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("must not touch the network"))
    assert D.download("cub200", root) == root / "CUB_200_2011"


def test_md5_mismatch_raises(tmp_path, fake_manifest):
    path, _ = fake_manifest
    manifest = json.loads(path.read_text())
    manifest["datasets"]["cub200"]["files"][0]["md5"] = "0" * 32
    path.write_text(json.dumps(manifest))
    root = tmp_path / "root"
    with pytest.raises(D.ChecksumError, match="0{32} was expected"):
        D.download("cub200", root, timeout=5)
    assert not (root / "CUB_200_2011.tgz").exists() and not (root / "CUB_200_2011.tgz.part").exists()
    assert not (root / "CUB_200_2011").exists()


def _tar_with(archive: Path, member: tarfile.TarInfo, data: bytes = b"x") -> None:
    with tarfile.open(archive, "w:gz") as tf:
        tf.addfile(member, io.BytesIO(data) if member.isfile() else None)


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_safe_extract_refuses_escaping_tar_members(tmp_path, kind):
    archive = tmp_path / "evil.tgz"
    if kind == "symlink":
        member = tarfile.TarInfo("data/link")
        member.type, member.linkname = tarfile.SYMTYPE, "../../outside"
    else:
        member = tarfile.TarInfo("../evil.txt" if kind == "dotdot" else "/tmp/rankdml-evil.txt")
        member.size = 1
    _tar_with(archive, member)
    dest = tmp_path / "dest"
    with pytest.raises(D.UnsafeArchiveError, match="Refusing to unpack"):
        D.safe_extract(archive, dest)
    assert not (tmp_path / "evil.txt").exists() and not (dest / "data").exists()


def test_safe_extract_refuses_escaping_zip_members(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok/file.txt", "fine")
        zf.writestr("../evil.txt", "bad")
    with pytest.raises(D.UnsafeArchiveError, match=r"\.\./evil\.txt"):
        D.safe_extract(archive, tmp_path / "dest")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "dest" / "ok").exists()


def test_safe_extract_unpacks_a_zip_and_merges_folders(tmp_path):
    archive = tmp_path / "sop.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("Stanford_Online_Products/Ebay_train.txt", "image_id class_id super_class_id path\n")
    dest = tmp_path / "dest"
    (dest / "Stanford_Online_Products").mkdir(parents=True)
    (dest / "Stanford_Online_Products" / "README").write_text("kept")
    D.safe_extract(archive, dest)
    assert (dest / "Stanford_Online_Products" / "Ebay_train.txt").is_file()
    assert (dest / "Stanford_Online_Products" / "README").read_text() == "kept"
    assert [p.name for p in dest.iterdir()] == ["Stanford_Online_Products"]
