"""The fixed batches the train goldens were made on (Caffe NCHW layout)."""
import numpy as np

STEPS = 30


def batch(step):
    """Batch ``step``: four distinct batches, cycled."""
    rng = np.random.default_rng(1000 + step % 4)
    return {"data": rng.normal(0, 1, (4, 3, 8, 8)).astype(np.float32),
            "label": rng.integers(0, 3, 4).astype(np.float32),
            "target": rng.normal(0, 0.5, (4, 5)).astype(np.float32)}
