"""The project's one pass criterion for a blob against its reference (real Caffe's).

Element by element: ``|got - ref| <= ATOL * max(1, |ref|max) + RTOL * |ref|``, where
``|ref|max`` is over the reference's finite values. NaN policy: a NaN passes only
where the reference has a NaN at the same place (Caffe's own NaNs, e.g. Log of a
negative number, must be reproduced, never hidden); an infinity passes only where the
reference has the same infinity. `caffe2keras verify` and the test suite both use this.
"""
from __future__ import annotations

import numpy as np

RTOL = 1e-4
ATOL = 1e-4


def ref_scale(ref) -> float:
    """max(1, |ref|max) over the finite values of ``ref``."""
    ref = np.asarray(ref, dtype=np.float64)
    finite = np.isfinite(ref)
    if not finite.any():
        return 1.0
    return max(1.0, float(np.abs(ref[finite]).max()))


def _errors(got, ref):
    """(elementwise |got - ref| with matching NaNs/infinities 0, elementwise pass)."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    same = (np.isnan(got) & np.isnan(ref)) | (np.isinf(got) & (got == ref))
    with np.errstate(invalid="ignore"):
        err = np.where(same, 0.0, np.abs(got - ref))
        ok = same | (err <= ATOL * ref_scale(ref) + RTOL * np.abs(ref))
    return err, ok


def blob_errors(got, ref):
    """(max abs err, max abs err / max(1, |ref|max), passes the criterion). A NaN or
    infinity where the reference differs counts as an infinite error."""
    got = np.asarray(got)
    if got.size == 0:
        return 0.0, 0.0, True
    err, ok = _errors(got, ref)
    max_abs = float(np.max(np.where(np.isnan(err), np.inf, err)))
    return max_abs, max_abs / ref_scale(ref), bool(ok.all())


def mismatch(got, ref):
    """None when ``got`` passes against ``ref``; else a one-line account of the worst
    element (shapes must be equal)."""
    got = np.asarray(got)
    ref = np.asarray(ref)
    if got.shape != ref.shape:
        return f"shape {got.shape} != the reference's {ref.shape}"
    if got.size == 0:
        return None
    err, ok = _errors(got, ref)
    if ok.all():
        return None
    atol = ATOL * ref_scale(ref)
    excess = np.where(ok, -np.inf, np.where(np.isnan(err), np.inf, err) -
                      RTOL * np.abs(np.nan_to_num(np.asarray(ref, np.float64))))
    i = np.unravel_index(np.argmax(excess), err.shape)
    worst = float(np.max(np.where(np.isnan(err), np.inf, err)))
    return (f"max abs err {worst:.3g} (atol {atol:.3g}); {int((~ok).sum())} of {ok.size} "
            f"outside; at {i}: got {got[i]!r}, reference {ref[i]!r}")
