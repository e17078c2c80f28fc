"""The fixed batches and solver of the Siamese goldens (Caffe NCHW layout)."""
import numpy as np

STEPS = 12
SOLVER = 'base_lr: 0.05 momentum: 0.9 weight_decay: 0.01 lr_policy: "fixed"'


def batch(step):
    rng = np.random.default_rng(200 + step % 3)
    return {"data": rng.normal(0, 1, (4, 2, 6, 6)).astype(np.float32),
            "data_p": rng.normal(0, 1, (4, 2, 6, 6)).astype(np.float32),
            "sim": np.array([1, 0, 1, 0], np.float32)}
