"""`nmt serve` past its capacity: 32 closed-loop clients against 256, measured in one run.

One application with `nmt serve`'s defaults (one translator replica of one CPU on this
2-core machine, batches of 32, a backlog of 4 batches, a 30 s deadline) on a local Ray of 2
CPUs, as `nmt serve` starts it. Each cell runs `--seconds` (bounded by `--requests`) of
closed-loop clients (aiohttp, one event loop: at 256 connections httpx's pool cost the load
generator 20 ms of CPU per request against aiohttp's 0.6), one German sentence per request.
A client that gets a 503 or 429 sleeps its `Retry-After`, as a well-behaved client does;
each request has a client-side timeout of `--client-timeout` seconds. Prints the 200s per
second, their p50/p99, every status seen, the slowest answer of any status against the
deadline, client timeouts, and the 256/32 ratio of the 200s per second (goal >= 0.8).
Loopback only; the load generator shares the cores with the server.

    .venv/bin/python benchmarks/bench_overload.py [--model DIR | --size tiny|reference]
        [--seconds 60] [--requests 20000] [--clients 32 256]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_bulk import _build_model as build_benchmark_model  # noqa: E402
from pipeline.corpus.synthetic import parallel_corpus  # noqa: E402
from pipeline.corpus.textfile import read_lines  # noqa: E402
from pipeline.serve import APP_NAME, build_app  # noqa: E402
from pipeline.serve.cli import http_options  # noqa: E402
from pipeline.serve.options import ServeOptions  # noqa: E402

SHED = (429, 503)


@dataclass
class Cell:
    """What the clients of one cell saw."""

    clients: int
    seconds: float = 0.0
    statuses: Counter = field(default_factory=Counter)
    ok_latencies: list[float] = field(default_factory=list)
    slowest: float = 0.0  # of any answer
    shed_without_retry_after: int = 0
    client_timeouts: int = 0
    client_errors: int = 0  # connections refused or dropped

    def row(self, deadline_s: float) -> dict[str, float | int | str]:
        cuts = statistics.quantiles(self.ok_latencies, n=100, method="inclusive")
        return {
            "clients": self.clients,
            "seconds": round(self.seconds, 1),
            "200/s": len(self.ok_latencies) / self.seconds,
            "p50 ms": cuts[49] * 1000,
            "p99 ms": cuts[98] * 1000,
            "statuses": ", ".join(f"{code}: {n}" for code, n in sorted(self.statuses.items())),
            "slowest ms": self.slowest * 1000,
            "within deadline": "yes" if self.slowest <= deadline_s else "no",
            "shed without Retry-After": self.shed_without_retry_after,
            "client timeouts": self.client_timeouts,
            "client errors": self.client_errors,
        }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(model: str, options: ServeOptions) -> str:
    """Ray (2 CPUs, as `nmt serve` gets on this machine), Serve with `nmt serve`'s proxy
    timeout, and the application on a free loopback port; returns its /translate URL."""
    import ray
    from ray import serve

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options=http_options("127.0.0.1", port, options.load))
    serve.run(build_app(model, options), name=APP_NAME, route_prefix="/")
    return f"http://127.0.0.1:{port}/translate"


def stop_server() -> None:
    import ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()


async def run_cell(
    url: str,
    clients: int,
    requests: int,
    seconds: float,
    texts: list[str],
    timeout_s: float,
    rate: float | None = None,
) -> Cell:
    """`clients` closed-loop clients share `requests` requests for at most `seconds`; with
    `rate`, request i also waits until i / rate seconds from the start."""
    cell = Cell(clients)
    remaining = iter(range(requests))
    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await send(session, url, texts[0], Cell(1))  # warm-up, not counted
        started = time.perf_counter()

        async def client() -> None:
            for index in remaining:
                if time.perf_counter() > started + seconds:
                    return
                if rate:
                    await asyncio.sleep(max(0.0, started + index / rate - time.perf_counter()))
                retry_after = await send(session, url, texts[index % len(texts)], cell)
                await asyncio.sleep(retry_after)

        await asyncio.gather(*(client() for _ in range(clients)))
        cell.seconds = time.perf_counter() - started
    return cell


async def send(session: aiohttp.ClientSession, url: str, text: str, cell: Cell) -> float:
    """One request; records it in `cell` and returns how long to wait before the next."""
    started = time.perf_counter()
    try:
        async with session.post(url, json={"text": text}) as response:
            await response.read()
            status, retry_after = response.status, response.headers.get("Retry-After")
    except TimeoutError:
        cell.client_timeouts += 1
        return 0.0
    except aiohttp.ClientError:
        cell.client_errors += 1
        return 1.0
    elapsed = time.perf_counter() - started
    cell.statuses[status] += 1
    if sum(cell.statuses.values()) % 1000 == 0:  # progress that survives a killed run
        print(f"{cell.clients} clients: {dict(cell.statuses)}", file=sys.stderr, flush=True)
    cell.slowest = max(cell.slowest, elapsed)
    if status == 200:
        cell.ok_latencies.append(elapsed)
    if status in SHED and retry_after is None:
        cell.shed_without_retry_after += 1
    return float(retry_after) if status in SHED and retry_after else 0.0


def sentences(count: int, src: str | None = None) -> list[str]:
    """`count` source sentences: the non-empty lines of `src`, else generated German."""
    if src:
        return [line for line in read_lines(src) if line.strip()][:count]
    return [de for de, _ in parallel_corpus(count, seed=21)]


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model dir (default: build one, see --size)")
    parser.add_argument("--size", choices=["tiny", "reference"], default="tiny")
    parser.add_argument("--src", help="source sentences, one a line (default: generated)")


def model_dir(args: argparse.Namespace) -> str:
    work = Path(tempfile.mkdtemp(prefix="bench-serve-load-"))
    return args.model or str(build_benchmark_model(work / "model", args.size))


def load_average() -> str:
    return "/".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--clients", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--seconds", type=float, default=60.0, help="per cell")
    parser.add_argument("--requests", type=int, default=20_000, help="per cell, at most")
    parser.add_argument("--client-timeout", type=float, default=60.0)
    parser.add_argument(
        "--kill-replica",
        action="store_true",
        help="instead: two translator replicas, the first --clients undisturbed, then with "
        "a replica SIGKILLed a third of the way in, with --retries 1 and 0",
    )
    args = parser.parse_args()
    model, texts = model_dir(args), sentences(2000, args.src)
    if args.kill_replica:
        kill_drill(model, texts, args)
        return
    options = ServeOptions()
    start_load = load_average()
    url = start_server(model, options)
    try:
        cells = []
        for clients in args.clients:
            cell = asyncio.run(
                run_cell(url, clients, args.requests, args.seconds, texts, args.client_timeout)
            )
            cells.append(cell)
            print(cell.row(options.load.request_timeout_s), file=sys.stderr)
    finally:
        stop_server()
    report(cells, model, args, options, (start_load, load_average()))


def kill_drill(model: str, texts: list[str], args: argparse.Namespace) -> None:
    """Per retry setting, one app of two replicas: a cell undisturbed, then one in which a
    replica is SIGKILLed a third of the way in (Serve replaces it meanwhile)."""
    clients, rows = args.clients[0], []
    start_load = load_average()
    for retries in (1, 0):
        options = ServeOptions.from_flat(
            {"min_replicas": 2, "max_replicas": 2, "num_cpus": 0.5, "retries": retries}
        )
        url = start_server(model, options)
        try:
            for kill in (False, True):
                cell = asyncio.run(cell_with_kill(url, clients, texts, args, kill))
                row = cell.row(options.load.request_timeout_s)
                rows.append({"retries": retries, "replica killed": "yes" if kill else "no", **row})
                print(rows[-1], file=sys.stderr)
        finally:
            stop_server()
    print(
        f"\nmodel {model}; 2 translator replicas x 0.5 CPU; {args.seconds:g} s per cell; "
        f"load average {start_load} at the start, {load_average()} at the end\n"
    )
    print_table(rows)


async def cell_with_kill(
    url: str, clients: int, texts: list[str], args: argparse.Namespace, kill: bool
) -> Cell:
    load = asyncio.ensure_future(
        run_cell(url, clients, args.requests, args.seconds, texts, args.client_timeout)
    )
    if kill:
        await asyncio.sleep(args.seconds / 3)
        killed = await asyncio.to_thread(kill_a_translator_replica)
        print(f"SIGKILLed translator replica pid {killed}", file=sys.stderr)
    return await load


def kill_a_translator_replica() -> int:
    from ray._private import state

    for actor in state.actors().values():
        if actor["ActorClassName"].endswith(":Translator") and actor["State"] == "ALIVE":
            os.kill(actor["Pid"], signal.SIGKILL)
            return actor["Pid"]
    raise RuntimeError("no live translator replica to kill")


def describe_setup(model: str, args, options: ServeOptions, loads: tuple[str, str]) -> str:
    return (
        f"model {model} ({args.size if not args.model else 'given'}); nmt serve defaults: "
        f"batches of {options.max_batch_size}, backlog {options.backlog_sentences} sentences "
        f"per replica, deadline {options.load.request_timeout_s:g} s, Retry-After >= "
        f"{options.load.retry_after_s:g} s; load average (1/5/15 min) {loads[0]} at the "
        f"start, {loads[1]} at the end"
    )


def print_table(rows: list[dict]) -> None:
    print("| " + " | ".join(rows[0]) + " |")
    print("|" + "---|" * len(rows[0]))
    for row in rows:
        print("| " + " | ".join(_cell_text(value) for value in row.values()) + " |")


def report(cells: list[Cell], model: str, args, options: ServeOptions, loads) -> None:
    print(f"\n{describe_setup(model, args, options, loads)}; {args.seconds:g} s per cell\n")
    rows = [cell.row(options.load.request_timeout_s) for cell in cells]
    print_table(rows)
    first, last = rows[0], rows[-1]
    ratio = last["200/s"] / first["200/s"]
    print(
        f"\n200s per second at {last['clients']} clients / {first['clients']}: "
        f"{ratio:.2f} (goal >= 0.8)"
    )


def _cell_text(value: float | int | str) -> str:
    if isinstance(value, float):
        return f"{value:.2f}" if value < 100 else f"{value:.0f}"
    return str(value)


if __name__ == "__main__":
    main()
