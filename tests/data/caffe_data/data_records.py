"""The small data sources behind data_goldens.npz, written the same way by the golden
maker (make_data_goldens.py, before real Caffe reads them) and by tests/test_data_goldens.py.

Only numpy and the database's own package: this runs under the system Python that has
pycaffe as well as in the project's venv. Records are deterministic; Datum and BlobProto
are serialized by hand (protobuf wire format) so that no Caffe is needed to write them.
"""
import os

import numpy as np

SHAPE = (3, 10, 12)   # C, H, W of the image records
RECORDS = 7           # batch size 3: the fourth batch wraps around the end
POS_SHAPE = (2, 9, 11)  # position-coded records: channel 0 = row, channel 1 = column
POS_RECORDS = 5


def images():
    rng = np.random.default_rng(14)
    return [rng.integers(0, 256, SHAPE).astype(np.uint8) for _ in range(RECORDS)]


def labels():
    return [(3 * i + 1) % 10 for i in range(RECORDS)]


def position_images():
    _, h, w = POS_SHAPE
    rows = np.broadcast_to(np.arange(h)[:, None], (h, w))
    cols = np.broadcast_to(np.arange(w)[None, :], (h, w))
    return [np.stack([rows, cols]).astype(np.uint8) for _ in range(POS_RECORDS)]


def mean_image():
    return (np.arange(np.prod(SHAPE)).reshape(SHAPE) % 37 * 1.75).astype(np.float32)


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def datum(values, label, floats=False):
    """A serialized raw Datum: uint8 bytes in ``data`` or floats in ``float_data``."""
    c, h, w = values.shape
    parts = [b"\x08" + _varint(c), b"\x10" + _varint(h), b"\x18" + _varint(w)]
    if floats:  # repeated float, unpacked (proto2 default), as Caffe writes it
        parts += [b"\x35" + v.tobytes() for v in values.reshape(-1).astype(np.float32)]
    else:
        raw = values.astype(np.uint8).tobytes()
        parts.append(b"\x22" + _varint(len(raw)) + raw)
    parts.append(b"\x28" + _varint(label))
    return b"".join(parts)


def encoded_datum(image_bytes, label):
    """A serialized encoded Datum (a PNG or JPEG file's bytes)."""
    return (b"\x22" + _varint(len(image_bytes)) + image_bytes + b"\x28" + _varint(label)
            + b"\x38\x01")


def blobproto(a):
    """A BlobProto (.binaryproto) of a (C, H, W) mean, shape as (1, C, H, W)."""
    dims = b"".join(b"\x08" + _varint(d) for d in (1,) + a.shape)
    data = a.astype(np.float32).tobytes()
    return b"\x3a" + _varint(len(dims)) + dims + b"\x2a" + _varint(len(data)) + data


def records(kind):
    """[(key, serialized Datum)] of a source: 'raw', 'float' or 'pos'."""
    if kind == "pos":
        return [(b"%08d" % i, datum(x, i)) for i, x in enumerate(position_images())]
    floats = kind == "float"
    return [(b"%08d" % i, datum(x.astype(np.float32) / 7 if floats else x, y, floats))
            for i, (x, y) in enumerate(zip(images(), labels()))]


def write_lmdb(path, kind):
    import lmdb
    env = lmdb.open(path, map_size=1 << 22)
    with env.begin(write=True) as txn:
        for k, v in records(kind):
            txn.put(k, v)
    env.close()


def write_leveldb(path, kind):
    import plyvel
    db = plyvel.DB(path, create_if_missing=True)
    for k, v in records(kind):
        db.put(k, v)
    db.close()


def write_hdf5(folder):
    """Two .h5 files (4 and 3 rows) and the list file naming them by relative paths
    (Caffe opens them from its working directory)."""
    import h5py
    x = np.stack(images()).astype(np.float32) / 255
    y = np.asarray(labels(), np.float32)
    extra = np.arange(RECORDS * 2, dtype=np.float32).reshape(RECORDS, 2)
    names = []
    for i, rows in enumerate((slice(0, 4), slice(4, RECORDS))):
        name = f"part{i}.h5"
        with h5py.File(os.path.join(folder, name), "w") as f:
            f["data"] = x[rows]
            f["label"] = y[rows]
            f["extra"] = extra[rows]
        names.append(name)
    with open(os.path.join(folder, "h5list.txt"), "w") as f:
        f.write("".join(n + "\n" for n in names))


def write_all(folder, leveldb=True, hdf5=True):
    """Every source the goldens' nets name, in ``folder``."""
    for kind in ("raw", "float", "pos"):
        write_lmdb(os.path.join(folder, f"{kind}_lmdb"), kind)
    with open(os.path.join(folder, "mean.binaryproto"), "wb") as f:
        f.write(blobproto(mean_image()))
    if leveldb:
        write_leveldb(os.path.join(folder, "raw_leveldb"), "raw")
    if hdf5:
        write_hdf5(folder)


def _data(source, backend, batch, transform, phase):
    return (f'layer {{ name: "d" type: "Data" top: "data" top: "label" '
            f'include {{ phase: {phase} }} transform_param {{ {transform} }} '
            f'data_param {{ source: "{source}" backend: {backend} batch_size: {batch} }} }}\n')


# case: (phase, net). Sources are named relative to the folder write_all filled (Caffe
# runs there; caffe2keras finds them beside the prototxt).
NETS = {
    "mean_file": ("TEST", _data("raw_lmdb", "LMDB", 3, 'crop_size: 8 scale: 0.5 '
                                'mean_file: "mean.binaryproto"', "TEST")),
    "mean_value": ("TEST", _data("raw_lmdb", "LMDB", 3, "scale: 0.25 mean_value: 10 "
                                 "mean_value: 20 mean_value: 30", "TEST")),
    "float": ("TEST", _data("float_lmdb", "LMDB", 3, "crop_size: 5 scale: 2 "
                            "mean_value: 1.5", "TEST")),
    "leveldb": ("TEST", _data("raw_leveldb", "LEVELDB", 3, "crop_size: 7 "
                              "mean_value: 100", "TEST")),
    "hdf5": ("TEST", ('layer { name: "h" type: "HDF5Data" top: "data" top: "label" '
                      'top: "extra" hdf5_data_param { source: "h5list.txt" batch_size: 3 '
                      '} }\n')),
    # crop offsets and mirror flags, read back from the position-coded records
    "stats_train": ("TRAIN", _data("pos_lmdb", "LMDB", 50, "crop_size: 5 mirror: true",
                                   "TRAIN")),
    "stats_test": ("TEST", _data("pos_lmdb", "LMDB", 50, "crop_size: 5 mirror: true",
                                 "TEST")),
}
BATCHES = 4        # batches kept of each exact case
STATS_BATCHES = 40  # batches of 50 read by each stats case: 2000 crops


def crop_choices(batch):
    """(row offset, column offset, mirrored) of each image of a position-coded batch
    (N, 2, crop, crop), in Caffe's NCHW layout."""
    rows = batch[:, 0, 0, 0]
    first, second = batch[:, 1, 0, 0], batch[:, 1, 0, 1]
    flipped = second < first
    crop = batch.shape[-1]
    cols = np.where(flipped, first - (crop - 1), first)
    return np.stack([rows, cols, flipped]).T.astype(np.int8)
