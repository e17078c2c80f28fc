"""caffe2keras codegen (being written)"""
from __future__ import annotations


def add_parser(sub):
    return sub.add_parser("codegen", help="(not available yet)")


def run(args) -> int:
    raise SystemExit("caffe2keras codegen: not available yet")
