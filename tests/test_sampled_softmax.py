"""Sampled-softmax training (Jean et al. 2014): the loss over V', its gradient, and V'."""

from __future__ import annotations

import pytest
import torch
from test_model import SENTENCES, random_model, toy_batch

from models.sampled_softmax import sample_vocabulary
from models.training import train_step
from pipeline.errors import UserError
from pipeline.train.config import TrainConfig


def loss_of(model, batch, vocabulary=None, label_smoothing=0.0):
    return model(*vars(batch).values(), label_smoothing, vocabulary)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_the_loss_over_the_whole_vocabulary_is_the_full_cross_entropy(label_smoothing):
    model = random_model()
    batch = toy_batch(SENTENCES, model.config)
    everything = torch.arange(model.config.tgt_vocab_size)
    torch.manual_seed(0)  # the same dropout masks for both
    sampled = loss_of(model.train(), batch, everything, label_smoothing)
    torch.manual_seed(0)
    full = loss_of(model, batch, None, label_smoothing)
    torch.testing.assert_close(sampled, full)


def test_a_smaller_vocabulary_only_drops_terms_from_the_normaliser():
    model = random_model()
    batch = toy_batch(SENTENCES, model.config)
    gold = batch.tgt_out[batch.tgt_out != model.config.pad_id]
    vocabulary = sample_vocabulary(gold, model.config.tgt_vocab_size, len(gold.unique()))
    # fewer competitors: every gold token is more probable, so the loss is lower
    assert loss_of(model, batch, vocabulary) < loss_of(model, batch)


def test_the_gradient_reaches_only_the_sampled_rows_of_the_output_layer():
    model = random_model(dropout=0.0)
    batch = toy_batch(SENTENCES, model.config)
    gold = batch.tgt_out[batch.tgt_out != model.config.pad_id]
    vocabulary = sample_vocabulary(gold, 30, 20, generator=torch.Generator().manual_seed(1))
    loss_of(model, batch, vocabulary).backward()
    output = model.decoder.output
    touched = (output.weight.grad.abs().sum(1) > 0) | (output.bias.grad != 0)
    assert touched.nonzero().squeeze(1).tolist() == vocabulary.tolist()


def test_v_prime_holds_the_gold_and_special_ids_topped_up_to_its_size():
    gold = torch.tensor([7, 7, 9, 3])
    generator = torch.Generator().manual_seed(0)
    vocabulary = sample_vocabulary(gold, 100, 10, always=(1, 3), generator=generator)
    assert len(vocabulary) == 10 and vocabulary.tolist() == sorted(vocabulary.tolist())
    assert {1, 3, 7, 9} <= set(vocabulary.tolist())
    # more distinct targets than the size: all of them, never a gold id left out
    assert sample_vocabulary(torch.arange(50), 100, 10).tolist() == list(range(50))
    other = sample_vocabulary(gold, 100, 10, always=(1, 3), generator=generator)
    assert other.tolist() != vocabulary.tolist(), "the others are drawn anew"


def test_a_sample_larger_than_the_vocabulary_is_refused():
    with pytest.raises(ValueError, match="between 1 and 100"):
        sample_vocabulary(torch.tensor([1]), 100, 101)
    with pytest.raises(UserError, match="output must be full or sampled"):
        TrainConfig(output="partial")
    with pytest.raises(UserError, match="sampled_softmax_size"):
        TrainConfig(output="sampled", sampled_softmax_size=0)


def test_sampled_training_learns_and_decodes_with_the_full_output_layer():
    model = random_model(dropout=0.0)
    batch = toy_batch(SENTENCES, model.config)
    gold = batch.tgt_out[batch.tgt_out != model.config.pad_id]
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    before = float(loss_of(model.eval(), batch))
    generator = torch.Generator().manual_seed(0)
    for _ in range(30):
        vocabulary = sample_vocabulary(gold, 30, 24, generator=generator)
        train_step(model, batch, optimizer, vocabulary=vocabulary)
    assert float(loss_of(model.eval(), batch)) < 0.7 * before, "the full loss falls too"
