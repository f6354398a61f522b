#!/usr/bin/env python3
"""Instructions per proxied request, counted by callgrind: idgate next to the bare hyper floor.

Wall-clock figures on a shared 2-vCPU VM move by ±10% from run to run; an instruction count
does not, so this is how a change to the data path is judged before `run.py` measures it.
Each proxy runs under `valgrind --tool=callgrind` with one worker, behind the same upstream
(an nginx answering "ok"); after a warm-up, instrumentation is switched on for a fixed-length
`wrk -t1 -c4` run and the user-space instructions executed are divided by the requests
answered. Installs valgrind, wrk and nginx from Debian when missing.

  benches/load/instructions.py [--idgate BIN] [--duration 4] [--keep DIR]

--keep DIR keeps each row's callgrind profile there (callgrind.N.1, N = the row's number, from
0), for `callgrind_annotate` to say where the instructions went.

Rows: an ungated GET and an ungated 120-byte JSON POST through idgate and the floor, and a
gated JSON sign-up through idgate (lists of 1,000 entries: a lookup costs the same at 1M).
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the load benchmark's helpers: nginx, wrk, ports, lists)


def ensure_valgrind():
    if shutil.which("valgrind") and shutil.which("callgrind_control"):
        return
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    run.sh(*sudo, "apt-get", "update", "-qq")
    run.sh(*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", "valgrind",
           env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


def counted(cmd, port, url, script, duration, out, env=None):
    """Instructions per request of `cmd` (listening on `port`) while wrk sends to `url`."""
    vg = subprocess.Popen(["valgrind", "--tool=callgrind", "--instr-atstart=no",
                           f"--callgrind-out-file={out}"] + cmd,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        run.wait_port(port, timeout=120)
        run.wrk(url, 2, script, threads=1, conns=4)
        subprocess.run(["callgrind_control", "-i", "on", str(vg.pid)], check=True, capture_output=True)
        r = run.wrk(url, duration, script, threads=1, conns=4)
        subprocess.run(["callgrind_control", "-i", "off", str(vg.pid)], check=True, capture_output=True)
        subprocess.run(["callgrind_control", "-d", str(vg.pid)], check=True, capture_output=True)
    finally:
        vg.terminate()
        vg.wait()
    with open(out + ".1") as f:
        total = next(int(line.split()[1]) for line in f if line.startswith("totals:"))
    requests = r["rps"] * duration
    if r["errors"] or r["non2xx"] or requests <= 0:
        raise SystemExit(f"{cmd[0]} {url}: {r['errors']} socket errors, {r['non2xx']} non-2xx")
    return total / requests, int(requests)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--idgate", help="an idgate binary (default: build target/release/idgate)")
    ap.add_argument("--duration", type=int, default=4)
    ap.add_argument("--keep", help="a directory to keep the callgrind profiles in")
    args = ap.parse_args()

    run.ensure_tools()
    ensure_valgrind()
    if args.idgate:
        idgate = os.path.abspath(args.idgate)
    else:
        run.sh("cargo", "build", "--release", "--quiet", cwd=run.ROOT)
        idgate = os.path.join(run.ROOT, "target", "release", "idgate")
    run.sh("cargo", "build", "--release", "--quiet", "--example", "hyper_floor", cwd=run.ROOT)
    floor = os.path.join(run.ROOT, "target", "release", "examples", "hyper_floor")

    work = tempfile.mkdtemp(prefix="idgate-instr-")
    os.chmod(work, 0o755)
    upstream = None
    try:
        up, ig, fl, admin = run.free_port(), run.free_port(), run.free_port(), run.free_port()
        upstream = run.start_nginx(work, "upstream", f"""
  server {{ listen 127.0.0.1:{up} backlog=4096; location / {{ return 200 "ok\\n"; }} }}""")
        body = '{"email":"user77@allowed77.com","password":"correct horse battery staple 0123456789ab"}'
        body = body + " " * max(0, 120 - len(body))
        post = os.path.join(work, "post.lua")
        with open(post, "w") as f:
            f.write(run.WRK_POST.format(body=body))
        run.write_lists(work, 1000)
        cfg = os.path.join(work, "idgate.yaml")
        with open(cfg, "w") as f:
            f.write(f"""listen:
  - {{ addr: "127.0.0.1:{ig}" }}
upstream: http://127.0.0.1:{up}
admin: {{ listen: "127.0.0.1:{admin}" }}
store: {{ sqlite: {work}/data/idgate.db }}
lists:
  files: {{ allow: [allow.txt], block: [block.txt] }}
routes:
  - {{ name: sign-up, path: /api/sign-up, kind: sign_up, identifier: [{{ json: /email }}] }}
reload: {{ debounce: 100ms, interval: 0s }}
workers: 1
""")
        run.wait_port(up)
        gate = [idgate, "run", "-c", cfg]
        bare = [floor, f"127.0.0.1:{fl}", f"127.0.0.1:{up}", "1"]
        env = dict(os.environ, IDGATE_LOG="warn")
        rows = [
            ("GET (ungated)", "idgate", gate, ig, "/small", None, env),
            ("GET (ungated)", "floor", bare, fl, "/small", None, None),
            ("POST 120 B JSON (ungated)", "idgate", gate, ig, "/api/other", post, env),
            ("POST 120 B JSON (ungated)", "floor", bare, fl, "/api/other", post, None),
            ("POST sign-up (gated)", "idgate", gate, ig, "/api/sign-up", post, env),
        ]
        print(f"{'scenario':28} {'proxy':7} {'instructions/request':>21} {'requests':>9}")
        for i, (name, who, cmd, port, path, script, e) in enumerate(rows):
            per, n = counted(cmd, port, f"http://127.0.0.1:{port}{path}", script, args.duration,
                             os.path.join(work, f"callgrind.{i}"), env=e)
            print(f"{name:28} {who:7} {per:21,.0f} {n:9}")
            if args.keep:
                os.makedirs(args.keep, exist_ok=True)
                shutil.copy(os.path.join(work, f"callgrind.{i}.1"), args.keep)
            time.sleep(0.2)
        print(f"(callgrind, one worker, wrk -t1 -c4 for {args.duration} s after a 2 s warm-up; "
              "user-space instructions of the proxy process per request answered)")
    finally:
        if upstream:
            upstream.terminate()
            upstream.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
