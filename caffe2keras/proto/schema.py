"""The subset of Caffe's protobuf schema this project reads, plus the common forks.

Written as a small text table rather than generated protobuf code: it lets one schema
drive both our binary reader (which maps blob data straight out of the file) and our
text reader (which must survive fields it has never heard of). Field numbers are the
wire contract of BVLC Caffe and of the forks named beside each entry.

Table syntax, one field per line under ``message NAME`` (``message NAME open`` accepts
unknown fields silently: training-only messages whose contents we never use):

    NUMBER NAME TYPE[*] [= DEFAULT]

``*`` marks a repeated field. TYPE is a scalar type, an enum name or a message name.
"""
from __future__ import annotations

from dataclasses import dataclass, field

SCALARS = {"int32", "int64", "uint32", "uint64", "float", "double", "bool", "string", "bytes"}

_ENUMS = """
Phase TRAIN=0 TEST=1
DimCheckMode STRICT=0 PERMISSIVE=1
VarianceNorm FAN_IN=0 FAN_OUT=1 AVERAGE=2
Engine DEFAULT=0 CAFFE=1 CUDNN=2
PoolMethod MAX=0 AVE=1 STOCHASTIC=2
RoundMode CEIL=0 FLOOR=1
NormRegion ACROSS_CHANNELS=0 WITHIN_CHANNEL=1
BNMode LEARN=0 INFERENCE=1
EltwiseOp PROD=0 SUM=1 MAX=2
ReductionOp SUM=1 ASUM=2 SUMSQ=3 MEAN=4
CodeType CORNER=1 CENTER_SIZE=2 CORNER_SIZE=3
NormalizationMode FULL=0 VALID=1 BATCH_SIZE=2 NONE=3
DB LEVELDB=0 LMDB=1
HingeNorm L1=1 L2=2
SolverType SGD=0 NESTEROV=1 ADAGRAD=2 RMSPROP=3 ADADELTA=4 ADAM=5
SnapshotFormat HDF5=0 BINARYPROTO=1
SolverMode CPU=0 GPU=1
V1LayerType NONE=0 ABSVAL=35 ACCURACY=1 ARGMAX=30 BNLL=2 CONCAT=3 CONTRASTIVE_LOSS=37 \
 CONVOLUTION=4 DATA=5 DECONVOLUTION=39 DROPOUT=6 DUMMY_DATA=32 EUCLIDEAN_LOSS=7 ELTWISE=25 \
 EXP=38 FLATTEN=8 HDF5_DATA=9 HDF5_OUTPUT=10 HINGE_LOSS=28 IM2COL=11 IMAGE_DATA=12 \
 INFOGAIN_LOSS=13 INNER_PRODUCT=14 LRN=15 MEMORY_DATA=29 MULTINOMIAL_LOGISTIC_LOSS=16 MVN=34 \
 POOLING=17 POWER=26 RELU=18 SIGMOID=19 SIGMOID_CROSS_ENTROPY_LOSS=27 SILENCE=36 SOFTMAX=20 \
 SOFTMAX_LOSS=21 SPLIT=22 SLICE=33 TANH=23 WINDOW_DATA=24 THRESHOLD=31
"""

_MESSAGES = """
message BlobShape
  1 dim int64*

message BlobProto
  7 shape BlobShape
  5 data float*
  6 diff float*
  8 double_data double*
  9 double_diff double*
  1 num int64 = 0
  2 channels int64 = 0
  3 height int64 = 0
  4 width int64 = 0

message BlobProtoVector
  1 blobs BlobProto*

message NetParameter
  1 name string
  3 input string*
  8 input_shape BlobShape*
  4 input_dim int64*
  5 force_backward bool = false
  6 state NetState
  7 debug_info bool = false
  100 layer LayerParameter*
  2 layers V1LayerParameter*

message NetState
  1 phase Phase = TEST
  2 level int32 = 0
  3 stage string*

message NetStateRule
  1 phase Phase
  2 min_level int32
  3 max_level int32
  4 stage string*
  5 not_stage string*

message ParamSpec
  1 name string
  2 share_mode DimCheckMode
  3 lr_mult float = 1
  4 decay_mult float = 1

message FillerParameter
  1 type string = constant
  2 value float = 0
  3 min float = 0
  4 max float = 1
  5 mean float = 0
  6 std float = 1
  7 sparse int32 = -1
  8 variance_norm VarianceNorm = FAN_IN

# BVLC master; SSD (weiliu89) 200-207; fork layers' params where forks agree.
message LayerParameter
  1 name string
  2 type string
  3 bottom string*
  4 top string*
  10 phase Phase
  5 loss_weight float*
  6 param ParamSpec*
  7 blobs BlobProto*
  11 propagate_down bool*
  8 include NetStateRule*
  9 exclude NetStateRule*
  100 transform_param TransformationParameter
  101 loss_param LossParameter
  102 accuracy_param AccuracyParameter
  103 argmax_param ArgMaxParameter
  139 batch_norm_param BatchNormParameter
  141 bias_param BiasParameter
  148 clip_param ClipParameter
  104 concat_param ConcatParameter
  105 contrastive_loss_param ContrastiveLossParameter
  106 convolution_param ConvolutionParameter
  144 crop_param CropParameter
  107 data_param DataParameter
  108 dropout_param DropoutParameter
  109 dummy_data_param DummyDataParameter
  110 eltwise_param EltwiseParameter
  140 elu_param ELUParameter
  137 embed_param EmbedParameter
  111 exp_param ExpParameter
  135 flatten_param FlattenParameter
  112 hdf5_data_param HDF5DataParameter
  113 hdf5_output_param OpenParameter
  114 hinge_loss_param HingeLossParameter
  115 image_data_param ImageDataParameter
  116 infogain_loss_param InfogainLossParameter
  117 inner_product_param InnerProductParameter
  143 input_param InputParameter
  134 log_param LogParameter
  118 lrn_param LRNParameter
  119 memory_data_param MemoryDataParameter
  120 mvn_param MVNParameter
  145 parameter_param ParameterParameter
  121 pooling_param PoolingParameter
  122 power_param PowerParameter
  131 prelu_param PReLUParameter
  130 python_param PythonParameter
  146 recurrent_param RecurrentParameter
  136 reduction_param ReductionParameter
  123 relu_param ReLUParameter
  133 reshape_param ReshapeParameter
  142 scale_param ScaleParameter
  124 sigmoid_param SigmoidParameter
  125 softmax_param SoftmaxParameter
  132 spp_param SPPParameter
  126 slice_param SliceParameter
  147 swish_param SwishParameter
  127 tanh_param TanHParameter
  128 threshold_param ThresholdParameter
  138 tile_param TileParameter
  129 window_data_param OpenParameter
  200 annotated_data_param OpenParameter
  201 multibox_loss_param OpenParameter
  202 permute_param PermuteParameter
  203 prior_box_param PriorBoxParameter
  204 detection_output_param DetectionOutputParameter
  205 detection_evaluate_param OpenParameter
  206 norm_param NormalizeParameter
  207 video_data_param OpenParameter
  208 smooth_l1_loss_param SmoothL1LossParameter
  # Fork layers' params. Forks number these differently (DeepLab's interp_param even reuses
  # 143), so only their text names are a contract: the numbers below are private to this
  # table, and binary weight files are never asked for these params.
  1149 upsample_param UpsampleParameter
  1150 interp_param InterpParameter
  1151 shuffle_channel_param ShuffleChannelParameter
  1152 relu6_param ReLU6Parameter
  1153 dense_image_data_param DenseImageDataParameter
  1154 bn_param BNParameter
  1170 roi_pooling_param ROIPoolingParameter
  1171 psroi_pooling_param PSROIPoolingParameter
  1172 reorg_param ReorgParameter
  1173 region_param RegionParameter
  1174 proposal_param ProposalParameter
  1175 yolov3_detection_output_param Yolov3DetectionOutputParameter
  1176 yolo_detection_output_param YoloDetectionOutputParameter

message OpenParameter open

message TransformationParameter open
  1 scale float = 1
  2 mirror bool = false
  3 crop_size uint32 = 0
  11 crop_h uint32 = 0
  12 crop_w uint32 = 0
  4 mean_file string
  5 mean_value float*
  6 force_color bool = false
  7 force_gray bool = false

message LossParameter open
  1 ignore_label int32
  3 normalization NormalizationMode = VALID
  2 normalize bool

message AccuracyParameter open
  1 top_k uint32 = 1
  2 axis int32 = 1
  3 ignore_label int32

message HingeLossParameter
  1 norm HingeNorm = L1

message ContrastiveLossParameter
  1 margin float = 1
  2 legacy_version bool = false

# BVLC master added 2 axis; the softmax it applies since 2017 is not in Caffe 1.0.
message InfogainLossParameter open
  1 source string

# One record of a Data layer's LMDB/LevelDB.
message Datum
  1 channels int32
  2 height int32
  3 width int32
  4 data bytes
  5 label int32
  6 float_data float*
  7 encoded bool = false

# Fast R-CNN's (rbgirshick/caffe-fast-rcnn); SSD's has no fields of its own.
message SmoothL1LossParameter open
  1 sigma float = 1

# solver.prototxt (BVLC master; 41-42 SSD's). V1 files name the type with solver_type.
message SolverParameter
  24 net string
  25 net_param NetParameter
  1 train_net string
  2 test_net string*
  21 train_net_param NetParameter
  22 test_net_param NetParameter*
  26 train_state NetState
  27 test_state NetState*
  41 eval_type string = classification
  42 ap_version string = Integral
  3 test_iter int32*
  4 test_interval int32 = 0
  19 test_compute_loss bool = false
  32 test_initialization bool = true
  5 base_lr float
  6 display int32
  33 average_loss int32 = 1
  7 max_iter int32
  36 iter_size int32 = 1
  8 lr_policy string
  9 gamma float
  10 power float
  11 momentum float
  12 weight_decay float
  29 regularization_type string = L2
  13 stepsize int32
  34 stepvalue int32*
  35 clip_gradients float = -1
  14 snapshot int32 = 0
  15 snapshot_prefix string
  16 snapshot_diff bool = false
  37 snapshot_format SnapshotFormat = BINARYPROTO
  17 solver_mode SolverMode = GPU
  18 device_id int32 = 0
  20 random_seed int64 = -1
  40 type string = SGD
  31 delta float = 1e-8
  39 momentum2 float = 0.999
  38 rms_decay float = 0.99
  23 debug_info bool = false
  28 snapshot_after_train bool = true
  30 solver_type SolverType = SGD

message DataParameter open
  1 source string
  4 batch_size uint32
  2 scale float = 1
  3 mean_file string
  5 crop_size uint32 = 0
  6 mirror bool = false
  7 rand_skip uint32 = 0
  8 backend DB = LEVELDB
  9 force_encoded_color bool = false

message ImageDataParameter open
  1 source string
  4 batch_size uint32 = 1
  9 new_height uint32 = 0
  10 new_width uint32 = 0
  11 is_color bool = true
  7 rand_skip uint32 = 0
  8 shuffle bool = false
  12 root_folder string
  2 scale float = 1
  3 mean_file string
  5 crop_size uint32 = 0

message HDF5DataParameter open
  1 source string
  2 batch_size uint32
  3 shuffle bool = false

message MemoryDataParameter
  1 batch_size uint32
  2 channels uint32
  3 height uint32
  4 width uint32

message DummyDataParameter
  1 data_filler FillerParameter*
  6 shape BlobShape*
  2 num uint32*
  3 channels uint32*
  4 height uint32*
  5 width uint32*

message InputParameter
  1 shape BlobShape*

# SegNet's input layer (alexgkendall/caffe-segnet, caffe.proto at 03d1e9f: field 138 of
# LayerParameter there); later forks add crop_height/crop_width/mirror at other numbers.
message DenseImageDataParameter open
  1 source string
  2 batch_size uint32
  3 rand_skip uint32 = 0
  4 shuffle bool = false
  5 new_height uint32 = 0
  6 new_width uint32 = 0
  7 is_color bool = true
  8 mean_file string
  9 root_folder string

message PythonParameter
  1 module string
  2 layer string
  3 param_str string
  4 share_in_parallel bool = false

message ArgMaxParameter
  1 out_max_val bool = false
  2 top_k uint32 = 1
  3 axis int32

message BatchNormParameter
  1 use_global_stats bool
  2 moving_average_fraction float = 0.999
  3 eps float = 1e-5
  4 fused_relu bool = false
  5 scale_filler FillerParameter
  6 bias_filler FillerParameter
  15 engine Engine = DEFAULT

message BiasParameter
  1 axis int32 = 1
  2 num_axes int32 = 1
  3 filler FillerParameter

message ClipParameter
  1 min float
  2 max float

message ConcatParameter
  2 axis int32 = 1
  1 concat_dim uint32 = 1

message ConvolutionParameter
  1 num_output uint32
  2 bias_term bool = true
  3 pad uint32*
  4 kernel_size uint32*
  6 stride uint32*
  18 dilation uint32*
  9 pad_h uint32 = 0
  10 pad_w uint32 = 0
  11 kernel_h uint32
  12 kernel_w uint32
  13 stride_h uint32
  14 stride_w uint32
  5 group uint32 = 1
  7 weight_filler FillerParameter
  8 bias_filler FillerParameter
  15 engine Engine = DEFAULT
  16 axis int32 = 1
  17 force_nd_im2col bool = false
  # DeepLab-era forks (and PSPNet's HoleConvolution): "hole" is the dilation. Numbers as in
  # the forks that moved them clear of BVLC's 17-19 (pathak22/caffe-ccnn used 17-19).
  117 hole uint32
  118 hole_h uint32
  119 hole_w uint32

message CropParameter
  1 axis int32 = 2
  2 offset uint32*

message DropoutParameter
  1 dropout_ratio float = 0.5
  2 scale_train bool = true

message EltwiseParameter
  1 operation EltwiseOp = SUM
  2 coeff float*
  3 stable_prod_grad bool = true

message ELUParameter
  1 alpha float = 1

message EmbedParameter
  1 num_output uint32
  2 input_dim uint32
  3 bias_term bool = true
  4 weight_filler FillerParameter
  5 bias_filler FillerParameter

message ExpParameter
  1 base float = -1
  2 scale float = 1
  3 shift float = 0

message LogParameter
  1 base float = -1
  2 scale float = 1
  3 shift float = 0

message FlattenParameter
  1 axis int32 = 1
  2 end_axis int32 = -1

message InnerProductParameter
  1 num_output uint32
  2 bias_term bool = true
  3 weight_filler FillerParameter
  4 bias_filler FillerParameter
  5 axis int32 = 1
  6 transpose bool = false

message LRNParameter
  1 local_size uint32 = 5
  2 alpha float = 1
  3 beta float = 0.75
  4 norm_region NormRegion = ACROSS_CHANNELS
  5 k float = 1
  6 engine Engine = DEFAULT

message MVNParameter
  1 normalize_variance bool = true
  2 across_channels bool = false
  3 eps float = 1e-9

message ParameterParameter
  1 shape BlobShape

# Field 13 is BVLC's round_mode (enum, CEIL=0) and, in forks, ceil_mode (bool, true=1).
# Both names are accepted in text; binary files keep the raw number (see caffemodel.py).
message PoolingParameter
  1 pool PoolMethod = MAX
  4 pad uint32 = 0
  9 pad_h uint32 = 0
  10 pad_w uint32 = 0
  2 kernel_size uint32
  5 kernel_h uint32
  6 kernel_w uint32
  3 stride uint32 = 1
  7 stride_h uint32
  8 stride_w uint32
  11 engine Engine = DEFAULT
  12 global_pooling bool = false
  13 round_mode RoundMode = CEIL
  13 ceil_mode bool = true

message PowerParameter
  1 power float = 1
  2 scale float = 1
  3 shift float = 0

message PReLUParameter
  1 filler FillerParameter
  2 channel_shared bool = false

message ReductionParameter
  1 operation ReductionOp = SUM
  2 axis int32 = 0
  3 coeff float = 1

message ReLUParameter
  1 negative_slope float = 0
  2 engine Engine = DEFAULT

# Forks' ReLU6: min(max(x, 0) + negative_slope * min(x, 0), threshold); threshold is
# brocolli-caffe's, negative_slope the MobileNet-v2 forks' (both in brocolli).
message ReLU6Parameter
  1 negative_slope float = 0
  2 threshold float = 6

message ReshapeParameter
  1 shape BlobShape
  2 axis int32 = 0
  3 num_axes int32 = -1

message ScaleParameter
  1 axis int32 = 1
  2 num_axes int32 = 1
  3 filler FillerParameter
  4 bias_term bool = false
  5 bias_filler FillerParameter

message SigmoidParameter
  1 engine Engine = DEFAULT

message SoftmaxParameter
  1 engine Engine = DEFAULT
  2 axis int32 = 1

message SPPParameter
  1 pyramid_height uint32
  2 pool PoolMethod = MAX
  6 engine Engine = DEFAULT

message SliceParameter
  3 axis int32 = 1
  2 slice_point uint32*
  1 slice_dim uint32 = 1

message SwishParameter
  1 beta float = 1

message TanHParameter
  1 engine Engine = DEFAULT

message ThresholdParameter
  1 threshold float = 0

message TileParameter
  1 axis int32 = 1
  2 tiles int32

message PermuteParameter
  1 order uint32*

message PriorBoxParameter
  1 min_size float*
  2 max_size float*
  3 aspect_ratio float*
  4 flip bool = true
  5 clip bool = false
  6 variance float*
  7 img_size uint32
  8 img_h uint32
  9 img_w uint32
  10 step float
  11 step_h float
  12 step_w float
  13 offset float = 0.5

message NonMaximumSuppressionParameter
  1 nms_threshold float = 0.3
  2 top_k int32
  3 eta float = 1

message DetectionOutputParameter
  1 num_classes uint32
  2 share_location bool = true
  3 background_label_id int32 = 0
  4 nms_param NonMaximumSuppressionParameter
  5 save_output_param OpenParameter
  6 code_type CodeType = CORNER
  8 variance_encoded_in_target bool = false
  7 keep_top_k int32 = -1
  9 confidence_threshold float
  10 visualize bool = false
  11 visualize_threshold float
  12 save_file string

message NormalizeParameter
  1 across_spatial bool = true
  2 scale_filler FillerParameter
  3 channel_shared bool = true
  4 eps float = 1e-10

message UpsampleParameter
  1 scale uint32 = 2
  2 scale_h uint32
  3 scale_w uint32
  4 pad_out_h bool = false
  5 pad_out_w bool = false
  6 upsample_h uint32
  7 upsample_w uint32

message InterpParameter
  1 height int32 = 0
  2 width int32 = 0
  3 zoom_factor int32 = 1
  4 shrink_factor int32 = 1
  5 pad_beg int32 = 0
  6 pad_end int32 = 0

message ShuffleChannelParameter
  1 group uint32 = 1

message RecurrentParameter
  1 num_output uint32 = 0
  2 weight_filler FillerParameter
  3 bias_filler FillerParameter
  4 debug_info bool = false
  5 expose_hidden bool = false

# The fork `BN` layer's params, the union of its families (numbers private, as above):
# SegNet (alexgkendall/caffe-segnet): scale_filler, shift_filler, bn_mode;
# PSPNet (hszhao/PSPNet, from yjxiong/caffe): slope_filler, bias_filler, momentum, eps,
# frozen; an older PSPNet-era variant: var_eps, moving_average, decay, axis.
message BNParameter
  1 scale_filler FillerParameter
  2 shift_filler FillerParameter
  3 bn_mode BNMode = LEARN
  4 slope_filler FillerParameter
  5 bias_filler FillerParameter
  6 momentum float = 0.9
  7 eps float = 1e-5
  8 frozen bool = false
  9 engine Engine = DEFAULT
  10 var_eps float = 1e-10
  11 moving_average bool = false
  12 decay float = 0.05
  13 axis int32 = 1

# rbgirshick/caffe-fast-rcnn
message ROIPoolingParameter
  1 pooled_h uint32 = 0
  2 pooled_w uint32 = 0
  3 spatial_scale float = 1

# daijifeng001/caffe-rfcn
message PSROIPoolingParameter
  1 spatial_scale float
  2 output_dim int32
  3 group_size int32

# gklz1982/caffe-yolov2, eric612/MobileNet-YOLO
message ReorgParameter
  1 stride uint32
  2 reverse bool = false

# openvinotoolkit/training_toolbox_caffe
message RegionParameter
  1 classes uint32 = 20
  2 coords uint32 = 4
  3 num uint32 = 5

# brocolli-caffe (the build in ../shared/tools)
message ProposalParameter
  1 feat_stride uint32 = 16
  2 base_size uint32 = 16
  3 min_size uint32 = 16
  4 ratio float*
  5 scale float*
  6 pre_nms_topn uint32 = 6000
  7 post_nms_topn uint32 = 300
  8 nms_thresh float = 0.7

# eric612/MobileNet-YOLO
message YoloDetectionOutputParameter
  1 side uint32 = 13
  2 num_classes uint32 = 20
  3 num_box uint32 = 5
  4 coords uint32 = 4
  5 confidence_threshold float = 0.01
  6 nms_threshold float = 0.45
  7 biases float*
  8 label_map_file string

message Yolov3DetectionOutputParameter
  1 num_classes uint32 = 20
  2 num_box uint32 = 3
  3 confidence_threshold float = 0.01
  4 nms_threshold float = 0.45
  5 biases float*
  6 anchors_scale uint32*
  7 mask_group_num uint32 = 2
  8 mask uint32*

# Deprecated V1 layer (before 2015). Its params reuse the V2 messages.
message V1LayerParameter
  2 bottom string*
  3 top string*
  4 name string
  32 include NetStateRule*
  33 exclude NetStateRule*
  5 type V1LayerType
  6 blobs BlobProto*
  1001 param string*
  1002 blob_share_mode DimCheckMode*
  7 blobs_lr float*
  8 weight_decay float*
  35 loss_weight float*
  27 accuracy_param AccuracyParameter
  23 argmax_param ArgMaxParameter
  9 concat_param ConcatParameter
  40 contrastive_loss_param ContrastiveLossParameter
  10 convolution_param ConvolutionParameter
  11 data_param DataParameter
  12 dropout_param DropoutParameter
  26 dummy_data_param DummyDataParameter
  24 eltwise_param EltwiseParameter
  41 exp_param ExpParameter
  13 hdf5_data_param HDF5DataParameter
  14 hdf5_output_param OpenParameter
  29 hinge_loss_param HingeLossParameter
  15 image_data_param ImageDataParameter
  16 infogain_loss_param InfogainLossParameter
  17 inner_product_param InnerProductParameter
  18 lrn_param LRNParameter
  22 memory_data_param MemoryDataParameter
  34 mvn_param MVNParameter
  19 pooling_param PoolingParameter
  21 power_param PowerParameter
  30 relu_param ReLUParameter
  38 sigmoid_param SigmoidParameter
  39 softmax_param SoftmaxParameter
  31 slice_param SliceParameter
  37 tanh_param TanHParameter
  25 threshold_param ThresholdParameter
  20 window_data_param OpenParameter
  36 transform_param TransformationParameter
  42 loss_param LossParameter
  # Fast R-CNN's V1 prototxts (caffe-fast-rcnn's caffe.proto): ROI_POOLING's params
  43 roi_pooling_param ROIPoolingParameter
  1 layer V0LayerParameter

# Pre-2014 layer; read for its name, type and blobs (weights files only).
message V0LayerParameter open
  1 name string
  2 type string
  50 blobs BlobProto*
"""


@dataclass
class Field:
    number: int
    name: str
    type: str
    repeated: bool = False
    default: object = None

    @property
    def kind(self) -> str:
        """'message', 'enum' or the scalar type name."""
        if self.type in SCALARS:
            return self.type
        if self.type in ENUMS:
            return "enum"
        return "message"


@dataclass
class MessageType:
    name: str
    open: bool = False
    by_name: dict = field(default_factory=dict)
    by_number: dict = field(default_factory=dict)  # number -> [Field, ...] (aliases share 13)


def _parse_enums(text):
    enums = {}
    for line in text.replace("\\\n", " ").strip().splitlines():
        name, *items = line.split()
        values = {}
        for item in items:
            k, v = item.split("=")
            values[k] = int(v)
        enums[name] = values
    return enums


ENUMS: dict[str, dict[str, int]] = _parse_enums(_ENUMS)
ENUM_NAMES: dict[str, dict[int, str]] = {e: {v: k for k, v in vals.items()} for e, vals in ENUMS.items()}


def _convert_default(type_, text):
    if type_ in ("int32", "int64", "uint32", "uint64"):
        return int(text)
    if type_ in ("float", "double"):
        return float(text)
    if type_ == "bool":
        return text == "true"
    return text  # string or enum value name


def _parse_messages(text):
    messages: dict[str, MessageType] = {}
    current = None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("message "):
            parts = line.split()
            current = MessageType(parts[1], open="open" in parts[2:])
            messages[current.name] = current
            continue
        head, _, default = line.partition("=")
        number, name, type_ = head.split()
        repeated = type_.endswith("*")
        type_ = type_.rstrip("*")
        f = Field(int(number), name, type_, repeated,
                  _convert_default(type_, default.strip()) if default else None)
        current.by_name[name] = f
        current.by_number.setdefault(f.number, []).append(f)
    for m in messages.values():  # every referenced type must exist
        for f in m.by_name.values():
            if f.type not in SCALARS and f.type not in ENUMS and f.type not in messages:
                raise AssertionError(f"schema: {m.name}.{f.name} has unknown type {f.type}")
    return messages


MESSAGES: dict[str, MessageType] = _parse_messages(_MESSAGES)

# Layer-parameter field names by the Caffe layer type that uses them, for fork layers whose
# param field name is not derivable from the type name.
V1_TYPE_NAMES = {
    "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DATA": "Data", "DECONVOLUTION": "Deconvolution", "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData", "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise",
    "EXP": "Exp", "FLATTEN": "Flatten", "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col", "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN",
    "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence",
    "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice",
    "TANH": "TanH", "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold", "NONE": "",
}

# V1 enum values that forks added to V1LayerParameter.LayerType (the enum BVLC froze in
# 2015). Numbers: CROP = 40 is longjon/caffe's (the FCN branch; netron's
# tools/caffe-schema.js records it too). Names: V1 prototxts of forks spell their types
# like BVLC's (ROI_POOLING for ROIPooling). A V1 type neither table knows is kept as
# written (a name) or as "V1LayerType N" (a number): an unsupported type, not an error.
V1_FORK_TYPE_NAMES = {
    "CROP": "Crop", "ROI_POOLING": "ROIPooling", "PSROI_POOLING": "PSROIPooling",
    "SPP": "SPP", "PRELU": "PReLU", "RESHAPE": "Reshape", "BATCH_NORM": "BatchNorm",
    "BN": "BN", "SCALE": "Scale", "BIAS": "Bias", "ELU": "ELU", "EMBED": "Embed",
    "LOG": "Log", "REDUCTION": "Reduction", "TILE": "Tile", "PYTHON": "Python",
    "UPSAMPLE": "Upsample", "INTERP": "Interp", "NORMALIZE": "Normalize",
    "PERMUTE": "Permute", "PRIOR_BOX": "PriorBox", "DETECTION_OUTPUT": "DetectionOutput",
    "PROPOSAL": "Proposal", "SMOOTH_L1_LOSS": "SmoothL1Loss",
    "DENSE_IMAGE_DATA": "DenseImageData", "INPUT": "Input",
}
V1_FORK_TYPE_NUMBERS = {40: "CROP"}
OPEN_ENUMS = {"V1LayerType"}   # the text reader keeps unknown value names of these


def v1_type_name(value) -> str:
    """The V2 type name of a V1LayerType value (a name, or a number the schema lacks)."""
    if isinstance(value, int):
        value = V1_FORK_TYPE_NUMBERS.get(value, value)
        if isinstance(value, int):
            return f"V1LayerType {value}"
    if value in V1_TYPE_NAMES:
        return V1_TYPE_NAMES[value]
    return V1_FORK_TYPE_NAMES.get(value, value)
