"""Custom Keras layers for Caffe semantics Keras lacks. Each registers itself as
serializable under the package name "caffe2keras" (keras.ops only, no Lambda)."""
