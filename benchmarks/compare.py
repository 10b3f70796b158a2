"""Compare two builds of cnnext on the same machine, row by row.

Run ``cnnext bench --json`` alternately with each build (in two virtual
environments), several times each, then::

    python benchmarks/compare.py --before b1.json b2.json --after a1.json a2.json

prints, per row (case, pass, dtype), the median cnnext time of each build
over its runs and the ratio after/before (< 1: the new build is faster),
and flags rows whose ratio exceeds ``--slower`` (default 1.10, the noise of
a shared 2-core machine).  Rows present in one build only are listed
separately.  Exit status 1 when a row is flagged.
"""
import argparse
import json
import math
import statistics
import sys


def _rows(paths):
    """{(case, pass, dtype): [median seconds, ...]} over the files."""
    out = {}
    for path in paths:
        with open(path) as fh:
            doc = json.load(fh)
        for r in doc.get("results", []):
            med = r.get("cnnext", {}).get("median")
            if med:
                out.setdefault((r["case"], r["pass"], r["dtype"]), []).append(med)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", nargs="+", required=True, help="bench JSON files, old build")
    ap.add_argument("--after", nargs="+", required=True, help="bench JSON files, new build")
    ap.add_argument("--slower", type=float, default=1.10,
                    help="flag rows whose after/before ratio exceeds this (default 1.10)")
    args = ap.parse_args(argv)
    before, after = _rows(args.before), _rows(args.after)
    common = [k for k in before if k in after]
    flagged, ratios = [], []
    print(f"{'case':<18} {'pass':<8} {'dtype':<8} {'before':>10} {'after':>10} "
          f"{'after/before':>13}")
    for key in common:
        b, a = statistics.median(before[key]), statistics.median(after[key])
        r = a / b
        ratios.append(r)
        mark = "  slower" if r > args.slower else ""
        if mark:
            flagged.append(key)
        print(f"{key[0]:<18} {key[1]:<8} {key[2]:<8} {b * 1e6:>8.1f}us {a * 1e6:>8.1f}us "
              f"{r:>13.2f}{mark}")
    if ratios:
        geo = math.exp(sum(map(math.log, ratios)) / len(ratios))
        print(f"geomean after/before over {len(ratios)} rows: {geo:.2f}")
    for name, rows, other in (("before", before, after), ("after", after, before)):
        only = sorted(k for k in rows if k not in other)
        if only:
            print(f"only {name}: " + ", ".join(" ".join(k) for k in only))
    if flagged:
        print(f"{len(flagged)} row(s) slower than {args.slower}x: "
              + ", ".join(" ".join(k) for k in flagged))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
