#!/usr/bin/env python3
"""idgate next to nginx in one run, on one machine, against the same upstream.

Installs nginx and wrk from Debian when missing, builds idgate (release), starts one upstream
(an nginx serving fixed bodies), nginx as a reverse proxy with upstream keepalive, and idgate
with 1,000,000 entries in each list; then runs wrk against each, alternating the order over
several rounds: ungated GET (small and 4 KiB), ungated POST with a 120-byte JSON body, and a
gated sign-up POST (through idgate) next to the same POST through nginx. Prints one table:
req/s, p50, p99, CPU seconds and peak RSS of the proxy, and the ratios idgate / nginx.

  benches/load/run.py [--rounds 3] [--duration 5] [--entries 1000000] [--reload]

--tls adds the TLS mode: h2load over TLS (HTTP/2, ALPN) against idgate and nginx with the same
certificate and upstream: an ungated GET and a gated sign-up POST (nginx: the same POST proxied).

--reload adds the reload mode: while wrk sends gated sign-ups, the 1M-entry allow-list file
is replaced (atomic rename) and the time until the new list is enforced is measured, with the
socket errors and non-2xx answers wrk saw during the reload.
"""
import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def sh(*args, **kw):
    return subprocess.run(args, check=True, **kw)


def ensure_tools():
    missing = [p for p, b in (("nginx", "nginx"), ("wrk", "wrk"), ("nghttp2-client", "h2load"), ("openssl", "openssl"))
               if not shutil.which(b) and not os.path.exists("/usr/sbin/" + b)]
    if missing:
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        sh(*sudo, "apt-get", "update", "-qq")
        sh(*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing,
           env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def nginx_bin():
    return shutil.which("nginx") or "/usr/sbin/nginx"


def start_nginx(work, name, body):
    conf = os.path.join(work, f"{name}.conf")
    with open(conf, "w") as f:
        f.write(f"""
worker_processes auto;
pid {work}/{name}.pid;
error_log {work}/{name}.error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {work}/{name}-body;
  proxy_temp_path {work}/{name}-proxy;
  fastcgi_temp_path {work}/{name}-fcgi;
  uwsgi_temp_path {work}/{name}-uwsgi;
  scgi_temp_path {work}/{name}-scgi;
  keepalive_requests 1000000;
  {body}
}}
""")
    p = subprocess.Popen([nginx_bin(), "-c", conf, "-g", "daemon off;"], stderr=subprocess.DEVNULL)
    return p


def children(pid):
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
        return [int(x) for x in out.split()]
    except OSError:
        return []


def cpu_seconds(pids):
    """User and system CPU seconds used so far by these processes (all their threads)."""
    tick = os.sysconf("SC_CLK_TCK")
    user = system = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            user += int(fields[11])
            system += int(fields[12])
        except OSError:
            pass
    return user / tick, system / tick


def rss_mb(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


WRK_POST = """
wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
"""


def to_ms(v):
    m = re.match(r"([\d.]+)(us|ms|s)", v)
    if not m:
        return float("nan")
    n, unit = float(m.group(1)), m.group(2)
    return n / 1000 if unit == "us" else n * 1000 if unit == "s" else n


def wrk(url, duration, script=None, threads=2, conns=64):
    args = ["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{duration}s", "--latency"]
    if script:
        args += ["-s", script]
    out = subprocess.run(args + [url], capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = int((re.search(r"Non-2xx or 3xx responses: (\d+)", out) or [0, 0])[1])
    return {"rps": rps, "p50": to_ms(lat.get("50", "nan")), "p99": to_ms(lat.get("99", "nan")),
            "errors": errors, "non2xx": non2xx, "raw": out}


def write_lists(work, n, tag=""):
    allow = os.path.join(work, "allow.txt")
    block = os.path.join(work, "block.txt")
    with open(allow + ".tmp", "w") as f:
        f.writelines(f"user{i}@allowed{i % 5000}{tag}.com\n" for i in range(n))
    os.replace(allow + ".tmp", allow)
    if not os.path.exists(block):
        with open(block, "w") as f:
            f.writelines(f"user{i}@blocked{i % 5000}.com\n" for i in range(n))
    return allow, block


def print_table(args, scenarios, results, contenders):
    print()
    print(f"{'scenario':32} {'proxy':7} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU s':>7} {'µs/req':>7} {'usr':>5} {'sys':>5} {'RSS MB':>7} {'errors':>6} {'non2xx':>6}")
    for name, *_ in scenarios:
        row = {}
        for who, _port, pids in contenders:
            rs = results[(name, who)]
            med = lambda k: sorted(x[k] for x in rs)[len(rs) // 2]
            row[who] = {k: med(k) for k in ("rps", "p50", "p99", "cpu", "us", "usr", "sys")}
            row[who]["rss"] = rss_mb(pids())
            row[who]["errors"] = sum(x["errors"] for x in rs)
            row[who]["non2xx"] = sum(x["non2xx"] for x in rs)
            v = row[who]
            print(f"{name:32} {who:7} {v['rps']:9.0f} {v['p50']:8.2f} {v['p99']:8.2f} {v['cpu']:7.1f} {v['us']:7.1f} {v['usr']:5.1f} {v['sys']:5.1f} {v['rss']:7.0f} {v['errors']:6} {v['non2xx']:6}")
        b = row["nginx"]
        for who, label in (("idgate", "ratio"), ("floor", "floor/n")):
            if who in row:
                a = row[who]
                print(f"{'':32} {label:7} {a['rps'] / b['rps']:9.2f} {a['p50'] / b['p50']:8.2f} {a['p99'] / b['p99']:8.2f} {'':7} {a['us'] / b['us']:7.2f} {a['usr'] / b['usr']:5.2f} {a['sys'] / b['sys']:5.2f}")
    print(f"\n(median of {args.rounds} rounds of {args.duration} s, wrk -t2 -c64, order alternating; µs/req = the proxy's "
          f"CPU time (user + system, all its processes) per request, split into usr (user space: the proxy's code) and "
          f"sys (kernel: its socket calls); "
          f"the gated row compares idgate's checked sign-up with nginx's plain POST proxying; "
          f"ratio = idgate / nginx; floor = examples/hyper_floor.rs, a bare hyper proxy (--floor), floor/n = floor / nginx; "
          f"nginx headers: {args.nginx_headers}; "
          f"{os.cpu_count()} cores shared by wrk, both proxies and the upstream)")



def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--reload", action="store_true")
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--no-http", action="store_true", help="skip the plain-HTTP wrk table")
    ap.add_argument("--idgate", help="an idgate binary to measure (default: build target/release/idgate)")
    ap.add_argument("--workers", type=int, help="idgate's `workers:` (data-path threads; default auto, one per CPU)")
    ap.add_argument("--nginx-headers", choices=("same", "minimal"), default="same",
                    help="same (default): nginx also sets X-Forwarded-Proto/Host and a request id, as idgate "
                         "does on every request; minimal: only Host and X-Forwarded-For")
    ap.add_argument("--floor", action="store_true",
                    help="also measure examples/hyper_floor.rs, a bare hyper + tokio proxy: what any hyper-based proxy costs")
    args = ap.parse_args()

    ensure_tools()
    if args.idgate:
        idgate = os.path.abspath(args.idgate)
    else:
        sh("cargo", "build", "--release", "--quiet", cwd=ROOT)
        idgate = os.path.join(ROOT, "target", "release", "idgate")
    work = tempfile.mkdtemp(prefix="idgate-load-")
    os.chmod(work, 0o755)  # nginx's workers (nobody) read the 4 KiB body from here
    procs = []
    try:
        up, ng, ig, admin = free_port(), free_port(), free_port(), free_port()
        with open(os.path.join(work, "4k.txt"), "w") as f:
            f.write("x" * 4096)
        procs.append(start_nginx(work, "upstream", f"""
  server {{
    listen 127.0.0.1:{up} backlog=4096;
    location = /small {{ return 200 "ok\\n"; }}
    location = /4k {{ default_type text/plain; alias {work}/4k.txt; }}
    location / {{ return 200 "ok\\n"; }}
  }}"""))
        ngs, igs = free_port(), free_port()
        cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
        sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
           "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
           "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # What idgate does to every request, done by nginx too (--nginx-headers same): the
        # forwarded scheme and host, and a request id (the client's, or a new one) sent up
        # and returned on the answer.
        same_work = "" if args.nginx_headers == "minimal" else """
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $host;
      proxy_set_header X-Request-Id $rid;
      add_header X-Request-Id $rid always;"""
        procs.append(start_nginx(work, "proxy", f"""
  map $http_x_request_id $rid {{ default $http_x_request_id; "" $request_id; }}
  upstream app {{ server 127.0.0.1:{up}; keepalive 256; }}
  server {{
    listen 127.0.0.1:{ng} backlog=4096;
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;{same_work}
    }}
  }}
  server {{
    listen 127.0.0.1:{ngs} ssl http2 backlog=4096;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;{same_work}
    }}
  }}"""))
        email = "user77@allowed77.com"
        body = '{"email":"%s","password":"correct horse battery staple 0123456789ab"}' % email
        body = body + " " * max(0, 120 - len(body))
        post = os.path.join(work, "post.lua")
        with open(post, "w") as f:
            f.write(WRK_POST.format(body=body))
        body_file = os.path.join(work, "body.json")
        with open(body_file, "w") as f:
            f.write(body)
        # Every file is written before idgate starts: it watches this directory, and a write
        # after start-up would make it re-read the lists in the middle of a measurement.
        t = time.time()
        write_lists(work, args.entries)
        gen = time.time() - t
        cfg = os.path.join(work, "idgate.yaml")
        with open(cfg, "w") as f:
            f.write(f"""listen:
  - {{ addr: "127.0.0.1:{ig}" }}
  - {{ addr: "127.0.0.1:{igs}", tls: {{ cert: {cert}, key: {key} }} }}
upstream: http://127.0.0.1:{up}
admin: {{ listen: "127.0.0.1:{admin}" }}
store: {{ sqlite: {work}/data/idgate.db }}
lists:
  max_entries: {max(args.entries, 20000)}
  files: {{ allow: [allow.txt], block: [block.txt] }}
routes:
  - {{ name: sign-up, path: /api/sign-up, kind: sign_up, identifier: [{{ json: /email }}] }}
reload: {{ debounce: 100ms, interval: 0s }}
""" + (f"workers: {args.workers}\n" if args.workers else ""))
        t = time.time()
        # Reload lines (with their timing) are kept; per-request logging is off as in nginx.
        env = dict(os.environ, IDGATE_LOG=os.environ.get("IDGATE_LOG", "warn,idgate::reload=info"))
        gate = subprocess.Popen([idgate, "run", "-c", cfg], stderr=open(os.path.join(work, "idgate.log"), "w"),
                                env=env)
        procs.append(gate)
        for p in (up, ng, ig, ngs, igs):
            wait_port(p)
        startup = time.time() - t
        print(f"lists: {args.entries} entries each (generated in {gen:.1f} s); idgate start-up with them: {startup:.2f} s")
        print(f"idgate RSS after start-up: {rss_mb([gate.pid]):.0f} MB")

        nginx_workers = lambda: children(procs[1].pid) or [procs[1].pid]
        contenders = [("idgate", ig, lambda: [gate.pid]), ("nginx", ng, nginx_workers)]
        if args.floor and not args.no_http:
            sh("cargo", "build", "--release", "--quiet", "--example", "hyper_floor", cwd=ROOT)
            fl = free_port()
            floor = subprocess.Popen([os.path.join(ROOT, "target", "release", "examples", "hyper_floor"),
                                      f"127.0.0.1:{fl}", f"127.0.0.1:{up}"] + ([str(args.workers)] if args.workers else []), stderr=subprocess.DEVNULL)
            procs.append(floor)
            wait_port(fl)
            contenders.append(("floor", fl, lambda: [floor.pid]))
        scenarios = [
            ("GET small (ungated)", "/small", None, "/small"),
            ("GET 4 KiB (ungated)", "/4k", None, "/4k"),
            ("POST 120 B JSON (ungated)", "/other", post, "/other"),
            ("POST sign-up (gated vs plain)", "/api/sign-up", post, "/api/sign-up"),
        ]
        results = {}
        for r in range(0 if args.no_http else args.rounds):
            for name, ipath, script, npath in scenarios:
                # Each round starts with the next contender.
                order = contenders[r % len(contenders):] + contenders[:r % len(contenders)]
                for who, port, pids in order:
                    path = ipath if who == "idgate" else npath
                    u0, s0 = cpu_seconds(pids())
                    res = wrk(f"http://127.0.0.1:{port}{path}", args.duration, script)
                    u1, s1 = cpu_seconds(pids())
                    res["cpu"] = (u1 - u0) + (s1 - s0)
                    # CPU per request: unlike req/s, it holds up when other work shares the cores.
                    # Split into user space (the proxy's own code) and the kernel (the sockets).
                    n = max(res["rps"] * args.duration, 1)
                    res["us"] = res["cpu"] / n * 1e6
                    res["usr"] = (u1 - u0) / n * 1e6
                    res["sys"] = (s1 - s0) / n * 1e6
                    results.setdefault((name, who), []).append(res)
        if not args.no_http:
            print_table(args, scenarios, results, contenders)

        if args.tls:
            print("\nTLS mode: h2load over TLS + HTTP/2 (ALPN h2), same certificate and upstream")
            rows = {}
            for r in range(args.rounds):
                order = [("idgate", igs), ("nginx", ngs)]
                if r % 2:
                    order.reverse()
                for name, path, data in (("GET small (ungated)", "/small", None),
                                         ("POST sign-up (gated vs plain)", "/api/sign-up", body_file)):
                    for who, port in order:
                        cmd = ["h2load", "-c", "16", "-m", "32", "-D", str(args.duration), "-t", "2"]
                        if data:
                            cmd += ["-d", data, "-H", "content-type: application/json"]
                        out = subprocess.run(cmd + [f"https://127.0.0.1:{port}{path}"], capture_output=True, text=True).stdout
                        m = re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", out)
                        ok = re.search(r"(\d+) succeeded, (\d+) failed, (\d+) errored", out)
                        status2xx = re.search(r"status codes: (\d+) 2xx", out)
                        rows.setdefault((name, who), []).append(
                            (float(m.group(1)) if m else 0.0, int(ok.group(2)) + int(ok.group(3)) if ok else -1,
                             int(status2xx.group(1)) if status2xx else 0))
            print(f"{'scenario':32} {'proxy':7} {'req/s':>9} {'failed':>7}")
            for name in ("GET small (ungated)", "POST sign-up (gated vs plain)"):
                med = {}
                for who in ("idgate", "nginx"):
                    rs = rows[(name, who)]
                    med[who] = sorted(x[0] for x in rs)[len(rs) // 2]
                    print(f"{name:32} {who:7} {med[who]:9.0f} {sum(x[1] for x in rs):7}")
                print(f"{'':32} {'ratio':7} {med['idgate'] / med['nginx']:9.2f}")
            print(f"(median of {args.rounds} rounds of {args.duration} s, h2load -c16 -m32 -t2)")

        if args.reload:
            print("\nreload mode: replacing the allow-list file while wrk sends gated sign-ups")
            new_email = "user78@allowed78new.com"
            steady = wrk(f"http://127.0.0.1:{ig}/api/sign-up", args.duration, post)
            wrk_proc = subprocess.Popen(["wrk", "-t", "2", "-c", "64", "-d", f"{args.duration * 3}s", "--latency", "-s", post,
                                         f"http://127.0.0.1:{ig}/api/sign-up"], stdout=subprocess.PIPE, text=True)
            time.sleep(args.duration)
            # The new file keeps the benchmarked address and adds new ones.
            t = time.time()
            tmp = os.path.join(work, "allow.txt.new")
            with open(tmp, "w") as f:
                f.write(f"{email}\n")
                f.writelines(f"user{i}@allowed{i % 5000}new.com\n" for i in range(args.entries - 1))
            t = time.time()
            os.replace(tmp, os.path.join(work, "allow.txt"))
            applied = None
            while time.time() - t < 30:
                req = urllib.request.Request(f"http://127.0.0.1:{ig}/api/sign-up", data=('{"email":"%s"}' % new_email).encode(),
                                             headers={"Content-Type": "application/json"})
                try:
                    urllib.request.urlopen(req, timeout=5)
                    applied = time.time() - t
                    break
                except urllib.error.HTTPError:
                    time.sleep(0.01)
            out = wrk_proc.communicate()[0]
            lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
            errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
            non2xx = int((re.search(r"Non-2xx or 3xx responses: (\d+)", out) or [0, 0])[1])
            print(f"  new 1M-entry list enforced {applied:.2f} s after the rename (includes the {0.1:.1f} s debounce)" if applied
                  else "  new list NOT enforced within 30 s")
            print(f"  during the run: socket errors {errors}, non-2xx {non2xx}, p99 {to_ms(lat.get('99', 'nan')):.2f} ms "
                  f"(steady state p99 {steady['p99']:.2f} ms)")
            print(f"  idgate peak RSS: {rss_mb([gate.pid]):.0f} MB")
            with open(os.path.join(work, "idgate.log")) as f:
                for line in f:
                    if "reload" in line:
                        print("  idgate log: " + re.sub(r"\x1b\[[0-9;]*m", "", line.strip()))
    finally:
        for p in procs:
            try:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=10)
            except Exception:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
