"""Training as Caffe did: solver.prototxt, train nets and loss layers as a compiled Keras
model whose optimizer is Caffe's (importing this package imports Keras)."""
from __future__ import annotations

from .model import CaffeTrainingModel, convert_for_testing, convert_for_training, make_optimizer
from .solver import Solver, load_solver, parse_solver

__all__ = ["CaffeTrainingModel", "Solver", "convert_for_testing", "convert_for_training",
           "load_solver",
           "make_optimizer", "parse_solver"]
