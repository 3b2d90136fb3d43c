#!/usr/bin/env python3
"""Compare a `tessera run --output` file with a golden case's io.safetensors.

    python3 scripts/golden_compare.py EXPECTED.safetensors GOT.safetensors --tol 1e-5

Every tensor of EXPECTED except `pixel_values` must be in GOT with the same shape
and within the relative L2 bar (‖got − want‖ / ‖want‖ ≤ tol, computed in f64);
NaN anywhere fails. Prints one line per tensor; exit status 1 on any failure.
Needs numpy and safetensors.
"""
import argparse
import sys

import numpy as np
from safetensors.numpy import load_file


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("expected")
    ap.add_argument("got")
    ap.add_argument("--tol", type=float, required=True)
    args = ap.parse_args()
    want = load_file(args.expected)
    got = load_file(args.got)
    ok = True
    for name, w in sorted(want.items()):
        if name == "pixel_values":
            continue
        g = got.get(name)
        if g is None:
            print(f"FAIL {name}: missing from {args.got}")
            ok = False
            continue
        if g.shape != w.shape:
            print(f"FAIL {name}: shape {list(g.shape)}, want {list(w.shape)}")
            ok = False
            continue
        g64, w64 = g.astype(np.float64), w.astype(np.float64)
        if np.isnan(g64).any():
            print(f"FAIL {name}: NaN in the output")
            ok = False
            continue
        den = np.linalg.norm(w64)
        rel = np.linalg.norm(g64 - w64) / (den if den > 0 else 1.0)
        verdict = "ok  " if rel <= args.tol else "FAIL"
        ok &= rel <= args.tol
        print(f"{verdict} {name}: relative L2 {rel:.3e} (bar {args.tol:.0e})")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
