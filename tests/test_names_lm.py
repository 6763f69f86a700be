"""The names language-modelling data set (``fd.datasets.load_names_lm``): which names, the token
vocabulary, the boundary tokens and the split by name."""
import numpy as np
import pytest

import fusedense as fd

pytest.importorskip("gender_guesser")


@pytest.fixture(scope="module")
def data():
    return fd.datasets.load_names_lm(context=3, seed=0)


def _all_names(data):
    return data.names_train + data.names_val + data.names_test


def test_every_name_is_lowercase_a_to_z_and_appears_once(data):
    names = _all_names(data)
    assert 33_000 < len(names) < 34_000 and len(set(names)) == len(names)
    assert all(name.isascii() and name.isalpha() and name.islower() for name in names)


def test_lm_names_keep_unisex_and_disputed_names_of_the_gender_task(data):
    names = set(_all_names(data))
    gender_names, _, _ = fd.datasets.load_names()
    assert set(gender_names) < names
    assert {"addison", "aubrey"} <= names  # '?' (unisex) only
    assert {"alexis", "ali"} <= names  # flagged male and female


def test_joined_and_accented_entries_are_left_out(data):
    names = set(_all_names(data))
    assert not names & {"abdelaziz", "abdel+aziz", "junwei", "jun+wei"}  # 'Abdel+Aziz', 'Jun+Wei'
    assert "aaron" in names and "aarón" not in names


def test_tokens_are_the_vocabulary_and_every_name_ends_once(data):
    for part in ("train", "val", "test"):
        x, y, names = getattr(data, f"x_{part}"), getattr(data, f"y_{part}"), getattr(data, f"names_{part}")
        assert x.min() >= 0 and x.max() < len(fd.datasets.NAMES_LM_VOCAB) == 27
        assert y.min() >= 0 and y.max() < 27
        assert (y == 0).sum() == len(names)  # the boundary token is the target once per name: its end
        assert (x == 0).all(axis=1).sum() == len(names)  # and the whole context once: its start


def test_split_is_ten_percent_validation_and_test_by_name(data):
    n = len(_all_names(data))
    assert len(data.names_val) == len(data.names_test) == round(n * 0.1)
    other = fd.datasets.load_names_lm(context=5, seed=0)
    assert other.names_val == data.names_val  # the split depends on the seed, not on the context


def test_examples_of_a_split_spell_its_names():
    data = fd.datasets.load_names_lm(context=2, seed=1)
    x, y = data.x_test[:200], data.y_test[:200]
    text, name = [], []
    for row, target in zip(x, y):
        if target == 0:
            text.append("".join(name))
            name = []
        else:
            name.append(fd.datasets.NAMES_LM_VOCAB[target])
    assert text == data.names_test[:len(text)] and len(text) > 10
    np.testing.assert_array_equal(x[1:, 0][y[:-1] != 0], x[:-1, 1][y[:-1] != 0])  # contexts slide by one
