"""caffe_dataset: Data (LMDB of Datum records) and ImageData batches with Caffe's
transform_param, against a direct transcription of data_transformer.cpp's loop."""
from __future__ import annotations

import numpy as np
import pytest

from caffe2keras import CaffeFormatError
from caffe2keras.data import caffe_dataset, read_datum

lmdb = pytest.importorskip("lmdb")
cv2 = pytest.importorskip("cv2")


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def datum(values=None, label=0, encoded=None, floats=False):
    """A serialized Datum: raw uint8 (C, H, W), float_data, or an encoded image."""
    parts = []
    if encoded is not None:
        parts += [b"\x22" + _varint(len(encoded)) + encoded, b"\x38\x01"]
    else:
        c, h, w = values.shape
        parts += [b"\x08" + _varint(c), b"\x10" + _varint(h), b"\x18" + _varint(w)]
        if floats:
            for v in values.reshape(-1).astype(np.float32):
                parts.append(b"\x35" + v.tobytes())
        else:
            raw = values.astype(np.uint8).tobytes()
            parts.append(b"\x22" + _varint(len(raw)) + raw)
    parts.append(b"\x28" + _varint(label))
    return b"".join(parts)


def blobproto(a):
    """A BlobProto .binaryproto of a (1, C, H, W) mean."""
    dims = b"".join(b"\x08" + _varint(d) for d in a.shape)
    data = a.astype(np.float32).tobytes()
    return (b"\x3a" + _varint(len(dims)) + dims + b"\x2a" + _varint(len(data)) + data)


def caffe_transform(x, mean=None, mean_values=None, scale=1.0, crop=0, mirror=False):
    """data_transformer.cpp's Transform(Datum), TEST phase, element by element."""
    c, dh, dw = x.shape
    h, w, ho, wo = dh, dw, 0, 0
    if crop:
        h = w = crop
        ho, wo = (dh - crop) // 2, (dw - crop) // 2
    out = np.zeros((c, h, w), np.float32)
    scale = np.float32(scale)
    for ci in range(c):
        for hi in range(h):
            for wi in range(w):
                v = np.float32(x[ci, ho + hi, wo + wi])
                if mean is not None:
                    v = (v - mean[ci, ho + hi, wo + wi]) * scale
                elif mean_values is not None:
                    v = (v - np.float32(mean_values[ci])) * scale
                else:
                    v = v * scale
                out[ci, hi, (w - 1 - wi) if mirror else wi] = v
    return out


@pytest.fixture
def db(tmp_path):
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (3, 7, 9)) for _ in range(5)]
    env = lmdb.open(str(tmp_path / "db"), map_size=1 << 22)
    with env.begin(write=True) as txn:
        for i, img in enumerate(images):
            if i == 3:  # an encoded record (PNG, lossless), BGR like Caffe's
                _, png = cv2.imencode(".png", img.transpose(1, 2, 0).astype(np.uint8))
                txn.put(f"{i:08d}".encode(), datum(label=i, encoded=png.tobytes()))
            else:
                txn.put(f"{i:08d}".encode(), datum(img, label=i))
    env.close()
    mean = rng.normal(120, 20, (1, 3, 7, 9)).astype(np.float32)
    (tmp_path / "mean.binaryproto").write_bytes(blobproto(mean))
    return tmp_path, images, mean[0]


def net(tmp_path, transform, phase_rule="", batch=2):
    p = tmp_path / "net.prototxt"
    p.write_text(f"""
layer {{ name: "d" type: "Data" top: "data" top: "label" {phase_rule}
  transform_param {{ {transform} }}
  data_param {{ source: "db" batch_size: {batch} backend: LMDB }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param {{ num_output: 2 }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}
""")
    return p


@pytest.mark.parametrize("transform, kw", [
    ("", {}),
    ('scale: 0.0078125 mean_file: "mean.binaryproto" crop_size: 5',
     {"scale": 0.0078125, "crop": 5, "mean": True}),
    ("mean_value: 104 mean_value: 117 mean_value: 123 crop_size: 4",
     {"mean_values": [104, 117, 123], "crop": 4}),
    ("mean_value: 100 scale: 0.5", {"mean_values": [100] * 3, "scale": 0.5}),
])
def test_test_phase_batches_are_caffes(db, transform, kw):
    tmp, images, mean = db
    ds = caffe_dataset(net(tmp, transform), phase="TEST")
    assert len(ds) == 5
    it = iter(ds)
    batches = [next(it) for _ in range(3)]  # 6 records: wraps around after 5
    if kw.pop("mean", False):
        kw["mean"] = mean
    for k in range(6):
        b = batches[k // 2]
        want = caffe_transform(images[k % 5], **kw).transpose(1, 2, 0)
        np.testing.assert_array_equal(b["data"][k % 2], want)
        assert b["label"][k % 2] == k % 5
    assert batches[0]["data"].dtype == np.float32 and batches[0]["label"].shape == (2,)


def test_train_phase_crops_and_mirrors_at_random_with_a_seed(db):
    tmp, images, _ = db
    p = net(tmp, "crop_size: 5 mirror: true", batch=5)
    candidates = []
    x = images[0]
    for ho in range(3):
        for wo in range(5):
            crop = x[:, ho:ho + 5, wo:wo + 5].astype(np.float32)
            candidates += [crop, crop[:, :, ::-1]]
    seen = set()
    for seed in range(40):
        got = next(iter(caffe_dataset(p, "TRAIN", seed=seed)))["data"][0].transpose(2, 0, 1)
        hits = [i for i, c in enumerate(candidates) if np.array_equal(c, got)]
        assert hits, "not a crop of the record"
        seen.add(hits[0])
    assert len(seen) > 15  # offsets and flips vary...
    a = next(iter(caffe_dataset(p, "TRAIN", seed=7)))["data"]
    b = next(iter(caffe_dataset(p, "TRAIN", seed=7)))["data"]
    np.testing.assert_array_equal(a, b)  # ...and a seed fixes them


def test_float_datum_and_phase_rules(tmp_path):
    v = np.arange(12, dtype=np.float32).reshape(3, 2, 2) / 7
    x, label = read_datum(datum(v, label=4, floats=True))
    np.testing.assert_array_equal(x, v)
    assert label == 4


def test_image_data_list(tmp_path):
    rng = np.random.default_rng(1)
    imgs = [rng.integers(0, 256, (6, 8, 3)).astype(np.uint8) for _ in range(3)]
    for i, img in enumerate(imgs):
        cv2.imwrite(str(tmp_path / f"im{i}.png"), img)
    (tmp_path / "list.txt").write_text("".join(f"im{i}.png {i * 2}\n" for i in range(3)))
    p = tmp_path / "net.prototxt"
    p.write_text(f"""
layer {{ name: "d" type: "ImageData" top: "data" top: "label"
  transform_param {{ mean_value: 10 }}
  image_data_param {{ source: "list.txt" root_folder: "{tmp_path}/" batch_size: 3
                      new_height: 3 new_width: 4 }} }}
""")
    b = next(iter(caffe_dataset(p, "TEST")))
    for i, img in enumerate(imgs):
        want = cv2.resize(img, (4, 3), interpolation=cv2.INTER_LINEAR).astype(np.float32) - 10
        np.testing.assert_array_equal(b["data"][i], want)
    assert list(b["label"]) == [0, 2, 4]


@pytest.mark.parametrize("transform, message", [
    ('mean_file: "mean.binaryproto" mean_value: 3', "both mean_file and mean_value"),
    ("crop_size: 20", "crop_size 20 is larger"),
    ("mean_value: 1 mean_value: 2", "2 mean_value entries for 3 channels"),
])
def test_bad_transforms_are_named(db, transform, message):
    tmp, _, _ = db
    with pytest.raises(CaffeFormatError, match=message):
        next(iter(caffe_dataset(net(tmp, transform), "TEST")))


def test_leveldb_is_caffes_default_backend(tmp_path):
    p = tmp_path / "n.prototxt"  # no backend: Caffe's default, LEVELDB
    p.write_text('layer { name: "d" type: "Data" top: "data" data_param { source: "x" '
                 'batch_size: 1 } }')
    pytest.importorskip("plyvel")
    with pytest.raises(CaffeFormatError, match="LevelDB source .*x' not found"):
        caffe_dataset(p)
