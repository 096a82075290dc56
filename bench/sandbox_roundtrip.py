"""Benchmark the local sandbox server through the real e2b SDK.

1. Median of N round trips: create -> write a small file -> run ``true`` -> kill
   (target <= 100 ms).
2. 30 concurrent 1-second commands in one sandbox (target: all done <= 1.5 s).

Usage: ``python bench/sandbox_roundtrip.py [--rounds N] [--concurrent N]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from e2b import Sandbox

from osiris_dagster.sandbox_server import LocalSandboxServer

ROUNDTRIP_TARGET_MS = 100.0
CONCURRENT_TARGET_S = 1.5


def roundtrip(sdk: dict[str, str]) -> float:
    started = time.perf_counter()
    sbx = Sandbox.create(timeout=60, **sdk)
    sbx.files.write("/home/user/small.txt", "hello")
    sbx.commands.run("true")
    sbx.kill()
    return (time.perf_counter() - started) * 1000


def concurrent_commands(sdk: dict[str, str], count: int) -> float:
    sbx = Sandbox.create(timeout=60, **sdk)
    try:
        sbx.commands.run("true")  # warm the connection pool like a real runner would
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=count) as pool:
            results = list(pool.map(lambda i: sbx.commands.run(f"sleep 1; echo {i}").stdout, range(count)))
        elapsed = time.perf_counter() - started
        assert results == [f"{i}\n" for i in range(count)], "wrong output from a concurrent command"
        return elapsed
    finally:
        sbx.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--concurrent", type=int, default=30)
    args = parser.parse_args()

    with LocalSandboxServer(port=0) as server:
        sdk = server.sdk_kwargs()
        roundtrip(sdk)  # warm-up: first connection, imports
        samples = [roundtrip(sdk) for _ in range(args.rounds)]
        median = statistics.median(samples)
        p90 = statistics.quantiles(samples, n=10)[-1] if len(samples) >= 2 else median
        print(
            f"roundtrip create->write->run true->kill: median {median:.1f} ms, "
            f"p90 {p90:.1f} ms, min {min(samples):.1f} ms over {args.rounds} rounds "
            f"(target <= {ROUNDTRIP_TARGET_MS:.0f} ms)"
        )
        elapsed = concurrent_commands(sdk, args.concurrent)
        print(
            f"{args.concurrent} concurrent 1-second commands: {elapsed:.2f} s total (target <= {CONCURRENT_TARGET_S} s)"
        )
    ok = median <= ROUNDTRIP_TARGET_MS and elapsed <= CONCURRENT_TARGET_S
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
