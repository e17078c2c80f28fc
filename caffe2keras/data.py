"""Caffe's data layers as batches for Keras: Data (LMDB or LevelDB of Datum records, raw
or encoded), ImageData (a list file of "path label" lines), with transform_param, and
HDF5Data (a list file of .h5 files; no transform, as Caffe).

Follows BVLC Caffe's data_transformer.cpp: crop at a random offset in TRAIN and at the
centre otherwise, mirror at random when ``mirror`` is set (in any phase, as Caffe),
then (value - mean) * scale, the mean from ``mean_file`` (taken at the uncropped
position) or ``mean_value`` (one per channel, or one for all). Images are decoded and
resized with OpenCV as Caffe does (BGR); Pillow is the fallback (RGB swapped to BGR,
same pixels for PNG/BMP; JPEG decoders may differ by a level). The random choices come
from numpy's generator (``seed``), not Caffe's: same distribution, other draws.

Batches are dicts keyed by the layer's tops (4-D NHWC images, labels (N,)), as the
model from ``convert_for_training`` takes them (HDF5Data: one entry per top, the dataset
of that name). Needs the ``lmdb`` package for LMDB sources and ``plyvel`` for LevelDB
(``pip install caffe2keras[data]``).
"""
from __future__ import annotations

import os

import numpy as np

from .errors import CaffeFormatError
from .files import read_text
from .mean import read_binaryproto
from .net import DATA_TYPES, Layer, _included
from .proto.schema import V1_TYPE_NAMES
from .proto.text import parse_text
from .proto.wire import Decoder


def _fail(msg, path=None, layer=None):
    raise CaffeFormatError(msg, path=path, layer=layer)


def _beside(name, path):
    """A file named in a prototxt: as given (Caffe resolves from the working
    directory), else beside the prototxt."""
    if os.path.isabs(name) or os.path.exists(name):
        return name
    return os.path.join(os.path.dirname(os.path.abspath(path)), name)


def decode_image(buf, color=True, where=""):
    """An encoded image (JPEG, PNG...) as (C, H, W) uint8, BGR, as cv::imdecode gives it."""
    try:
        import cv2
    except ImportError:
        cv2 = None
    if cv2 is not None:
        img = cv2.imdecode(np.frombuffer(buf, np.uint8),
                           cv2.IMREAD_COLOR if color else cv2.IMREAD_GRAYSCALE)
        if img is None:
            _fail(f"{where}: cannot decode the image")
    else:
        import io

        from PIL import Image
        try:
            im = Image.open(io.BytesIO(buf))
            img = np.asarray(im.convert("RGB" if color else "L"))
        except (OSError, ValueError) as e:  # PIL.UnidentifiedImageError is an OSError
            _fail(f"{where}: cannot decode the image ({e})")
        if color:
            img = img[:, :, ::-1]
    return np.ascontiguousarray(img.transpose(2, 0, 1) if img.ndim == 3 else img[None])


def read_datum(buf, where="<datum>", force_color=False, force_gray=False):
    """(values (C, H, W) uint8 or float32, label) of one serialized Datum."""
    d = Decoder(buf, where).message("Datum")
    if d.encoded:
        color = force_color or not force_gray
        return decode_image(d.data, color, where), int(d.label)
    shape = (d.channels, d.height, d.width)
    if d.data:
        values = np.frombuffer(d.data, np.uint8)
    else:
        values = np.asarray(d.float_data, np.float32)
    if values.size != int(np.prod(shape)) or min(shape) <= 0:
        _fail(f"{where}: Datum of shape {list(shape)} holds {values.size} values")
    return values.reshape(shape), int(d.label)


class Transformer:
    """Caffe's DataTransformer for one layer's transform_param and phase."""

    def __init__(self, tp, phase, path=None, rng=None):
        self.scale = np.float32(tp.scale)
        self.mirror = bool(tp.mirror)
        self.crop = int(tp.crop_size)
        self.phase = phase
        self.rng = rng if rng is not None else np.random.default_rng()
        self.mean = None
        self.mean_values = None
        if tp.has("mean_file") and tp.mean_value:
            _fail("transform_param has both mean_file and mean_value; Caffe takes one",
                  path)
        if tp.has("mean_file"):
            m = read_binaryproto(_beside(tp.mean_file, path or "."))
            self.mean = np.asarray(m, np.float32).reshape(m.shape[-3:])
        elif tp.mean_value:
            self.mean_values = np.asarray(tp.mean_value, np.float32)

    def __call__(self, x, where=""):
        """(C, H, W) values -> float32 (C, h, w) as Caffe's Transform(Datum)."""
        c, h, w = x.shape
        x = x.astype(np.float32)
        if self.mean is not None:
            if self.mean.shape != x.shape:
                _fail(f"{where}: mean of shape {list(self.mean.shape)} for data of shape "
                      f"{list(x.shape)} (Caffe needs them equal)")
            x = x - self.mean
        elif self.mean_values is not None:
            mv = self.mean_values
            if mv.size not in (1, c):
                _fail(f"{where}: {mv.size} mean_value entries for {c} channels (give 1 or "
                      f"{c})")
            x = x - (mv if mv.size == c else np.repeat(mv, c)).reshape(c, 1, 1)
        if self.crop:
            if h < self.crop or w < self.crop:
                _fail(f"{where}: crop_size {self.crop} is larger than the data ({h}x{w})")
            if self.phase == "TRAIN":
                ho = int(self.rng.integers(h - self.crop + 1))
                wo = int(self.rng.integers(w - self.crop + 1))
            else:
                ho, wo = (h - self.crop) // 2, (w - self.crop) // 2
            x = x[:, ho:ho + self.crop, wo:wo + self.crop]
        if self.mirror and self.rng.integers(2):
            x = x[:, :, ::-1]
        return np.ascontiguousarray(x * self.scale, dtype=np.float32)


class CaffeDataset:
    """Endless batches of one data layer (``iter(ds)``), as Caffe's layer produces them:
    records in the source's order, starting over at the end. ``len(ds)``: records."""

    def __init__(self, layer, phase, path, seed=None):
        self.layer = layer
        self.phase = phase
        self.path = path
        self.rng = np.random.default_rng(seed)
        self.transform = Transformer(layer.param("transform_param"), phase, path, self.rng)
        if layer.type == "Data":
            p = layer.param("data_param")
            self.batch_size = int(p.batch_size)
            if p.backend == "LEVELDB":  # Caffe's default
                self._records = self._leveldb_records(_beside(p.source, path))
            else:
                self._records = self._lmdb_records(_beside(p.source, path))
        elif layer.type == "HDF5Data":
            p = layer.param("hdf5_data_param")
            self.batch_size = int(p.batch_size)
            self._records = self._hdf5_files(p)
        elif layer.type == "ImageData":
            p = layer.param("image_data_param")
            self.batch_size = int(p.batch_size)
            self._records = self._image_list(p)
        else:
            _fail(f"{layer.type} layers are not read (Data, ImageData and HDF5Data are)",
                  path, layer.name)
        if self.batch_size <= 0:
            _fail("batch_size must be positive", path, layer.name)

    def _lmdb_records(self, source):
        try:
            import lmdb
        except ImportError:
            _fail("reading an LMDB needs the lmdb package: pip install lmdb (or "
                  "caffe2keras[data])", self.path, self.layer.name)
        if not os.path.exists(source):
            _fail(f"LMDB source '{source}' not found", self.path, self.layer.name)
        env = lmdb.open(source, readonly=True, lock=False, readahead=False)
        with env.begin() as txn:
            keys = [k for k, _ in txn.cursor()]
        if not keys:
            _fail(f"LMDB source '{source}' holds no records", self.path, self.layer.name)
        p = self.layer.param("data_param")
        self._env = env

        def get(i):
            with env.begin() as txn:
                buf = txn.get(keys[i])
            return read_datum(buf, f"{source}[{keys[i].decode(errors='replace')}]",
                              force_color=p.force_encoded_color)
        return keys, get

    def _leveldb_records(self, source):
        try:
            import plyvel
        except ImportError:
            _fail("reading a LevelDB needs the plyvel package: pip install plyvel (or "
                  "caffe2keras[data])", self.path, self.layer.name)
        if not os.path.isdir(source):
            _fail(f"LevelDB source '{source}' not found", self.path, self.layer.name)
        try:
            db = plyvel.DB(source, create_if_missing=False)
        except plyvel.Error as e:
            _fail(f"cannot open LevelDB source '{source}': {e}", self.path, self.layer.name)
        keys = list(db.iterator(include_value=False))  # key order, as Caffe's cursor
        if not keys:
            _fail(f"LevelDB source '{source}' holds no records", self.path, self.layer.name)
        p = self.layer.param("data_param")
        self._db = db

        def get(i):
            return read_datum(db.get(keys[i]), f"{source}[{keys[i].decode(errors='replace')}]",
                              force_color=p.force_encoded_color)
        return keys, get

    def _hdf5_files(self, p):
        """HDF5DataLayer's file list: one path a token, relative to the working
        directory (else beside the list); datasets named as the layer's tops."""
        source = _beside(p.source, self.path)
        try:
            with open(source) as f:
                names = f.read().split()
        except OSError as e:
            _fail(f"cannot read the HDF5 file list '{source}': {e.strerror}", self.path,
                  self.layer.name)
        if not names:
            _fail(f"the HDF5 file list '{source}' names no file", self.path, self.layer.name)
        files = [_beside(n, source) for n in names]
        for f in files:
            if not os.path.exists(f):
                _fail(f"{source}: HDF5 file '{f}' not found", self.path, self.layer.name)
        return files, None

    def _read_hdf5(self, name):
        """{top: rows} of one .h5 file, float32, rows shuffled when Caffe would."""
        import h5py
        out = {}
        try:
            with h5py.File(name, "r") as f:
                for top in self.layer.tops:
                    if top not in f:
                        _fail(f"{name} has no dataset '{top}' (the layer's tops name "
                              f"its datasets)", self.path, self.layer.name)
                    out[top] = np.asarray(f[top], np.float32)
        except OSError as e:
            _fail(f"cannot read HDF5 file '{name}': {e}", self.path, self.layer.name)
        rows = {len(v) for v in out.values()}
        if len(rows) != 1 or 0 in rows:
            _fail(f"{name}: datasets {', '.join(self.layer.tops)} must have the same "
                  f"number of rows (found {sorted(rows)})", self.path, self.layer.name)
        if self.layer.param("hdf5_data_param").shuffle:
            perm = self.rng.permutation(rows.pop())
            out = {k: v[perm] for k, v in out.items()}
        return out

    def _hdf5_batches(self):
        """HDF5DataLayer::Next: rows of the current file, then the next file; the file
        order reshuffled at each pass when shuffle is set."""
        files = list(self._records[0])
        shuffle = self.layer.param("hdf5_data_param").shuffle
        tops = self.layer.tops
        order = self.rng.permutation(len(files)) if shuffle else range(len(files))
        pos, row = 0, 0
        current = self._read_hdf5(files[order[0]])
        while True:
            parts = {t: [] for t in tops}
            for _ in range(self.batch_size):
                for t in tops:
                    parts[t].append(current[t][row])
                row += 1
                if row == len(current[tops[0]]):
                    row, pos = 0, pos + 1
                    if pos == len(files):
                        pos = 0
                        if shuffle:
                            order = self.rng.permutation(len(files))
                    if len(files) > 1 or shuffle:
                        current = self._read_hdf5(files[order[pos]])
            batch = {}
            for t in tops:
                a = np.stack(parts[t])
                batch[t] = a.transpose(0, 2, 3, 1) if a.ndim == 4 else a
            yield batch

    def _image_list(self, p):
        source = _beside(p.source, self.path)
        try:
            with open(source) as f:
                lines = [ln.strip() for ln in f if ln.strip()]
        except OSError as e:
            _fail(f"cannot read the image list '{source}': {e.strerror}", self.path,
                  self.layer.name)
        items = []
        for n, ln in enumerate(lines, 1):
            name, _, label = ln.rpartition(" ")
            try:
                items.append((name, int(label)))
            except ValueError:
                _fail(f"{source}:{n}: expected 'path label', found {ln!r}")
        if p.shuffle:
            self.rng.shuffle(items)
        root = p.root_folder

        def get(i):
            name, label = items[i]
            full = root + name
            with open(full if os.path.isabs(full) else _beside(full, source), "rb") as f:
                img = decode_image(f.read(), p.is_color, full)
            if p.new_height and p.new_width:
                img = _resize(img, p.new_height, p.new_width)
            return img, label
        return items, get

    def __len__(self):
        if self.layer.type == "HDF5Data":
            import h5py
            total = 0
            for name in self._records[0]:
                with h5py.File(name, "r") as f:
                    total += len(f[self.layer.tops[0]])
            return total
        return len(self._records[0])

    def __iter__(self):
        if self.layer.type == "HDF5Data":
            yield from self._hdf5_batches()
            return
        keys, get = self._records
        i = 0
        tops = self.layer.tops
        while True:
            xs, ys = [], []
            for _ in range(self.batch_size):
                x, y = get(i)
                xs.append(self.transform(x, f"{self.layer.name} record {i}"))
                ys.append(y)
                i = (i + 1) % len(keys)
            batch = {tops[0]: np.stack(xs).transpose(0, 2, 3, 1)}
            if len(tops) > 1:
                batch[tops[1]] = np.asarray(ys, np.float32)
            yield batch


def _resize(img, h, w):
    """cv::resize with INTER_LINEAR, as Caffe's ReadImageToCVMat."""
    import cv2
    hwc = img.transpose(1, 2, 0)
    out = cv2.resize(hwc, (int(w), int(h)), interpolation=cv2.INTER_LINEAR)
    return out.reshape(int(h), int(w), -1).transpose(2, 0, 1)


def data_layers(net, phase="TRAIN", stages=()):
    """The data layers of a prototxt in ``phase`` (no shapes needed, unlike load_net)."""
    proto = parse_text(read_text(net), "NetParameter", path=net)
    out = []
    for entry in proto.layers or proto.layer:
        type_ = V1_TYPE_NAMES.get(entry.type, str(entry.type)) if proto.layers else entry.type
        if type_ in DATA_TYPES and _included(entry, phase, 0, tuple(stages), net,
                                             entry.name):
            out.append(Layer(entry.name, type_, list(entry.bottom), list(entry.top), entry,
                             entry._pos))
    return out


def caffe_dataset(net, phase="TRAIN", seed=None, stages=()) -> CaffeDataset:
    """Batches of the Data or ImageData layer of ``net`` (a prototxt path) in ``phase``.

    ``iter()`` gives endless dicts {top: array} (images NHWC float32, labels (N,)),
    ready for ``model.train_on_batch`` or ``model.fit(ds, steps_per_epoch=...)``."""
    layers = data_layers(net, phase, stages)
    if not layers:
        _fail(f"the {phase} net has no data layer", net)
    if len(layers) > 1:
        _fail(f"the {phase} net has {len(layers)} data layers "
              f"({', '.join(lay.name for lay in layers)}); one is read", net)
    return CaffeDataset(layers[0], phase, str(net), seed)
