"""`nmt serve` over a long run: 20,000 requests from 32 clients over about ten minutes, with
the memory of every Serve process sampled throughout.

The server is `bench_overload.py`'s (`nmt serve`'s defaults on a local Ray of 2 CPUs); the
load is its closed-loop clients (aiohttp, one German sentence per request, `Retry-After`
honoured), paced to `--rate` requests per second in all so the run spreads over the
intended time. Every `--sample-every` seconds it reads the resident memory (VmRSS) of the
HTTP proxy, the Serve controller and each replica, the first time one interval in (after
the warm-up). Prints the throughput, p50/p99, every
status seen, and each process's RSS at the start (after the warm-up) and the end, with the
growth (goal: under 10%, and no 5xx). Loopback only.

    .venv/bin/python benchmarks/bench_soak.py [--model DIR | --size tiny|reference]
        [--requests 20000] [--rate 33.3] [--clients 32] [--max-seconds 900]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_overload import (  # noqa: E402
    Cell,
    add_model_arguments,
    describe_setup,
    load_average,
    model_dir,
    print_table,
    run_cell,
    sentences,
    start_server,
    stop_server,
)
from pipeline.serve.options import ServeOptions  # noqa: E402

# Ray's names for the processes behind the application, as the actor table has them.
ROLES = {
    "ProxyActor": "HTTP proxy",
    "ServeController": "Serve controller",
    "TranslationApi": "ingress replica",
    "Translator": "translator replica",
}


def serve_processes() -> dict[str, int]:
    """'role pid' -> pid of every live Serve actor on this machine."""
    from ray._private import state

    found = {}
    for actor in state.actors().values():
        name = actor["ActorClassName"]
        role = next((r for key, r in ROLES.items() if name.endswith(key)), None)
        if role and actor["State"] == "ALIVE" and actor["Pid"]:
            found[f"{role} {actor['Pid']}"] = actor["Pid"]
    return found


def rss_mib(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # the process is gone (a replica replaced)
        return None
    line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def sample(samples: dict[str, list[tuple[float, float]]], started: float) -> None:
    for name, pid in serve_processes().items():
        value = rss_mib(pid)
        if value is not None:
            samples.setdefault(name, []).append((time.perf_counter() - started, value))


async def soak(url: str, args: argparse.Namespace, texts: list[str]) -> tuple[Cell, dict]:
    samples: dict[str, list[tuple[float, float]]] = {}
    started = time.perf_counter()
    load = asyncio.ensure_future(
        run_cell(url, args.clients, args.requests, args.max_seconds, texts, 60.0, args.rate)
    )
    # the first sample after one interval: the warm-up's allocations are not growth
    while not load.done():
        await asyncio.wait({load}, timeout=args.sample_every)
        await asyncio.to_thread(sample, samples, started)
        latest = {name: round(points[-1][1]) for name, points in samples.items()}
        print(f"{time.perf_counter() - started:.0f} s: RSS MiB {latest}", file=sys.stderr)
    return load.result(), samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=20_000 / 600, help="requests/s, all")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--max-seconds", type=float, default=900.0)
    parser.add_argument("--sample-every", type=float, default=30.0, help="seconds")
    args = parser.parse_args()

    model, options = model_dir(args), ServeOptions()
    start_load = load_average()
    url = start_server(model, options)
    try:
        cell, samples = asyncio.run(soak(url, args, sentences(2000, args.src)))
    finally:
        stop_server()
    print(f"\n{describe_setup(model, args, options, (start_load, load_average()))}\n")
    row = cell.row(options.load.request_timeout_s)
    print_table([{"requests": sum(cell.statuses.values()), **row}])
    print("\n| process | RSS MiB at the start | at the end | growth | samples |")
    print("|---|---:|---:|---:|---:|")
    for name, points in sorted(samples.items()):
        first, last = points[0][1], points[-1][1]
        print(
            f"| {name} | {first:.0f} | {last:.0f} | {100 * (last / first - 1):+.1f}% | "
            f"{len(points)} |"
        )


if __name__ == "__main__":
    main()
