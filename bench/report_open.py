#!/usr/bin/env python3
"""How fast the HTML report opens: `ficus analyze PATH --format html`, then headless Chromium
loads it from file:// ROUNDS times. Prints the page's size, the time from navigation start to
the end of the page's script and to the first painted frame after it (the page records both on
<body>), and Chromium's wall time for the page against a blank page in the same run (its start-up
cost, the baseline; the page's wall time also includes printing its whole DOM, data and all).

    python3 bench/report_open.py example-monolith
    python3 bench/report_open.py path/to/large/app --rounds 5

Uses target/release/ficus (or $CARGO_TARGET_DIR/release/ficus): build it with
`cargo build --release -p ficus` first."""
import argparse, os, re, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")


def chromium(url):
    t = time.monotonic()
    dom = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                          "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    return time.monotonic() - t, dom


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    ficus = os.path.join(TARGET, "release", "ficus")
    if not os.path.exists(ficus):
        sys.exit(f"{ficus} is missing: cargo build --release -p ficus")
    d = tempfile.mkdtemp(prefix="ficus-report-open-")
    page, blank = os.path.join(d, "report.html"), os.path.join(d, "blank.html")
    subprocess.run([ficus, "analyze", a.path, "--format", "html", "--out", page], check=True,
                   stderr=subprocess.DEVNULL)
    open(blank, "w").write("<!doctype html><html><body data-ready=\"0\"></body></html>\n")
    ready, painted, wall, base = [], [], [], []
    for _ in range(a.rounds):  # interleaved: the machine's noise hits both alike
        w, _ = chromium("file://" + blank)
        base.append(w)
        w, dom = chromium("file://" + page)
        wall.append(w)
        m = re.search(r'data-ready="(\d+)"', dom)
        if not m:
            sys.exit("the page's script did not finish")
        ready.append(int(m.group(1)))
        m = re.search(r'data-painted="(\d+)"', dom)
        painted.append(int(m.group(1)) if m else -1)
    med = statistics.median
    print(f"page: {os.path.getsize(page) / 1e6:.1f} MB")
    print(f"script done after navigation start: median {med(ready)} ms (rounds: {ready})")
    print(f"first frame painted after navigation start: median {med(painted)} ms (rounds: {painted})")
    print(f"chromium wall: page {med(wall):.2f} s, blank page {med(base):.2f} s, "
          f"page − blank {med(wall) - med(base):.2f} s, ratio {med(wall) / med(base):.2f}")


if __name__ == "__main__":
    main()
