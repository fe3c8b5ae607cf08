#!/usr/bin/env python3
"""The analyzer on labelled real applications: one table, every app, one run.

Usage:
    python3 bench/devset.py --labels DIR --trees DIR [--ficus PATH] [--only NAME,...] [--keep DIR]

  --labels  the folder holding the label files (NAME.json) and score.py, the scorer
  --trees   the folder holding one exported source tree per app (NAME/)
  --ficus   the ficus binary (default: $CARGO_TARGET_DIR or target/, release build)
  --keep    write each app's report there (NAME.json) to look at afterwards

Each app is analysed with `ficus analyze TREE --format json`, then scored: the share
of labelled handlers found as endpoints, the ARI and NMI of the proposed services
against the labels, and, for reference, the same for grouping handlers by directory
and by file. The analyzer never sees the labels; only the scorer does.

Build first: `cargo build --release -p ficus`.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

# App name -> the folder of its tree to analyse (svix: only the server workspace).
APPS = {"rauthy": "", "openobserve": "", "stump": "", "readur": "", "svix": "server"}


def default_ficus() -> str:
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(os.path.dirname(__file__), "..", "target")
    return os.path.join(target, "release", "ficus")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", required=True)
    ap.add_argument("--trees", required=True)
    ap.add_argument("--ficus", default=default_ficus())
    ap.add_argument("--only", default="")
    ap.add_argument("--keep", default="")
    a = ap.parse_args()
    if not os.path.isfile(a.ficus):
        sys.exit(f"no ficus binary at {a.ficus}: run `cargo build --release -p ficus` or pass --ficus")
    scorer = os.path.join(a.labels, "score.py")
    if not os.path.isfile(scorer):
        sys.exit(f"no score.py in {a.labels}")
    names = [n for n in APPS if not a.only or n in a.only.split(",")]
    out_dir = a.keep or tempfile.mkdtemp(prefix="ficus-devset-")
    os.makedirs(out_dir, exist_ok=True)
    rows, short = [], False
    for name in names:
        tree = os.path.join(a.trees, name, APPS[name])
        if not os.path.isdir(tree):
            sys.exit(f"{name}: no tree at {tree}")
        report = os.path.join(out_dir, f"{name}.json")
        print(f"analysing {name} ...", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        r = subprocess.run([a.ficus, "analyze", tree, "--format", "json", "--out", report],
                           capture_output=True, text=True)
        secs = time.monotonic() - t0
        if r.returncode != 0:
            rows.append((name, f"ficus exited {r.returncode}: {r.stderr.strip()[:200]}"))
            short = True
            continue
        s = subprocess.run([sys.executable, scorer, "--truth", os.path.join(a.labels, f"{name}.json"),
                            "--report", report], capture_output=True, text=True)
        if s.returncode != 0:
            rows.append((name, f"score.py exited {s.returncode}: {s.stderr.strip()[:200]}"))
            short = True
            continue
        d = json.loads(s.stdout)
        rep = json.load(open(report))
        found = d["matched"] / max(1, d["matched"] + d["unmatched"])
        m, b = d["metrics"], d["baseline_directory"]
        same = d.get("baseline_same_file", {}).get("ari", float("nan"))
        ok = found >= 0.95 and m["ari"] >= 0.5 and m["ari"] >= b["ari"]
        short |= not ok
        rows.append((name, found, m["ari"], m["nmi"], b["ari"], b["nmi"], same, len(rep["services"]),
                     len(rep["endpoints"]), secs, "yes" if ok else "no"))
    head = ("app", "found", "ARI", "NMI", "dir ARI", "dir NMI", "file ARI", "services", "endpoints", "secs", "meets")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        if len(row) == 2:
            print(f"| {row[0]} | {row[1]} |")
            continue
        n, found, ari, nmi, bari, bnmi, same, svcs, eps, secs, ok = row
        print(f"| {n} | {found:.1%} | {ari:.3f} | {nmi:.3f} | {bari:.3f} | {bnmi:.3f} | {same:.3f} | {svcs} | {eps} "
              f"| {secs:.1f} | {ok} |")
    print(f"reports in {out_dir}", file=sys.stderr)
    return 1 if short else 0


if __name__ == "__main__":
    sys.exit(main())
