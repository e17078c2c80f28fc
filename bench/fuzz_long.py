"""A long fuzzing run of the readers (the engine of tests/test_fuzz.py, at scale).

    python bench/fuzz_long.py [--cases 100000] [--jobs 2] [--seed 1000] [--big]

Cases are split into batches, each run in a fresh child process whose data segment is
capped (--mem-mb, default 1024), so a runaway allocation fails the batch instead of
passing. Every case must end in a valid parse or CaffeFormatError within 2 s of CPU.
Prints the number of cases, outcome counts per target, the slowest case, the largest
child RSS, and every failure with the command that reproduces it; exits 1 if any.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.test_fuzz import MEMORY_LIMIT_MB, run_bulk_child


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=5_000, help="cases per child process")
    ap.add_argument("--jobs", type=int, default=2, help="children at a time")
    ap.add_argument("--seed", type=int, default=1000, help="first batch's seed")
    ap.add_argument("--mem-mb", type=int, default=MEMORY_LIMIT_MB)
    ap.add_argument("--big", action="store_true", help="also mutate open_nsfw's 24 MB file")
    ap.add_argument("--json", help="write the combined results here")
    args = ap.parse_args(argv)

    batches = []
    left, seed = args.cases, args.seed
    while left > 0:
        batches.append((seed, min(args.batch, left)))
        left -= args.batch
        seed += 1
    t0 = time.perf_counter()
    total = {"cases": 0, "ok": 0, "error": 0, "failures": [], "max_case_s": 0.0,
             "max_wall_s": 0.0, "slowest": None, "max_rss_mb": 0.0, "by_target": {}}

    def run(batch):
        seed, n = batch
        return seed, run_bulk_child(seed, n, mem_mb=args.mem_mb, big=args.big)

    with ThreadPoolExecutor(args.jobs) as pool:
        for seed, stats in pool.map(run, batches):
            total["cases"] += stats["cases"]
            total["ok"] += stats["ok"]
            total["error"] += stats["error"]
            for f in stats["failures"]:
                f["reproduce"] = (f"python -m tests.test_fuzz --seed {seed} --only {f['case']}"
                                  + (" --big" if args.big else ""))
                total["failures"].append(f)
            if stats["max_case_s"] > total["max_case_s"]:
                total["max_case_s"] = stats["max_case_s"]
                total["slowest"] = dict(stats["slowest"], seed=seed)
            total["max_rss_mb"] = max(total["max_rss_mb"], stats["max_rss_mb"])
            total["max_wall_s"] = max(total["max_wall_s"], stats["max_wall_s"])
            for target, counts in stats["by_target"].items():
                agg = total["by_target"].setdefault(target, {"ok": 0, "error": 0, "failure": 0})
                for k, v in counts.items():
                    agg[k] += v
            print(f"  {total['cases']:,} cases, {len(total['failures'])} failures, "
                  f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    total["seconds"] = time.perf_counter() - t0
    print(f"fuzzed {total['cases']:,} cases in {total['seconds']:.0f} s "
          f"({args.jobs} processes, data segment capped at {args.mem_mb} MB each)")
    print(f"outcomes: {total['ok']:,} valid parses, {total['error']:,} CaffeFormatError, "
          f"{len(total['failures'])} failures")
    for target, c in sorted(total["by_target"].items()):
        print(f"  {target:10} ok {c['ok']:>7,}  CaffeFormatError {c['error']:>7,}  "
              f"failures {c['failure']}")
    s = total["slowest"] or {}
    print(f"slowest case: {total['max_case_s']:.3f} s CPU (seed {s.get('seed')}, case "
          f"{s.get('case')}: {s.get('what')}); longest wall time {total['max_wall_s']:.3f} s "
          f"(includes waiting for a core on a shared machine)")
    print(f"largest child RSS: {total['max_rss_mb']:.0f} MB")
    for f in total["failures"][:20]:
        print(f"FAILURE {f['what']}: {f['error']}\n  reproduce: {f['reproduce']}")
    if args.json:
        Path(args.json).write_text(json.dumps(total, indent=1))
    return 1 if total["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
