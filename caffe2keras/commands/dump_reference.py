"""caffe2keras dump-reference (being written)"""
from __future__ import annotations


def add_parser(sub):
    return sub.add_parser("dump-reference", help="(not available yet)")


def run(args) -> int:
    raise SystemExit("caffe2keras dump-reference: not available yet")
