"""Shape inference and in-place resolution against real Caffe's blob shapes."""
import warnings

import numpy as np
import pytest

from caffe2keras.errors import CaffeFormatError
from caffe2keras.graph import load_graph

from .shared import CONFORMANCE_CASES, MODELS_INDEX, PROTOTXT_ONLY, conformance_files, model_files


@pytest.mark.parametrize("case", CONFORMANCE_CASES)
def test_conformance_shapes_match_caffe(case):
    deploy, weights, _, outputs = conformance_files(case)
    g = load_graph(deploy, weights)
    golden = np.load(outputs)
    assert set(golden.files) <= set(g.blob_names())
    for blob in golden.files:
        assert g.shape(blob) == golden[blob].shape, blob


@pytest.mark.parametrize("key", sorted(MODELS_INDEX))
def test_model_shapes_match_caffe(key):
    deploy, weights, _, outputs = model_files(key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = load_graph(deploy, weights)
    golden = np.load(outputs)
    for blob in golden.files:
        ours = g.shape(blob)
        ref = golden[blob].shape
        producer = g.values[g.final(blob)].producer
        if producer is not None and producer.type == "DetectionOutput":
            # Caffe's (1, 1, n, 7) becomes a fixed (batch, keep_top_k, 7) block per image
            assert ours[1] >= ref[2] and (ours[0], ours[2]) == (ref[0], ref[3]), blob
            continue
        assert len(ours) == len(ref), blob
        # None marks a size only the data decides (DetectionOutput's row count)
        assert all(a is None or a == b for a, b in zip(ours, ref)), (blob, ours, ref)


IMAGENET = {"prob": 1000}


@pytest.mark.parametrize("name,output,shape", [
    ("bvlc_alexnet_deploy.prototxt", "prob", (10, 1000)),
    ("bvlc_googlenet_deploy.prototxt", "prob", (10, 1000)),
    ("mobilenet_v1_deploy.prototxt", "prob", (1, 1000, 1, 1)),
    ("mobilenet_v2_deploy.prototxt", "prob", (1, 1000, 1, 1)),
    ("squeezenet_v1.0_deploy.prototxt", "prob", (10, 1000, 1, 1)),
    ("squeezenet_v1.1_deploy.prototxt", "prob", (10, 1000, 1, 1)),
    ("v1format_bvlc_alexnet_deploy_2014.prototxt", "prob", (10, 1000)),
    ("v1format_bvlc_reference_caffenet_deploy_2014.prototxt", "prob", (10, 1000)),
    # the fully-convolutional CaffeNet slides over a 451x451 input: an 8x8 map of classes
    ("v1format_bvlc_caffenet_full_conv_2014.prototxt", "prob", (1, 1000, 8, 8)),
    ("v1format_mnist_siamese_deploy_2014.prototxt", "feat", (10000, 2)),
    # SSD: Caffe's (1, 1, detections, 7) becomes keep_top_k rows per image, unused ones -1
    ("MobileNetSSD_deploy.prototxt", "detection_out", (1, 100, 7)),
])
def test_prototxt_only_nets_infer_their_outputs(name, output, shape):
    g = load_graph(PROTOTXT_ONLY / name)
    assert g.outputs == [output]
    assert g.shape(output) == shape


def test_mobilenet_ssd_priors_and_heads():
    g = load_graph(PROTOTXT_ONLY / "MobileNetSSD_deploy.prototxt")
    # 1917 priors: 19x19x3 + 10x10x6 + 5x5x6 + 3x3x6 + 2x2x6 + 1x1x6
    assert g.shape("mbox_priorbox") == (1, 2, 1917 * 4)
    assert g.shape("mbox_conf_flatten") == (1, 1917 * 21)
    assert g.shape("mbox_loc") == (1, 1917 * 4)


def test_train_prototxt_drops_training_layers_and_needs_a_data_shape():
    train = PROTOTXT_ONLY / "v1format_mnist_autoencoder_train_2014.prototxt"
    with pytest.raises(CaffeFormatError, match=r"'data'.*--input-shape data="):
        load_graph(train)
    g = load_graph(train, input_shapes={"data": (2, 1, 28, 28)})
    assert {t for _, t, _ in g.net.dropped} == {"SigmoidCrossEntropyLoss", "EuclideanLoss"}
    assert g.shape("decode1neuron") == (2, 784)


def test_inplace_blob_means_last_writer():
    deploy, weights, _, _ = conformance_files("inplace_chain_dropout")
    g = load_graph(deploy, weights)
    versions = g.versions["conv"]
    assert len(versions) == 3  # conv, then relu and dropout in place
    assert g.values[g.final("conv")].producer.name == "drop"
    assert g.consumers(g.final("conv"))[0].name == "conv2"


def test_legacy_v1_blob_dims_become_real_shapes():
    d = MODELS_INDEX["lenet_mnist_v1"]
    deploy, weights, _, _ = model_files("lenet_mnist_v1")
    g = load_graph(deploy, weights)
    by = {n.name: n.layer for n in g.nodes}
    assert [b.shape for b in by["conv1"].blobs] == [(20, 1, 5, 5), (20,)]
    assert [b.shape for b in by["ip1"].blobs] == [(500, 800), (500,)]
    assert d["dir"] == "lenet_mnist_v1"


def test_extra_layer_in_weights_warns_by_name():
    deploy, weights, _, _ = model_files("mtcnn_det2")
    with pytest.warns(UserWarning, match="conv5-3"):
        load_graph(deploy, weights)
