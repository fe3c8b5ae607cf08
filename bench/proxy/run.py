#!/usr/bin/env python3
"""Proxy benchmark on loopback, in one run, with wrk: direct to the upstream, what a user would
pick instead (nginx, HAProxy, Caddy as reverse proxies, one thread each), a bare Pingora proxy
(the floor), ficus with 1 route and with 1,000 routes (metrics on), and ficus with one route in
stage shadow against the same route with shadow off.
Reports req/s, p50/p99 latency, the proxy's CPU time per request and its peak memory (VmHWM),
and the ratios.

Run from the workspace root:  python3 bench/proxy/run.py [--duration 10] [--connections 50]
                              python3 bench/proxy/run.py --only shadow-off,shadow-on
Installs nginx, haproxy, caddy and wrk from Debian's packages when they are missing (needs root)."""
import argparse, json, os, re, shutil, signal, socket, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARGET = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
# The build users get: `cargo build --release` (fat LTO, one codegen unit; root Cargo.toml).
PROFILE = "release"
# The upstream's answer: 100 bytes.
ANSWER = "hello from the upstream, " + "x" * 74 + "\n"
assert len(ANSWER) == 100
procs = []


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def ensure_tools(tools=("nginx", "haproxy", "caddy", "wrk")):
    missing = [p for p in tools if shutil.which(p) is None and not os.path.exists(f"/usr/sbin/{p}")]
    if missing:
        print(f"== installing {' '.join(missing)}", flush=True)
        sh(["apt-get", "update", "-qq"])
        sh(["apt-get", "install", "-y", "-qq"] + missing, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


def check_built(bindir):
    """With --no-build, say which binary is missing rather than wait for a proxy that cannot start."""
    for binary in (os.path.join(bindir, "ficus"), os.path.join(bindir, "examples", "bare")):
        if not os.path.exists(binary):
            sys.exit(f"{binary} is missing: run without --no-build, or set CARGO_TARGET_DIR to where it was built")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start(cmd, log, env=None):
    p = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True,
                         env=dict(os.environ, **(env or {})))
    procs.append(p)
    return p


def stop_all():
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def wait_http(url, timeout=30):
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except Exception:
            time.sleep(0.1)
    sys.exit(f"no answer from {url}")


def nginx(conf_dir, body):
    os.makedirs(os.path.join(conf_dir, "logs"), exist_ok=True)
    conf = os.path.join(conf_dir, "nginx.conf")
    open(conf, "w").write(f"""worker_processes 1;
daemon off;
user root;
pid {conf_dir}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {conf_dir}/body; proxy_temp_path {conf_dir}/proxy;
  fastcgi_temp_path {conf_dir}/fcgi; uwsgi_temp_path {conf_dir}/uwsgi; scgi_temp_path {conf_dir}/scgi;
  keepalive_requests 1000000;
  {body}
}}
""")
    return ["nginx", "-p", conf_dir, "-c", conf]


def haproxy(conf_dir, listen, upstream):
    """HAProxy as a reverse proxy, one thread, connections to the upstream reused."""
    os.makedirs(conf_dir, exist_ok=True)
    conf = os.path.join(conf_dir, "haproxy.cfg")
    open(conf, "w").write(f"""global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend f
  bind {listen}
  default_backend b
backend b
  server s1 {upstream}
""")
    return ["haproxy", "-db", "-f", conf]


def caddy(conf_dir, listen, upstream):
    """Caddy as a reverse proxy (run with GOMAXPROCS=1: one thread runs Go code)."""
    os.makedirs(conf_dir, exist_ok=True)
    conf = os.path.join(conf_dir, "Caddyfile")
    open(conf, "w").write(f"""{{
  admin off
  auto_https off
}}
http://{listen} {{
  reverse_proxy {upstream}
}}
""")
    return ["caddy", "run", "--config", conf, "--adapter", "caddyfile"]


def pids_of(p):
    """The process and its children (nginx workers)."""
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(p.pid)], capture_output=True, text=True).stdout
    return [p.pid] + [int(x) for x in out.split()]


def peak_kib(pids):
    total = 0
    for pid in pids:
        try:
            m = re.search(r"VmHWM:\s+(\d+) kB", open(f"/proc/{pid}/status").read())
            total += int(m.group(1)) if m else 0
        except OSError:
            pass
    return total


def wrk(url, duration, connections, headers=()):
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    for h in headers:
        cmd += ["-H", h]
    out = subprocess.run(cmd + [url], capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    def lat(pct):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "requests": requests, "p50": lat(50), "p99": lat(99), "non2xx": int(errors.group(1)) if errors else 0,
            "socket_errors": socket_errors.group(1) if socket_errors else ""}


def cpu_seconds(pids):
    """User + system CPU time of the processes so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except OSError:
            pass
    return total


def ficus_config(path, listen, admin, upstream, routes, stage="canary", service=None, route_extra=(), proxy_extra=()):
    lines = ["version = 1", "[listen]", f'http = "{listen}"', f'admin = "{admin}"', "[server]", "threads = 1",
             "work_stealing = false", "grace_period_seconds = 0"]
    if proxy_extra:
        lines += ["[proxy]", *proxy_extra]
    lines += ["[upstreams.monolith]", f'addrs = ["{upstream}"]',
             "[upstreams.svc]", f'addrs = ["{service or upstream}"]', "[default]", 'upstream = "monolith"']
    for i in range(routes):
        lines += ["[[routes]]", f'name = "r{i}"', f'path = "/api/v{i}/items/{{id}}"', 'methods = ["GET"]',
                  'upstream = "svc"', f'stage = "{stage}"', "percent = 50", 'cohort = "header:x-user-id"',
                  *route_extra]
    open(path, "w").write("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3, help="measure every target this many times, report medians")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--only", default="", help="comma-separated keys: direct,nginx,haproxy,caddy,bare,ficus-1,ficus-1000,"
                    "shadow-off,shadow-on,shadow-all,bare-ids,ficus-ids (default: all)")
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))
    ensure_tools()
    env = dict(os.environ, CARGO_TARGET_DIR=TARGET)
    if not args.no_build:
        print(f"== building ficus and the bare Pingora example (profile {PROFILE})", flush=True)
        sh(["cargo", "build", "--quiet", "--profile", PROFILE, "-p", "ficus"], cwd=ROOT, env=env)
        sh(["cargo", "build", "--quiet", "--profile", PROFILE, "-p", "ficus-proxy", "--example", "bare"], cwd=ROOT, env=env)
    bindir = os.path.join(TARGET, PROFILE)
    check_built(bindir)
    work = tempfile.mkdtemp(prefix="ficus-bench-")
    up, ngx, hap, cad, bare, f1, f1a, f1000, f1000a, svc, soff, soffa, son, sona, sall, salla, fid, fida = (
        free_port() for _ in range(18))
    upstream = f"127.0.0.1:{up}"
    service = f"127.0.0.1:{svc}"
    start(nginx(os.path.join(work, "upstream"),
                f'server {{ listen {upstream}; location / {{ return 200 "{ANSWER[:-1]}\\n"; }} }}'),
          os.path.join(work, "upstream.log"))
    # The shadowed route's service: a second nginx with the same answer, so comparisons match.
    service_proc = start(nginx(os.path.join(work, "service"),
                               f'server {{ listen {service}; location / {{ return 200 "{ANSWER[:-1]}\\n"; }} }}'),
                         os.path.join(work, "service.log"))
    wait_http(f"http://{upstream}/")
    wait_http(f"http://{service}/")
    servers = {
        "nginx": start(nginx(os.path.join(work, "nginx"), f"""
  upstream u {{ server {upstream}; keepalive 64; }}
  server {{ listen 127.0.0.1:{ngx};
    location / {{ proxy_pass http://u; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}"""),
                       os.path.join(work, "nginx.log")),
        "haproxy": start(haproxy(os.path.join(work, "haproxy"), f"127.0.0.1:{hap}", upstream),
                         os.path.join(work, "haproxy.log")),
        "caddy": start(caddy(os.path.join(work, "caddy"), f"127.0.0.1:{cad}", upstream),
                       os.path.join(work, "caddy.log"), env={"GOMAXPROCS": "1", "HOME": work}),
        "bare pingora": start([os.path.join(bindir, "examples", "bare"), f"127.0.0.1:{bare}", upstream, "1"],
                              os.path.join(work, "bare.log")),
    }
    ficus_targets = (("ficus, 1 route", "ficus-1", 1, f1, f1a, "canary", (), ()),
                     ("ficus, 1000 routes", "ficus-1000", 1000, f1000, f1000a, "canary", (), ()),
                     ("ficus, shadow off", "shadow-off", 1, soff, soffa, "monolith", (), ()),
                     ("ficus, shadow on", "shadow-on", 1, son, sona, "shadow", (), ()),
                     ("ficus, shadow every request", "shadow-all", 1, sall, salla, "shadow",
                      ("shadow_max_per_second = 0",), ()),
                     ("ficus, ids sent, no x-ficus-upstream", "ficus-ids", 1, fid, fida, "canary", (),
                      ("upstream_header = false",)))
    admins = {}
    for name, key, routes, port, admin, stage, extra, proxy_extra in ficus_targets:
        cfg = os.path.join(work, f"{key}.toml")
        ficus_config(cfg, f"127.0.0.1:{port}", f"127.0.0.1:{admin}", upstream, routes, stage,
                     service if key.startswith("shadow") else None, extra, proxy_extra)
        servers[name] = start([os.path.join(bindir, "ficus"), "proxy", "--config", cfg],
                              os.path.join(work, f"{key}.log"))
        admins[name] = f"http://127.0.0.1:{admin}"
        wait_http(f"http://127.0.0.1:{admin}/healthz")
    servers["bare pingora, ids sent"] = servers["bare pingora"]
    ports = {"nginx": ngx, "haproxy": hap, "caddy": cad, "bare pingora": bare, "ficus, 1 route": f1, "ficus, 1000 routes": f1000,
             "ficus, shadow off": soff, "ficus, shadow on": son, "ficus, shadow every request": sall,
             "bare pingora, ids sent": bare, "ficus, ids sent, no x-ficus-upstream": fid}
    keys = {"direct": "direct", "nginx": "nginx", "haproxy": "haproxy", "caddy": "caddy", "bare pingora": "bare", "ficus, 1 route": "ficus-1",
            "ficus, 1000 routes": "ficus-1000", "ficus, shadow off": "shadow-off", "ficus, shadow on": "shadow-on",
            "ficus, shadow every request": "shadow-all", "bare pingora, ids sent": "bare-ids",
            "ficus, ids sent, no x-ficus-upstream": "ficus-ids"}
    # The pair that puts the same headers on the wire: the client sends the ids (so ficus creates
    # none) and ficus adds no x-ficus-upstream.
    ids = ["x-request-id: 0123456789abcdef0123456789abcdef",
           "traceparent: 00-0123456789abcdef0123456789abcdef-0123456789abcdef-01"]
    extra_headers = {"bare pingora, ids sent": ids, "ficus, ids sent, no x-ficus-upstream": ids}
    for name, port in ports.items():
        wait_http(f"http://127.0.0.1:{port}/api/v0/items/1")

    # Every route is a 50 % canary on the cohort header; the last route is matched.
    path = {"ficus, 1000 routes": "/api/v999/items/1"}
    headers = ["x-user-id: 42"]
    targets = [("direct", upstream, None)] + [(n, f"127.0.0.1:{p}", servers[n]) for n, p in ports.items()]
    targets = [t for t in targets if not only or keys[t[0]] in only]
    runs = {name: [] for name, _, _ in targets}
    # CPU time of the shadow's service and of the shadowing proxy, over each shadow target's runs.
    shadowed = ("ficus, shadow on", "ficus, shadow every request")
    shadow_cpu = {n: {"service": 0.0, "proxy": 0.0, "seconds": 0.0} for n in shadowed}
    # Rounds interleave the targets so that a burst of load from elsewhere on the machine does not
    # land on one target only; the median of each figure is reported.
    for round_ in range(args.rounds):
        for name, addr, proc in targets:
            url = f"http://{addr}{path.get(name, '/api/v0/items/1')}"
            if round_ == 0:
                wrk(url, 2, args.connections, headers + extra_headers.get(name, []))  # warm-up
            shadowing = name in shadowed
            if shadowing:
                before = (cpu_seconds(pids_of(service_proc)), cpu_seconds(pids_of(proc)), time.time())
            proxy_cpu = cpu_seconds(pids_of(proc)) if proc else None
            r = wrk(url, args.duration, args.connections, headers + extra_headers.get(name, []))
            # The proxy's own CPU time per request (user + system): less sensitive than req/s to
            # what else the shared cores are doing.
            r["cpu_us"] = (None if proc is None
                           else (cpu_seconds(pids_of(proc)) - proxy_cpu) / max(r["requests"], 1) * 1e6)
            if shadowing:
                shadow_cpu[name]["service"] += cpu_seconds(pids_of(service_proc)) - before[0]
                shadow_cpu[name]["proxy"] += cpu_seconds(pids_of(proc)) - before[1]
                shadow_cpu[name]["seconds"] += time.time() - before[2]
            r["mem_mib"] = peak_kib(pids_of(proc)) / 1024 if proc else None
            runs[name].append(r)
            mem = "-" if r["mem_mib"] is None else "%.1f MiB" % r["mem_mib"]
            cpu = "" if r["cpu_us"] is None else "  cpu %.1f us/req" % r["cpu_us"]
            extra = cpu + ("  non-2xx %d" % r["non2xx"] if r["non2xx"] else "") + (
                "  socket errors: " + r["socket_errors"] if r["socket_errors"] else "")
            print(f"round {round_ + 1}  {name:20} {r['rps']:>10.0f} req/s  p50 {r['p50']:.3f} ms  "
                  f"p99 {r['p99']:.3f} ms  peak {mem}{extra}", flush=True)
    results = {}
    for name, rs in runs.items():
        med = lambda k: sorted(r[k] for r in rs)[len(rs) // 2]
        results[name] = {"rps": med("rps"), "p50": med("p50"), "p99": med("p99"),
                         "cpu_us": None if rs[0]["cpu_us"] is None else med("cpu_us"),
                         "mem_mib": None if rs[0]["mem_mib"] is None else max(r["mem_mib"] for r in rs)}
    diffs = {}
    for name in shadowed:
        if name in results:
            with urllib.request.urlopen(admins[name] + "/diffs?route=r0", timeout=5) as resp:
                diffs[name] = json.load(resp)
    stop_all()

    print()
    print(f"medians of {args.rounds} rounds of {args.duration} s, wrk -t1 -c{args.connections}; "
          "proxies with 1 worker thread")
    print("| target | req/s | p50 ms | p99 ms | proxy CPU per request | peak memory |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        mem = "-" if r["mem_mib"] is None else f"{r['mem_mib']:.1f} MiB"
        cpu = "-" if r["cpu_us"] is None else f"{r['cpu_us']:.1f} µs"
        print(f"| {name} | {r['rps']:.0f} | {r['p50']:.3f} | {r['p99']:.3f} | {cpu} | {mem} |")
    print()
    have = lambda *names: all(n in results for n in names)
    if have("ficus, 1000 routes", "bare pingora", "ficus, 1 route", "nginx"):
        bare_r, ngx_r, f1000_r = results["bare pingora"], results["nginx"], results["ficus, 1000 routes"]
        print(f"ficus 1000 routes / bare pingora throughput: {f1000_r['rps'] / bare_r['rps']:.3f} (target >= 0.9)")
        print(f"ficus 1 route / bare pingora throughput:     {results['ficus, 1 route']['rps'] / bare_r['rps']:.3f}")
        print(f"bare pingora / ficus 1000 routes, CPU per request: {bare_r['cpu_us'] / f1000_r['cpu_us']:.3f} "
              f"({bare_r['cpu_us']:.1f} / {f1000_r['cpu_us']:.1f} µs)")
        print(f"ficus 1000 routes / nginx throughput:        {f1000_r['rps'] / ngx_r['rps']:.3f}")
        print(f"ficus 1000 routes p99 / nginx p99:           {f1000_r['p99'] / ngx_r['p99']:.3f} (target <= 1)")
        print(f"ficus 1000 routes peak memory:               {f1000_r['mem_mib']:.1f} MiB (target < 64)")
    if have("ficus, ids sent, no x-ficus-upstream", "bare pingora, ids sent"):
        r = results["ficus, ids sent, no x-ficus-upstream"]["rps"] / results["bare pingora, ids sent"]["rps"]
        c = results["bare pingora, ids sent"]["cpu_us"] / results["ficus, ids sent, no x-ficus-upstream"]["cpu_us"]
        print(f"same headers on the wire, ficus 1 route / bare pingora: {r:.3f}; CPU per request, bare / ficus: {c:.3f}")
    for name in shadowed:
        if not have(name, "ficus, shadow off"):
            continue
        on, off = results[name], results["ficus, shadow off"]
        print(f"{name} / shadow off: throughput {on['rps'] / off['rps']:.3f} (target >= 0.8), "
              f"p99 {on['p99'] / off['p99']:.3f}")
        cpu = shadow_cpu[name]
        secs = cpu["seconds"] or 1
        print(f"  during its runs ({secs:.0f} s): the service (nginx) used {cpu['service']:.1f} CPU-s "
              f"({100 * cpu['service'] / secs:.0f}% of a core), the proxy {cpu['proxy']:.1f} CPU-s "
              f"({100 * cpu['proxy'] / secs:.0f}% of a core)")
        d = diffs.get(name)
        if d:
            total = d["compared"] + d["dropped"] + d["failed"] + d["skipped"] + d.get("sampled_out", 0)
            print(f"  shadow: {d['compared']} compared ({d['mismatched']} mismatched), {d.get('sampled_out', 0)} sampled "
                  f"out (over shadow_max_per_second), {d['dropped']} dropped (queue full), {d['failed']} failed, "
                  f"of {total} eligible requests")

if __name__ == "__main__":
    try:
        main()
    finally:
        stop_all()
