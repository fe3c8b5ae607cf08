#!/usr/bin/env python3
"""Instructions per request, counted by valgrind's callgrind: the same targets as run.py, but a
count that does not depend on what else the machine is doing. wrk's req/s on a shared two-core
machine moves by ±10 % between rounds; this moves by well under 1 %.

Each proxy runs under callgrind in front of the nginx upstream; after 300 warm-up requests its
counters are zeroed, then N requests are sent one after another on one keep-alive connection and
the counters dumped. The figure is user-space instructions of the whole proxy process (every
thread, background work included: health checks and timers run by the clock, and valgrind slows
the requests down, so they weigh more here than at full speed) divided by N. System time is not counted: both proxies make the
same syscalls per request (see README.md).

Run from the workspace root:  python3 bench/proxy/instructions.py [--requests 2000] [--no-build]
Installs nginx and valgrind from Debian's packages when they are missing (needs root)."""
import argparse, glob, http.client, os, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402  (the helpers of the wrk benchmark)

IDS = {"x-request-id": "0123456789abcdef0123456789abcdef",
       "traceparent": "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01"}


def count(name, command, url_path, port, headers, requests, work):
    out = os.path.join(work, f"{name}.callgrind")
    proc = bench.start(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"] + command,
                       os.path.join(work, f"{name}.log"))
    bench.wait_http(f"http://127.0.0.1:{port}{url_path}", timeout=180)

    def send(n):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for _ in range(n):
            conn.request("GET", url_path, headers=headers)
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                sys.exit(f"{name}: {url_path} answered {resp.status}")
        conn.close()

    send(300)
    subprocess.run(["callgrind_control", "--zero", str(proc.pid)], check=True, capture_output=True, timeout=120)
    send(requests)
    subprocess.run(["callgrind_control", "--dump", str(proc.pid)], check=True, capture_output=True, timeout=120)
    dumps = []
    deadline = time.time() + 60
    while not dumps and time.time() < deadline:
        dumps = [d for d in glob.glob(out + ".*") if os.path.getsize(d) > 0]
        time.sleep(0.2)
    if not dumps:
        sys.exit(f"{name}: callgrind wrote no dump")
    total = None
    for line in open(max(dumps, key=os.path.getmtime)):
        if line.startswith("summary:") or line.startswith("totals:"):
            total = int(line.split()[1])
            break
    if total is None:
        sys.exit(f"{name}: no instruction total in {max(dumps, key=os.path.getmtime)}")
    os.killpg(proc.pid, 15)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()
    return total / requests


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    bench.ensure_tools(("nginx", "valgrind"))
    env = dict(os.environ, CARGO_TARGET_DIR=bench.TARGET)
    if not args.no_build:
        print(f"== building ficus and the bare Pingora example (profile {bench.PROFILE})", flush=True)
        bench.sh(["cargo", "build", "--quiet", "--profile", bench.PROFILE, "-p", "ficus"], cwd=bench.ROOT, env=env)
        bench.sh(["cargo", "build", "--quiet", "--profile", bench.PROFILE, "-p", "ficus-proxy", "--example", "bare"],
                 cwd=bench.ROOT, env=env)
    bindir = os.path.join(bench.TARGET, bench.PROFILE)
    bench.check_built(bindir)
    work = tempfile.mkdtemp(prefix="ficus-instructions-")
    upstream = f"127.0.0.1:{bench.free_port()}"
    bench.start(bench.nginx(os.path.join(work, "upstream"),
                            f'server {{ listen {upstream}; location / {{ return 200 "{bench.ANSWER[:-1]}\\n"; }} }}'),
                os.path.join(work, "upstream.log"))
    bench.wait_http(f"http://{upstream}/")
    user = {"x-user-id": "42"}
    results = {}
    # (name, kind, routes, client sends the ids, ficus [proxy] lines)
    targets = (("bare pingora", "bare", 0, False, ()),
               ("ficus, 1 route", "ficus", 1, False, ()),
               ("ficus, 1000 routes", "ficus", 1000, False, ()),
               ("bare pingora, ids sent", "bare", 0, True, ()),
               ("ficus, ids sent, no x-ficus-upstream", "ficus", 1, True, ("upstream_header = false",)))
    for name, kind, routes, ids, proxy_extra in targets:
        port = bench.free_port()
        if kind == "bare":
            command = [os.path.join(bindir, "examples", "bare"), f"127.0.0.1:{port}", upstream, "1"]
            path = "/api/v0/items/1"
        else:
            cfg = os.path.join(work, f"ficus-{routes}-{int(ids)}.toml")
            bench.ficus_config(cfg, f"127.0.0.1:{port}", f"127.0.0.1:{bench.free_port()}", upstream, routes,
                               proxy_extra=proxy_extra)
            command = [os.path.join(bindir, "ficus"), "proxy", "--config", cfg]
            path = f"/api/v{routes - 1}/items/1"
        headers = dict(user, **IDS) if ids else user
        results[name] = count(name.replace(" ", "_").replace(",", ""), command, path, port, headers, args.requests, work)
        print(f"{name:40} {results[name]:>9.0f} instructions per request", flush=True)
    bench.stop_all()
    print()
    print(f"callgrind, {args.requests} sequential keep-alive requests per target, after 300 warm-up requests")
    print("| target | instructions per request |")
    print("|---|---:|")
    for name, v in results.items():
        print(f"| {name} | {v:.0f} |")
    print()
    bare, ids = results["bare pingora"], results["bare pingora, ids sent"]
    print(f"bare pingora / ficus 1000 routes:  {bare / results['ficus, 1000 routes']:.3f} (target >= 0.95)")
    print(f"bare pingora / ficus 1 route:      {bare / results['ficus, 1 route']:.3f}")
    print(f"same headers on the wire, bare / ficus: {ids / results['ficus, ids sent, no x-ficus-upstream']:.3f}")
    print(f"what bare pingora pays to forward the two ids: {ids - bare:+.0f} instructions per request")


if __name__ == "__main__":
    try:
        main()
    finally:
        bench.stop_all()
