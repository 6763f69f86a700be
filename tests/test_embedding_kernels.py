"""The embedding kernels of every backend (embedding_forward, embedding_train_step,
embedding_generate) against the NumPy reference, and the checks in front of them."""
import numpy as np
import pytest

import fusedense as fd
from fusedense import _backends, reference

from support import assert_close, make_hyper, record

VOCAB, DIM, CONTEXT = 7, 3, 4


def _net(dtype, hidden=(6, 5), output_activation="identity", vocab=VOCAB):
    return fd.EmbeddingMLP(vocab, DIM, CONTEXT, list(hidden) + [vocab], "tanh", output_activation,
                           dtype=dtype, random_state=0)


def _tokens(rng, n, vocab=VOCAB):
    tokens = rng.integers(0, vocab, (n, CONTEXT))
    tokens[:3] = 2  # a token used at several (row, position)s: the scatter-add must accumulate
    return tokens


HIDDEN = pytest.mark.parametrize("hidden", [(), (6,), (6, 5)], ids=["no-hidden", "one-hidden", "two-hidden"])


@HIDDEN
@pytest.mark.parametrize("n", [1, 33, 70])
def test_embedding_forward_matches_reference(backend, dtype, rng, n, hidden):
    net = _net(dtype, hidden)
    tokens = _tokens(rng, n)
    out = np.empty((n, VOCAB), dtype)
    _backends.load(backend).embedding_forward(tokens, net.params, net.layers, VOCAB, out)
    assert_close(out, reference.embedding_forward(tokens, net.params, net.layers, VOCAB), dtype)


@pytest.mark.parametrize("optimizer", ["sgd", "nesterov", "adam", "adamw", "rmsprop"])
@pytest.mark.parametrize("hidden", [(6,), (6, 5)], ids=["one-hidden", "two-hidden"])
def test_embedding_train_step_matches_reference(backend, dtype, rng, optimizer, hidden):
    net = _net(dtype, hidden)
    tokens, labels = _tokens(rng, 40), rng.integers(0, VOCAB, 40)
    hyper = make_hyper(optimizer, lr=0.05, step=3, momentum=0.9, weight_decay=0.01)
    state = rng.random((1 if optimizer in ("sgd", "nesterov") else 2, net.n_params)).astype(dtype)
    params, ref_params, ref_state = net.params.copy(), net.params.copy(), state.copy()
    grads = np.full_like(params, np.nan)  # every element must be written, the table's too
    loss = _backends.load(backend).embedding_train_step(tokens, labels, params, grads, state, net.layers,
                                                        hyper, VOCAB, None)
    ref_loss, ref_grads = reference.embedding_train_step(tokens, labels, ref_params, net.layers,
                                                         ref_state, hyper, VOCAB)
    assert_close(loss, ref_loss, dtype)
    assert_close(grads, ref_grads, dtype)
    assert_close(params, ref_params, dtype)
    assert_close(state, ref_state, dtype)


@pytest.mark.parametrize("output_activation", ["identity", "softmax"])
def test_embedding_train_step_reports_the_outputs_before_its_update(backend, dtype, rng, output_activation):
    """outputs= (training metrics without a second forward pass) leaves the step itself unchanged."""
    net = _net(dtype, output_activation=output_activation)
    tokens, labels = _tokens(rng, 40), rng.integers(0, VOCAB, 40)
    hyper = make_hyper("adam", lr=0.05, step=1)
    kernels = _backends.load(backend)
    expected = reference.embedding_forward(tokens, net.params, net.layers, VOCAB)
    runs = []
    for outputs in (None, np.full((40, VOCAB), np.nan, dtype)):
        params, grads, state = net.params.copy(), np.zeros_like(net.params), np.zeros((2, net.n_params), dtype)
        loss = kernels.embedding_train_step(tokens, labels, params, grads, state, net.layers, hyper,
                                            VOCAB, outputs)
        runs.append((loss, params))
    assert_close(outputs, expected, dtype)
    assert runs[0][0] == runs[1][0] and np.array_equal(runs[0][1], runs[1][1])


def test_embedding_reference_gradient_matches_finite_differences(rng):
    net = _net(np.float64)
    tokens, labels = _tokens(rng, 9), rng.integers(0, VOCAB, 9)

    def loss_at(params):
        logits = reference.embedding_forward(tokens, params, net.layers, VOCAB)
        return reference.softmax_cross_entropy(logits, labels)[0]
    hyper = make_hyper("sgd", lr=0.0)  # lr 0: the step leaves the parameters where they are
    _, grads = reference.embedding_train_step(tokens, labels, net.params.copy(), net.layers,
                                              np.zeros((1, net.n_params)), hyper, VOCAB)
    eye = np.eye(net.n_params) * 1e-6
    numeric = [(loss_at(net.params + e) - loss_at(net.params - e)) / 2e-6 for e in eye]
    np.testing.assert_allclose(grads, numeric, rtol=1e-6, atol=1e-9)


def _generate(backend, net, n, max_len, temperature, seed=5, boundary=0):
    net.set_backend(backend)
    return net.generate(n, max_len=max_len, temperature=temperature, seed=seed, boundary=boundary)


@HIDDEN
@pytest.mark.parametrize("temperature", [0.0, 0.7, 1.0, 3.0])
@pytest.mark.parametrize("n", [1, 40])
def test_generation_matches_the_numpy_backend_token_for_token(backend, dtype, n, temperature, hidden):
    net = _net(dtype, hidden)
    net.params *= 8  # confident predictions: long and varied sequences
    expected = _generate("numpy", net, n, 15, temperature, boundary=1)
    actual = _generate(backend, net, n, 15, temperature, boundary=1)
    assert len(actual) == n
    for a, e in zip(actual, expected):
        np.testing.assert_array_equal(a, e)
    if n > 1 and temperature > 0:  # the sampled rows do not all stop at once
        assert any(len(a) > 1 for a in actual)


def test_generation_is_reproducible_and_emits_only_vocabulary_tokens(backend):
    net = _net(np.float32)
    first = _generate(backend, net, 64, 12, 1.0, seed=11)
    again = _generate(backend, net, 64, 12, 1.0, seed=11)
    other = _generate(backend, net, 64, 12, 1.0, seed=12)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == np.int64 and len(a) <= 12 and ((a >= 1) & (a < VOCAB)).all()
    assert any(len(a) != len(b) or (a != b).any() for a, b in zip(first, other))


def test_a_generator_seed_continues_its_stream():
    net, rng = _net(np.float32), np.random.default_rng(4)
    first, second = net.generate(20, 8, seed=rng), net.generate(20, 8, seed=rng)
    replay = np.random.default_rng(4)
    np.testing.assert_array_equal(np.concatenate(first), np.concatenate(net.generate(20, 8, seed=replay)))
    np.testing.assert_array_equal(np.concatenate(second), np.concatenate(net.generate(20, 8, seed=replay)))


def test_greedy_generation_takes_the_most_likely_token_each_step(backend):
    net = _net(np.float64)
    net.params *= 8
    (tokens,) = _generate(backend, net, 1, 10, 0.0, boundary=1)
    context = [1] * CONTEXT
    for token in tokens:
        assert token == net.predict(np.array([context])).argmax()
        context = context[1:] + [int(token)]


def test_softmax_output_generates_like_the_logits_output(backend):
    logits_net, softmax_net = _net(np.float64), _net(np.float64, output_activation="softmax")
    for net in (logits_net, softmax_net):
        net.params *= 8
    for a, b in zip(_generate(backend, logits_net, 30, 10, 0.9), _generate(backend, softmax_net, 30, 10, 0.9)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("argument, value", [("n", 0), ("max_len", 0), ("max_len", 2.5), ("temperature", -1.0),
                                             ("temperature", float("nan")), ("boundary", VOCAB)])
def test_generate_rejects_bad_arguments(argument, value):
    kwargs = dict(n=2, max_len=5, temperature=1.0, boundary=0)
    kwargs[argument] = value
    with pytest.raises(ValueError, match=argument):
        _net(np.float32).generate(**kwargs)


def test_generate_needs_an_output_unit_per_token():
    net = fd.EmbeddingMLP(VOCAB, DIM, CONTEXT, [5, VOCAB + 1], random_state=0)
    with pytest.raises(ValueError, match="output layer"):
        net.generate(2)
