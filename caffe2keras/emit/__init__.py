"""Stage three: a planned Caffe graph -> a Keras 3 functional model."""
