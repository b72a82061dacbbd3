"""`nmt serve`: the Ray Serve application over real HTTP on a free loopback port.

One Ray instance and one Serve instance for the module; each test's application gets its own
name and route prefix, so they share the proxy and fit on 2 CPUs (0.25 CPU per replica).
"""

from __future__ import annotations

import asyncio
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
import requests
import torch

from pipeline.cli import main as nmt
from pipeline.corpus.synthetic import parallel_corpus
from pipeline.errors import UserError
from pipeline.serve.app import app_builder, build_app
from pipeline.serve.options import TRANSLATOR_DEPLOYMENT, ServeOptions
from pipeline.translate.settings import DecodeSettings
from pipeline.translate.translator import Translator

API_KEY_ENV = "NMT_TEST_SERVE_API_KEY"
API_KEY = "correct horse battery staple"
# Replicas report load every 10 s by default; the autoscaling test needs it sooner. Set before
# Ray starts so the replica processes inherit them.
FAST_METRICS = {
    "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "0.5",
    "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "0.5",
}
SMALL_LIMITS = {"max_texts": 4, "max_chars": 200, "max_beam_size": 8, "num_cpus": 0.25}
TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.25)


@pytest.fixture(scope="module")
def serve_url() -> Iterator[str]:
    """Ray (2 CPUs) and Serve on a free loopback port, shut down after the module."""
    ray = pytest.importorskip("ray")
    from ray import serve

    added = {API_KEY_ENV: API_KEY, **FAST_METRICS}
    os.environ.update(added)
    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()
        for name in added:
            os.environ.pop(name, None)


def deploy(model_dir: Path, name: str, **options) -> str:
    """Run an application under /<name>; returns its URL."""
    from ray import serve

    serve.run(build_app(model_dir, **options), name=name, route_prefix=f"/{name}")
    return name


@pytest.fixture(scope="module")
def url(serve_url: str, tiny_model_dir: Path) -> str:
    """The application most tests use: batching on, one replica, small request limits."""
    name = deploy(tiny_model_dir, "main", max_batch_size=16, batch_wait_ms=20, **SMALL_LIMITS)
    return f"{serve_url}/{name}"


@pytest.fixture(scope="module")
def translator(tiny_model_dir: Path) -> Translator:
    return Translator(tiny_model_dir)


def german(count: int, seed: int) -> list[str]:
    return [de for de, _ in parallel_corpus(count, seed=seed)]


def post(url: str, body: dict, **kwargs) -> requests.Response:
    return requests.post(f"{url}/translate", json=body, timeout=TIMEOUT_S, **kwargs)


def test_translations_equal_the_in_process_translator(url: str, translator: Translator) -> None:
    texts = german(4, seed=11)
    response = post(url, {"text": texts, "beam_size": 4})
    assert response.status_code == 200, response.text
    body = response.json()
    expected = translator.translate(texts, replace(translator.settings, beam_size=4))
    assert body["translations"] == [t.text for t in expected]
    assert body["scores"] == pytest.approx([t.score for t in expected], abs=1e-4)
    assert body["model"] == translator.name
    assert "alternatives" not in body and "attention" not in body


def test_single_text_n_best_and_attention(url: str, translator: Translator) -> None:
    (text,) = german(1, seed=12)
    response = post(url, {"text": text, "beam_size": 4, "n_best": 3, "return_attention": True})
    assert response.status_code == 200, response.text
    body = response.json()
    n_best = replace(translator.settings, beam_size=4, n_best=3)
    (expected,) = translator.translate([text], n_best, return_attention=True)
    assert body["translations"] == [expected.text]
    (alternatives,) = body["alternatives"]
    assert [a["text"] for a in alternatives] == [text for text, _ in expected.alternatives]
    (attention,) = body["attention"]
    assert attention["source_pieces"] == expected.source_pieces
    assert attention["target_pieces"] == expected.target_pieces
    assert len(attention["weights"]) == len(expected.attention)
    for row in attention["weights"]:
        assert len(row) == len(expected.source_pieces)
        assert math.isclose(sum(row), 1.0, abs_tol=1e-3)  # a distribution over the source


def test_concurrent_requests_are_batched_without_cross_talk(
    url: str, translator: Translator
) -> None:
    texts = german(32, seed=13)
    expected = [t.text for t in translator.translate(texts)]
    assert len(set(expected)) > 16, "the sentences should mostly differ for this test to bite"
    with ThreadPoolExecutor(max_workers=32) as pool:
        responses = list(pool.map(lambda text: post(url, {"text": text}), texts))
    assert [r.status_code for r in responses] == [200] * 32
    assert [r.json()["translations"] for r in responses] == [[e] for e in expected]
    batch_sizes = [int(r.headers["X-Batch-Size"]) for r in responses]
    assert max(batch_sizes) > 1, f"no batch formed: {batch_sizes}"
    assert max(batch_sizes) <= 16  # max_batch_size


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"text": "Ein Hund', "JSON decode error"),
        ('["Ein Hund."]', "valid dictionary"),
        ('{"texts": "Ein Hund."}', "text: Field required"),
        ('{"text": 5}', "valid string"),
        ('{"text": ["Ein Hund.", 5]}', "valid string"),
        ('{"text": []}', "text list is empty"),
        ('{"text": ["a", "b", "c", "d", "e"]}', "at most 4 per request (max_texts)"),
        ('{"text": "' + "a" * 201 + '"}', "at most 200 per text (max_chars)"),
        ('{"text": "Ein Hund.", "beam_size": 0}', "beam_size: Input should be greater than"),
        ('{"text": "Ein Hund.", "beam_size": 9}', "beam_size: Input should be less than"),
        ('{"text": "Ein Hund.", "beam_size": 2, "n_best": 3}', "n_best (3) exceeds beam_size"),
        ('{"text": "Ein Hund.", "return_attention": "yes"}', "valid boolean"),
    ],
)
def test_bad_input_is_a_422_that_names_the_problem(url: str, body: str, message: str) -> None:
    response = requests.post(
        f"{url}/translate",
        data=body.encode(),
        headers={"Content-Type": "application/json"},
        timeout=TIMEOUT_S,
    )
    assert response.status_code == 422, response.text
    assert message in response.json()["error"]


def test_health_model_and_docs(url: str, translator: Translator) -> None:
    health = requests.get(f"{url}/health", timeout=TIMEOUT_S)
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "model": translator.name}
    model = requests.get(f"{url}/model", timeout=TIMEOUT_S).json()
    assert (model["src_lang"], model["tgt_lang"]) == ("de", "en")
    assert model["src_vocab_size"] == translator.src_tokenizer.vocab_size
    assert model["config"] == translator.model.config.to_dict()
    assert model["limits"]["max_texts"] == 4
    schema = requests.get(f"{url}/openapi.json", timeout=TIMEOUT_S).json()
    assert "4 texts per request, 200 characters per text" in schema["info"]["description"]
    assert requests.get(f"{url}/docs", timeout=TIMEOUT_S).status_code == 200


def test_api_key(serve_url: str, tiny_model_dir: Path) -> None:
    from ray import serve

    name = deploy(tiny_model_dir, "secured", api_key_env=API_KEY_ENV, **SMALL_LIMITS)
    url = f"{serve_url}/{name}"
    body = {"text": "Ein Hund läuft."}
    try:
        assert post(url, body).status_code == 401
        wrong = post(url, body, headers={"Authorization": "Bearer wrong"})
        assert wrong.status_code == 401
        assert wrong.headers["WWW-Authenticate"] == "Bearer"
        assert post(url, body, headers={"Authorization": API_KEY}).status_code == 401  # no scheme
        assert requests.get(f"{url}/model", timeout=TIMEOUT_S).status_code == 401
        right = post(url, body, headers={"Authorization": f"Bearer {API_KEY}"})
        assert right.status_code == 200
        assert right.json()["translations"][0]
        assert requests.get(f"{url}/health", timeout=TIMEOUT_S).status_code == 200  # for probes
    finally:
        serve.delete(name)


def translator_replicas(app: str) -> int:
    from ray import serve

    deployment = serve.status().applications[app].deployments[TRANSLATOR_DEPLOYMENT]
    return deployment.replica_states.get("RUNNING", 0)


# Ray compares look_back_period_s with the deprecated metrics_interval_s (10 s); the interval
# that matters is the metric push interval, 0.5 s here (FAST_METRICS).
@pytest.mark.filterwarnings("ignore:`look_back_period_s`:FutureWarning")
def test_autoscaling_follows_load(serve_url: str, tiny_model_dir: Path) -> None:
    from ray import serve

    # Each request waits 300 ms for its batch to fill, so a handful of clients keeps
    # several requests in flight against a target of 1 per replica.
    name = deploy(
        tiny_model_dir,
        "scaling",
        min_replicas=1,
        max_replicas=3,
        target_ongoing_requests=1,
        upscale_delay_s=0.5,
        downscale_delay_s=1,
        look_back_period_s=2,
        max_batch_size=64,
        batch_wait_ms=300,
        num_cpus=0.25,
    )
    url, stop = f"{serve_url}/{name}", threading.Event()
    assert translator_replicas(name) == 1

    def client(seed: int) -> None:
        texts = german(20, seed=seed)
        while not stop.is_set():
            for text in texts:
                if stop.is_set():
                    return
                assert post(url, {"text": text, "beam_size": 1}).status_code == 200

    try:
        with ThreadPoolExecutor(max_workers=6) as pool:
            clients = [pool.submit(client, seed) for seed in range(6)]
            try:
                wait_until(lambda: translator_replicas(name) > 1, 60, "a scale-up under load")
            finally:
                stop.set()
            for done in clients:
                done.result()
        wait_until(lambda: translator_replicas(name) == 1, 90, "the scale-down after the load")
    finally:
        serve.delete(name)


def test_killed_replica_is_replaced(serve_url: str, tiny_model_dir: Path) -> None:
    import ray
    from ray import serve

    name = deploy(tiny_model_dir, "crash", **SMALL_LIMITS)
    url = f"{serve_url}/{name}"

    def replica_actors() -> set[str]:
        return {
            actor["name"]
            for actor in ray.util.list_named_actors(all_namespaces=True)
            if f"::{name}#{TRANSLATOR_DEPLOYMENT}#" in actor["name"]  # Serve's replica actor name
        }

    try:
        (victim,) = replica_actors()
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
        wait_until(lambda: replica_actors() - {victim}, 60, "a replacement replica")
        wait_until(lambda: translator_replicas(name) == 1, 60, "the replacement to run")
        assert post(url, {"text": "Ein Hund läuft."}).status_code == 200
    finally:
        serve.delete(name)


def test_health_check_fails_for_an_unusable_model(tiny_model_dir: Path) -> None:
    from pipeline.serve.app import TranslatorDeployment

    replica = TranslatorDeployment.func_or_class(str(tiny_model_dir), ServeOptions())
    asyncio.run(replica.check_health())  # a good model passes
    with torch.no_grad():
        for parameter in replica.translator.model.parameters():
            parameter.fill_(math.nan)
    with pytest.raises(RuntimeError, match="not usable"):
        asyncio.run(replica.check_health())


def test_app_builder_converts_serve_run_arguments(tiny_model_dir: Path) -> None:
    app = app_builder({"model": str(tiny_model_dir), "max_batch_size": "8", "num_cpus": "0.5"})
    assert type(app).__name__ == "Application"
    with pytest.raises(UserError, match="need `model`"):
        app_builder({"max_batch_size": "8"})
    with pytest.raises(UserError, match="unknown serve options"):
        build_app(tiny_model_dir, max_batch=8)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"min_replicas": 3, "max_replicas": 2}, "--min-replicas"),
        ({"max_batch_size": 0}, "max_batch_size must be at least 1"),
        ({"beam_size": 20}, "beam_size must be between 1 and max_beam_size"),
        ({"beam_prune": -0.5}, "--beam-prune must be 0"),
        ({"precision": "fp16"}, "precision must be one of fp32, bf16"),
    ],
)
def test_bad_options_are_user_errors(options: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        ServeOptions.from_flat(options)


def test_flat_options_fill_the_decoding_settings() -> None:
    flat = ServeOptions.from_flat({"beam_size": 3, "precision": "bf16", "max_batch_size": 8})
    nested = ServeOptions(decoding=DecodeSettings(beam_size=3, precision="bf16"), max_batch_size=8)
    assert flat == nested
    assert ServeOptions.from_flat({"decoding": {"beam_size": 3}}).decoding.beam_size == 3


def test_cli_rejects_a_missing_model_and_an_unset_key_variable(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert nmt(["serve", "--model", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    os.environ.pop("NMT_TEST_UNSET_KEY", None)
    argv = ["serve", "--model", str(tiny_model_dir), "--api-key-env", "NMT_TEST_UNSET_KEY"]
    assert nmt(argv) == 2
    assert "NMT_TEST_UNSET_KEY, which is not set" in capsys.readouterr().err


def test_serve_config_yaml_builds_the_application(tiny_model_dir: Path) -> None:
    """serve_config.yaml's import path and args, as `serve run serve_config.yaml` reads them."""
    import importlib

    import yaml

    config = yaml.safe_load((Path(__file__).parents[1] / "serve_config.yaml").read_text())
    (application,) = config["applications"]
    module_name, _, builder_name = application["import_path"].partition(":")
    builder = getattr(importlib.import_module(module_name), builder_name)
    app = builder({**application["args"], "model": str(tiny_model_dir)})
    assert type(app).__name__ == "Application"
