"""course_lib.model's chunked MLM loss: the same loss and gradients as the plain head, without full logits."""

import pytest
import torch
import torch.nn.functional as F

from course_lib import model as M


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _plain(hidden, weight, bias, targets):
    return F.cross_entropy(hidden @ weight.t() + bias, targets)


@pytest.mark.parametrize("n, chunk", [(1, 128), (37, 8), (300, 128), (256, 128), (129, 64)])
def test_same_loss_and_gradients_as_cross_entropy(n, chunk):
    generator = torch.Generator().manual_seed(n)
    V, H = 500, 24
    hidden = torch.randn(n, H, generator=generator, dtype=torch.float64, requires_grad=True)
    weight = (torch.randn(V, H, generator=generator, dtype=torch.float64) * 0.5).requires_grad_()
    bias = torch.randn(V, generator=generator, dtype=torch.float64).requires_grad_()
    targets = torch.randint(V, (n,), generator=generator)
    ours = M.chunked_mlm_loss(hidden, weight, bias, targets, chunk)
    theirs = _plain(hidden, weight, bias, targets)
    assert abs(float(ours) - float(theirs)) < 1e-12
    scale = 0.37  # backward scales by the incoming gradient (a weighted micro-batch)
    for a, b in zip(
        torch.autograd.grad(ours * scale, (hidden, weight, bias)),
        torch.autograd.grad(theirs * scale, (hidden, weight, bias)),
    ):
        assert torch.allclose(a, b, rtol=0, atol=1e-12)


def test_only_the_gradients_asked_for():
    hidden = torch.randn(10, 8, requires_grad=True)
    weight, bias = torch.randn(30, 8), torch.zeros(30)  # a frozen projection: only the hidden states learn
    targets = torch.randint(30, (10,))
    (ours,) = torch.autograd.grad(M.chunked_mlm_loss(hidden, weight, bias, targets, 4), (hidden,))
    (theirs,) = torch.autograd.grad(_plain(hidden, weight, bias, targets), (hidden,))
    assert torch.allclose(ours, theirs, atol=1e-6)


def _models(**changes):
    settings = dict(
        vocab_size=300,
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        intermediate_size=64,
        max_length=24,
        masked_only=True,
        position="rotary",
        init_std=0.05,
        dropout=0.0,
        attention_dropout=0.0,
    )
    config = M.EncoderConfig(**{**settings, **changes})
    torch.manual_seed(0)
    chunked = M.EncoderForMaskedLM(config)
    plain = M.EncoderForMaskedLM(config)
    plain.load_state_dict(chunked.state_dict())
    plain.loss_chunk = 0
    chunked.loss_chunk = 16  # several chunks, the last one short
    return chunked, plain


@pytest.mark.parametrize("changes", [{}, {"position": "learned"}, {"pre_norm": True}])
def test_model_training_step_matches_the_plain_head(changes):
    chunked, plain = _models(**changes)
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 300, (6, 24), generator=generator)
    labels = torch.where(torch.rand(6, 24, generator=generator) < 0.4, ids, torch.full_like(ids, -100))
    mask = torch.ones_like(ids)
    mask[0, 20:] = 0
    out_chunked = chunked(ids, mask, labels)
    out_plain = plain(ids, mask, labels)
    assert out_chunked.logits is None and out_plain.logits is not None  # the chunked path never builds them
    assert abs(float(out_chunked.loss) - float(out_plain.loss)) < 1e-5
    out_chunked.loss.backward()
    out_plain.loss.backward()
    grads = dict(plain.named_parameters())
    for name, p in chunked.named_parameters():
        q = grads[name]
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-5), (name, float((p.grad - q.grad).abs().max()))


def test_evaluation_and_autocast_keep_the_plain_head():
    chunked, _ = _models()
    ids = torch.randint(5, 300, (2, 24))
    labels = torch.where(torch.rand(2, 24) < 0.5, ids, torch.full_like(ids, -100))
    labels[0, 0] = ids[0, 0]
    with torch.no_grad():  # evaluation wants logits for accuracy
        assert chunked(ids, None, labels).logits.shape == (int((labels != -100).sum()), 300)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert chunked(ids, None, labels).logits is not None
    no_labels = torch.full_like(ids, -100)
    out = chunked(ids, None, no_labels)  # nothing masked: the plain path (an empty loss is nan either way)
    assert out.logits is not None and out.logits.shape == (0, 300)
