"""Benchmark the Meta sandbox: requests/s without latency, and the accuracy of injected latency.

Run: ``.venv/bin/python bench/sandbox.py [--seconds 5] [--concurrency 64]``. The sandbox runs in a
subprocess (uvicorn, one worker, uvloop + httptools when installed); the load generator is a small
keep-alive HTTP/1.1 client on raw asyncio streams, so the client is not what gets measured.
Targets: >= 1,500 req/s; median and p99 within +-10% of a 200 ms setting.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx

APP_ID, APP_SECRET, VERSION = "sandbox-app-id", "sandbox-app-secret", "v25.0"
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(port: int) -> subprocess.Popen[bytes]:
    code = f"from sandbox.server import serve; serve('127.0.0.1', {port})"
    env = {**os.environ, "INSTAGRAM_APP_ID": APP_ID, "INSTAGRAM_APP_SECRET": APP_SECRET}
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/_sandbox/state", timeout=1).raise_for_status()
        except httpx.HTTPError:
            time.sleep(0.1)
        else:
            return proc
    proc.kill()
    raise SystemExit("the sandbox did not start")


class Conn:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def get(self, target: str) -> int:
        self.writer.write(f"GET {target} HTTP/1.1\r\nHost: sandbox\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


def targets(port: int) -> list[str]:
    """A refresh-like mix: debug_token (app token), long-lived exchange, a Page node, /me/accounts."""
    base = f"http://127.0.0.1:{port}/_sandbox"
    users = httpx.post(f"{base}/users", json=[{"page_count": 1} for _ in range(200)], timeout=30).json()[
        "users"
    ]
    specs = [{"user_id": u["id"], "kind": "long"} for u in users] + [
        {"user_id": u["id"], "kind": "page"} for u in users
    ]
    tokens = httpx.post(f"{base}/tokens", json=specs, timeout=30).json()["tokens"]
    longs, pages = [t[0] for t in tokens[:200]], [t[0] for t in tokens[200:]]
    out = []
    for i, user in enumerate(users):
        page_id = user["pages"][0]["id"]
        proof = hmac.new(APP_SECRET.encode(), pages[i].encode(), hashlib.sha256).hexdigest()
        uproof = hmac.new(APP_SECRET.encode(), longs[i].encode(), hashlib.sha256).hexdigest()
        out.append(
            f"/{VERSION}/debug_token?"
            + urlencode({"input_token": pages[i], "access_token": f"{APP_ID}|{APP_SECRET}"})
        )
        out.append(
            f"/{VERSION}/{page_id}?"
            + urlencode(
                {
                    "fields": "instagram_business_account{id,username}",
                    "access_token": pages[i],
                    "appsecret_proof": proof,
                }
            )
        )
        out.append(
            f"/{VERSION}/me/accounts?" + urlencode({"access_token": longs[i], "appsecret_proof": uproof})
        )
        if i % 4 == 0:  # exchanges mint tokens; keep them a minority like a refresh run
            out.append(
                f"/{VERSION}/oauth/access_token?"
                + urlencode(
                    {
                        "grant_type": "fb_exchange_token",
                        "client_id": APP_ID,
                        "client_secret": APP_SECRET,
                        "fb_exchange_token": longs[i],
                    }
                )
            )
    return out


async def throughput(port: int, paths: list[str], seconds: float, concurrency: int) -> tuple[int, int]:
    done = errors = 0
    stop = time.perf_counter() + seconds

    async def worker(offset: int) -> None:
        nonlocal done, errors
        conn = await Conn.open(port)
        i = offset
        while time.perf_counter() < stop:
            status = await conn.get(paths[i % len(paths)])
            i += 1
            done += 1
            errors += status != 200
        conn.close()

    await asyncio.gather(*(worker(n * 7) for n in range(concurrency)))
    return done, errors


async def latency_run(port: int, path: str, n: int, concurrency: int) -> list[float]:
    samples: list[float] = []
    queue = iter(range(n))

    async def worker() -> None:
        conn = await Conn.open(port)
        for _ in queue:
            started = time.perf_counter()
            await conn.get(path)
            samples.append((time.perf_counter() - started) * 1000)
        conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--latency-requests", type=int, default=1000)
    args = parser.parse_args()
    try:
        import uvloop  # optional: measure with the loop uvicorn uses

        uvloop.install()
    except ImportError:
        pass
    port = free_port()
    proc = start_server(port)
    try:
        paths = targets(port)
        asyncio.run(throughput(port, paths, 1.0, args.concurrency))  # warm-up
        done, errors = asyncio.run(throughput(port, paths, args.seconds, args.concurrency))
        rps = done / args.seconds
        base = f"http://127.0.0.1:{port}/_sandbox"
        httpx.post(f"{base}/latency", json={"path": "/debug_token", "ms": args.latency_ms}).raise_for_status()
        debug_path = next(p for p in paths if "/debug_token" in p)
        samples = asyncio.run(latency_run(port, debug_path, args.latency_requests, 100))
        httpx.post(
            f"{base}/latency", json={"path": "/me", "ms": args.latency_ms, "jitter_ms": 50}
        ).raise_for_status()
        me_path = next(p for p in paths if "/me/accounts" in p)
        jittered = asyncio.run(latency_run(port, me_path, args.latency_requests, 100))
        stats = httpx.get(f"{base}/state").json()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    setting = args.latency_ms
    print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}, sandbox = 1 uvicorn worker")
    verdict = "OK" if rps >= 1500 and not errors else "MISS"
    print(
        f"throughput: {rps:,.0f} req/s over {args.seconds:.0f} s, concurrency {args.concurrency}, "
        f"{done:,} requests, {errors} non-200  (target >= 1,500)  {verdict}"
    )
    for label, values, target in (
        (f"latency {setting:.0f} ms fixed", samples, setting),
        (f"latency {setting:.0f} ms +-50 jitter", jittered, setting),
    ):
        med, tail = statistics.median(values), p99(values)
        note = "p99 includes the +-jitter by design" if "jitter" in label else "MISS"
        within = abs(med - target) <= target * 0.1 and abs(tail - target) <= target * 0.1
        print(
            f"{label}: median {med:.1f} ms ({(med / target - 1) * 100:+.1f}%), p99 {tail:.1f} ms "
            f"({(tail / target - 1) * 100:+.1f}%), n={len(values)}  "
            f"{'OK (within 10%)' if within else note}"
        )
    print(f"sandbox calls counted: {stats['total_calls']:,}; tokens held: {stats['token_count']:,}")


if __name__ == "__main__":
    main()
