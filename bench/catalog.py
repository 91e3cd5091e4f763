#!/usr/bin/env python3
"""A catalog's life on running mirrors, measured with the shipped model and the shared catalog.

1. reload: lookd ranks street scenes as fast as they come (every frame embedded) from a cache of
   the catalog's first rows; the rest of the catalog is added to the CSV and SIGHUP sent. The
   loop's per-frame latency (frame to ranking, from each recommendation message) before, during
   and after the rebuild, the swap's pause, the rebuild's time and RSS before and after.
2. fleet: N mirrors on one mosquitto; the whole catalog's cache announced once, fetched over HTTP
   from a server here: the time until every mirror serves it, and what was sent.

Run by bench/catalog (which builds lookd); prints a Markdown table and writes out/bench/catalog.json.
"""
import argparse
import http.server
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, limit=60):
    end = time.time() + limit
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


class Sub:
    """mosquitto_sub on a prefix; (arrival time, topic, payload) in a list, read by a thread."""

    def __init__(self, port, topic):
        self.p = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-v"],
                                  stdout=subprocess.PIPE, text=True)
        self.got = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            topic, _, payload = line.rstrip("\n").partition(" ")
            try:
                payload = json.loads(payload)
            except ValueError:
                pass
            self.got.append((time.time(), topic, payload))

    def wait(self, pred, limit, what="a message"):
        end = time.time() + limit
        seen = 0
        while time.time() < end:
            got = self.got[seen:]
            for item in got:
                if pred(*item):
                    return item
            seen += len(got)
            time.sleep(0.02)
        last = [m for m in self.got if m[1].endswith("/error")][-3:] or [str(m)[:300] for m in self.got[-2:]]
        raise SystemExit(f"timed out after {limit} s waiting for {what}; last messages: {last}")

    def stop(self):
        self.p.kill()


def config(path, name, model, csv, images, cache, scenes, port, extra=""):
    with open(path, "w") as f:
        f.write(f'device-id = "{name}"\nmodel = "{model}"\n[catalog]\ncsv = "{csv}"\nimages = "{images}"\n'
                f'cache = "{cache}"\n[camera]\nsource = "folder"\npath = "{scenes}"\nrate = 30.0\nmirror = false\n'
                f'[pipeline]\ncategory = "shoes"\nhold-off-ms = 0\nmax-rate = 30.0\nchange-threshold = 0.0\n'
                f'stats-interval-s = 1\n[mqtt]\nbroker = "mqtt://127.0.0.1:{port}"\n{extra}')


def pct(values, q):
    v = sorted(values)
    return v[round((len(v) - 1) * q)] if v else float("nan")


def reload_run(a, work, port):
    rows = open(a.catalog).read().splitlines()
    header, body = rows[0], rows[1:]
    # Every `every`-th row is held back and added at the reload: all categories start served.
    first = [r for i, r in enumerate(body) if i % a.every != 0]
    csv = os.path.join(work, "catalog.csv")
    cache = os.path.join(work, "reload.cache")
    open(csv, "w").write("\n".join([header] + first) + "\n")
    subprocess.run([a.lookd, "catalog", "build", "--catalog", csv, "--images", a.images, "--model", a.model,
                    "--out", cache], check=True, capture_output=True)
    shutil.copy(cache, os.path.join(work, "first.cache"))  # the fleet's mirrors start from it
    cfg = os.path.join(work, "reload.toml")
    config(cfg, "reload", a.model, csv, a.images, cache, a.scenes, port)
    sub = Sub(port, "lookd/reload/#")
    d = subprocess.Popen([a.lookd, "run", "--config", cfg], stderr=subprocess.DEVNULL)
    try:
        is_rec = lambda t, topic, p: topic.endswith("/recommendations/shoes")
        sub.wait(is_rec, 120, "a first ranking")
        time.sleep(a.settle)
        stats = lambda t, topic, p: topic.endswith("/stats")
        rss_before = sub.wait(lambda t, topic, p: stats(t, topic, p) and t > time.time() - 0.1, 5)[2]["rss_kb"]
        open(csv, "w").write("\n".join([header] + body) + "\n")
        t_signal = time.time()
        d.send_signal(signal.SIGHUP)
        ready = sub.wait(lambda t, topic, p: topic.endswith("/catalog/state") and t > t_signal
                         and p["state"] == "ready" and p["products"] > len(first), 1800, "the rebuilt catalog")
        t_ready = ready[0]
        time.sleep(a.settle)
        rss_after = sub.wait(lambda t, topic, p: stats(t, topic, p) and t > time.time() - 0.1, 5)[2]["rss_kb"]
        recs = [(t, p["latency_ms"]["total"]) for t, topic, p in sub.got if is_rec(t, topic, p)]
        phase = lambda lo, hi: [ms for t, ms in recs if lo <= t < hi]
        before = phase(t_signal - a.settle, t_signal)
        during = phase(t_signal, t_ready)
        after = phase(t_ready, t_ready + a.settle)
        gaps = [b - a_ for (a_, _), (b, _) in zip(recs, recs[1:]) if t_signal <= b < t_ready + 1]
        return {
            "products_before": len(first), "products_after": ready[2]["products"],
            "rebuild_s": round(t_ready - t_signal, 1), "swap_ms": ready[2]["swap_ms"],
            "frames_before": len(before), "frames_during": len(during), "frames_after": len(after),
            "total_p50_p95_before_ms": [round(pct(before, .5), 1), round(pct(before, .95), 1)],
            "total_p50_p95_during_ms": [round(pct(during, .5), 1), round(pct(during, .95), 1)],
            "total_p50_p95_after_ms": [round(pct(after, .5), 1), round(pct(after, .95), 1)],
            "longest_gap_between_rankings_during_s": round(max(gaps), 3) if gaps else None,
            "rss_kb_before": rss_before, "rss_kb_after": rss_after,
        }
    finally:
        d.kill()
        sub.stop()


def fleet_run(a, work, port):
    full = os.path.join(work, "full.cache")
    subprocess.run([a.lookd, "catalog", "build", "--catalog", a.catalog, "--images", a.images, "--model", a.model,
                    "--out", full], check=True, capture_output=True)
    served = os.path.join(work, "http")
    os.makedirs(served, exist_ok=True)
    shutil.copy(full, os.path.join(served, "full.cache"))
    sent = {"bytes": 0, "requests": 0}

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kw):
            super().__init__(*args, directory=served, **kw)

        def copyfile(self, source, outputfile):
            data = source.read()
            sent["bytes"] += len(data)
            sent["requests"] += 1
            outputfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/full.cache"
    announce = subprocess.run([a.lookd, "catalog", "announce", "--cache", full, "--url", url, "--version", "bench"],
                              check=True, capture_output=True, text=True).stdout.strip()
    # Each mirror starts from its own older catalog (the rows before the reload's news).
    small = os.path.join(work, "first.cache")
    daemons, subs = [], []
    fleet = '[fleet]\ntopic = "lookd/fleet/bench"\n'
    for i in range(a.mirrors):
        name = f"f{i}"
        cache = os.path.join(work, f"{name}.cache")
        shutil.copy(small, cache)
        cfg = os.path.join(work, f"{name}.toml")
        config(cfg, name, a.model, os.path.join(work, "catalog.csv"), a.images, cache, a.scenes, port, fleet)
        subs.append(Sub(port, f"lookd/{name}/#"))
        daemons.append(subprocess.Popen([a.lookd, "run", "--config", cfg], stderr=subprocess.DEVNULL))
    try:
        for s in subs:
            s.wait(lambda t, topic, p: topic.endswith("/catalog/state") and p["state"] == "ready", 120, "a mirror")
        t0 = time.time()
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", "lookd/fleet/bench", "-r",
                        "-m", announce], check=True)
        done = [s.wait(lambda t, topic, p: topic.endswith("/catalog/state") and p["version"] == "bench"
                       and p["state"] == "ready", 120, "the fleet's catalog")[0] - t0 for s in subs]
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", "lookd/fleet/bench", "-r",
                        "-n"], check=True)
        return {
            "mirrors": a.mirrors, "cache_bytes": os.path.getsize(full), "announcement_bytes": len(announce),
            "http_requests": sent["requests"], "http_bytes": sent["bytes"],
            "all_serving_s": round(max(done), 2), "first_serving_s": round(min(done), 2),
        }
    finally:
        for d in daemons:
            d.kill()
        for s in subs:
            s.stop()
        server.shutdown()


def cpu():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--lookd", required=True)
    p.add_argument("--model", default="models/default")
    p.add_argument("--catalog", required=True)
    p.add_argument("--images", required=True)
    p.add_argument("--scenes", required=True)
    p.add_argument("--every", type=int, default=5, help="hold back every N-th catalog row for the reload")
    p.add_argument("--mirrors", type=int, default=5)
    p.add_argument("--settle", type=float, default=8.0)
    p.add_argument("--out", default="out/bench/catalog.json")
    a = p.parse_args()
    work = tempfile.mkdtemp(prefix="lookd-bench-catalog-")
    port = free_port()
    broker_conf = os.path.join(work, "mosquitto.conf")
    open(broker_conf, "w").write(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    broker = subprocess.Popen(["mosquitto", "-c", broker_conf], stderr=subprocess.DEVNULL)
    wait_port(port)
    try:
        result = {"cpu": cpu(), "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
                  "reload": reload_run(a, work, port), "fleet": fleet_run(a, work, port)}
    finally:
        broker.kill()
        shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    json.dump(result, open(a.out, "w"), indent=1)
    r, f = result["reload"], result["fleet"]
    print(f"machine: {result['cpu']}, {result['cores']} cores, {result['date']}")
    print("| what | measured |\n|---|---|")
    print(f"| reload: {r['products_before']} -> {r['products_after']} products, rebuilt beside the loop | {r['rebuild_s']} s |")
    print(f"| frame to ranking, p50 / p95, before the reload | {r['total_p50_p95_before_ms'][0]} / {r['total_p50_p95_before_ms'][1]} ms ({r['frames_before']} frames) |")
    print(f"| the same during the rebuild | {r['total_p50_p95_during_ms'][0]} / {r['total_p50_p95_during_ms'][1]} ms ({r['frames_during']} frames) |")
    print(f"| the same after the swap | {r['total_p50_p95_after_ms'][0]} / {r['total_p50_p95_after_ms'][1]} ms ({r['frames_after']} frames) |")
    print(f"| longest gap between two rankings during the rebuild | {r['longest_gap_between_rankings_during_s']} s |")
    print(f"| the swap's pause of the loop | {r['swap_ms']:.2f} ms |")
    print(f"| RSS before / after | {r['rss_kb_before']} / {r['rss_kb_after']} KiB |")
    print(f"| fleet: {f['mirrors']} mirrors serving a {f['cache_bytes']} B cache after one {f['announcement_bytes']} B announcement | first {f['first_serving_s']} s, all {f['all_serving_s']} s |")
    print(f"| fleet: sent by the file server | {f['http_requests']} requests, {f['http_bytes']} B |")


if __name__ == "__main__":
    main()
