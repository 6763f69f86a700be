"""The `fusedense demo` command and its inference-speed comparison."""
import numpy as np
import pytest

import fusedense as fd
from fusedense import demo
from fusedense.__main__ import main


def test_demo_trains_reports_accuracy_and_compares_speed(capsys):
    pytest.importorskip("gender_guesser")
    assert main(["demo", "--epochs", "1", "--limit", "2000", "--blocks", "1"]) == 0
    out = capsys.readouterr().out
    assert "Epoch 1/1" in out and "test accuracy" in out and "maria → " in out
    assert "fusedense[numpy]" in out and "NumPy" in out and "batch 1024" in out


def test_demo_explains_how_to_install_the_names(monkeypatch, capsys):
    def missing(**kwargs):
        raise fd.datasets.DatasetNotFoundError("pip install gender-guesser")

    monkeypatch.setattr(fd.datasets, "load_names", missing)
    assert main(["demo"]) == 1
    assert "pip install gender-guesser" in capsys.readouterr().out


def test_every_speed_candidate_computes_the_same_outputs():
    net = fd.MLP([12, 8, 6, 3], "relu", "softmax", random_state=0)
    x = np.random.default_rng(0).random((5, 12), dtype=np.float32)
    expected = demo.numpy_forward([(W, b) for W, b in net.weights])(x)
    for label, predict in demo.speed_candidates(net).items():
        np.testing.assert_allclose(predict(x), expected, rtol=1e-4, atol=1e-6, err_msg=label)


def test_unknown_subcommand_exits_with_usage(capsys):
    with pytest.raises(SystemExit):
        main(["nope"])
    assert "invalid choice" in capsys.readouterr().err
