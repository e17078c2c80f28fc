"""caffe2keras weights (being written)"""
from __future__ import annotations


def add_parser(sub):
    return sub.add_parser("weights", help="(not available yet)")


def run(args) -> int:
    raise SystemExit("caffe2keras weights: not available yet")
