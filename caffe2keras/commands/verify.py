"""caffe2keras verify (being written)"""
from __future__ import annotations


def add_parser(sub):
    return sub.add_parser("verify", help="(not available yet)")


def run(args) -> int:
    raise SystemExit("caffe2keras verify: not available yet")
