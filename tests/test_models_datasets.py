"""Data-set loaders, the hashing vectorizer, and the accuracy bars on real data."""
import numpy as np
import pytest

import fusedense as fd
from fusedense import datasets
from fusedense.hashing import HashingVectorizer, fnv1a_32


def _fnv1a_bytewise(data: bytes) -> int:
    h = 2166136261
    for byte in data:
        h = ((h ^ byte) * 16777619) % 2**32
    return h


def test_fnv1a_matches_the_bytewise_definition():
    words = [b"a", b"foobar", b"", "žluťoučký".encode()]
    buffer = np.frombuffer(b"".join(words), np.uint8)
    lengths = np.array([len(w) for w in words])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    assert list(fnv1a_32(buffer, starts, lengths)) == [_fnv1a_bytewise(w) for w in words]
    assert _fnv1a_bytewise(b"a") == 0xE40C292C  # the published FNV-1a test vector


def test_char_hashing_counts_padded_ngrams_and_normalizes():
    vec = HashingVectorizer(n_features=2**20, ngram_range=(1, 2), norm=None)
    row = vec.transform(["ab"])[0]
    assert row.sum() == 4 + 3  # unigrams " ", "a", "b", " "; bigrams " a", "ab", "b "
    assert row.max() == 2  # the space appears twice
    normed = HashingVectorizer(n_features=64).transform(["anna", "Otto", "x"])
    np.testing.assert_allclose(np.linalg.norm(normed, axis=1), 1, rtol=1e-6)
    np.testing.assert_array_equal(normed[1], HashingVectorizer(n_features=64).transform(["otto"])[0])


def test_hashing_is_stable_and_ngrams_do_not_cross_texts():
    vec = HashingVectorizer(n_features=128, norm=None)
    together = vec.transform(["abc", "xyz"])
    np.testing.assert_array_equal(together[0], vec.transform(["abc"])[0])
    np.testing.assert_array_equal(together[1], vec.transform(["xyz"])[0])


def test_word_hashing_counts_word_ngrams():
    vec = HashingVectorizer(n_features=2**20, analyzer="word", ngram_range=(1, 2), norm=None)
    assert vec.transform(["the cat, the hat"])[0].sum() == 4 + 3
    with pytest.raises(TypeError, match="texts"):
        vec.transform("one string")


def test_names_are_lowercase_a_to_z_with_two_genders():
    pytest.importorskip("gender_guesser")
    names, labels, classes = datasets.load_names()
    assert classes == ("female", "male") and 30_000 < len(names) < 34_000 and len(set(names)) == len(names)
    assert all(n.isascii() and n.isalpha() and n.islower() for n in names)
    gender = dict(zip(names, labels))
    assert gender["maria"] == 0 and gender["john"] == 1 and "+" not in "".join(names)


def test_missing_packages_raise_an_error_naming_the_package(monkeypatch, tmp_path):
    monkeypatch.setattr(datasets.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(datasets.DatasetNotFoundError, match="pip install gender-guesser"):
        datasets.load_names()
    with pytest.raises(datasets.DatasetNotFoundError, match="pip install scikit-learn"):
        datasets.load_digits()
    with pytest.raises(datasets.DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
        datasets.load_fashion_mnist(directory=str(tmp_path))
    monkeypatch.setattr(datasets.shutil, "which", lambda name: None)
    with pytest.raises(datasets.DatasetNotFoundError, match="fortunes-de"):
        datasets.load_fortunes(["de"])


def test_fortune_entries_are_split_on_percent_lines(tmp_path):
    path = tmp_path / "cookies"
    path.write_bytes("first\r\nline two\r\n%\nsecond – ünïcode\n%\n\n%\nthird".encode())
    assert datasets._read_fortunes(path) == ["first\nline two", "second – ünïcode", "third"]


def _load_or_skip(loader, **kwargs):
    """The data set, or a skip naming the package to install (apt data sets are Debian-only)."""
    try:
        return loader(**kwargs)
    except datasets.DatasetNotFoundError as exc:
        pytest.skip(str(exc))


def test_fortunes_loader_balances_languages():
    texts, labels, languages = _load_or_skip(datasets.load_fortunes, max_per_language=50)
    assert languages == tuple(datasets.FORTUNE_PACKAGES) and np.bincount(labels).tolist() == [50] * 8
    assert all(len(t) >= 20 for t in texts)


def test_fashion_mnist_has_keras_shapes():
    (x_train, y_train), (x_test, y_test) = _load_or_skip(datasets.load_fashion_mnist)
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28) and x_train.dtype == np.uint8
    assert sorted(np.unique(y_train)) == list(range(10)) and y_test.dtype == np.int64


def test_truncated_idx_file_is_rejected(tmp_path):
    import gzip
    path = tmp_path / "bad.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"\0\0\x08\x01" + (10).to_bytes(4, "big") + b"\1" * 5)
    with pytest.raises(ValueError, match="truncated"):
        datasets._read_idx(path)


def test_fortunes_language_id_reaches_98_percent():
    texts, y, languages = _load_or_skip(datasets.load_fortunes, max_per_language=400)
    X = HashingVectorizer(2048, ngram_range=(1, 4)).transform(texts)
    x_train, x_test, y_train, y_test = datasets.train_test_split(X, y, 0.25, seed=0)
    model = fd.Sequential([fd.Dense(32, activation="relu", input_shape=(2048,)),
                           fd.Dense(len(languages), activation="softmax")], seed=0)
    model.compile(optimizer=fd.optimizers.Adam(0.003), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=8, batch_size=64, verbose=0)
    assert model.evaluate(x_test, y_test, verbose=0)[1] >= 0.98
