"""`nmt serve`: the Ray Serve application over real HTTP on a free loopback port.

One Ray instance and one Serve instance for the module; each test's application gets its own
name and route prefix, so they share the proxy and fit on 2 CPUs (0.25 CPU per replica).
`multi` serves three models (tests/model_zoo.py) from one replica that holds two at a time,
so traffic cycling through the models makes it swap; it is the one the LibreTranslate client,
the bad-request table, the metrics and the browser test use.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import re
import shutil
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
from model_zoo import ZOO, build_zoo

from pipeline.cli import main as nmt
from pipeline.corpus.synthetic import parallel_corpus
from pipeline.errors import UserError
from pipeline.serve.app import app_builder, build_app
from pipeline.serve.deployment import probe
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
CHINESE = ["一个男人在跑。", "一只狗在公园里玩！", "孩子们在哪里？"]
FRENCH = "Le chat dort sur le canapé pendant que les enfants jouent dehors."
SCREENSHOT_ENV = (
    "NMT_SAVE_PAGE_SCREENSHOT"  # set: the browser test saves docs/images/serve-page.png
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def eventually(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Whether `condition` holds within `timeout_s`, polled."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.25)
    return True


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    if not eventually(condition, timeout_s):
        pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}")


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def serve_url(metrics_port: int) -> Iterator[str]:
    """Ray (2 CPUs, metrics on `metrics_port` every second) and Serve on a free loopback port,
    shut down after the module."""
    ray = pytest.importorskip("ray")
    from ray import serve

    added = {API_KEY_ENV: API_KEY, **FAST_METRICS}
    os.environ.update(added)
    port = free_port()
    init_ray_with_metrics(metrics_port)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()
        for name in added:
            os.environ.pop(name, None)


def init_ray_with_metrics(metrics_port: int) -> None:
    """A local Ray of 2 CPUs exporting metrics on `metrics_port` every second."""
    import ray

    ray.init(
        address="local",  # never another session's cluster
        num_cpus=2,
        include_dashboard=False,
        _metrics_export_port=metrics_port,
        _system_config={"metrics_report_interval_ms": 1000},
    )


def deploy(models: Path | list[str], name: str, **options) -> str:
    """Run an application under /<name>; returns its name."""
    from ray import serve

    serve.run(build_app(models, **options), name=name, route_prefix=f"/{name}")
    return name


@pytest.fixture(scope="module")
def url(serve_url: str, tiny_model_dir: Path) -> str:
    """The application most tests use: batching on, one replica, small request limits."""
    name = deploy(tiny_model_dir, "main", max_batch_size=16, batch_wait_ms=20, **SMALL_LIMITS)
    return f"{serve_url}/{name}"


@pytest.fixture(scope="module")
def translator(tiny_model_dir: Path) -> Translator:
    return Translator(tiny_model_dir)


@pytest.fixture(scope="module")
def zoo(tiny_model_dir: Path, tmp_path_factory) -> dict[str, Path]:
    """Model id -> model dir: de-en, en-de and zh-en (model_zoo.ZOO)."""
    return build_zoo(tiny_model_dir, tmp_path_factory.mktemp("zoo"))


@pytest.fixture(scope="module")
def translators(zoo: dict[str, Path]) -> dict[str, Translator]:
    return {model_id: Translator(path) for model_id, path in zoo.items()}


@pytest.fixture(scope="module")
def multi(serve_url: str, zoo: dict[str, Path]) -> str:
    """Three models (given as ID=PATH) on one replica that holds two of them at a time."""
    models = [f"{model_id}={path}" for model_id, path in zoo.items()]
    limits = {**SMALL_LIMITS, "min_replicas": 1, "max_replicas": 1, "models_per_replica": 2}
    name = deploy(models, "multi", max_batch_size=16, batch_wait_ms=20, **limits)
    return f"{serve_url}/{name}"


def german(count: int, seed: int) -> list[str]:
    return [de for de, _ in parallel_corpus(count, seed=seed)]


def english(count: int, seed: int) -> list[str]:
    return [en for _, en in parallel_corpus(count, seed=seed)]


def texts_for(source: str, count: int, seed: int) -> list[str]:
    """Sentences in a model's source language."""
    return {"de": german, "en": english}[source](count, seed) if source != "zh" else CHINESE


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
    assert body["model"] == f"{translator.meta['src_lang']}-{translator.meta['tgt_lang']}"
    assert not {"alternatives", "attention", "detected_language"} & set(body)


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


def test_sampling_fields_decode_as_the_translator_samples(url: str, translator: Translator) -> None:
    """A request's sampling fields reach the replica: a seed gives the Translator's samples,
    n_best (above beam_size) gives that many distinct samples."""
    texts = german(3, seed=13)
    sampling = {"sample": True, "temperature": 1.5, "top_p": 0.95, "seed": 5}
    response = post(url, {"text": texts, "n_best": 3, "beam_size": 1, **sampling})
    assert response.status_code == 200, response.text
    body = response.json()
    settings = replace(translator.settings, n_best=3, beam_size=1, **sampling)
    expected = translator.translate(texts, settings)
    assert body["translations"] == [t.text for t in expected]
    for alternatives in body["alternatives"]:
        assert len({a["text"] for a in alternatives}) == len(alternatives) > 1
    assert post(url, {"text": texts, "sample": True, "top_p": 0}).status_code == 422


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
        ('{"text": ""}', "text 0 is empty"),
        ('{"text": ["Ein Hund.", "  "]}', "text 1 is empty"),
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
    assert health.json() == {"status": "ok", "model": "de-en"}
    model = requests.get(f"{url}/model", timeout=TIMEOUT_S).json()
    assert (model["id"], model["src_lang"], model["tgt_lang"]) == ("de-en", "de", "en")
    assert model["src_vocab_size"] == translator.src_tokenizer.vocab_size
    assert model["config"] == translator.model.config.to_dict()
    assert model["limits"]["max_texts"] == 4
    schema = requests.get(f"{url}/openapi.json", timeout=TIMEOUT_S).json()
    assert "4 texts per request, 200 characters per text" in schema["info"]["description"]
    assert requests.get(f"{url}/docs", timeout=TIMEOUT_S).status_code == 200


def test_api_key(serve_url: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    from libretranslatepy import LibreTranslateAPI
    from ray import serve

    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("# the first with its own rate limit\nslow-key 2\n\nfast-key\n")
    name = deploy(
        tiny_model_dir,
        "secured",
        api_key_env=API_KEY_ENV,
        api_keys_file=str(keys_file),
        **SMALL_LIMITS,
    )
    url = f"{serve_url}/{name}"
    body = {"text": "Ein Hund läuft."}
    libre = {"q": "Ein Hund läuft.", "source": "de", "target": "en"}
    try:
        assert post(url, body).status_code == 401
        wrong = post(url, body, headers={"Authorization": "Bearer wrong"})
        assert wrong.status_code == 401
        assert wrong.headers["WWW-Authenticate"] == "Bearer"
        assert "wrong API key" in wrong.json()["error"]
        assert post(url, body, headers={"Authorization": API_KEY}).status_code == 401  # no scheme
        assert requests.get(f"{url}/model", timeout=TIMEOUT_S).status_code == 401
        assert requests.get(f"{url}/models", timeout=TIMEOUT_S).status_code == 401
        right = post(url, body, headers={"Authorization": f"Bearer {API_KEY}"})
        assert right.status_code == 200
        assert right.json()["translations"][0]
        assert requests.get(f"{url}/health", timeout=TIMEOUT_S).status_code == 200  # for probes
        # LibreTranslate's clients send the key in the body, form-encoded or JSON
        for key in (None, "wrong"):
            form = {**libre, "api_key": key} if key else libre
            answer = requests.post(f"{url}/translate", data=form, timeout=TIMEOUT_S)
            assert answer.status_code == 401 and "API key" in answer.json()["error"]
            detect = requests.post(f"{url}/detect", data={"q": "Hund", "api_key": key or ""})
            assert detect.status_code == 401
        assert post(url, {**libre, "api_key": API_KEY}).json()["translatedText"]
        client = LibreTranslateAPI(url, api_key=API_KEY)
        assert client.translate(libre["q"], "de", "en") == right.json()["translations"][0]
        assert requests.get(f"{url}/languages", timeout=TIMEOUT_S).status_code == 200  # open
        # the file's keys: one limited to 2 requests a minute, one under no limit
        slow = [post(url, body, headers={"Authorization": "Bearer slow-key"}) for _ in range(3)]
        assert [r.status_code for r in slow] == [200, 200, 429]
        assert int(slow[-1].headers["Retry-After"]) >= 1
        assert "rate limit of 2 requests per minute" in slow[-1].json()["error"]
        fast = [post(url, {**libre, "api_key": "fast-key"}) for _ in range(3)]
        assert [r.status_code for r in fast] == [200] * 3
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


def test_health_probe_fails_for_an_unusable_model(tiny_model_dir: Path) -> None:
    """The translator's check_health probes the model it used last with this."""
    translator = Translator(tiny_model_dir)
    probe(translator)  # a good model passes
    with torch.no_grad():
        for parameter in translator.model.parameters():
            parameter.fill_(math.nan)
    with pytest.raises(RuntimeError, match="not usable"):
        probe(translator)


def test_app_builder_converts_serve_run_arguments(tiny_model_dir: Path, zoo) -> None:
    app = app_builder({"model": str(tiny_model_dir), "max_batch_size": "8", "num_cpus": "0.5"})
    assert type(app).__name__ == "Application"
    models = [{"id": "a", "path": str(zoo["de-en"])}, {"path": str(zoo["en-de"])}]
    assert type(app_builder({"models": models})).__name__ == "Application"
    with pytest.raises(UserError, match="need `model`"):
        app_builder({"max_batch_size": "8"})
    with pytest.raises(UserError, match="unknown serve options"):
        build_app(tiny_model_dir, max_batch=8)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"min_replicas": 3, "max_replicas": 2}, "--min-replicas"),
        ({"models_per_replica": 0}, "models_per_replica must be at least 1"),
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


# -- holding up under load: body size, shedding, deadlines, rate limits -----------------------
GUARDED = {
    "max_batch_size": 4,
    "backlog_batches": 1,  # a replica holds 4 sentences
    "batch_wait_ms": 3000,  # a batch short of 4 waits 3 s, longer than the deadline
    "request_timeout_s": 1.0,
    "retry_after_s": 1.0,
    "rate_limit": 10,  # per minute and client address
    "max_body_bytes": 2000,
    "num_cpus": 0.25,
}


@pytest.fixture(scope="module")
def guarded(serve_url: str, tiny_model_dir: Path) -> str:
    """One replica holding at most one batch of 4 sentences, which waits 3 s to fill; a 1 s
    deadline; 10 requests a minute per client; bodies of at most 2,000 bytes."""
    return f"{serve_url}/{deploy(tiny_model_dir, 'guarded', **GUARDED)}"


def raw_post(url: str, headers: dict[str, str], chunks: list[bytes]) -> tuple[int, dict]:
    """POST with the given headers, then `chunks` as a chunked body (none: headers only), and
    the answer's status and JSON body."""
    parts = url.removeprefix("http://").split("/", 1)
    host, port = parts[0].split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT_S)
    try:
        connection.putrequest("POST", f"/{parts[1]}/translate")
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders()
        for chunk in chunks:
            connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        if chunks:
            connection.send(b"0\r\n\r\n")
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_a_body_over_the_limit_is_413_before_it_is_read(guarded: str, metrics_port: int) -> None:
    json_type = {"Content-Type": "application/json"}
    # 30 MB announced and never sent: the answer cannot have waited for the body
    status, body = raw_post(guarded, {**json_type, "Content-Length": "30000000"}, [])
    assert status == 413 and "over 2000 bytes" in body["error"] and "\n" not in body["error"]
    chunked = {**json_type, "Transfer-Encoding": "chunked"}
    status, body = raw_post(guarded, chunked, [b'{"text": "' + b"a" * 1000] * 5)
    assert status == 413 and "over 2000 bytes" in body["error"]
    four = [b'{"text": ["Ein Hund.", "Eine Katze.", ', b'"Ein Mann.", "Eine Frau."]}']
    status, body = raw_post(guarded, chunked, four)
    assert status == 200, body  # a chunked body within the limit is read as usual
    wait_until(
        lambda: (
            scrape(metrics_port, "ray_nmt_refused_total", "reason").get("body_too_large", 0) >= 2
        ),
        60,
        "the refused bodies counted",
    )


def test_no_room_is_503_with_retry_after_and_a_deadline_miss_is_504(
    guarded: str, metrics_port: int
) -> None:
    with ThreadPoolExecutor(max_workers=1) as pool:
        # 3 sentences wait for a 4th to fill their batch, past the 1 s deadline
        waiting = pool.submit(post, guarded, {"text": ["Ein Hund.", "Eine Katze.", "Ein Mann."]})
        time.sleep(0.4)  # the first request has reached the replica
        refused = post(guarded, {"text": ["Zwei Hunde.", "Zwei Katzen."]})
        timed_out = waiting.result()
    assert refused.status_code == 503, refused.text
    assert int(refused.headers["Retry-After"]) >= 1
    assert "busy" in refused.json()["error"] and "\n" not in refused.json()["error"]
    assert timed_out.status_code == 504, timed_out.text
    assert "1 s deadline" in timed_out.json()["error"]
    # the request past its deadline was cancelled on the replica and left its backlog: 3
    # more sentences are let in (and time out in turn) rather than refused
    again = post(guarded, {"text": ["Zwei Hunde.", "Zwei Katzen.", "Zwei Frauen."]})
    assert again.status_code == 504, again.text

    def counted() -> bool:
        shed = scrape(metrics_port, "ray_nmt_shed_total").get("de-en", 0)
        return (
            shed >= 1
            and scrape(metrics_port, "ray_nmt_deadline_exceeded_total").get("de-en", 0) >= 1
        )

    wait_until(counted, 60, "the shed and deadline metrics")


class SourceAddress(requests.adapters.HTTPAdapter):
    """Connections from another loopback address: to the server, another client."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, source_address=(self.address, 0), **kwargs)


def client_at(address: str) -> requests.Session:
    session = requests.Session()
    session.mount("http://", SourceAddress(address))
    return session


def test_rate_limit_per_client_address(guarded: str) -> None:
    limited, other = client_at("127.0.0.2"), client_at("127.0.0.3")
    statuses = []
    for _ in range(12):  # cheap requests: detection only, but they count as any other
        answer = limited.post(f"{guarded}/detect", data={"q": "Ein Hund."}, timeout=TIMEOUT_S)
        statuses.append(answer.status_code)
        if answer.status_code == 429:
            break
    assert statuses == [200] * 10 + [429], "a minute's worth, then refused"
    assert 1 <= int(answer.headers["Retry-After"]) <= 6  # one request per 6 s comes back
    assert "rate limit of 10 requests per minute" in answer.json()["error"]
    assert other.post(f"{guarded}/detect", data={"q": "Hund"}, timeout=TIMEOUT_S).ok
    assert limited.get(f"{guarded}/health", timeout=TIMEOUT_S).ok, "probes are not limited"


# -- many models behind one application ------------------------------------------------------
def expected_texts(translator: Translator, texts: list[str], **settings) -> list[str]:
    return [t.text for t in translator.translate(texts, replace(translator.settings, **settings))]


def test_each_model_translates_as_its_own_translator(
    multi: str, translators: dict[str, Translator]
) -> None:
    outputs = {}
    for model_id, (source, target, _) in ZOO.items():
        texts = texts_for(source, 3, seed=31)
        expected = expected_texts(translators[model_id], texts, beam_size=3)
        for routing in ({"source": source, "target": target}, {"model": model_id}):
            response = post(multi, {"text": texts, "beam_size": 3, **routing})
            assert response.status_code == 200, response.text
            assert response.json()["translations"] == expected, routing
            assert response.json()["model"] == model_id
        outputs[model_id] = expected_texts(translators[model_id], german(4, seed=32))
    assert len({tuple(texts) for texts in outputs.values()}) > 1, "the models should differ"
    default = post(multi, {"text": german(1, seed=33)})
    assert default.json()["model"] == "de-en", "no pair and no id: the first model"


def test_mixed_concurrent_traffic_is_batched_per_model(
    multi: str, translators: dict[str, Translator]
) -> None:
    jobs = [
        (model_id, text)
        for model_id, (source, _, _) in ZOO.items()
        for text in texts_for(source, 3, seed=34)
    ]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        responses = list(pool.map(lambda job: post(multi, {"text": job[1], "model": job[0]}), jobs))
    assert [r.status_code for r in responses] == [200] * len(jobs)
    for (model_id, text), response in zip(jobs, responses, strict=True):
        assert response.json()["translations"] == expected_texts(translators[model_id], [text])
    assert max(int(r.headers["X-Batch-Size"]) for r in responses) > 1, "no batch formed"


def test_a_replica_holds_models_per_replica_and_loads_others_on_demand(multi: str) -> None:
    from ray import serve

    for model_id in [*ZOO, *ZOO]:  # three models through a replica that holds two
        assert post(multi, {"text": "Ein Hund.", "model": model_id}).status_code == 200
    assert translator_replicas("multi") == 1
    handle = serve.get_deployment_handle(TRANSLATOR_DEPLOYMENT, app_name="multi")
    loads = handle.replica_state.remote().result()["loads"]
    assert set(loads) == set(ZOO), "each model loaded when first asked for"
    assert max(loads.values()) >= 2, f"a model dropped (LRU) and loaded again: {loads}"


def test_models_languages_and_the_default_model(
    multi: str, translators: dict[str, Translator]
) -> None:
    listing = requests.get(f"{multi}/models", timeout=TIMEOUT_S).json()
    assert listing["default"] == "de-en"
    assert [m["id"] for m in listing["models"]] == list(ZOO)
    for entry in listing["models"]:
        translator = translators[entry["id"]]
        assert (entry["source"], entry["target"]) == ZOO[entry["id"]][:2]
        assert entry["parameters"] == translator.model.num_parameters()
        assert entry["src_vocab_size"] == translator.src_tokenizer.vocab_size
    assert listing["limits"]["models_per_replica"] == 2
    assert listing["limits"]["max_chars"] == 200
    languages = requests.get(f"{multi}/languages", timeout=TIMEOUT_S).json()
    targets = {
        code: sorted(t for s, t, _ in ZOO.values() if s == code) for code in ["de", "en", "zh"]
    }
    assert [(lang["code"], lang["targets"]) for lang in languages] == list(targets.items())
    assert {lang["code"]: lang["name"] for lang in languages}["zh"] == "Chinese"
    assert requests.get(f"{multi}/model", timeout=TIMEOUT_S).json()["id"] == "de-en"


def test_libretranslate_client_library(multi: str, translators: dict[str, Translator]) -> None:
    from libretranslatepy import LibreTranslateAPI

    client = LibreTranslateAPI(multi)
    (text,) = german(1, seed=35)
    assert client.translate(text, "de", "en") == expected_texts(translators["de-en"], [text])[0]
    english_text = english(1, seed=35)[0]
    assert (
        client.translate(english_text, "en", "de")
        == (expected_texts(translators["en-de"], [english_text])[0])
    )
    assert (
        client.translate(CHINESE[0], "auto", "en")
        == (expected_texts(translators["zh-en"], [CHINESE[0]])[0])
    )
    detected = client.detect(text)
    assert detected[0]["language"] == "de" and detected[0]["confidence"] > 50
    assert client.languages() == requests.get(f"{multi}/languages", timeout=TIMEOUT_S).json()


def test_libretranslate_bodies_json_and_form(
    multi: str, translators: dict[str, Translator]
) -> None:
    texts = german(2, seed=36)
    body = post(multi, {"q": texts, "source": "de", "target": "en", "alternatives": 2}).json()
    n_best = translators["de-en"].translate(texts, replace(translators["de-en"].settings, n_best=3))
    assert body["translatedText"] == [t.text for t in n_best]
    assert len(body["alternatives"]) == 2 and "detectedLanguage" not in body
    for alternatives, translation in zip(body["alternatives"], n_best, strict=True):
        others = [text for text, _ in translation.alternatives[1:]]
        assert alternatives == list(dict.fromkeys(t for t in others if t != translation.text))
    auto = post(multi, {"q": texts, "source": "auto", "target": "en"}).json()
    assert auto["translatedText"] == expected_texts(translators["de-en"], texts)
    assert [d["language"] for d in auto["detectedLanguage"]] == ["de", "de"]
    assert "alternatives" not in auto
    form = {"q": texts[0], "source": "auto", "target": "en", "alternatives": "1"}
    single = requests.post(f"{multi}/translate", data=form, timeout=TIMEOUT_S).json()
    assert single["translatedText"] == auto["translatedText"][0]
    assert (
        isinstance(single["alternatives"], list) and single["detectedLanguage"]["language"] == "de"
    )


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("translate", {"text": "Ein Hund.", "source": "fr", "target": "en"}, 400,
         "source language 'fr' is not served; served: de, en, zh"),
        ("translate", {"text": "Ein Hund.", "source": "de", "target": "zh"}, 400,
         "target language 'zh' is not served; served: de, en"),
        ("translate", {"text": "Ein Hund.", "source": "en", "target": "en"}, 400,
         "no model translates en to en; pairs: de-en, en-de, zh-en"),
        ("translate", {"text": "Ein Hund.", "model": "fr-en"}, 400,
         "unknown model 'fr-en'; models: de-en, en-de, zh-en"),
        ("translate", {"text": "Ein Hund.", "model": "../de-en"}, 400, "unknown model"),
        ("translate", {"text": "Ein Hund.", "model": "de-en", "source": "en"}, 400,
         "model de-en translates de-en, not en"),
        ("translate", {"text": FRENCH, "source": "auto", "target": "en"}, 400,
         "looks like French (fr), which no model translates from; served: de, en, zh"),
        ("translate", {"text": " ", "source": "auto", "target": "en"}, 422, "text 0 is empty"),
        ("translate", {"q": FRENCH, "source": "auto", "target": "en"}, 400, "French (fr)"),
        ("translate", {"q": "Ein Hund.", "source": "xx", "target": "en"}, 400,
         "source language 'xx' is not served"),
        ("translate", {"q": ["Ein Hund."] * 5, "source": "de", "target": "en"}, 400,
         "5 texts; at most 4 per request (max_texts)"),
        ("translate", {"q": ["Ein Hund.", ""], "source": "de", "target": "en"}, 400,
         "q 1 is empty"),
        ("translate", {"q": "a" * 201, "source": "de", "target": "en"}, 400,
         "at most 200 per text (max_chars)"),
        ("translate", {"q": "", "source": "de", "target": "en"}, 400, "missing q parameter"),
        ("translate", {"q": "Ein Hund.", "target": "en"}, 400, "missing source parameter"),
        ("translate", {"q": "Ein Hund.", "source": "de", "target": "en", "format": "html"}, 400,
         "html format is not supported yet"),
        ("translate", {"q": "Ein Hund.", "source": "de", "target": "en", "alternatives": "x"},
         400, "alternatives parameter is not a number"),
        ("translate", {"q": "Ein Hund.", "source": "de", "target": "en", "alternatives": 8},
         400, "alternatives parameter must be <= 7"),
        ("translate", "source=de&target=en", 400, "missing q parameter"),
        ("translate", "q=&source=de&target=en", 400, "missing q parameter"),
        ("detect", "q=", 400, "missing q parameter"),
        ("detect", {"q": FRENCH}, 400, "French (fr)"),
    ],
)  # fmt: skip
def test_bad_requests_are_4xx_with_one_line(
    multi: str, path: str, body: dict | str, status: int, message: str
) -> None:
    if isinstance(body, str):  # a form body, as LibreTranslate's clients send it
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        response = requests.post(f"{multi}/{path}", data=body, headers=headers, timeout=TIMEOUT_S)
    else:
        response = requests.post(f"{multi}/{path}", json=body, timeout=TIMEOUT_S)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert message in error and "\n" not in error


def test_a_request_never_names_a_path(multi: str, zoo: dict[str, Path]) -> None:
    """A model id is looked up among the configured models only, even a real model dir."""
    for model in (str(zoo["de-en"]), str(zoo["de-en"] / "weights.pt"), "de-en/../en-de"):
        response = post(multi, {"text": "Ein Hund.", "model": model})
        assert response.status_code == 400 and "unknown model" in response.json()["error"]
    upload = requests.post(f"{multi}/translate", files={"q": ("q.txt", b"Ein Hund.")})
    assert upload.status_code == 400 and "x-www-form-urlencoded" in upload.json()["error"]


def scrape(metrics_port: int, name: str, tag: str = "model") -> dict[str, float]:
    """`tag` value (a model id) -> the value of the metric `name` on Ray's Prometheus
    endpoint (summed over the replicas that report it)."""
    text = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=TIMEOUT_S).text
    values: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(rf"{name}\{{(.*)\}} ([0-9.e+-]+)$", line)
        found = match and re.search(rf'{tag}="([^"]+)"', match.group(1))
        if found:
            values[found.group(1)] = values.get(found.group(1), 0.0) + float(match.group(2))
    return values


def test_per_model_metrics_reach_prometheus(multi: str, metrics_port: int) -> None:
    for model_id in ZOO:
        assert post(multi, {"text": ["Ein Hund.", "Zwei Katzen."], "model": model_id}).ok

    def exported() -> bool:
        requests_total = scrape(metrics_port, "ray_nmt_requests_total")
        sentences = scrape(metrics_port, "ray_nmt_sentences_total")
        latency = scrape(metrics_port, "ray_nmt_decode_seconds_count")
        return all(
            requests_total.get(m, 0) >= 1 and sentences.get(m, 0) >= 2 and latency.get(m, 0) >= 1
            for m in ZOO
        )

    wait_until(exported, 60, "per-model request, sentence and latency metrics")


def test_cli_rejects_a_broken_model_before_serving(
    tmp_path: Path, zoo: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(zoo["en-de"], broken)
    (broken / "weights.pt").write_bytes(b"not a checkpoint")
    good = ["--model", str(zoo["de-en"])]
    assert nmt(["serve", *good, "--model", f"bad={broken}", "--port", str(free_port())]) == 2
    error = capsys.readouterr().err.strip()
    assert f"model bad ({broken}) cannot be loaded" in error and "\n" not in error
    twice = ["--model", f"a={zoo['de-en']}", "--model", f"a={zoo['en-de']}"]
    assert nmt(["serve", *twice]) == 2
    assert "two models have the id 'a'" in capsys.readouterr().err
    assert nmt(["serve", "--models", str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert nmt(["serve"]) == 2
    assert "no model given" in capsys.readouterr().err


# -- the web page in a real browser ----------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Iterator:
    """Headless Chromium through chromedriver (Debian's packages); skipped outside CI when
    they are not installed, a failure in CI."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if not (chromium and chromedriver):
        message = "no headless browser: apt-get install chromium chromium-driver"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI must have them: .ci/run installs them)")
        pytest.skip(message)
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(chromedriver))
    try:
        yield driver
    finally:
        driver.quit()


def open_page_de_en(browser, url: str):
    """The page at `url` with German -> English picked once the languages have loaded;
    returns a WebDriverWait on it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(browser, TIMEOUT_S)
    browser.get(f"{url}/")
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#source option[value=de]"))
    Select(browser.find_element(By.ID, "source")).select_by_value("de")
    Select(browser.find_element(By.ID, "target")).select_by_value("en")
    return wait


def test_page_translates_shows_alternatives_attention_and_errors(
    browser, multi: str, translators: dict[str, Translator], tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    wait = open_page_de_en(browser, multi)
    Select(browser.find_element(By.ID, "alternatives")).select_by_value("2")
    browser.find_element(By.ID, "api-key").send_keys("kept-in-the-browser")
    texts = german(2, seed=37)
    box = browser.find_element(By.ID, "text")
    box.send_keys("\n".join(texts))
    box.send_keys(Keys.CONTROL, Keys.ENTER)
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".translation")) == 2)

    translator = translators["de-en"]
    settings = replace(translator.settings, beam_size=5, n_best=3)  # the page's beam for 2 more
    expected = translator.translate(texts, settings, return_attention=True)
    shown = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".translation")]
    assert shown == [t.text for t in expected]
    lists = browser.find_elements(By.CSS_SELECTOR, ".alternatives")
    for items, translation in zip(lists, expected, strict=True):
        candidates = [e.text for e in items.find_elements(By.CSS_SELECTOR, ".candidate")]
        assert candidates == [text for text, _ in translation.alternatives[1:]]
    canvases = browser.find_elements(By.CSS_SELECTOR, "canvas.heatmap")
    for canvas, translation in zip(canvases, expected, strict=True):
        assert int(canvas.get_attribute("data-rows")) == len(translation.attention)
        assert int(canvas.get_attribute("data-columns")) == len(translation.source_pieces)
        painted = browser.execute_script(
            "const c = arguments[0], d = c.getContext('2d').getImageData(0, 0, c.width, c.height)"
            ".data; let n = 0; for (let i = 3; i < d.length; i += 4) n += d[i] > 0; return n;",
            canvas,
        )
        assert painted > len(translation.attention) * len(translation.source_pieces)
    stored = browser.execute_script("return localStorage.getItem('nmt-serve-api-key')")
    assert stored == "kept-in-the-browser"
    screenshot = Path(__file__).parents[1] / "docs/images/serve-page.png"
    browser.save_screenshot(
        str(screenshot if os.environ.get(SCREENSHOT_ENV) else tmp_path / "p.png")
    )

    browser.execute_script("arguments[0].value = arguments[1]", box, "a" * 201)
    browser.find_element(By.ID, "translate").click()
    error = browser.find_element(By.ID, "error")
    wait.until(lambda b: error.is_displayed())
    assert "at most 200 per text (max_chars)" in error.text


def test_page_sends_a_glossary_and_a_prefix_and_shows_the_signals(
    browser, multi: str, translators: dict[str, Translator]
) -> None:
    from selenium.webdriver.common.by import By

    from pipeline.translate.glossary import constraints_for

    wait = open_page_de_en(browser, multi)
    texts = german(2, seed=53)
    glossary = {texts[0].split()[1]: "water"}
    browser.find_element(By.ID, "glossary").send_keys(f"{texts[0].split()[1]} = water; ")
    browser.find_element(By.ID, "prefix").send_keys("a")
    browser.find_element(By.ID, "text").send_keys("\n".join(texts))
    browser.find_element(By.ID, "translate").click()
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".translation")) == 2)

    translator = translators["de-en"]
    expected = translator.translate(
        texts,
        prefixes=["a"] * len(texts),
        constraints=[constraints_for(text, glossary) for text in texts],
    )
    shown = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".translation")]
    assert shown == [t.text for t in expected]
    assert "water" in shown[0] and all(text.startswith("a") for text in shown)
    signals = browser.find_elements(By.CSS_SELECTOR, ".signals")
    coverages = [float(line.get_attribute("data-coverage")) for line in signals]
    assert coverages == pytest.approx([t.signals.coverage for t in expected], abs=1e-6)
    assert all("mean log-prob" in line.text for line in signals)


def test_glossary_prefix_signals_and_score(url: str, translator: Translator) -> None:
    """Issue 22's request fields: each answer is the in-process Translator's."""
    texts = german(3, seed=31)
    word = texts[0].split()[1]
    glossary = {word: "water", "KeinWort": "sky"}
    body = {"text": texts, "beam_size": 2, "target_prefix": [None, "a dog", None]}
    response = post(url, {**body, "glossary": glossary})
    assert response.status_code == 200, response.text
    settings = replace(translator.settings, beam_size=2)
    constraints = [["water"] if word in text.split() else [] for text in texts]
    expected = translator.translate(
        texts, settings, prefixes=body["target_prefix"], constraints=constraints
    )
    result = response.json()
    assert result["translations"] == [t.text for t in expected]
    assert "water" in result["translations"][0] and result["translations"][1].startswith("a dog")
    assert [s["coverage"] for s in result["signals"]] == pytest.approx(
        [t.signals.coverage for t in expected]
    )
    pairs = {"text": texts, "translation": result["translations"]}
    scored = requests.post(f"{url}/score", json=pairs, timeout=TIMEOUT_S)
    assert scored.status_code == 200, scored.text
    assert scored.json()["log_probs"] == pytest.approx(
        [s.log_prob for s in translator.score(texts, result["translations"])], abs=1e-4
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"text": "Ein Hund.", "glossary": {"Hund": " "}}, "glossary: empty term"),
        ({"text": "Ein Hund.", "target_prefix": "a dog " * 30}, "the target prefix of text 0"),
        ({"text": ["Ein Hund.", "Ein Hund."], "target_prefix": ["a"]}, "1 target prefixes for 2"),
        ({"text": "Ein Hund.", "glossary": {"Hund": "a dog sits " * 6}}, "the constraints of"),
    ],
)
def test_bad_prefixes_and_glossaries_are_422s(url: str, body: dict, message: str) -> None:
    response = post(url, body)
    assert response.status_code == 422, response.text
    assert message in response.json()["error"] and "\n" not in response.json()["error"]
    bad_score = requests.post(f"{url}/score", json={"text": "Ein Hund.", "translation": []})
    assert bad_score.status_code == 422 and "1 texts but 0 translations" in bad_score.text
