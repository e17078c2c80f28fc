"""caffe2keras predict (being written)"""
from __future__ import annotations


def add_parser(sub):
    return sub.add_parser("predict", help="(not available yet)")


def run(args) -> int:
    raise SystemExit("caffe2keras predict: not available yet")
