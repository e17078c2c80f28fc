"""The HDF5 rows of the iter_size goldens (10 rows, batches of 2: the data wraps around
within the runs). Only numpy and h5py."""
import os

import numpy as np

STEPS = 8
RUNS = {  # solver text after net:; display 1 makes Caffe log each step's loss
    "sgd_iter3": 'base_lr: 0.1 momentum: 0.9 weight_decay: 0.01 iter_size: 3 '
                 'lr_policy: "step" gamma: 0.5 stepsize: 3 display: 1',
    "sgd_iter3_average": 'base_lr: 0.1 momentum: 0.9 weight_decay: 0.01 iter_size: 3 '
                         'lr_policy: "step" gamma: 0.5 stepsize: 3 display: 1 '
                         'average_loss: 3',
    "adam_iter2": 'type: "Adam" base_lr: 0.02 momentum: 0.9 momentum2: 0.999 '
                  'iter_size: 2 lr_policy: "fixed" display: 1',
}


def rows():
    rng = np.random.default_rng(7)
    return {"data": rng.normal(0, 1, (10, 6)).astype(np.float32),
            "label": (np.arange(10) * 7 % 3).astype(np.float32),
            "target": rng.normal(0, 0.5, (10, 2)).astype(np.float32)}


def write_hdf5(folder):
    import h5py
    with h5py.File(os.path.join(folder, "rows.h5"), "w") as f:
        for k, v in rows().items():
            f[k] = v
    with open(os.path.join(folder, "h5list.txt"), "w") as f:
        f.write("rows.h5\n")
