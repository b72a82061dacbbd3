"""Pins the model: decoding, padding, attention, checkpoints, and what attention buys."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import torch

from models.attention import AdditiveAttention, RowSources
from models.config import ModelConfig
from models.model_dir import load_model, save_model
from models.search import StepDecoder, beam_search, greedy_search
from models.seq2seq import Seq2Seq
from models.toy import encode_symbols, exact_match, make_pairs, train_toy
from models.training import collate

SENTENCES = ["abcdefghij", "xyz", "hello", "qwertyuiopasdfg", "mno"]


def toy_batch(texts: list[str], config: ModelConfig):
    pairs = [(encode_symbols(t), encode_symbols(t[::-1])) for t in texts]
    return collate(pairs, config.pad_id, config.bos_id, config.eos_id)


def random_model(attention: str = "bahdanau", seed: int = 0, **config_changes) -> Seq2Seq:
    torch.manual_seed(seed)
    config = ModelConfig(
        src_vocab_size=30,
        tgt_vocab_size=30,
        emb_size=16,
        enc_hidden_size=16,
        dec_hidden_size=24,
        attention_size=20,
        deep_output_size=8,
        dropout=0.3,
        attention=attention,
    )
    return Seq2Seq(dataclasses.replace(config, **config_changes)).eval()


def test_beam_size_one_is_greedy(toy_model):
    batch = toy_batch(SENTENCES, toy_model.config)
    greedy = greedy_search(toy_model, batch.src, batch.src_len)
    beam = beam_search(toy_model, batch.src, batch.src_len, beam_size=1, alpha=0.0)
    assert any(len(h.tokens) < 20 for h in greedy), "the toy model should emit eos"
    for g, (b,) in zip(greedy, beam, strict=True):
        assert b.tokens == g.tokens
        assert b.score == pytest.approx(g.score, abs=1e-5)


def test_pruning_spans_exact_beam_search_to_greedy():
    """An untrained model is unsure, so beam and greedy disagree; a huge threshold prunes
    nothing (the exact beam), a tiny one keeps only each step's best (greedy)."""
    model = random_model()
    batch = toy_batch(SENTENCES, model.config)

    def search(prune: float) -> list[list[int]]:
        nbest = beam_search(model, batch.src, batch.src_len, beam_size=4, alpha=0.0, prune=prune)
        return [n[0].tokens for n in nbest]

    greedy = [h.tokens for h in greedy_search(model, batch.src, batch.src_len)]
    exact = search(0.0)
    assert exact != greedy, "the test needs sentences where the beam finds something else"
    assert search(1e9) == exact
    assert search(1e-6) == greedy
    with pytest.raises(ValueError, match="n_best 1"):
        beam_search(model, batch.src, batch.src_len, beam_size=4, n_best=2, prune=1.0)


@pytest.mark.parametrize("search", ["greedy", "beam", "pruned beam"])
@pytest.mark.parametrize("decoder", ["trained", "conditional GRU"])
def test_padding_never_changes_a_sentence(toy_model, search, decoder):
    if decoder == "conditional GRU":
        toy_model = random_model(conditional_gru=True)
    config = toy_model.config
    batch = toy_batch(SENTENCES, config)
    prune = 1.0 if search == "pruned beam" else 0.0
    decode = (
        (lambda b: [h for h in greedy_search(toy_model, b.src, b.src_len)])
        if search == "greedy"
        else (
            lambda b: [
                n[0] for n in beam_search(toy_model, b.src, b.src_len, beam_size=4, prune=prune)
            ]
        )
    )
    together = decode(batch)
    for text, in_batch in zip(SENTENCES, together, strict=True):
        (alone,) = decode(toy_batch([text], config))
        assert alone.tokens == in_batch.tokens
        assert alone.score == pytest.approx(in_batch.score, abs=1e-4)


DECODERS = [("bahdanau", False), ("luong", False), ("none", False), ("bahdanau", True)]


@pytest.mark.parametrize(("attention", "conditional_gru"), [*DECODERS, ("luong", True)])
def test_step_by_step_decoding_reproduces_teacher_forced_logits(attention, conditional_gru):
    model = random_model(attention, conditional_gru=conditional_gru)
    batch = toy_batch(["abcdefg", "hij", "klmnopqrs"], model.config)
    forced = model.teacher_forced_logits(batch.src, batch.src_len, batch.tgt_in, batch.tgt_len)
    decoder = StepDecoder(model, *model.encode(batch.src, batch.src_len))
    for t in range(batch.tgt_in.size(1)):
        # all V of the "top k" log-probabilities, put back in vocabulary order
        top, ids, _ = decoder.top_log_probs(batch.tgt_in[:, t], model.config.tgt_vocab_size)
        log_probs = torch.empty_like(top).scatter_(1, ids, top)
        real = batch.tgt_len > t
        torch.testing.assert_close(
            log_probs[real], torch.log_softmax(forced[real, t], dim=-1), atol=1e-5, rtol=1e-5
        )


def test_hidden_dropout_drops_the_deep_outputs_inputs_in_training_only():
    """No weights of its own: the same seed builds the same network, so in eval mode the
    logits equal those without it; in training (the other dropout off) nearly every
    position's logits change."""
    plain = random_model(dropout=0.0)
    dropped = random_model(dropout=0.0, hidden_dropout=0.5)
    batch = toy_batch(SENTENCES, plain.config)
    inputs = (batch.src, batch.src_len, batch.tgt_in, batch.tgt_len)
    expected = plain.teacher_forced_logits(*inputs)
    torch.testing.assert_close(dropped.teacher_forced_logits(*inputs), expected)
    torch.testing.assert_close(plain.train().teacher_forced_logits(*inputs), expected)
    changed = (dropped.train().teacher_forced_logits(*inputs) != expected).any(dim=-1)
    real = torch.arange(batch.tgt_in.size(1))[None, :] < batch.tgt_len[:, None]
    assert changed[real].float().mean() > 0.9


@pytest.mark.parametrize(
    ("attention", "stored_bf16"),
    [("bahdanau", False), ("luong", False), ("none", False), ("bahdanau", True)],
)
def test_state_and_attention_stay_float32_under_bf16_autocast(attention, stored_bf16):
    """The Translator's bf16 precision runs the matmuls in bfloat16 under autocast; the
    recurrent state, the attention weights and the log-probabilities stay float32, and the
    log-probabilities stay close to float32's. `stored_bf16`: the Linear weights are kept in
    bfloat16, as the Translator does, on a model whose embeddings are shared and tied to the
    output layer (those stay float32)."""
    tied = {"share_embeddings": True, "tie_target_embeddings": True, "deep_output_size": 16}
    model = random_model(attention, **(tied if stored_bf16 else {}))
    batch = toy_batch(SENTENCES, model.config)

    def decode(bf16: bool) -> torch.Tensor:
        """Each step's best log-probability [T, B], teacher-forced on the batch's targets."""
        with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            decoder = StepDecoder(model, *model.encode(batch.src, batch.src_len))
            steps = []
            for t in range(batch.tgt_in.size(1)):
                top, _, weights = decoder.top_log_probs(batch.tgt_in[:, t], 1)
                assert decoder.hidden.dtype == top.dtype == torch.float32
                assert weights is None or weights.dtype == torch.float32
                steps.append(top.squeeze(1))
            matmul = model.decoder.hidden_proj(decoder.hidden)
            assert matmul.dtype == (torch.bfloat16 if bf16 else torch.float32)
        return torch.stack(steps)

    exact = decode(bf16=False)
    if stored_bf16:
        model.store_linear_weights_in(torch.bfloat16)
        assert model.decoder.hidden_proj.weight.dtype == torch.bfloat16
        assert model.decoder.output.weight.dtype == torch.float32  # it is the embedding's
    fast = decode(bf16=True)
    assert not torch.equal(fast, exact)  # bfloat16 rounding shows
    torch.testing.assert_close(fast, exact, atol=0.05, rtol=0.02)


@pytest.mark.parametrize("attention", ["bahdanau", "luong", "none"])
def test_rows_sharing_a_source_decode_as_if_each_had_its_own_copy(attention):
    """Beam search keeps one encoded source per sentence for all its live beams, however
    many each has: rows sharing a source must give what a copy of it per row would."""
    model = random_model(attention)
    batch = toy_batch(["abcdefg", "hij", "klmnopqrs", "tuv"], model.config)
    source, init = model.encode(batch.src, batch.src_len)
    copies = torch.tensor([0, 0, 0, 2, 3, 3, 3, 3, 3])  # uneven beams; sentence 1 has none
    torch.manual_seed(1)
    hidden = init[copies] + 0.1 * torch.randn(len(copies), init.size(1))  # beams differ
    tokens = torch.randint(4, model.config.tgt_vocab_size, (len(copies),))
    shared, copied = StepDecoder(model, source, hidden), StepDecoder(model, source, hidden)
    shared.rows = RowSources.of(copies, sources=4)
    copied.source = source.select(copies)
    for _ in range(3):
        top_shared, ids_shared, weights_shared = shared.top_log_probs(tokens, 5)
        top_copied, ids_copied, weights_copied = copied.top_log_probs(tokens, 5)
        torch.testing.assert_close(top_shared, top_copied)
        assert torch.equal(ids_shared, ids_copied)
        if weights_shared is not None:
            torch.testing.assert_close(weights_shared, weights_copied)
        tokens = ids_shared[:, 0]


def test_training_loss_ignores_padding():
    model = random_model()
    texts = ["abcdefg", "hij", "klmnopqrs"]
    together = model(*vars(toy_batch(texts, model.config)).values())
    apart = sum(model(*vars(toy_batch([t], model.config)).values()) for t in texts)
    torch.testing.assert_close(together, apart, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize(("attention", "conditional_gru"), DECODERS)
def test_a_batchs_gradient_is_the_sum_of_its_sentences_gradients(attention, conditional_gru):
    # The batch shrinks as its targets end; every step's rows share the source's gradient.
    model = random_model(attention, conditional_gru=conditional_gru)
    texts = ["abcdefg", "hij", "klmnopqrs"]

    def gradients(batches: list[list[str]]) -> list[torch.Tensor]:
        model.zero_grad()
        sum(model(*vars(toy_batch(texts, model.config)).values()) for texts in batches).backward()
        return [p.grad.clone() for p in model.parameters()]

    for together, apart in zip(gradients([texts]), gradients([[t] for t in texts]), strict=True):
        torch.testing.assert_close(together, apart, atol=1e-4, rtol=1e-4)


def test_additive_attention_weights_are_bahdanaus_formula():
    """The attention computes v^T tanh(x) through a sigmoid (faster on CPU): its weights
    must be softmax_j(v^T tanh(W s + U h_j)) over the real tokens, as written."""
    torch.manual_seed(0)
    attention = AdditiveAttention(query_size=6, key_size=5, attention_size=4)
    annotations, query = torch.randn(2, 3, 5), torch.randn(2, 4)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    keys = attention.precompute_keys(annotations)
    context, weights = attention(query, keys, annotations, mask)
    energies = attention.energy(torch.tanh(query[:, None] + keys)).squeeze(2)
    expected = torch.softmax(energies.masked_fill(~mask, float("-inf")), dim=1)
    torch.testing.assert_close(weights, expected)
    torch.testing.assert_close(context, torch.einsum("bs,bsk->bk", expected, annotations))


@pytest.mark.parametrize("attention", ["bahdanau", "luong"])
def test_attention_is_zero_on_padding_and_sums_to_one(attention):
    model = random_model(attention)
    batch = toy_batch(["abcdefghijkl", "abc", "abcdefg"], model.config)
    decoder = StepDecoder(model, *model.encode(batch.src, batch.src_len))
    for _ in range(3):
        *_, weights = decoder.top_log_probs(torch.full((3,), model.config.bos_id), 1)
        torch.testing.assert_close(weights.sum(dim=1), torch.ones(3))
        for row, length in enumerate(batch.src_len.tolist()):
            assert torch.all(weights[row, length:] == 0)
            assert torch.all(weights[row, :length] > 0)


def test_search_returns_attention_for_each_output_token(toy_model):
    batch = toy_batch(["abcdef"], toy_model.config)
    (hyp,) = greedy_search(toy_model, batch.src, batch.src_len, return_attention=True)
    ((best,),) = beam_search(toy_model, batch.src, batch.src_len, return_attention=True)
    for h in (hyp, best):
        assert h.attention.shape == (len(h.tokens), 6)
        torch.testing.assert_close(h.attention.sum(dim=1), torch.ones(len(h.tokens)))


def test_n_best_are_distinct_and_sorted(toy_model):
    batch = toy_batch(SENTENCES, toy_model.config)
    for hyps in beam_search(toy_model, batch.src, batch.src_len, beam_size=5, n_best=3):
        assert len(hyps) == 3
        assert len({tuple(h.tokens) for h in hyps}) == 3
        assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)


def never_ending_model() -> Seq2Seq:
    """A random model that never chooses eos (its logit is -inf): every output runs to the
    length limit."""
    model = random_model()
    with torch.no_grad():
        model.decoder.output.bias[model.config.eos_id] = float("-inf")
    return model


@pytest.mark.parametrize(("max_len_a", "max_len_b"), [(1.5, 2), (0.0, 4), (0.0, 0)])
@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_output_stops_exactly_at_the_length_limit(search, max_len_a, max_len_b):
    """Without eos, each output is exactly max(1, int(a * source length + b)) tokens long,
    whatever the other sentences of the batch: 1.5 * 3 + 2 = 6.5 gives 6, (0, 0) gives 1."""
    model = never_ending_model()
    batch = toy_batch(["ab", "abcdefghij", "xyz"], model.config)
    limits = dict(max_len_a=max_len_a, max_len_b=max_len_b)
    if search == "greedy":
        hypotheses = greedy_search(model, batch.src, batch.src_len, **limits)
    else:
        nbest = beam_search(model, batch.src, batch.src_len, beam_size=3, n_best=2, **limits)
        assert all(len(n) == 2 for n in nbest), "every live beam finishes at the limit"
        hypotheses = [h for n in nbest for h in n]
    per_sentence = len(hypotheses) // len(batch.src_len)
    expected = [
        max(1, int(max_len_a * n + max_len_b))
        for n in batch.src_len.tolist()
        for _ in range(per_sentence)
    ]
    assert [len(h.tokens) for h in hypotheses] == expected
    assert all(model.config.eos_id not in h.tokens for h in hypotheses)


def test_model_dir_round_trip_gives_identical_translations(toy_model, tmp_path):
    save_model(toy_model, tmp_path / "model")
    loaded = load_model(tmp_path / "model")
    assert loaded.config == toy_model.config
    saved, restored = toy_model.state_dict(), loaded.state_dict()
    assert saved.keys() == restored.keys()
    assert all(torch.equal(saved[name], restored[name]) for name in saved)
    batch = toy_batch(SENTENCES, toy_model.config)
    before = beam_search(toy_model, batch.src, batch.src_len, n_best=2)
    after = beam_search(loaded, batch.src, batch.src_len, n_best=2)
    assert [[(h.tokens, h.score) for h in n] for n in before] == [
        [(h.tokens, h.score) for h in n] for n in after
    ]


class Payload:
    """Any class instance: unpickling it could run code, so loading must refuse it."""


def test_loading_pickled_objects_is_refused(toy_model, tmp_path):
    save_model(toy_model, tmp_path / "model")
    state = torch.load(tmp_path / "model" / "weights.pt", weights_only=True)
    state["evil"] = Payload()
    torch.save(state, tmp_path / "model" / "weights.pt")
    with pytest.raises(ValueError, match="refusing to load"):
        load_model(tmp_path / "model")


def test_incompatible_model_dir_is_refused(toy_model, tmp_path):
    save_model(toy_model, tmp_path / "model")
    config_file = tmp_path / "model" / "config.json"
    config_file.write_text(
        config_file.read_text().replace('"format_version": 1', '"format_version": 99')
    )
    with pytest.raises(ValueError, match="format version 99"):
        load_model(tmp_path / "model")
    with pytest.raises(FileNotFoundError, match="not a model dir"):
        load_model(tmp_path / "missing")


def test_models_package_does_not_import_ray():
    code = (
        "import sys, models.search, models.training, models.model_dir, models.toy; "
        "print('ray' in sys.modules)"
    )
    assert subprocess.check_output([sys.executable, "-c", code], text=True).strip() == "False"


def test_attention_learns_the_toy_task_and_fixed_context_loses_long_sentences():
    """The seed's claim on a task generated in code: same budget, same data."""
    torch.set_num_threads(2)
    # A step budget, so a busy machine makes it slower, never weaker; the time cap only
    # guards against a hang.
    budget = {"max_steps": 600, "max_seconds": 240, "seed": 0}
    attention = train_toy("bahdanau", **budget)
    baseline = train_toy("none", **budget)
    assert attention.exact_match >= 0.9
    long_sentences = make_pairs(300, 20, 24, seed=7)
    long_attention = exact_match(attention.model, long_sentences)
    long_baseline = exact_match(baseline.model, long_sentences)
    assert long_attention >= 0.8
    assert long_baseline <= long_attention - 0.5
