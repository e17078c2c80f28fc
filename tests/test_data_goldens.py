"""caffe_dataset against real Caffe's Data and HDF5Data layers
(tests/data/caffe_data/make_data_goldens.py): TEST batches exactly (order, centre crop,
scale, mean file and values, wrap-around at the source's end; LMDB raw and float Datum,
LevelDB, HDF5 lists); TRAIN crop offsets and mirror flags in Caffe's distribution."""
from __future__ import annotations

import math
import os
import sys

import numpy as np
import pytest

from caffe2keras.data import caffe_dataset

HERE = os.path.join(os.path.dirname(__file__), "data", "caffe_data")
sys.path.insert(0, HERE)
import data_records as dr

pytest.importorskip("lmdb")
GOLDENS = np.load(os.path.join(HERE, "data_goldens.npz"))


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    folder = tmp_path_factory.mktemp("caffe_data")
    plyvel = pytest.importorskip("plyvel")
    pytest.importorskip("h5py")
    assert plyvel
    dr.write_all(str(folder))
    for case, (_, text) in dr.NETS.items():
        (folder / f"{case}.prototxt").write_text(text)
    return folder


def _nchw(a):
    return a.transpose(0, 3, 1, 2) if a.ndim == 4 else a


@pytest.mark.parametrize("case", ["mean_file", "mean_value", "float", "leveldb", "hdf5"])
def test_test_phase_batches_are_caffes(sources, case, monkeypatch):
    monkeypatch.chdir(sources)  # the list's relative paths, from where Caffe ran
    batches = iter(caffe_dataset(sources / f"{case}.prototxt", "TEST"))
    for b in range(dr.BATCHES):
        got = next(batches)
        tops = sorted(k.split("/")[2] for k in GOLDENS if k.startswith(f"{case}/{b}/"))
        assert sorted(got) == tops
        for top in tops:
            want = GOLDENS[f"{case}/{b}/{top}"]
            np.testing.assert_allclose(_nchw(got[top]), want, rtol=1e-6, atol=1e-6,
                                       err_msg=f"{case} batch {b} top {top}")


def test_hdf5_list_paths_resolve_beside_the_list(sources, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # elsewhere: files are found beside the list file
    got = next(iter(caffe_dataset(sources / "hdf5.prototxt", "TEST")))
    np.testing.assert_array_equal(_nchw(got["data"]), GOLDENS["hdf5/0/data"])


def _choices(case, sources, seed, phase):
    ds = iter(caffe_dataset(sources / f"{case}.prototxt", phase, seed=seed))
    n = len(GOLDENS[f"{case}/choices"]) // 50
    return np.concatenate([dr.crop_choices(_nchw(next(ds)["data"])) for _ in range(n)])


def _chi2_critical(df, z=3.09):
    """Wilson-Hilferty: the chi-square quantile at the normal quantile z (3.09: 0.999)."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def same_distribution(ours, caffes):
    """Two-sample chi-square homogeneity test of each choice (row offset, column offset,
    flip) and of the joint (row, column) offset, at 0.1%; also the same support."""
    problems = []
    keys = {"row": ours[:, 0], "column": ours[:, 1], "flip": ours[:, 2]}
    theirs = {"row": caffes[:, 0], "column": caffes[:, 1], "flip": caffes[:, 2]}
    keys["offset"] = ours[:, 0].astype(int) * 100 + ours[:, 1]
    theirs["offset"] = caffes[:, 0].astype(int) * 100 + caffes[:, 1]
    for name, a in keys.items():
        b = theirs[name]
        support = np.union1d(a, b)
        if not np.array_equal(np.unique(a), np.unique(b)):
            problems.append(f"{name}: values {np.unique(a)} vs Caffe's {np.unique(b)}")
            continue
        if len(support) < 2:
            continue
        ca = np.array([(a == v).sum() for v in support], float)
        cb = np.array([(b == v).sum() for v in support], float)
        expected_a = (ca + cb) * len(a) / (len(a) + len(b))
        expected_b = (ca + cb) * len(b) / (len(a) + len(b))
        stat = ((ca - expected_a) ** 2 / expected_a).sum() + \
               ((cb - expected_b) ** 2 / expected_b).sum()
        if stat > _chi2_critical(len(support) - 1):
            problems.append(f"{name}: chi-square {stat:.1f} over {len(support) - 1} "
                            f"degrees of freedom")
    return problems


@pytest.mark.parametrize("case, phase", [("stats_train", "TRAIN"), ("stats_test", "TEST")])
def test_random_crops_and_flips_follow_caffes_distribution(sources, case, phase):
    caffes = GOLDENS[f"{case}/choices"]
    ours = _choices(case, sources, seed=5, phase=phase)
    assert same_distribution(ours, caffes) == []
    np.testing.assert_array_equal(ours, _choices(case, sources, seed=5, phase=phase))
    assert not np.array_equal(ours, _choices(case, sources, seed=6, phase=phase))


def test_the_distribution_check_rejects_near_misses(sources):
    """The check above can fail: an offset range one short, a biased coin, or a fixed
    centre crop are told apart from Caffe's draws."""
    caffes = GOLDENS["stats_train/choices"]
    rng = np.random.default_rng(0)
    n = len(caffes)
    rows, cols = rng.integers(0, 5, n), rng.integers(0, 7, n)
    flips = rng.integers(0, 2, n)
    assert same_distribution(np.stack([rows, cols, flips]).T, caffes) == []
    short = np.stack([rng.integers(0, 4, n), cols, flips]).T
    biased = np.stack([rows, cols, (rng.random(n) < 0.56).astype(int)]).T
    centre = np.stack([np.full(n, 2), np.full(n, 3), flips]).T
    skewed = np.stack([np.minimum(rng.integers(0, 6, n), 4), cols, flips]).T
    for wrong in (short, biased, centre, skewed):
        assert same_distribution(wrong, caffes) != []


def test_encoded_datum_gives_caffes_raw_batches(sources, tmp_path):
    """This Caffe build has no OpenCV (no encoded Datum): the same pixels PNG-encoded,
    which Caffe's cv::imdecode gives back exactly, must give Caffe's raw-record batches."""
    cv2 = pytest.importorskip("cv2")
    import lmdb
    env = lmdb.open(str(tmp_path / "raw_lmdb"), map_size=1 << 22)
    with env.begin(write=True) as txn:
        for i, (x, y) in enumerate(zip(dr.images(), dr.labels())):
            ok, png = cv2.imencode(".png", x.transpose(1, 2, 0))  # CHW BGR -> HWC BGR
            assert ok
            txn.put(b"%08d" % i, dr.encoded_datum(png.tobytes(), y))
    env.close()
    (tmp_path / "mean.binaryproto").write_bytes((sources / "mean.binaryproto").read_bytes())
    (tmp_path / "net.prototxt").write_text(dr.NETS["mean_file"][1])
    batches = iter(caffe_dataset(tmp_path / "net.prototxt", "TEST"))
    for b in range(dr.BATCHES):
        got = next(batches)
        np.testing.assert_allclose(_nchw(got["data"]), GOLDENS[f"mean_file/{b}/data"],
                                   rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(got["label"], GOLDENS[f"mean_file/{b}/label"])
