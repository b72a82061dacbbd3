"""Four models behind one multiplexed `nmt serve` application against four single-model
applications, measured side by side in one run.

Four model dirs (with no trained models given: the tests' tiny model, or it rebuilt at the
reference size with untrained weights, saved under four ids and language pairs with seeded
weight noise, see tests/model_zoo.py). Setups, one at a time on one local Ray, each with the
same 2 CPUs for translator replicas:

- `single x4`: four applications, one model each, 1 replica x 0.5 CPU each;
- `mux, 4 per replica`: one application, 2 replicas x 1 CPU, each may hold all four models;
- `mux, 2 per replica`: the same with `--models-per-replica 2`, so the replicas must split the
  models between them or swap (the router sends a model's requests to replicas holding it).

Each setup gets the same mixed traffic: 32 closed-loop clients (httpx, one event loop), one
German sentence per request, the model cycling through the four. Prints req/s, p50/p99, the
replicas held, and the models each replica loaded (more loads than models: swapping). Then the
first request to a model no replica holds (load + translate), against the next request to it.
The load generator shares the machine's cores with the server; figures on a shared machine
move with whatever else runs.

    .venv/bin/python benchmarks/bench_serve_models.py [--model DIR | --size tiny|reference]
        [--requests 256] [--max-seconds 60] [--beam-size 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_bulk import _build_model as build_benchmark_model  # noqa: E402
from benchmarks.bench_serve import add_load_arguments, free_port, load, summarize  # noqa: E402
from pipeline.corpus.synthetic import parallel_corpus  # noqa: E402
from pipeline.serve import TRANSLATOR_DEPLOYMENT, build_app  # noqa: E402
from tests.model_zoo import model_variant  # noqa: E402

PAIRS = {"de-en": None, "en-de": 1, "zh-en": 2, "fr-en": 3}  # id -> weight noise seed
CLIENTS = 32
TRANSLATOR_CPUS = 2.0


def build_models(work: Path, size: str, base: str | None) -> dict[str, str]:
    base_dir = Path(base) if base else build_benchmark_model(work / "base", size)
    return {
        model_id: str(model_variant(base_dir, work / model_id, *model_id.split("-"), seed))
        for model_id, seed in PAIRS.items()
    }


def deploy(name: str, models: list[str], replicas: int, cpus: float, args, **options) -> None:
    from ray import serve

    app = build_app(
        models,
        min_replicas=replicas,
        max_replicas=replicas,  # fixed: this compares layouts, not autoscaling
        num_cpus=cpus,
        beam_size=args.beam_size,
        **options,
    )
    serve.run(app, name=name, route_prefix=f"/{name}")


def replica_loads(app: str, tries: int = 40) -> dict[str, dict[str, int]]:
    """replica id -> model id -> loads, gathered from calls the router spreads over replicas."""
    from ray import serve

    handle = serve.get_deployment_handle(TRANSLATOR_DEPLOYMENT, app_name=app)
    states = [handle.replica_state.remote() for _ in range(tries)]
    return {state["replica"]: state["loads"] for state in (s.result() for s in states)}


def measure(request, args) -> dict:
    latencies, seconds = asyncio.run(load(request, CLIENTS, args.requests, args.max_seconds))
    return summarize(latencies, seconds) | {"n": len(latencies)}


def run_setups(models: dict[str, str], base: str, sentences: list[str], args) -> dict:
    from ray import serve

    ids = list(models)
    rows = {}
    for index, model_id in enumerate(ids):
        deploy(f"single-{index}", [models[model_id]], 1, TRANSLATOR_CPUS / len(ids), args)
    rows["single x4"] = measure(
        lambda i: (
            f"{base}/single-{i % len(ids)}/translate",
            {"text": sentences[i % len(sentences)]},
        ),
        args,
    ) | {"replicas": len(ids), "loads": "1 model each"}
    for index in range(len(ids)):
        serve.delete(f"single-{index}")
    for per_replica in (4, 2):
        name = f"mux{per_replica}"
        paths = [f"{model_id}={path}" for model_id, path in models.items()]
        deploy(name, paths, 2, TRANSLATOR_CPUS / 2, args, models_per_replica=per_replica)
        row = measure(
            lambda i, name=name: (
                f"{base}/{name}/translate",
                {"text": sentences[i % len(sentences)], "model": ids[i % len(ids)]},
            ),
            args,
        )
        loads = replica_loads(name)
        rows[f"mux, {per_replica} per replica"] = row | {
            "replicas": 2,
            "loads": "; ".join(
                ", ".join(f"{m} x{n}" for m, n in sorted(per.items())) for per in loads.values()
            ),
        }
        serve.delete(name)
    return rows


def first_requests(models: dict[str, str], base: str, sentence: str, args) -> list[tuple]:
    """(model, first request s, next request s) for each model the replica does not hold."""
    from ray import serve

    paths = [f"{model_id}={path}" for model_id, path in models.items()]
    deploy("cold", paths, 1, 1.0, args, models_per_replica=len(models))
    timings = []
    for model_id in list(models)[1:]:  # the default (first) model is loaded at start
        seconds = []
        for _ in range(2):
            started = time.perf_counter()
            response = requests.post(
                f"{base}/cold/translate", json={"text": sentence, "model": model_id}, timeout=120
            )
            response.raise_for_status()
            seconds.append(time.perf_counter() - started)
        timings.append((model_id, *seconds))
    serve.delete("cold")
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_load_arguments(parser, "the model dir the four are made from (default: build)", "setup")
    args = parser.parse_args()

    import ray
    from ray import serve

    work = Path(tempfile.mkdtemp(prefix="bench-serve-models-"))
    models = build_models(work, args.size, args.model)
    sentences = [de for de, _ in parallel_corpus(args.requests, seed=21)]
    port = free_port()
    # 2 CPUs of translator replicas plus the ingresses' 0.1 each: declare 3 for 2 real cores.
    ray.init(address="local", num_cpus=3, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        base = f"http://127.0.0.1:{port}"
        rows = run_setups(models, base, sentences, args)
        cold = first_requests(models, base, sentences[0], args)
    finally:
        serve.shutdown()
        ray.shutdown()
    report(rows, cold, args)


def report(rows: dict, cold: list[tuple], args: argparse.Namespace) -> None:
    made_from = args.model or f"{args.size} size"
    print(
        f"\n4 models ({made_from}), beam {args.beam_size}, {CLIENTS} clients, mixed traffic "
        f"cycling through the models, {TRANSLATOR_CPUS:g} translator CPUs per setup\n"
    )
    print("| setup | replicas | requests | req/s | p50 ms | p99 ms | models loaded per replica |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, row in rows.items():
        print(
            f"| {name} | {row['replicas']} | {row['n']} | {row['req/s']:.1f} | "
            f"{row['p50'] * 1e3:.0f} | {row['p99'] * 1e3:.0f} | {row['loads']} |"
        )
    single = rows["single x4"]["req/s"]
    for name in rows:
        print(f"\n{name} / single x4 req/s: {rows[name]['req/s'] / single:.2f}x", end="")
    print("\n\n| model no replica holds | first request ms (load + translate) | next request ms |")
    print("|---|---:|---:|")
    for model_id, first, second in cold:
        print(f"| {model_id} | {first * 1e3:.0f} | {second * 1e3:.0f} |")
    firsts = [first for _, first, _ in cold]
    print(f"\nmedian first request: {statistics.median(firsts) * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
