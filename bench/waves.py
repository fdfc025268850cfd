#!/usr/bin/python3
"""Synchronized waves through a proxy, as test/Ferry.FunctionalTests/RealServers sends them (standard library only).

Each wave: every client sends one request at once (GETs and POSTs with a small body, each with a unique X-Request-Id),
all wait for their answers, then all pause before the next wave. Clients keep their connection to the proxy between
waves, as browsers and HTTP client libraries do. Waves go on until --duration has passed.

At the end the servers' files of processed requests ("METHOD id" per line) are read, and one line of JSON is printed:
per method, requests sent, 2xx, 5xx, dropped (no answer: reset, close, timeout), and for POSTs how many were processed
more than once or never.
"""
import argparse
import http.client
import json
import queue
import random
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

TIMEOUT = 30


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True, help="the proxy's port on 127.0.0.1")
    p.add_argument("--path", required=True, help="request path, e.g. /gunicorn/hello.txt")
    p.add_argument("--name", required=True, help="prefix of the request ids, unique per run")
    p.add_argument("--duration", type=float, required=True, help="seconds of waves")
    p.add_argument("--sizes", default="8", help="requests per method in each wave, cycled: 8 or 12,24,48")
    p.add_argument("--pause", type=float, required=True, help="seconds between waves")
    p.add_argument("--jitter", default="0,0", help="min,max seconds added to each pause, e.g. -0.1,0.5")
    p.add_argument("--seen", action="append", default=[], help="a server's file of processed requests (repeatable)")
    return p.parse_args()


class Counts:
    def __init__(self):
        self.lock = threading.Lock()
        self.ids = []
        self.ok = self.server_errors = self.other = self.dropped = 0


def main():
    args = parse()
    sizes = [int(s) for s in args.sizes.split(",")]
    low, high = (float(x) for x in args.jitter.split(","))
    counts = {"GET": Counts(), "POST": Counts()}
    idle = queue.SimpleQueue()  # client connections kept between waves
    rng = random.Random(1)

    def send(method, request_id):
        c = counts[method]
        with c.lock:
            c.ids.append(request_id)
        try:
            conn = idle.get_nowait()
        except queue.Empty:
            conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=TIMEOUT)
        body = f"order={request_id}&quantity=3".encode() if method == "POST" else None
        headers = {"X-Request-Id": request_id}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, args.path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            with c.lock:
                c.dropped += 1
            return
        with c.lock:
            if 200 <= response.status < 300:
                c.ok += 1
            elif response.status >= 500:
                c.server_errors += 1
            else:
                c.other += 1
        if response.will_close:
            conn.close()
        else:
            idle.put(conn)

    deadline = time.monotonic() + args.duration
    wave = 0
    with ThreadPoolExecutor(max_workers=2 * max(sizes)) as pool:
        while True:
            n = sizes[wave % len(sizes)]
            jobs = [pool.submit(send, "GET", f"{args.name}-w{wave}-g{i}") for i in range(n)]
            jobs += [pool.submit(send, "POST", f"{args.name}-w{wave}-p{i}") for i in range(n)]
            for job in jobs:
                job.result()
            wave += 1
            pause = args.pause + rng.uniform(low, high)
            if time.monotonic() + pause >= deadline:
                break
            time.sleep(pause)

    processed = {}
    for path in args.seen:
        try:
            with open(path, encoding="ascii", errors="replace") as f:
                for line in f:
                    key = line.strip()
                    processed[key] = processed.get(key, 0) + 1
        except FileNotFoundError:
            pass
    result = {"waves": wave}
    for method, c in counts.items():
        times = [processed.get(f"{method} {i}", 0) for i in c.ids]
        result[method] = {
            "sent": len(c.ids), "ok": c.ok, "5xx": c.server_errors, "other": c.other, "dropped": c.dropped,
            "twice": sum(1 for t in times if t > 1), "never": sum(1 for t in times if t == 0),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
