"""Converted models against every blob real Caffe computed (the project's exactness bar)."""

import numpy as np
import pytest

from .shared import (
    CONFORMANCE_CASES,
    MODELS_INDEX,
    check_layer,
    conformance_files,
    model_files,
    quiet_convert,
)

# Blobs whose check belongs to another converter family (SSD detection tail).
PENDING = {"yufacedetectnet_v1": {"detection_out"}}  # fixed-size rows: test_emit_ssd.py


def run_golden(deploy, weights, inputs, outputs, skip=()):
    model = quiet_convert(deploy, weights, outputs="all")
    with np.load(inputs) as feed, np.load(outputs) as golden:
        blobs = [b for b in golden.files if b not in skip]
        check_layer(model, dict(feed), dict(golden), blobs)
    assert len(blobs) >= 2


@pytest.mark.parametrize("case", CONFORMANCE_CASES)
def test_conformance_case(case):
    run_golden(*conformance_files(case))


@pytest.mark.parametrize("key", sorted(MODELS_INDEX))
def test_real_model(key):
    run_golden(*model_files(key), skip=PENDING.get(key, ()))
