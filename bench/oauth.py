"""Server-side time of OAuth init and of a full callback (sandbox at 0 ms latency).

Both run as real processes (uvicorn); the API reports its own time in `Server-Timing: app;dur=`, so
the figures exclude the client and the network. Goal: callback p50 <= 20 ms, init p50 <= 5 ms.

    .venv/bin/python bench/oauth.py [--runs 300]
"""

from __future__ import annotations

import argparse
import os
import statistics
from urllib.parse import urlsplit

import httpx

from bench._servers import JWT_SECRET, percentile, servers
from instagram_dm.auth import mint_user_token

DEMO_IMO = "00000000-0000-4000-8000-0000000000a1"
DEMO_ADMIN = "00000000-0000-4000-8000-0000000000b1"
ALICE = "10000000000001"


def server_ms(response: httpx.Response) -> float:
    return float(response.headers["server-timing"].split("dur=")[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    token = mint_user_token(JWT_SECRET, DEMO_ADMIN)
    init_ms: list[float] = []
    callback_ms: list[float] = []
    with servers() as (sandbox_url, api_url, _env), httpx.Client(timeout=10) as http:
        http.post(
            f"{sandbox_url}/_sandbox/dialog", json={"mode": "approve", "user_id": ALICE}
        ).raise_for_status()
        for i in range(args.warmup + args.runs):
            init = http.post(
                f"{api_url}/functions/v1/instagram-oauth-init",
                json={"imo_id": DEMO_IMO},
                headers={"Authorization": f"Bearer {token}"},
            )
            init.raise_for_status()
            dialog = http.get(init.json()["url"], follow_redirects=False)
            target = urlsplit(dialog.headers["location"])
            callback = http.get(f"{api_url}{target.path}?{target.query}", follow_redirects=False)
            if "instagram=connected" not in callback.headers["location"]:
                raise RuntimeError(f"connect failed: {callback.headers['location']}")
            if i >= args.warmup:
                init_ms.append(server_ms(init))
                callback_ms.append(server_ms(callback))
    cores = os.cpu_count()
    print(
        f"bench/oauth.py  cores={cores}  runs={args.runs}  sandbox latency=0 ms  (server-side, Server-Timing)"
    )
    for name, values, goal in (("init", init_ms, 5.0), ("callback", callback_ms, 20.0)):
        p50 = statistics.median(values)
        print(
            f"  {name:9s} p50 {p50:6.2f} ms   p99 {percentile(values, 99):6.2f} ms   "
            f"mean {statistics.fmean(values):6.2f} ms   goal p50 <= {goal:.0f} ms: {'met' if p50 <= goal else 'MISSED'}"
        )


if __name__ == "__main__":
    main()
