"""caffe2keras mean MEAN.binaryproto -o mean.npy"""
from __future__ import annotations


def add_parser(sub):
    p = sub.add_parser("mean", help="convert a mean .binaryproto to .npy",
                       description="Read a Caffe mean image (.binaryproto, legacy dims "
                                   "too) and save it as a float32 (C, H, W) .npy file.")
    p.add_argument("binaryproto", help="the mean file")
    p.add_argument("-o", "--output", required=True, help="the .npy file to write")
    return p


def run(args) -> int:
    import numpy as np

    from ..files import atomic_output
    from ..mean import read_binaryproto

    mean = read_binaryproto(args.binaryproto)
    with atomic_output(args.output, suffix=".npy") as tmp, open(tmp, "wb") as f:
        np.save(f, mean)
    per_channel = ", ".join(f"{v:.3f}" for v in mean.reshape(mean.shape[0], -1).mean(1)) \
        if mean.ndim == 3 else ""
    print(f"wrote {args.output}: shape {mean.shape}, float32"
          + (f"; per-channel mean {per_channel}" if per_channel else ""))
    return 0
