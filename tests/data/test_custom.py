"""Your own dataset: the YAML, the layouts it reads, `reminder data check`, and bad input."""

import json

import numpy as np
from conftest import save_mask
import pytest
from click.testing import CliRunner
from PIL import Image

from reminder.cli import main
from reminder.data.check import check_data
from reminder.data.classes import distinct_colors
from reminder.data.custom import load_data, mask_path
from reminder.data.increments import check_extends, load_increments
from reminder.data.warehouse import write_warehouse
from reminder.errors import ReminderError

DAY2 = ("background", "shelf", "pallet", "forklift", "person", "cart")


def _write_yaml(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _pair(root, split, name, mask, *, image=None, mode="L"):
    image = image if image is not None else np.full(mask.shape[:2] + (3,), 120, np.uint8)
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "masks" / split).mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(root / "images" / split / f"{name}.jpg")
    Image.fromarray(mask, mode=mode if mask.ndim == 2 else "RGB").save(root / "masks" / split / f"{name}.png")


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    root = tmp_path_factory.mktemp("warehouse")
    return write_warehouse(root / "day1", train=12, val=6, size=64)


def test_ultralytics_layout_and_class_names(warehouse):
    data = load_data(warehouse)
    assert data.names == ("background", "shelf", "pallet", "forklift", "person")
    train = data.samples("train")
    assert len(train) == 12 and len(data.samples("val")) == 6
    sample = train[0]
    assert sample.mask == data.root / "masks" / "train" / (sample.image.stem + ".png") and sample.mask.is_file()
    assert sample.id == "images/train/" + sample.image.stem
    # every class gets a distinct colour; a VOC name keeps VOC's, background is black
    assert len(set(data.colors)) == 5 and data.colors[0] == (0, 0, 0) and data.colors[4] == (192, 128, 128)


def test_list_files_and_colour_masks(tmp_path):
    mask = np.zeros((8, 8, 3), np.uint8)
    mask[:4] = (250, 200, 0)  # forklift
    mask[6:, :2] = (224, 224, 192)  # VOC's void colour: ignored
    _pair(tmp_path, "train", "a", mask)
    _pair(tmp_path, "val", "b", mask)
    (tmp_path / "train.txt").write_text("images/train/a.jpg\n")
    path = _write_yaml(tmp_path / "d.yaml", "train: train.txt\nval: [images/val]\nnames: [background, forklift]\n"
                                            "mask_format: color\ncolors: {forklift: [250, 200, 0]}\n")
    data = load_data(path)
    ids = data.mask_reader()(data.samples("train")[0].mask)
    assert (ids[:4] == 1).all() and (ids[6:, :2] == 255).all() and (ids[4:6] == 0).all()
    mask[5, 5] = (1, 2, 3)
    Image.fromarray(mask).save(tmp_path / "masks" / "train" / "a.png")
    with pytest.raises(ReminderError, match=r"a.png has colour 1,2,3, which is no class colour"):
        data.mask_reader()(tmp_path / "masks" / "train" / "a.png")


def test_cvat_export_with_labelmap(tmp_path):
    """A CVAT / Pascal VOC "segmentation mask" export: labelmap.txt, palette PNGs by colour."""
    (tmp_path / "labelmap.txt").write_text("# label:color_rgb:parts:actions\nbackground:0,0,0::\n"
                                           "pallet:150,100,50::\nforklift:250,200,0::\n")
    lists = tmp_path / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("f1\n")
    (lists / "val.txt").write_text("f2\n")
    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "SegmentationClass").mkdir()
    ids = np.zeros((6, 6), np.uint8)
    ids[:3], ids[3:5] = 2, 1
    for name in ("f1", "f2"):
        Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(tmp_path / "JPEGImages" / f"{name}.jpg")
        palette = Image.fromarray(ids, mode="P")
        palette.putpalette([0, 0, 0, 150, 100, 50, 250, 200, 0] + [0] * 759)
        palette.save(tmp_path / "SegmentationClass" / f"{name}.png")
    data = load_data(tmp_path)
    assert data.names == ("background", "pallet", "forklift") and data.mask_format == "color"
    sample = data.samples("train")[0]
    assert sample.mask == tmp_path / "SegmentationClass" / "f1.png"
    assert np.array_equal(data.mask_reader()(sample.mask), ids)
    # the same export named by a YAML
    path = _write_yaml(tmp_path / "d.yaml", "train: ImageSets/Segmentation/train.txt\n"
                                            "val: ImageSets/Segmentation/val.txt\nlabelmap: labelmap.txt\n")
    assert load_data(path).names == data.names


@pytest.mark.parametrize("text, message", [
    ("train: images/train\nval: images/val\n", r"has no 'names'"),
    ("train: images/train\nval: images/val\nnames: [background, cart, cart]\n", r"'cart' is used twice"),
    ("train: images/train\nval: images/val\nnames: {0: background, 2: cart}\n", r"without gaps.*missing 1"),
    ("train: images/train\nval: images/val\nnames: [background]\n", r"at least one class"),
    ("train: images/train\nval: images/val\nnames: [background, '../x']\n", r"class name '../x' is not allowed"),
    ("train: images/train\nval: images/val\nnames: [background, cart]\ncolours: {}\n", r"unknown key 'colours'"),
    ("train: images/train\nval: images/val\nnames: [background, cart]\ncolors: {van: [1, 2, 3]}\n", r"'van'"),
    ("train: images/train\nval: images/val\nnames: [background, cart]\nmask_format: color\n", r"needs 'colors'"),
    ("train: images/train\nval: images/val\nnames: [background, cart]\nignore: 1\n", r"ignore must be"),
    ("train: images/train\nnames: [background, cart]\n", r"'val' must name"),
    ("path: nowhere\ntrain: a\nval: b\nnames: [background, cart]\n", r"root .*nowhere is missing"),
    ("names: [\n", r"is not valid YAML"),
    ("train: images/train\nval: images/val\nnames:\n  0: background\n  1: shelf\n  1: pallet\n",
     r"the key 1 is given twice \(line 6\)"),
    ("train: images/train\nval: images/val\ntrain: x\nnames: [background, cart]\n", r"'train' is given twice"),
])
def test_bad_yaml_gets_one_line_naming_the_file(tmp_path, text, message):
    (tmp_path / "images" / "train").mkdir(parents=True)
    path = _write_yaml(tmp_path / "bad.yaml", text)
    with pytest.raises(ReminderError, match=message) as error:
        load_data(path)
    assert "bad.yaml" in str(error.value) and "\n" not in str(error.value)


def test_mask_must_sit_in_a_masks_folder(tmp_path):
    with pytest.raises(ReminderError, match="not in an 'images'"):
        mask_path(tmp_path, tmp_path / "pictures" / "a.jpg")


def test_data_check_counts_and_errors(tmp_path):
    mask = np.zeros((8, 8), np.uint8)
    mask[:2] = 1
    _pair(tmp_path, "train", "good", mask)
    bad = mask.copy()
    bad[7, 7] = 9
    _pair(tmp_path, "train", "value", bad)
    _pair(tmp_path, "train", "small", np.zeros((4, 4), np.uint8), image=np.zeros((8, 8, 3), np.uint8))
    _pair(tmp_path, "val", "v", mask)
    path = _write_yaml(tmp_path / "d.yaml", "train: images/train\nval: images/val\nnames: [background, cart, cone]\n")
    report = check_data(load_data(path), examples=2)
    assert report.splits["train"].images == 3
    assert int(report.splits["train"].pixels[1]) == 32 and int(report.splits["train"].image_counts[1]) == 2
    assert any("value.png: value 9, which is no class" in e for e in report.errors)
    assert any("small.png is 4x4 but its image" in e for e in report.errors)
    assert report.warnings == ["train: no image holds cone", "val: no image holds cone"]
    result = CliRunner().invoke(main, ["data", "check", str(path), "--quiet", "--sheet", str(tmp_path / "s.png")])
    assert result.exit_code == 1 and "2 error(s), 2 warning(s)" in result.output
    assert Image.open(tmp_path / "s.png").size[0] > 100
    (tmp_path / "masks" / "train" / "value.png").unlink()
    (tmp_path / "masks" / "train" / "small.png").unlink()
    (tmp_path / "images" / "train" / "small.jpg").unlink()
    result = CliRunner().invoke(main, ["data", "check", str(path), "--json"])
    assert result.exit_code == 1  # the image whose mask is missing
    report = json.loads(result.output)
    assert report["errors"] == [f"{tmp_path / 'images/train/value.jpg'}: its mask "
                                f"{tmp_path / 'masks/train/value.png'} is missing"]


def test_a_new_step_must_keep_the_old_classes(tmp_path, warehouse):
    def day(name, names):
        return load_data(write_warehouse(tmp_path / name, names=names, train=4, val=2, size=32))

    old = load_data(warehouse)
    assert check_extends(old, day("ok", DAY2)) == ["cart"]
    with pytest.raises(ReminderError, match=r"renames class 2 from 'pallet' to 'cart'"):
        check_extends(old, day("renamed", ("background", "shelf", "cart", "forklift", "person")))
    with pytest.raises(ReminderError,
                       match=r"renames class 1 from 'shelf' to 'pallet' \(it lists 'shelf' as class 2\)"):
        check_extends(old, day("reordered", ("background", "pallet", "shelf", "forklift", "person", "cart")))
    with pytest.raises(ReminderError, match=r"drops class 4 'person'"):
        check_extends(old, day("dropped", ("background", "shelf", "pallet", "forklift")))
    with pytest.raises(ReminderError, match=r"adds no class"):
        check_extends(old, old)


def test_increments_train_on_new_labels_and_score_on_every_val_set(tmp_path, warehouse):
    day2 = write_warehouse(tmp_path / "day2", names=DAY2, labelled=["cart"], must=["cart"], train=6, val=4,
                           size=64, seed=3)
    data = load_increments([warehouse, day2], cache_dir=tmp_path / "cache")
    assert data.scenario.steps == ((1, 2, 3, 4), (5,))
    assert len(data.train_ids(1)) == 6 and len(data.test_ids(1)) == 6 + 4
    labels = np.unique(np.concatenate([data.train_dataset(1)[i][1].numpy().ravel() for i in range(6)]))
    assert set(labels) <= {0, 5}  # the new data labels carts only; the rest is background
    assert data.colors[5] not in data.colors[:5]


def test_new_colours_are_far_from_the_used_ones():
    used = [(0, 0, 0), (128, 0, 0), (0, 128, 0), (250, 200, 0)]
    picked = distinct_colors(used, 3)
    distance = min(sum((a - b) ** 2 for a, b in zip(p, u)) ** 0.5 for p in picked for u in used)
    assert distance > 150 and len(set(picked)) == 3


def test_a_bad_labelmap_is_one_line(tmp_path):
    (tmp_path / "images" / "train").mkdir(parents=True)
    base = "train: images/train\nval: images/train\nlabelmap: {}\n"
    (tmp_path / "folder").mkdir()
    (tmp_path / "latin1.txt").write_bytes("background:0,0,0::\nfl\xe4che:1,2,3::\n".encode("latin-1"))
    for target, message in (("missing.txt", "labelmap .*missing.txt does not exist"),
                            ("folder", "labelmap .*folder is a folder, not a file"),
                            ("latin1.txt", "labelmap .*latin1.txt is not UTF-8 text")):
        path = _write_yaml(tmp_path / "bad.yaml", base.format(target))
        with pytest.raises(ReminderError, match=message) as error:
            load_data(path)
        assert "\n" not in str(error.value)


def test_splits_and_list_lines_outside_the_root_are_refused(tmp_path, warehouse):
    """`train: ../..`, an absolute `val:` and a list-file line with ../ were read, although
    the docs say "under the root"."""
    root = tmp_path / "d"
    (root / "images" / "train").mkdir(parents=True)
    (root / "list.txt").write_text("../../etc/x.jpg\n")
    for text, bad in (("train: ../..\nval: images/train\n", "train: .*\\.\\./\\.\\."),
                      (f"train: images/train\nval: {tmp_path}\n", "val: /"),
                      ("train: list.txt\nval: images/train\n", "list.txt:1: ")):
        data = load_data(_write_yaml(root / "bad.yaml", text + "names: [background, forklift]\n"))
        split = "val" if "val: /" in text else "train"
        with pytest.raises(ReminderError, match=f"{bad}.*outside the dataset root"):
            data.samples(split)


def _png_header(path, width, height):
    """A PNG whose header claims width x height (a decompression bomb's first bytes)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def test_decompression_bombs_are_one_line_with_a_limit_that_can_change(tmp_path, monkeypatch):
    """A 20000x20000 mask was a PIL DecompressionBombError traceback in data check and train;
    a 12000x12000 one took 7.8 GB and 85 s to check."""
    from reminder.data.custom import MaskReader
    from reminder.data.samples import read_image, read_mask

    bomb = _png_header(tmp_path / "bomb.png", 20000, 20000)
    for read in (lambda p: MaskReader(3).decode(p), read_mask, read_image):
        with pytest.raises(ReminderError, match=r"bomb.png is 20000x20000 \(400 MP\), above the 40 MP limit; .*"
                                                r"REMINDER_MAX_IMAGE_PIXELS"):
            read(bomb)
    small = tmp_path / "small.png"
    save_mask(small, np.zeros((16, 16), np.uint8))
    assert read_mask(small).shape == (16, 16)
    monkeypatch.setenv("REMINDER_MAX_IMAGE_PIXELS", "100")
    with pytest.raises(ReminderError, match="16x16 .*above the 0 MP limit"):
        read_mask(small)


def test_an_export_without_subsets_holds_out_a_val_share_and_says_so(tmp_path):
    """CVAT writes only default.txt for a task without subsets: training then validated on the
    very images it learnt from, without a word."""
    (tmp_path / "labelmap.txt").write_text("background:0,0,0::\npallet:150,100,50::\n")
    lists = tmp_path / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    names = [f"f{i:02d}" for i in range(40)]
    (lists / "default.txt").write_text("\n".join(names) + "\n")
    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "SegmentationClass").mkdir()
    for name in names:
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "JPEGImages" / f"{name}.jpg")
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "SegmentationClass" / f"{name}.png")
    data = load_data(tmp_path)
    train, val = {s.id for s in data.samples("train")}, {s.id for s in data.samples("val")}
    assert not train & val and train | val == {f"JPEGImages/{n}" for n in names} and 3 <= len(val) <= 14
    assert {s.id for s in load_data(tmp_path).samples("val")} == val  # the same share every time
    assert "no train/val subsets" in data.notes[0] and "held out as val" in data.notes[0]
    assert data.notes[0] in check_data(data).warnings
