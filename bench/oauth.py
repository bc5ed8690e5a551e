"""Time of OAuth init and of a full callback, with the sandbox at 0 ms or at an injected Meta latency.

Both run as real processes (uvicorn). At 0 ms the API's own time (`Server-Timing: app;dur=`) is
reported, so the figures exclude the client and the network; goal: callback p50 <= 20 ms, init
p50 <= 5 ms. With ``--latency-ms N`` every Graph and dialog call waits N ms in the sandbox
(``/_sandbox/latency``) and the callback's wall time is reported for one Page (Alice) and two Pages
(Bob); the connect has four Meta round trips on its critical path, so the goal is
<= 1.1 x 4 x N.

    .venv/bin/python bench/oauth.py [--runs 300]
    .venv/bin/python bench/oauth.py --latency-ms 100 [--runs 40]

Exits 1 without a figure when a connect did not complete (no `instagram=connected`, or fewer
integrations than the user has linked accounts).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._servers import JWT_SECRET, percentile, servers
from instagram_dm.auth import mint_user_token
from instagram_dm.demo import DEMO_ADMIN, DEMO_IMO

ALICE, BOB = "10000000000001", "10000000000002"
ACCOUNTS = {ALICE: 1, BOB: 2}  # linked Instagram accounts per sandbox user
ROUND_TRIPS = 4  # code -> short; -> long-lived; debug_token || /me/accounts; subscribed_apps (all Pages)
LATENCY_SLACK = 1.1


class BenchFailed(Exception):
    """The run did not do its work; no figure may be printed."""


def server_ms(response: httpx.Response) -> float:
    return float(response.headers["server-timing"].split("dur=")[1])


def connect_once(
    http: httpx.Client, api_url: str, token: str, fb_user: str
) -> tuple[httpx.Response, httpx.Response, float]:
    """init -> dialog -> callback; returns (init, callback, callback wall ms) or raises BenchFailed."""
    init = http.post(
        f"{api_url}/functions/v1/instagram-oauth-init",
        json={"imo_id": DEMO_IMO},
        headers={"Authorization": f"Bearer {token}"},
    )
    if init.status_code != 200:
        raise BenchFailed(f"init answered {init.status_code}: {init.text[:200]}")
    dialog = http.get(init.json()["url"], follow_redirects=False)
    if "location" not in dialog.headers:
        raise BenchFailed(f"the sandbox dialog answered {dialog.status_code} without a redirect")
    target = urlsplit(dialog.headers["location"])
    started = time.perf_counter()
    callback = http.get(f"{api_url}{target.path}?{target.query}", follow_redirects=False)
    wall_ms = (time.perf_counter() - started) * 1000
    location = callback.headers.get("location", "")
    query = parse_qs(urlsplit(location).query)
    if query.get("instagram") != ["connected"]:
        raise BenchFailed(f"connect failed ({callback.status_code}): {location or callback.text[:200]}")
    if len(query.get("integration_id", [])) != ACCOUNTS[fb_user]:
        raise BenchFailed(f"expected {ACCOUNTS[fb_user]} integrations, the redirect says {location}")
    if "webhooks" in query:
        raise BenchFailed(f"webhook subscription failed: {location}")
    return init, callback, wall_ms


def summary(values: list[float]) -> str:
    return f"median {statistics.median(values):7.2f} ms   p99 {percentile(values, 99):7.2f} ms"


def run_plain(
    http: httpx.Client, sandbox_url: str, api_url: str, token: str, *, runs: int, warmup: int
) -> None:
    http.post(f"{sandbox_url}/_sandbox/dialog", json={"mode": "approve", "user_id": ALICE}).raise_for_status()
    init_ms: list[float] = []
    callback_ms: list[float] = []
    for i in range(warmup + runs):
        init, callback, _ = connect_once(http, api_url, token, ALICE)
        if i >= warmup:
            init_ms.append(server_ms(init))
            callback_ms.append(server_ms(callback))
    print(
        f"bench/oauth.py  cpu_count={os.cpu_count()}  runs={runs}  sandbox latency=0 ms  "
        "(server-side, Server-Timing)"
    )
    for name, values, goal in (("init", init_ms, 5.0), ("callback", callback_ms, 20.0)):
        p50 = statistics.median(values)
        verdict = "met" if p50 <= goal else "MISSED"
        print(f"  {name:9s} {summary(values)}   goal p50 <= {goal:.0f} ms: {verdict}")


def run_latency(
    http: httpx.Client,
    sandbox_url: str,
    api_url: str,
    token: str,
    *,
    runs: int,
    warmup: int,
    latency_ms: float,
) -> None:
    goal = LATENCY_SLACK * ROUND_TRIPS * latency_ms
    results: dict[str, tuple[list[float], float]] = {}
    for fb_user in (ALICE, BOB):
        http.delete(f"{sandbox_url}/_sandbox/latency").raise_for_status()
        http.post(
            f"{sandbox_url}/_sandbox/dialog", json={"mode": "approve", "user_id": fb_user}
        ).raise_for_status()
        for _ in range(warmup):
            connect_once(http, api_url, token, fb_user)
        http.delete(f"{sandbox_url}/_sandbox/latency").raise_for_status()
        rule = http.post(f"{sandbox_url}/_sandbox/latency", json={"path": ".*", "ms": latency_ms})
        rule.raise_for_status()
        wall: list[float] = []
        calls_before = http.get(f"{sandbox_url}/_sandbox/state").json()["total_calls"]
        for _ in range(runs):
            wall.append(connect_once(http, api_url, token, fb_user)[2])
        calls = http.get(f"{sandbox_url}/_sandbox/state").json()["total_calls"] - calls_before
        http.delete(f"{sandbox_url}/_sandbox/latency").raise_for_status()
        if min(wall) < ROUND_TRIPS * latency_ms:
            raise BenchFailed(f"a callback took {min(wall):.1f} ms: the sandbox latency was not applied")
        # each run also calls the dialog once, which is not part of the callback
        results[fb_user] = (wall, calls / runs - 1)
    print(
        f"bench/oauth.py  cpu_count={os.cpu_count()}  runs={runs} per user  sandbox latency={latency_ms:g} ms "
        "per Meta call  (callback wall time, client-side)"
    )
    for fb_user, (wall, meta_calls) in results.items():
        verdict = "met" if statistics.median(wall) <= goal else "MISSED"
        print(
            f"  callback, {ACCOUNTS[fb_user]} Page(s)  {summary(wall)}   Meta calls {meta_calls:4.1f}   "
            f"goal median <= {goal:.0f} ms ({LATENCY_SLACK} x {ROUND_TRIPS} round trips): {verdict}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=None, help="measured runs (300; 40 with --latency-ms)")
    parser.add_argument(
        "--warmup", type=int, default=None, help="unmeasured runs first (20; 3 with --latency-ms)"
    )
    parser.add_argument("--latency-ms", type=float, default=0.0, help="sandbox latency per Meta call")
    args = parser.parse_args()
    latency = args.latency_ms > 0
    runs = args.runs if args.runs is not None else (40 if latency else 300)
    warmup = args.warmup if args.warmup is not None else (3 if latency else 20)
    if runs < 1:
        parser.error("--runs must be at least 1")
    token = mint_user_token(JWT_SECRET, DEMO_ADMIN)
    try:
        with servers() as (sandbox_url, api_url, _env), httpx.Client(timeout=30) as http:
            if latency:
                run_latency(
                    http, sandbox_url, api_url, token, runs=runs, warmup=warmup, latency_ms=args.latency_ms
                )
            else:
                run_plain(http, sandbox_url, api_url, token, runs=runs, warmup=warmup)
    except BenchFailed as failure:
        print(f"bench/oauth.py: FAILED, no figure: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
