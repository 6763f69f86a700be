"""The character-level language model: Embedding layer, EmbeddingMLP training and generation,
the names LM data set, save/load and the ``fusedense lm`` command."""
import numpy as np
import pytest

import fusedense as fd
from fusedense import abi, reference
from fusedense.__main__ import main

from support import assert_close

VOCAB, DIM, CONTEXT = 7, 3, 2
XENT = fd.losses.SparseCategoricalCrossentropy(from_logits=True)  # the output layer is linear: logits


def _tiny_net(dtype=np.float64, backend=None, hidden=(5,), output_activation="identity"):
    return fd.EmbeddingMLP(VOCAB, DIM, CONTEXT, list(hidden) + [VOCAB], "tanh", output_activation,
                           dtype=dtype, random_state=0, backend=backend)


def _batch(rng, n=6):
    return rng.integers(0, VOCAB, (n, CONTEXT)), rng.integers(0, VOCAB, n)


def _gradient(net, tokens, labels):
    """The flat gradient of the mean cross-entropy at the current parameters (which are restored)."""
    before = net.params.copy()
    net.set_optimizer("sgd")
    net.train_step(tokens, labels, loss=XENT)
    net.params[...] = before
    return net.grads.copy()


def _loss_at(net, params, tokens, labels):
    net.params[...] = params
    return reference.softmax_cross_entropy(net.predict(tokens), labels)[0]


@pytest.mark.parametrize("hidden", [(5,), (4, 6)], ids=["one-hidden", "two-hidden"])
def test_embedding_mlp_gradient_matches_finite_differences(rng, hidden):
    net = _tiny_net(hidden=hidden)
    tokens, labels = _batch(rng)
    tokens[0] = tokens[1] = 3  # a token used several times: the scatter-add must accumulate
    grads = _gradient(net, tokens, labels)
    p0, eps = net.params.copy(), 1e-6
    numeric = np.empty_like(p0)
    for i in range(len(p0)):
        step = np.zeros_like(p0)
        step[i] = eps
        numeric[i] = (_loss_at(net, p0 + step, tokens, labels) - _loss_at(net, p0 - step, tokens, labels)) / (2 * eps)
    np.testing.assert_allclose(grads, numeric, rtol=1e-6, atol=1e-9)
    unused = np.setdiff1d(np.arange(VOCAB), tokens)
    assert not grads[:VOCAB * DIM].reshape(VOCAB, DIM)[unused].any()


def test_embedding_mlp_gradient_on_each_backend_matches_numpy(backend, dtype, rng):
    tokens, labels = _batch(rng, 64)
    expected = _gradient(_tiny_net(dtype, "numpy", hidden=(16,)), tokens, labels)
    actual = _gradient(_tiny_net(dtype, backend, hidden=(16,)), tokens, labels)
    assert_close(actual, expected, dtype)


def test_softmax_output_trains_like_logits_output(rng):
    tokens, labels = _batch(rng)
    np.testing.assert_allclose(_gradient(_tiny_net(output_activation="softmax"), tokens, labels),
                               _gradient(_tiny_net(), tokens, labels), rtol=1e-12, atol=1e-14)


def test_a_rejected_loss_does_not_count_an_optimizer_step():
    net = _tiny_net()
    tokens, labels = _batch(np.random.default_rng(0))
    net.train_step(tokens, labels, loss=XENT)
    with pytest.raises(ValueError, match="sparse_categorical_crossentropy"):
        net.fused_step(tokens, labels, abi.LOSS_MSE)
    assert net.step == 1


def test_lm_loss_decreases_over_a_short_run():
    pytest.importorskip("gender_guesser")
    data = fd.datasets.load_names_lm(context=3, seed=0)
    model = fd.Sequential([fd.Embedding(27, 8, input_length=3), fd.Flatten(),
                           fd.Dense(64, activation="tanh"), fd.Dense(27)], seed=0)
    model.compile(optimizer=fd.optimizers.Adam(learning_rate=1e-2), loss=XENT)
    x_val, y_val = data.x_val[:4000], data.y_val[:4000]
    before = model.evaluate(x_val, y_val, verbose=0)
    model.fit(data.x_train[:20000], data.y_train[:20000], batch_size=128, epochs=1, verbose=0)
    after = model.evaluate(x_val, y_val, verbose=0)
    assert before > 3.2  # ≈ ln 27 = 3.30 at initialisation
    assert after < 2.75


def _trained_lm(seed=0):
    model = fd.Sequential([fd.Embedding(VOCAB, DIM, input_length=CONTEXT), fd.Flatten(),
                           fd.Dense(8, activation="tanh"), fd.Dense(VOCAB)], seed=seed)
    model.compile(loss=XENT)
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, VOCAB, (200, CONTEXT))
    model.fit(tokens, (tokens.sum(axis=1) % VOCAB), epochs=2, verbose=0)
    return model


@pytest.mark.parametrize("n", [1, 50])
def test_sampling_is_reproducible_and_emits_only_vocabulary_tokens(n):
    model = _trained_lm()
    first = model.generate(n, max_len=12, temperature=1.0, seed=7)
    again = model.generate(n, max_len=12, temperature=1.0, seed=7)
    assert len(first) == n
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == np.int64 and len(a) <= 12
        assert ((a >= 1) & (a < VOCAB)).all()  # the boundary token 0 ends a sequence, never inside it
    different = model.generate(n, max_len=12, temperature=1.0, seed=8)
    if n > 1:
        assert any(len(a) != len(b) or (a != b).any() for a, b in zip(first, different))


def test_greedy_sampling_follows_the_most_likely_token():
    net = _trained_lm().network
    (tokens,) = net.generate(1, max_len=5, temperature=0, seed=0)
    context = [0] * CONTEXT
    for token in tokens:
        assert token == net.predict(np.array([context])).argmax()
        context = context[1:] + [int(token)]


def test_sequential_with_embedding_save_load_round_trip(tmp_path):
    model = _trained_lm()
    path = tmp_path / "lm.npz"
    model.save(path)
    loaded = fd.load_model(path)
    assert [type(layer).__name__ for layer in loaded.layers] == ["Embedding", "Flatten", "Dense", "Dense"]
    tokens = np.random.default_rng(3).integers(0, VOCAB, (10, CONTEXT))
    np.testing.assert_array_equal(loaded.predict(tokens), model.predict(tokens))
    np.testing.assert_array_equal(loaded.layers[0].embeddings, model.layers[0].embeddings)
    for a, b in zip(loaded.generate(5, 10, seed=1), model.generate(5, 10, seed=1)):
        np.testing.assert_array_equal(a, b)
    loaded.fit(tokens, tokens[:, 0], epochs=1, verbose=0)  # compiled again from the file


def test_embedding_mlp_save_load_round_trip(tmp_path):
    net = _tiny_net(np.float32)
    net.save(tmp_path / "net.npz")
    loaded = fd.load_model(tmp_path / "net.npz")
    assert isinstance(loaded, fd.EmbeddingMLP) and loaded.architecture() == net.architecture()
    np.testing.assert_array_equal(loaded.params, net.params)


def test_weights_list_starts_with_the_embedding_table():
    model = _trained_lm()
    weights = model.get_weights()
    assert [w.shape for w in weights] == [(VOCAB, DIM), (CONTEXT * DIM, 8), (8,), (8, VOCAB), (VOCAB,)]
    weights[0][...] = 0
    model.set_weights(weights)
    assert not model.layers[0].embeddings.any()


def test_layer_order_is_checked():
    with pytest.raises(ValueError, match="Flatten"):
        fd.Sequential([fd.Embedding(5, 2), fd.Dense(3)])
    with pytest.raises(ValueError, match="first layer"):
        fd.Sequential([fd.Dense(3, input_dim=2), fd.Embedding(5, 2)])
    with pytest.raises(ValueError, match="right after"):
        fd.Sequential([fd.Dense(3, input_dim=2), fd.Flatten()])


def test_out_of_range_tokens_and_non_sparse_losses_are_rejected():
    net = _tiny_net()
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 7\)"):
        net.predict(np.array([[0, VOCAB]]))
    with pytest.raises(TypeError, match="integer token ids"):
        net.predict(np.array([[0.5, 1.0]]))
    with pytest.raises(ValueError, match=r"shape \(n_samples, 2\)"):
        net.predict(np.array([[0, 1, 2]]))
    with pytest.raises(ValueError, match="sparse_categorical_crossentropy"):
        net.train_step(np.array([[0, 1]]), np.ones((1, VOCAB)) / VOCAB, loss="categorical_crossentropy")


def test_names_lm_is_split_by_name_and_seeded():
    pytest.importorskip("gender_guesser")
    data = fd.datasets.load_names_lm(context=4, seed=3)
    splits = [set(data.names_train), set(data.names_val), set(data.names_test)]
    assert not (splits[0] & splits[1]) and not (splits[0] & splits[2]) and not (splits[1] & splits[2])
    assert len(data.y_train) == sum(len(name) + 1 for name in data.names_train)  # every letter and the end
    assert data.x_train.shape == (len(data.y_train), 4) and data.x_train.dtype == np.int64
    assert data.names_val == fd.datasets.load_names_lm(context=4, seed=3).names_val
    assert data.names_val != fd.datasets.load_names_lm(context=4, seed=4).names_val


def test_names_to_examples_pads_with_the_boundary_token():
    x, y = fd.datasets.names_to_examples(["ana"], 2)
    assert x.tolist() == [[0, 0], [0, 1], [1, 14], [14, 1]] and y.tolist() == [1, 14, 1, 0]
    assert fd.datasets.NamesLM.decode(fd.datasets.NamesLM.encode("zoe")) == "zoe"


def test_lm_command_trains_reports_and_samples(capsys):
    pytest.importorskip("gender_guesser")
    assert main(["lm", "--epochs", "1", "--hidden", "16", "--embedding", "4", "--batch-size", "512",
                 "--samples", "5", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "validation" in out and "test perplexity" in out and "chars/s" in out
    samples = out.split("samples (temperature 0.8, seed 0):\n")[1].split("\n")[0].strip().split(", ")
    assert len(samples) == 5 and all(set(name) <= set("abcdefghijklmnopqrstuvwxyz") for name in samples)
