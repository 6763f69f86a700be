"""``fusedense lm``'s training set-up: the learning-rate schedule, the embedding initialisation and
the checks of its options (the end-to-end run is in test_lm.py)."""
import argparse

import numpy as np
import pytest

from fusedense import lm
from fusedense.__main__ import main


def _args(*argv):
    parser = argparse.ArgumentParser()
    lm.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_cosine_decay_falls_from_the_initial_to_the_final_rate():
    schedule = lm.CosineDecay(1e-3, 1e-4, epochs=5)
    rates = [schedule.learning_rate(e) for e in range(5)]
    assert rates[0] == pytest.approx(1e-3) and rates[-1] == pytest.approx(1e-4)
    assert rates[2] == pytest.approx(5.5e-4)  # half way: the mean of the two
    assert all(a > b for a, b in zip(rates, rates[1:]))
    assert lm.CosineDecay(1e-3, 1e-4, epochs=1).learning_rate(0) == pytest.approx(1e-3)


def test_embeddings_start_from_a_unit_normal_table():
    model = lm.build_model(_args("--embedding", "32", "--hidden", "8"))
    table = model.layers[0].embeddings
    assert table.shape == (27, 32)
    assert 0.85 < table.std() < 1.15 and abs(table.mean()) < 0.15
    np.testing.assert_array_equal(lm.build_model(_args("--embedding", "32", "--hidden", "8")).layers[0].embeddings,
                                  table)  # seeded


def test_default_learning_rate_depends_on_the_optimizer():
    assert lm.initial_learning_rate(_args()) == 1e-3
    assert lm.initial_learning_rate(_args("--optimizer", "sgd")) == 0.1
    assert lm.initial_learning_rate(_args("--lr", "0.02")) == 0.02


def test_min_lr_above_lr_is_rejected():
    with pytest.raises(SystemExit, match="--min-lr"):
        main(["lm", "--lr", "1e-3", "--min-lr", "1e-2"])


def test_patience_must_be_positive():
    with pytest.raises(SystemExit, match="--patience"):
        main(["lm", "--patience", "0"])


def test_run_with_patience_reports_the_epochs_trained(capsys):
    pytest.importorskip("gender_guesser")
    assert main(["lm", "--epochs", "2", "--patience", "1", "--hidden", "8", "--embedding", "4",
                 "--batch-size", "1024", "--samples", "0", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "training: 2 epochs" in out and "test perplexity" in out
