"""The names language model's training set-up (fusedense.lm) and its command (fusedense.cli.lm): the
learning-rate schedule, the optimizer and its weight decay, the embedding initialisation and the
checks of the options (the end-to-end run is in test_lm.py)."""
import argparse

import numpy as np
import pytest

import fusedense as fd
from fusedense import lm
from fusedense.cli import lm as lm_command
from fusedense.cli import main


def _args(*argv):
    """The configuration the command builds from ``fusedense lm *argv``."""
    parser = argparse.ArgumentParser()
    lm_command.add_arguments(parser)
    return lm_command.config_from(parser.parse_args(list(argv)))


def test_cosine_decay_falls_from_the_initial_to_the_final_rate():
    schedule = fd.callbacks.CosineDecay(1e-3, 1e-4, epochs=5)
    rates = [schedule.learning_rate(e) for e in range(5)]
    assert rates[0] == pytest.approx(1e-3) and rates[-1] == pytest.approx(1e-4)
    assert rates[2] == pytest.approx(5.5e-4)  # half way: the mean of the two
    assert all(a > b for a, b in zip(rates, rates[1:]))
    assert fd.callbacks.CosineDecay(1e-3, 1e-4, epochs=1).learning_rate(0) == pytest.approx(1e-3)


def test_embeddings_start_from_a_normal_table_of_std_3():
    model = lm.build_model(_args("--embedding", "32", "--hidden", "8"))
    table = model.layers[0].embeddings
    assert table.shape == (27, 32)
    assert 2.55 < table.std() < 3.45 and abs(table.mean()) < 0.45
    np.testing.assert_array_equal(lm.build_model(_args("--embedding", "32", "--hidden", "8")).layers[0].embeddings,
                                  table)  # seeded


def test_embedding_std_scales_the_initial_table():
    unit = lm.build_model(_args("--embedding", "32", "--hidden", "8", "--embedding-std", "1")).layers[0].embeddings
    scaled = lm.build_model(_args("--embedding", "32", "--hidden", "8", "--embedding-std", "2")).layers[0].embeddings
    np.testing.assert_allclose(scaled, 2 * unit, rtol=1e-6)


def test_adam_decays_weights_decoupled_by_default_and_sgd_does_not():
    adam = lm.build_model(_args("--hidden", "8")).optimizer
    assert type(adam) is fd.optimizers.AdamW and adam.weight_decay == 0.02
    sgd = lm.build_model(_args("--hidden", "8", "--optimizer", "sgd")).optimizer
    assert type(sgd) is fd.optimizers.SGD and sgd.weight_decay == 0.0 and sgd.momentum == 0.9
    assert lm.build_model(_args("--hidden", "8", "--weight-decay", "0")).optimizer.weight_decay == 0.0


def test_default_learning_rate_depends_on_the_optimizer():
    assert _args().initial_learning_rate == 1e-3
    assert _args("--optimizer", "sgd").initial_learning_rate == 0.1
    assert _args("--lr", "0.02").initial_learning_rate == 0.02


def test_cosine_decay_ends_at_a_hundredth_of_the_learning_rate_by_default():
    assert _args().final_learning_rate == pytest.approx(1e-5)
    assert _args("--optimizer", "sgd").final_learning_rate == pytest.approx(1e-3)
    assert _args("--min-lr", "3e-4").final_learning_rate == 3e-4


def test_run_with_patience_reports_the_epochs_trained(capsys):
    pytest.importorskip("gender_guesser")
    threads = fd.get_num_threads()
    assert main(["lm", "--epochs", "2", "--patience", "1", "--hidden", "8", "--embedding", "4",
                 "--batch-size", "1024", "--samples", "0", "--quiet", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "training: 2 epochs" in out and "test perplexity" in out
    assert fd.get_num_threads() == threads  # --threads holds for the command only


def test_train_reports_train_and_validation_but_never_the_test_loss():
    pytest.importorskip("gender_guesser")
    model, data, result = lm.train(_args("--epochs", "2", "--hidden", "8", "--embedding", "4", "--batch-size", "1024",
                                         "--lr", "1e-2"), log=lambda line: None, verbose=0)
    assert set(result["losses"]) == {"train", "val"}  # what tunes on train() cannot see the test split
    assert len(result["history"]["val_loss"]) == 2 and result["losses"]["val"] < result["history"]["val_loss"][0]
    assert result["losses"]["val"] == pytest.approx(result["history"]["val_loss"][-1], rel=1e-5)


def test_the_command_defaults_are_the_library_defaults():
    assert _args() == lm.LMConfig()


def test_the_library_names_the_setting_out_of_range():
    with pytest.raises(ValueError, match=r"min_lr: must be in \(0, lr\]"):
        lm.LMConfig(lr=1e-3, min_lr=1e-2).check()
    with pytest.raises(ValueError, match="hidden"):
        lm.LMConfig(hidden=()).check()


def test_quantize_reports_the_quantized_loss_speed_and_samples(capsys):
    pytest.importorskip("gender_guesser")
    assert main(["lm", "--epochs", "2", "--hidden", "16", "--embedding", "4", "--batch-size", "1024",
                 "--samples", "3", "--quiet", "--threads", "1", "--quantize", "int8"]) == 0
    out = capsys.readouterr().out
    float_loss = float(out.split("  test ")[1].split()[0])
    int8_loss = float(out.split("int8: test loss ")[1].split()[0])
    assert abs(int8_loss - float_loss) < 0.02  # the int8 loss beside the float one
    assert "int8: test loss" in out and "sampling at batch 1: float32" in out and "int8 samples" in out


def test_dropout_options_put_dropout_layers_in_the_model_and_out_of_range_rates_are_refused():
    model = lm.build_model(_args("--hidden", "8", "6", "--dropout", "0.2", "--input-dropout", "0.1"))
    assert [type(layer).__name__ for layer in model.layers] == ["Embedding", "Flatten", "Dropout", "Dense", "Dropout",
                                                                "Dense", "Dropout", "Dense"]
    assert model.network.dropout.tolist() == [0.1, 0.2, 0.2]
    assert lm.build_model(_args("--hidden", "8")).network.dropout.tolist() == [0.0, 0.0]  # none by default
    for option in ("--dropout", "--input-dropout"):
        with pytest.raises(lm_command.UsageError, match=f"argument {option}: must be in \\[0, 1\\)"):
            _args(option, "1")
