"""The prototxt -> Net stage: V1/V2 layers, inputs, phase filtering, fork fields, warnings."""
import warnings

import pytest

from caffe2keras.errors import CaffeFormatError, CaffeWarning
from caffe2keras.graph import build_graph, load_graph
from caffe2keras.net import load_net, parse_net

from .shared import CONFORMANCE, MODELS, PROTOTXT_ONLY

HEAD = 'name: "t"\ninput: "data"\ninput_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n'


def net(text, **kw):
    return parse_net(text, path="t.prototxt", **kw)


def test_v2_layers_with_string_types():
    n = load_net(MODELS / "lenet_mnist_v2" / "lenet.prototxt")
    assert n.format == "V2"
    assert [(x.name, x.type) for x in n.layers][:3] == [
        ("conv1", "Convolution"), ("pool1", "Pooling"), ("conv2", "Convolution")]
    conv1 = n.layer("conv1")
    assert conv1.bottoms == ["data"] and conv1.tops == ["conv1"]
    assert conv1.param("convolution_param").num_output == 20
    assert conv1.lr_mults == [1.0, 2.0]
    assert conv1.position == "8:7"  # its "layer {" line and brace


def test_v1_layers_with_enum_types_and_v1_param_names():
    n = load_net(MODELS / "lenet_mnist_v1" / "lenet_train_test.prototxt",
                 input_shapes={"data": (64, 1, 28, 28)})
    assert n.format == "V1"
    conv1 = n.layer("conv1")
    assert conv1.type == "Convolution"  # CONVOLUTION, as its V2 name
    assert conv1.params.blobs_lr == [1.0, 2.0] and conv1.lr_mults == [1.0, 2.0]
    assert conv1.param("convolution_param").weight_filler.type == "xavier"
    assert {x.type for x in n.layers} == {"Convolution", "Pooling", "InnerProduct", "ReLU"}
    v1 = load_net(CONFORMANCE / "legacy_v1" / "deploy.prototxt")
    assert v1.format == "V1" and v1.inputs
    text = ('input: "data" input_dim: 1 input_dim: 1 input_dim: 4 input_dim: 4\n'
            'layers { name: "ip" type: INNER_PRODUCT bottom: "data" top: "ip" '
            'blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0 '
            'inner_product_param { num_output: 3 } }')
    ip = net(text).layers[0]
    assert ip.params.weight_decay == [1.0, 0.0] and ip.lr_mults == [1.0, 2.0]
    # layers a V1 layer could not hold read as defaults, not errors
    assert ip.param("prior_box_param").flip is True


@pytest.mark.parametrize("decl,expected", [
    ('input: "data"\ninput_shape { dim: 2 dim: 3 dim: 5 dim: 7 }', {"data": (2, 3, 5, 7)}),
    ('input: "data"\ninput_dim: 2 input_dim: 3 input_dim: 5 input_dim: 7',
     {"data": (2, 3, 5, 7)}),
    (('layer { name: "in" type: "Input" top: "data" '
     'input_param { shape { dim: 2 dim: 3 dim: 5 dim: 7 } } }'), {"data": (2, 3, 5, 7)}),
    (('layer { name: "in" type: "DummyData" top: "data" dummy_data_param { '
     'shape { dim: 2 dim: 3 dim: 5 dim: 7 } } }'), {"data": (2, 3, 5, 7)}),
    (('layer { name: "in" type: "DummyData" top: "data" dummy_data_param { '
     'num: 2 channels: 3 height: 5 width: 7 } }'), {"data": (2, 3, 5, 7)}),
    (('input: "a" input: "data"\ninput_shape { dim: 1 dim: 4 } '
     'input_shape { dim: 2 dim: 3 dim: 5 dim: 7 }'), {"a": (1, 4), "data": (2, 3, 5, 7)}),
    (('layer { name: "in" type: "Input" top: "a" top: "data" input_param { '
     'shape { dim: 1 dim: 4 } shape { dim: 2 dim: 3 dim: 5 dim: 7 } } }'),
     {"a": (1, 4), "data": (2, 3, 5, 7)}),
])
def test_every_input_style(decl, expected):
    n = net(decl + '\nlayer { name: "r" type: "ReLU" bottom: "data" top: "r" }')
    assert n.inputs == expected
    assert [x.name for x in n.layers] == ["r"]
    g = build_graph(n)
    assert g.shape("r") == (2, 3, 5, 7)


def test_input_shape_overrides():
    text = HEAD + 'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }'
    assert net(text, input_shapes={"data": [4, 3, 2, 2]}).inputs == {"data": (4, 3, 2, 2)}
    with pytest.raises(CaffeFormatError, match=r"--input-shape names \['nope'\], which are "
                                               r"not inputs of this net \(inputs: \['data'\]\)"):
        net(text, input_shapes={"nope": (1,)})
    with pytest.raises(CaffeFormatError, match="input shape for 'data' needs positive dims"):
        net(text, input_shapes={"data": (1, 0, 2)})
    with pytest.raises(CaffeFormatError, match="must be a sequence of ints"):
        net(text, input_shapes={"data": "big"})


def _names(n):
    return [x.name for x in n.layers]


FILTERED = HEAD + '''
state { stage: "from-file" }
layer { name: "train_only" type: "ReLU" bottom: "data" top: "a" include { phase: TRAIN } }
layer { name: "test_only" type: "ReLU" bottom: "data" top: "a" include { phase: TEST } }
layer { name: "not_test" type: "ReLU" bottom: "a" top: "b" exclude { phase: TEST } }
layer { name: "staged" type: "ReLU" bottom: "a" top: "c" include { stage: "deploy" } }
layer { name: "unstaged" type: "ReLU" bottom: "a" top: "d" include { not_stage: "deploy" } }
layer { name: "leveled" type: "ReLU" bottom: "a" top: "e" include { min_level: 1 max_level: 2 } }
layer { name: "either" type: "ReLU" bottom: "a" top: "f"
        include { stage: "x" } include { stage: "y" } }
layer { name: "file_stage" type: "ReLU" bottom: "a" top: "h" include { stage: "from-file" } }
layer { name: "own_phase" type: "Dropout" bottom: "a" top: "g" phase: TRAIN }
'''


def test_include_exclude_by_phase_stage_and_level():
    assert _names(net(FILTERED)) == ["test_only", "unstaged", "file_stage", "own_phase"]
    assert _names(net(FILTERED, phase="TRAIN")) == [
        "train_only", "not_test", "unstaged", "file_stage", "own_phase"]
    assert "staged" in _names(net(FILTERED, stages=("deploy",)))
    assert "unstaged" not in _names(net(FILTERED, stages=("deploy",)))
    assert "leveled" not in _names(net(FILTERED, level=0))
    assert "leveled" in _names(net(FILTERED, level=2))
    assert "leveled" not in _names(net(FILTERED, level=3))
    assert "either" in _names(net(FILTERED, stages=("y",)))
    n = net(FILTERED)
    assert ("train_only", "ReLU", ["a"]) in n.excluded
    # a layer's own `phase` is not a filter: Caffe only fills it in when unset
    assert n.layer("own_phase").params.phase == "TRAIN"


def test_include_and_exclude_together_is_an_error():
    with pytest.raises(CaffeFormatError, match=r"t\.prototxt:4:7: layer 'r': has both include "
                                               r"and exclude rules"):
        net(HEAD + 'layer { name: "r" type: "ReLU" bottom: "data" top: "r"\n'
            ' include { phase: TEST } exclude { stage: "x" } }')


@pytest.mark.parametrize("train,deploy,shape", [
    ("lenet_mnist_v1/lenet_train_test.prototxt", "lenet_mnist_v1/lenet.prototxt",
     (64, 1, 28, 28)),
    ("cifar10_full_v1/cifar10_full_train_test.prototxt", "cifar10_full_v1/cifar10_full.prototxt",
     (1, 3, 32, 32)),
    ("yufacedetectnet_v1/yufacedetectnet-open-v1.train.prototxt",
     "yufacedetectnet_v1/yufacedetectnet-open-v1.prototxt", (1, 3, 240, 320)),
])
def test_train_val_prototxt_is_usable_by_dropping_data_and_training_layers(train, deploy,
                                                                          shape):
    with pytest.raises(CaffeFormatError, match="--input-shape data="):
        load_graph(MODELS / train)  # the data come from a database: no shape in the file
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CaffeWarning)
        g = load_graph(MODELS / train, input_shapes={"data": shape})
        d = load_graph(MODELS / deploy)
    kinds = {t for _, t, _ in g.net.dropped}
    assert kinds & {"Data", "Accuracy", "SoftmaxWithLoss"} or \
        {t for _, t, _ in g.net.excluded} & {"AnnotatedData", "MultiBoxLoss"}
    assert not any(x.type in ("Data", "Accuracy", "AnnotatedData") or x.type.endswith("Loss")
                   for x in g.net.layers)
    shared = [b for b in d.blob_names() if b in g.versions and b != "data"]
    assert len(shared) > 5
    for b in shared:  # the same net: every shared blob has the deploy's shape
        assert g.shape(b)[1:] == d.shape(b)[1:], b


FORK = HEAD + '''
layer { name: "p" type: "Pooling" bottom: "data" top: "p"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 ceil_mode: false } }
layer { name: "u" type: "Upsample" bottom: "p" top: "u" upsample_param { scale: 2 } }
layer { name: "i" type: "Interp" bottom: "u" top: "i"
        interp_param { height: 16 width: 12 pad_beg: 0 pad_end: 0 } }
layer { name: "r6" type: "ReLU6" bottom: "i" top: "r6" }
layer { name: "sc" type: "ShuffleChannel" bottom: "r6" top: "sc"
        shuffle_channel_param { group: 3 } }
layer { name: "n" type: "Normalize" bottom: "sc" top: "n"
        norm_param { across_spatial: false channel_shared: false
                     scale_filler { type: "constant" value: 20 } eps: 1e-6 } }
layer { name: "perm" type: "Permute" bottom: "n" top: "perm"
        permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "prior" type: "PriorBox" bottom: "n" bottom: "data" top: "prior"
        prior_box_param { min_size: 30 max_size: 60 aspect_ratio: 2 flip: true clip: false
                          variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2
                          step: 8 offset: 0.5 } }
layer { name: "flat" type: "Flatten" bottom: "perm" top: "flat" }
layer { name: "conf" type: "Flatten" bottom: "perm" top: "conf" }
layer { name: "det" type: "DetectionOutput" bottom: "flat" bottom: "conf" bottom: "prior"
        top: "det" include { phase: TEST }
        detection_output_param { num_classes: 2 share_location: true background_label_id: 0
          nms_param { nms_threshold: 0.45 top_k: 400 } code_type: CENTER_SIZE
          keep_top_k: 200 confidence_threshold: 0.01 } }
'''


def test_fork_fields_parse_and_are_readable_by_converters():
    with warnings.catch_warnings():
        warnings.simplefilter("error", CaffeWarning)  # every field is known: no warning
        n = net(FORK)
    p = n.layer("p").param("pooling_param")
    assert p.has("ceil_mode") and p.ceil_mode is False
    assert n.layer("u").param("upsample_param").scale == 2
    i = n.layer("i").param("interp_param")
    assert (i.height, i.width, i.zoom_factor) == (16, 12, 1)
    assert n.layer("r6").param("relu6_param").threshold == 6.0  # default
    assert n.layer("sc").param("shuffle_channel_param").group == 3
    norm = n.layer("n").param("norm_param")
    assert (norm.across_spatial, norm.channel_shared, norm.scale_filler.value) == \
        (False, False, 20.0)
    assert norm.eps == pytest.approx(1e-6)
    assert n.layer("perm").param("permute_param").order == [0, 2, 3, 1]
    pb = n.layer("prior").param("prior_box_param")
    assert (pb.min_size, pb.max_size, pb.aspect_ratio) == ([30.0], [60.0], [2.0])
    assert pb.variance == pytest.approx([0.1, 0.1, 0.2, 0.2]) and pb.step == 8.0
    d = n.layer("det").param("detection_output_param")
    assert (d.num_classes, d.code_type, d.keep_top_k) == (2, "CENTER_SIZE", 200)
    assert d.nms_param.nms_threshold == pytest.approx(0.45) and d.nms_param.top_k == 400
    g = build_graph(n)
    assert g.shape("p") == (1, 3, 3, 3)  # ceil_mode false: floor((8-3)/2)+1
    assert g.shape("u") == (1, 3, 6, 6) and g.shape("i") == (1, 3, 16, 12)
    assert g.shape("perm") == (1, 16, 12, 3)


def test_unknown_field_warns_with_file_line_column_and_layer_never_crashes():
    text = HEAD + ('layer { name: "r" type: "ReLU" bottom: "data" top: "r"\n'
                   '  relu_param { negative_slope: 0.1 fancy_mode: 3 }\n  mystery: "x" }\n'
                   'net_level_novelty: [1, 2]\n')
    with pytest.warns(CaffeWarning) as rec:
        n = net(text)
    msgs = [str(w.message) for w in rec]
    assert "t.prototxt:5:36: layer 'r': unknown field 'fancy_mode' in ReLUParameter ignored" \
        in msgs
    assert "t.prototxt:6:3: layer 'r': unknown field 'mystery' in LayerParameter ignored" in msgs
    assert "t.prototxt:7:1: net: unknown field 'net_level_novelty' in NetParameter ignored" \
        in msgs
    assert len(msgs) == 3  # each once
    assert n.layer("r").param("relu_param").negative_slope == pytest.approx(0.1)


@pytest.mark.parametrize("body,message", [
    ('layer { name: "r" bottom: "data" top: "r" }', r"layer 'r': layer has no type"),
    (('layers { name: "r" type: RELU bottom: "data" top: "r" }\n'
     'layer { name: "s" type: "ReLU" bottom: "data" top: "s" }'),
     "mixes V2 'layer' and deprecated V1 'layers' entries"),
    ('layers { layer { name: "old" type: "relu" } }', "V0 layer definitions"),
    (('layer { name: "in" type: "Input" top: "a" top: "b" input_param { shape { dim: 1 } '
     'shape { dim: 2 } shape { dim: 3 } } }\nlayer { name: "r" type: "ReLU" bottom: "a" '
     'top: "r" }'), None),
    (('layer { name: "in" type: "Input" top: "a" top: "b" top: "c" input_param { '
     'shape { dim: 1 } shape { dim: 2 } } }'), "Input layer has 3 tops but 2 shapes"),
    (('layer { name: "d" type: "DummyData" top: "a" top: "b" dummy_data_param { '
     'shape { dim: 1 } shape { dim: 2 } shape { dim: 3 } } }'), "DummyData has 2 tops but 3"),
])
def test_structure_errors(body, message):
    if message is None:  # more shapes than tops: the extra ones are unused, as in Caffe
        assert net(HEAD + body).inputs["b"] == (2,)
        return
    with pytest.raises(CaffeFormatError, match=message):
        net(HEAD + body)


@pytest.mark.parametrize("decl,message", [
    ('input: "data"\ninput_shape { dim: 1 dim: -3 dim: 8 dim: 8 }',
     r"t\.prototxt:2:13: input 'data' shape has a negative dimension: \[1, -3, 8, 8\]"),
    ('input: "data"\ninput_shape { dim: 1000000 dim: 1000000 dim: 1 dim: 1 }',
     (r"input 'data' shape \[1000000, 1000000, 1, 1\] holds 1,000,000,000,000 values, more "
     r"than Caffe's limit of 2,147,483,647 per blob")),
    ('input: "data"\ninput_dim: 10000 input_dim: 10000 input_dim: 10000 input_dim: 1',
     r"holds 1,000,000,000,000 values"),
    ('layer { name: "in" type: "Input" top: "data" input_param { shape { ' + "dim: 1 " * 33
     + "} } }", (r"t\.prototxt:1:7: layer 'in': input 'data' shape has 33 axes; Caffe allows "
                r"at most 32")),
    (('input: "data"\ninput: "data"\ninput_dim: 1 input_dim: 1 input_dim: 1 input_dim: 1\n'
     'input_dim: 1 input_dim: 1 input_dim: 1 input_dim: 1'), "input 'data' is declared twice"),
    ('input: "data"\ninput_dim: 1 input_dim: 3', ("1 'input' names need 4 'input_dim' values, "
                                                  "found 2")),
    ('input: "data"', "input 'data' is declared without a shape"),
])
def test_absurd_or_malformed_input_shapes(decl, message):
    with pytest.raises(CaffeFormatError, match=message):
        net(decl + '\nlayer { name: "r" type: "ReLU" bottom: "data" top: "r" }')


def test_every_shared_prototxt_parses():
    paths = list(CONFORMANCE.rglob("*.prototxt")) + list(MODELS.rglob("*.prototxt"))
    assert len(paths) >= 50
    for p in paths:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CaffeWarning)
            n = load_net(p, input_shapes={"data": (1, 3, 32, 32)}
                         if "train" in p.name else None)
        assert n.layers, p
    assert load_net(PROTOTXT_ONLY / "bvlc_googlenet_deploy.prototxt").layer(
        "inception_5b/output").type == "Concat"


def test_many_unknown_fields_warn_twenty_times_then_once():
    body = "".join(f'layer {{ name: "r{i}" type: "ReLU" bottom: "data" top: "r{i}" '
                   f'fork_knob_{i % 3}: 1 }}\n' for i in range(50))
    with pytest.warns(CaffeWarning) as rec:
        net(HEAD + body)
    msgs = [str(w.message) for w in rec]
    assert len(msgs) == 21
    assert msgs[0] == "t.prototxt:4:58: layer 'r0': unknown field 'fork_knob_0' in " \
                      "LayerParameter ignored"
    assert msgs[-1] == ("t.prototxt: 30 more unknown fields ignored (fork_knob_0, fork_knob_1, "
                        "fork_knob_2)")


def test_warnings_still_appear_when_the_net_is_then_rejected():
    with pytest.warns(CaffeWarning, match="unknown field 'kernal_size'"), \
            pytest.raises(CaffeFormatError, match="layer has no type"):
        net(HEAD + 'layer { name: "a" type: "ReLU" bottom: "data" top: "a" kernal_size: 3 }\n'
                   'layer { name: "b" bottom: "a" top: "a" }')


V1_HEAD = 'input: "data"\ninput_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8\n'


def test_fork_v1_enums_parse_and_unknown_ones_become_unsupported_types():
    n = net(V1_HEAD + '''
        layers { name: "conv" type: CONVOLUTION bottom: "data" top: "conv"
                 convolution_param { num_output: 2 kernel_size: 3 } }
        layers { name: "roi" type: ROI_POOLING bottom: "conv" bottom: "conv" top: "pool" }
        layers { name: "crop" type: 40 bottom: "data" bottom: "conv" top: "c" }
        layers { name: "num" type: 77 bottom: "c" top: "n" }
        layers { name: "odd" type: WEIRD_THING bottom: "n" top: "w" }''')
    assert [(x.name, x.type) for x in n.layers] == [
        ("conv", "Convolution"), ("roi", "ROIPooling"), ("crop", "Crop"),
        ("num", "V1LayerType 77"), ("odd", "WEIRD_THING")]
    g = build_graph(n)
    assert g.unsupported == [("roi", "ROIPooling"), ("num", "V1LayerType 77"),
                             ("odd", "WEIRD_THING")]


def test_fork_v1_enum_numbers_in_binary_files(tmp_path):
    import numpy as np

    from caffe2keras.caffemodel import load_caffemodel
    from caffe2keras.writer import CaffeNetWriter

    w = CaffeNetWriter("v1").input("data", (1, 3, 8, 8), style="input_dim")
    w.layer("conv", "Convolution", "data", "conv", convolution_param={
        "num_output": 2, "kernel_size": 3},
        blobs=[np.ones((2, 3, 3, 3), np.float32), np.zeros(2, np.float32)])
    w.layer("roi", 41, ["conv", "conv"], "pool")
    w.layer("crop", 40, ["data", "conv"], "c")
    w.write_caffemodel(tmp_path / "v1.caffemodel", fmt="V1")
    w.write_prototxt(tmp_path / "v1.prototxt", fmt="V1")
    m = load_caffemodel(tmp_path / "v1.caffemodel")
    assert [(x.name, x.type) for x in m.all_layers] == [
        ("conv", "Convolution"), ("roi", "V1LayerType 41"), ("crop", "Crop")]
    g = load_graph(tmp_path / "v1.prototxt", tmp_path / "v1.caffemodel")
    assert g.unsupported == [("roi", "V1LayerType 41")]


def test_dense_image_data_becomes_an_input():
    body = '''
        layer { name: "data" type: "DenseImageData" top: "data" top: "label"
                dense_image_data_param { source: "train.txt" batch_size: 2 new_height: 8
                                         new_width: 10 } }
        layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
                convolution_param { num_output: 2 kernel_size: 3 } }'''
    n = net(body)
    assert n.inputs == {"data": (2, 3, 8, 10)}
    assert n.dropped == [("data", "DenseImageData", "data layer")]
    assert net(body, input_shapes={"data": (1, 3, 4, 4)}).inputs == {"data": (1, 3, 4, 4)}
    no_size = body.replace("new_height: 8", "").replace("new_width: 10", "")
    with pytest.raises(CaffeFormatError, match="comes from a DenseImageData layer.*"
                                               "--input-shape data="):
        net(no_size)
    assert net(no_size, input_shapes={"data": (1, 3, 4, 4)}).inputs["data"] == (1, 3, 4, 4)
