"""`nmt serve` under load: dynamic batching against none, measured side by side in one run.

Two applications on one local Ray: `batched` (`--max-batch-size`, `--batch-wait-ms`) and
`unbatched` (max batch size 1), each one replica with one CPU and one torch thread, so the
only difference is whether concurrent sentences share a beam search. A loopback load generator
(httpx, one event loop) runs 1, 8 and 32 closed-loop clients, one German sentence per request,
bounded by `--requests` per cell and `--max-seconds`. Prints req/s, sentences/s,
p50/p95/p99 latency and the batched/unbatched ratio at 32 clients. The load generator shares
the machine's cores with the server; figures on a shared machine move with whatever else runs.

    .venv/bin/python benchmarks/bench_serve.py [--model DIR | --size tiny|reference]
        [--requests 256] [--max-seconds 60] [--beam-size 5]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_bulk import _build_model as build_benchmark_model  # noqa: E402
from pipeline.corpus.synthetic import parallel_corpus  # noqa: E402
from pipeline.serve import build_app  # noqa: E402

CLIENTS = (1, 8, 32)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_apps(model: str, port: int, args: argparse.Namespace) -> None:
    from ray import serve

    serve.start(http_options={"host": "127.0.0.1", "port": port})
    for name, batch_size in (("batched", args.max_batch_size), ("unbatched", 1)):
        app = build_app(
            model,
            min_replicas=1,
            max_replicas=1,  # fixed: this measures batching, not autoscaling
            max_batch_size=batch_size,
            batch_wait_ms=args.batch_wait_ms,
            num_cpus=1,
            beam_size=args.beam_size,
        )
        serve.run(app, name=name, route_prefix=f"/{name}")


async def load(
    request: Callable[[int], tuple[str, dict]], clients: int, requests: int, seconds: float
):
    """`clients` closed-loop clients share `requests` requests, the i-th sent as
    `request(i)` (url, JSON body); returns latencies and wall time."""
    latencies: list[float] = []
    remaining = iter(range(requests))
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients)

    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def send(index: int) -> float:
            started = time.perf_counter()
            url, body = request(index)
            response = await client.post(url, json=body)
            response.raise_for_status()
            return time.perf_counter() - started

        async def one_client() -> None:
            for index in remaining:
                if time.perf_counter() > deadline:
                    return
                latencies.append(await send(index))

        await send(0)  # warm-up: connection and first-call costs stay out of the figures
        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
    return latencies, time.perf_counter() - started


def summarize(latencies: list[float], seconds: float) -> dict[str, float]:
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    rate = len(latencies) / seconds
    # One sentence per request, so sentences/s equals req/s; both are printed for the table.
    return {"req/s": rate, "sent/s": rate, "p50": cuts[49], "p95": cuts[94], "p99": cuts[98]}


def add_load_arguments(parser: argparse.ArgumentParser, model_help: str, unit: str) -> None:
    """The model and load flags the serve benchmarks share."""
    parser.add_argument("--model", help=model_help)
    parser.add_argument(
        "--size", choices=["tiny", "reference"], default="reference", help="model built"
    )
    parser.add_argument("--requests", type=int, default=256, help=f"per {unit}")
    parser.add_argument("--max-seconds", type=float, default=60.0, help=f"per {unit}")
    parser.add_argument("--beam-size", type=int, default=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_load_arguments(parser, "model dir (default: build one, see --size)", "cell")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-wait-ms", type=float, default=10.0)
    args = parser.parse_args()

    import ray
    from ray import serve

    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    model = args.model or str(build_benchmark_model(work / "model", args.size))
    sentences = [de for de, _ in parallel_corpus(args.requests, seed=21)]
    port = free_port()
    # Both apps stay deployed (two one-CPU replicas plus two 0.1-CPU ingresses) but only one
    # is under load at a time, so declaring a third CPU lets both start without
    # oversubscribing the two real cores.
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    try:
        start_apps(model, port, args)
        rows = {}
        for name in ("batched", "unbatched"):
            for clients in CLIENTS:
                url = f"http://127.0.0.1:{port}/{name}/translate"
                latencies, seconds = asyncio.run(
                    load(
                        lambda i, url=url: (url, {"text": sentences[i % len(sentences)]}),
                        clients,
                        args.requests,
                        args.max_seconds,
                    )
                )
                rows[name, clients] = summarize(latencies, seconds) | {"n": len(latencies)}
                print(f"{name} x{clients}: {rows[name, clients]}", file=sys.stderr)
    finally:
        serve.shutdown()
        ray.shutdown()
    report(rows, model, args)


def report(rows: dict, model: str, args: argparse.Namespace) -> None:
    print(
        f"\nmodel {model} ({args.size if not args.model else 'given'}), beam {args.beam_size}, "
        f"1 replica x 1 CPU each, batched: max {args.max_batch_size} sentences, "
        f"wait {args.batch_wait_ms:g} ms; one sentence per request\n"
    )
    print("| deployment | clients | requests | req/s | sentences/s | p50 ms | p95 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for (name, clients), row in rows.items():
        print(
            f"| {name} | {clients} | {row['n']} | {row['req/s']:.1f} | {row['sent/s']:.1f} | "
            f"{row['p50'] * 1e3:.0f} | {row['p95'] * 1e3:.0f} | {row['p99'] * 1e3:.0f} |"
        )
    ratio = rows["batched", 32]["sent/s"] / rows["unbatched", 32]["sent/s"]
    print(f"\nbatched / unbatched sentences/s at 32 clients: {ratio:.2f}x (goal >= 4x)")


if __name__ == "__main__":
    main()
