"""Fuzzing the readers with mutated real files: every case must end in a valid parse or in
CaffeFormatError, within 2 s and without runaway memory.

Seeds are the real caffemodels, prototxts and mean file in the shared fixtures. Mutations
are bit flips, truncation, splicing, protobuf length/tag edits, and text edits (numbers
made absurd, names swapped, lines moved, braces nested deep, binary junk). Targets are
load_caffemodel, load_net, load_graph (with and without weights) and read_binaryproto.

Two runners:
- hypothesis (in process, shrinks a failure to a small case);
- a seeded bulk run in a child process whose data segment is capped (RLIMIT_DATA), so a
  reader that tries to allocate absurd memory fails with MemoryError instead of passing.
Every bulk case is reproducible alone: ``python -m tests.test_fuzz --seed S --only I``.
bench/fuzz_long.py runs the same engine for 100k+ cases.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pytest

from caffe2keras.errors import CaffeFormatError
from caffe2keras.proto.wire import encode_varint

from .shared import CONFORMANCE, CONFORMANCE_CASES, MODELS, MODELS_INDEX, ROOT

TIME_LIMIT_S = 2.0
MEMORY_LIMIT_MB = 1024   # data segment cap of the bulk child (python+numpy use ~60 MB)
BIG_FILE = 8 << 20       # seeds over this (open_nsfw's 24 MB) only in long runs


# -- corpus --------------------------------------------------------------------------

class Corpus:
    """The seed files, their pairings, and where their protobuf tags and lengths are."""

    def __init__(self, big=False):
        self.texts = {}     # path -> bytes
        self.binaries = {}  # path -> bytes (caffemodels)
        self.means = {}     # path -> bytes
        self.partner = {}   # prototxt <-> caffemodel
        for case in CONFORMANCE_CASES:
            self._pair(CONFORMANCE / case / "deploy.prototxt",
                       CONFORMANCE / case / "weights.caffemodel", big)
        for info in MODELS_INDEX.values():
            d = MODELS / info["dir"]
            self._pair(d / info["deploy"], d / info["weights"], big)
        for p in sorted(MODELS.rglob("*.prototxt")):
            self.texts.setdefault(str(p), p.read_bytes())
        for p in sorted(MODELS.rglob("*.binaryproto")):
            self.means[str(p)] = p.read_bytes()
        self.text_keys = sorted(self.texts)
        self.binary_keys = sorted(self.binaries)
        self.mean_keys = sorted(self.means)
        self.fields = {k: _proto_fields(v) for k, v in
                       list(self.binaries.items()) + list(self.means.items())}
        vocab = set()
        strings = set()
        for t in self.texts.values():
            s = t.decode("utf-8", "replace")
            vocab.update(re.findall(r"[A-Za-z_]\w*", s))
            strings.update(re.findall(r'"[^"\n]{0,40}"', s))
        self.vocab = sorted(vocab)
        self.strings = sorted(strings)

    def _pair(self, prototxt, weights, big):
        if not weights.exists() or (weights.stat().st_size > BIG_FILE and not big):
            self.texts[str(prototxt)] = prototxt.read_bytes()
            return
        self.texts[str(prototxt)] = prototxt.read_bytes()
        self.binaries[str(weights)] = weights.read_bytes()
        self.partner[str(prototxt)] = str(weights)
        self.partner[str(weights)] = str(prototxt)


def _varint(buf, pos, end):
    result = shift = 0
    while pos < end:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            break
    raise ValueError


def _proto_fields(buf, limit=4000):
    """(tags, lengths): offsets of field tags and of length varints, found by walking the
    protobuf structure (into nested messages where the bytes parse as one)."""
    tags, lengths = [], []

    def walk(pos, end, depth):
        while pos < end and len(tags) < limit:
            tag_at = pos
            tag, pos = _varint(buf, pos, end)
            wire, number = tag & 7, tag >> 3
            if number == 0:
                raise ValueError
            if wire == 0:
                _, pos = _varint(buf, pos, end)
            elif wire == 1:
                pos += 8
            elif wire == 5:
                pos += 4
            elif wire == 2:
                len_at = pos
                n, pos = _varint(buf, pos, end)
                if pos + n > end:
                    raise ValueError
                tags.append(tag_at)
                lengths.append(len_at)
                if depth < 6 and n < 1 << 16 or number in (100, 2, 7, 6, 50, 1):
                    mark = (len(tags), len(lengths))
                    try:
                        walk(pos, pos + n, depth + 1)
                    except (ValueError, IndexError):
                        del tags[mark[0]:], lengths[mark[1]:]
                pos += n
                continue
            else:
                raise ValueError
            if pos > end:
                raise ValueError
            tags.append(tag_at)

    try:
        walk(0, len(buf), 0)
    except (ValueError, IndexError):
        pass
    return tags, lengths


# -- mutations -----------------------------------------------------------------------

INTERESTING_NUMBERS = [
    "0", "-1", "1", "2", "3", "7", "255", "65535", "2147483647", "2147483648",
    "4294967295", "4294967296", "-2147483648", "-2147483649", "1000000000000",
    "99999999999999999999999", "18446744073709551616", "1e400", "-1e400", "1e-400", "nan",
    "inf", "-inf", "0x7fffffff", "0xffffffffffffffff", "0.5", "-0.0", "1" * 5000, "007",
    "1.5e38", "3.4e39", "00", "0x", "1e", "--1",
]
TEXT_CHARS = '{}<>:;,"\'#\n\t []-+.0123456789abcxyzE_\\/'


def _rand_varint_value(rng, old):
    return rng.choice([0, 1, old + 1, max(0, old - 1), old * 2, old // 2, 127, 128,
                       2**31 - 1, 2**31, 2**32 + old, 2**63, 2**64 - 1,
                       rng.randrange(1 << rng.randrange(1, 64))])




def mutate_binary(rng: random.Random, data: bytes, fields, others) -> tuple[bytes, str]:
    buf = bytearray(data)
    n = len(buf)
    tags, lengths = fields
    ops = ["bitflip", "byte", "truncate", "splice", "insert", "delete", "length", "length",
           "tag", "varint_run", "duplicate"]
    op = rng.choice(ops)
    if op == "bitflip":
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(n)
            buf[i] ^= 1 << rng.randrange(8)
    elif op == "byte":
        for _ in range(rng.randint(1, 4)):
            buf[rng.randrange(n)] = rng.choice([0, 0xFF, 0x80, 0x7F, 0x01, rng.randrange(256)])
    elif op == "truncate":
        cut = rng.choice([rng.randrange(n), rng.randrange(min(n, 256)), n - rng.randint(1, 8)])
        buf = buf[:max(0, cut)]
    elif op == "splice":
        src = rng.choice(others)
        a = rng.randrange(len(src))
        piece = src[a:a + rng.randint(1, 512)]
        i = rng.randrange(n)
        buf[i:i + rng.randint(0, len(piece))] = piece
    elif op == "insert":
        i = rng.randrange(n + 1)
        buf[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    elif op == "delete":
        i = rng.randrange(n)
        del buf[i:i + rng.choice([1, 2, 4, rng.randint(1, 4096)])]
    elif op == "duplicate":
        i = rng.randrange(n)
        piece = buf[i:i + rng.randint(1, 2048)]
        j = rng.randrange(n)
        buf[j:j] = piece
    elif op == "length" and lengths:
        at = rng.choice(lengths)
        old, end = _varint(buf, at, n)
        buf[at:end] = encode_varint(_rand_varint_value(rng, old))
    elif op == "tag" and tags:
        at = rng.choice(tags)
        old, end = _varint(buf, at, n)
        new = rng.choice([(old & ~7) | rng.randrange(8), old ^ (1 << rng.randrange(3, 12)),
                          rng.choice([8, 0x0A, 0x7A, 0x3A, 802, 18, 0x52, 0])])
        buf[at:end] = encode_varint(new)
    elif op == "varint_run":
        i = rng.randrange(n)
        buf[i:i + rng.randint(1, 20)] = b"\x80" * rng.randint(1, 20)
    else:
        buf[rng.randrange(n)] ^= 0xFF
        op = "byte"
    return bytes(buf), op


def mutate_text(rng: random.Random, data: bytes, corpus: Corpus) -> tuple[bytes, str]:
    text = data.decode("utf-8", "replace")
    ops = ["number", "number", "char", "line", "truncate", "splice", "ident", "ident",
           "string", "string", "nest", "junk", "brace"]
    op = rng.choice(ops)
    if op == "number":
        nums = [m.span() for m in re.finditer(r"(?<![\w.])-?\d[\w.+-]*", text)]
        if nums:
            a, b = rng.choice(nums)
            text = text[:a] + rng.choice(INTERESTING_NUMBERS) + text[b:]
    elif op == "char":
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(text) + 1)
            c = rng.choice(TEXT_CHARS)
            k = rng.randrange(3)
            text = (text[:i] + c + text[i:] if k == 0 else
                    text[:i] + text[i + 1:] if k == 1 else text[:i] + c + text[i + 1:])
    elif op == "line":
        lines = text.split("\n")
        i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
        k = rng.randrange(3)
        if k == 0:
            del lines[i]
        elif k == 1:
            lines.insert(j, lines[i])
        else:
            lines[i], lines[j] = lines[j], lines[i]
        text = "\n".join(lines)
    elif op == "truncate":
        text = text[:rng.randrange(len(text) + 1)]
    elif op == "splice":
        other = corpus.texts[rng.choice(corpus.text_keys)].decode("utf-8", "replace")
        a = rng.randrange(len(other) + 1)
        piece = other[a:a + rng.randint(1, 400)]
        i = rng.randrange(len(text) + 1)
        text = text[:i] + piece + text[i:]
    elif op == "ident":
        ids = [m.span() for m in re.finditer(r"[A-Za-z_]\w*", text)]
        if ids:
            a, b = rng.choice(ids)
            text = text[:a] + rng.choice(corpus.vocab) + text[b:]
    elif op == "string":
        strs = [m.span() for m in re.finditer(r'"[^"\n]*"', text)]
        if strs:
            a, b = rng.choice(strs)
            text = text[:a] + rng.choice(corpus.strings) + text[b:]
    elif op == "nest":
        depth = rng.choice([5, 99, 100, 101, 200, 5000])
        name = rng.choice(["convolution_param", "layer", "foo", "weight_filler"])
        i = rng.randrange(len(text) + 1)
        text = text[:i] + f" {name} {{" * depth + " }" * depth + text[i:]
    elif op == "brace":
        braces = [m.start() for m in re.finditer(r"[{}]", text)]
        if braces:
            i = rng.choice(braces)
            text = text[:i] + rng.choice(["", "{", "}", "}}", "<", "{ {"]) + text[i + 1:]
    else:  # junk: binary or non-UTF-8 bytes inside the text
        raw = text.encode("utf-8")
        i = rng.randrange(len(raw) + 1)
        junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        return raw[:i] + junk + raw[i:], op
    return text.encode("utf-8", "surrogatepass"), op


# -- running -------------------------------------------------------------------------

def make_case(corpus: Corpus, rng: random.Random):
    """(target, data, partner path or None, description)."""
    r = rng.random()
    if r < 0.45:
        key = rng.choice(corpus.binary_keys)
        data = corpus.binaries[key]
        desc = []
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            data, op = mutate_binary(rng, data, corpus.fields[key] if not desc else ([], []),
                                     [corpus.binaries[k] for k in corpus.binary_keys[:6]])
            desc.append(op)
            if not data:
                break
        return "caffemodel", data, corpus.partner.get(key), f"{key} {'+'.join(desc)}"
    if r < 0.52:
        key = rng.choice(corpus.mean_keys)
        data, op = mutate_binary(rng, corpus.means[key], corpus.fields[key],
                                 [corpus.means[key]])
        return "mean", data, None, f"{key} {op}"
    key = rng.choice(corpus.text_keys)
    data = corpus.texts[key]
    desc = []
    for _ in range(rng.choice([1, 1, 2, 3])):
        data, op = mutate_text(rng, data, corpus)
        desc.append(op)
    return "prototxt", data, corpus.partner.get(key), f"{key} {'+'.join(desc)}"


def run_case(target, data, partner, workdir) -> str:
    """'ok' or 'error' (CaffeFormatError). Any other exception propagates."""
    from caffe2keras.caffemodel import load_caffemodel
    from caffe2keras.graph import build_graph
    from caffe2keras.mean import read_binaryproto
    from caffe2keras.net import load_net

    suffix = {"caffemodel": ".caffemodel", "mean": ".binaryproto", "prototxt": ".prototxt"}
    path = Path(workdir) / f"case{suffix[target]}"
    path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if target == "mean":
                read_binaryproto(path)
            elif target == "caffemodel":
                weights = load_caffemodel(path)
                if partner:  # the mutated weights against their real prototxt
                    build_graph(load_net(partner), weights)
            else:
                net = load_net(path)
                build_graph(net)
                if partner:  # the mutated prototxt against its real weights
                    build_graph(net, load_caffemodel(partner))
        except CaffeFormatError as e:
            if not str(e).strip():
                raise AssertionError("CaffeFormatError with an empty message") from e
            return "error"
    return "ok"


def bulk(seed, cases, workdir, big=False, only=None, progress=None):
    """Run ``cases`` cases; returns stats. Case i uses Random(f"{seed}:{i}")."""
    corpus = Corpus(big=big)
    stats = {"seed": seed, "cases": 0, "ok": 0, "error": 0, "failures": [],
             "max_case_s": 0.0, "max_wall_s": 0.0, "slowest": None, "by_target": {}}
    indices = [only] if only is not None else range(cases)
    t_start = time.perf_counter()
    for i in indices:
        rng = random.Random(f"{seed}:{i}")
        target, data, partner, desc = make_case(corpus, rng)
        t, cpu = time.perf_counter(), time.process_time()
        try:
            outcome = run_case(target, data, partner, workdir)
        except Exception as e:  # noqa: BLE001 - recorded as a failure, with how to repeat it
            outcome = "failure"
            stats["failures"].append({"case": i, "what": desc, "error": f"{type(e).__name__}: "
                                      f"{str(e)[:300]}"})
        # the limit is on CPU time: on a shared machine, wall time also counts waiting
        # for a core
        dt, wall = time.process_time() - cpu, time.perf_counter() - t
        stats["max_wall_s"] = max(stats["max_wall_s"], wall)
        if dt > stats["max_case_s"]:
            stats["max_case_s"], stats["slowest"] = dt, {"case": i, "what": desc}
        if dt > TIME_LIMIT_S:
            stats["failures"].append({"case": i, "what": desc,
                                      "error": f"took {dt:.2f} s of CPU"})
        stats["cases"] += 1
        if outcome != "failure":
            stats[outcome] += 1
        by = stats["by_target"].setdefault(target, {"ok": 0, "error": 0, "failure": 0})
        by[outcome] += 1
        if progress and stats["cases"] % progress == 0:
            print(f"  {stats['cases']} cases, {time.perf_counter() - t_start:.0f} s",
                  file=sys.stderr, flush=True)
    stats["seconds"] = time.perf_counter() - t_start
    import resource
    stats["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return stats


def limit_memory(mb):
    import resource
    limit = mb << 20
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


def run_bulk_child(seed, cases, mem_mb=MEMORY_LIMIT_MB, big=False, timeout=None):
    """Run a bulk batch in a fresh, memory-capped process; returns its stats."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OPENBLAS_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "tests.test_fuzz", "--seed", str(seed), "--cases", str(cases),
           "--mem-mb", str(mem_mb)] + (["--big"] if big else [])
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=timeout, check=False)
    if out.returncode != 0:
        raise AssertionError(f"fuzz child failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout)


# -- tests ---------------------------------------------------------------------------

# 2 x 2500 bulk cases + 2 x 300 hypothesis examples: about 40 s on the 2-core dev machine
BULK_CASES = int(os.environ.get("CAFFE2KERAS_FUZZ_CASES", "2500"))


@pytest.mark.parametrize("seed", [1, 2])
def test_bulk_mutations_end_in_parse_or_caffe_format_error(seed):
    stats = run_bulk_child(seed, BULK_CASES, timeout=600)
    assert stats["cases"] == BULK_CASES
    assert not stats["failures"], json.dumps(stats["failures"][:10], indent=1)
    assert stats["max_case_s"] <= TIME_LIMIT_S
    # the mutations must reach both outcomes, and every target
    assert stats["ok"] > 0 and stats["error"] > 0
    assert set(stats["by_target"]) == {"caffemodel", "mean", "prototxt"}


def test_the_memory_cap_is_real():
    """The bulk child's cap turns a runaway allocation into a failure, not a pass."""
    code = ("import numpy as np\nfrom tests.test_fuzz import limit_memory\n"
            "limit_memory(256)\nnp.ones(512 << 20, np.uint8)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       check=False)
    assert r.returncode != 0 and "MemoryError" in r.stderr


_CORPUS = None


def _corpus():
    global _CORPUS
    if _CORPUS is None:
        _CORPUS = Corpus()
    return _CORPUS


try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover
    given = None

if given is not None:
    _SETTINGS = settings(max_examples=int(os.environ.get("CAFFE2KERAS_FUZZ_EXAMPLES", "300")),
                         deadline=int(TIME_LIMIT_S * 1000), derandomize=True,
                         suppress_health_check=list(HealthCheck), database=None)

    @_SETTINGS
    @given(st.integers(0, 2**32 - 1))
    def test_hypothesis_mutated_files(seed_value):
        workdir = tempfile.mkdtemp(prefix="c2k-fuzz-")
        try:
            rng = random.Random(seed_value)
            target, data, partner, desc = make_case(_corpus(), rng)
            try:
                run_case(target, data, partner, workdir)
            except Exception as e:
                raise AssertionError(f"{desc}: {type(e).__name__}: {e}") from e
        finally:
            for p in Path(workdir).iterdir():
                p.unlink()
            os.rmdir(workdir)

    @_SETTINGS
    @given(st.binary(min_size=0, max_size=300))
    def test_hypothesis_arbitrary_bytes(data):
        """Bytes from nowhere, as every kind of input."""
        workdir = tempfile.mkdtemp(prefix="c2k-fuzz-")
        try:
            for target in ("caffemodel", "mean", "prototxt"):
                run_case(target, data, None, workdir)
        finally:
            for p in Path(workdir).iterdir():
                p.unlink()
            os.rmdir(workdir)


def main(argv=None):
    ap = argparse.ArgumentParser(description="bulk fuzz run (JSON stats on stdout)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cases", type=int, default=1000)
    ap.add_argument("--only", type=int, help="run just this case index (to reproduce one)")
    ap.add_argument("--mem-mb", type=int, default=MEMORY_LIMIT_MB)
    ap.add_argument("--big", action="store_true", help="include seeds over 8 MB")
    ap.add_argument("--progress", type=int, default=0)
    args = ap.parse_args(argv)
    if args.mem_mb:
        limit_memory(args.mem_mb)
    with tempfile.TemporaryDirectory(prefix="c2k-fuzz-") as d:
        stats = bulk(args.seed, args.cases, d, big=args.big, only=args.only,
                     progress=args.progress)
    if args.only is not None and stats["failures"]:
        rng = random.Random(f"{args.seed}:{args.only}")
        target, data, partner, _ = make_case(Corpus(big=args.big), rng)
        with tempfile.TemporaryDirectory() as d:
            run_case(target, data, partner, d)  # raise it, with the full traceback
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
