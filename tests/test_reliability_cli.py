"""Command-line flags (issue #16): every bad value of every flag of ``fusedense demo``, ``bench``
and ``lm`` stops at parse time — exit code 2, one line on stderr naming the flag, no traceback —
before any data is loaded or any training starts; output paths included."""
import subprocess
import sys

import numpy as np
import pytest

import fusedense as fd
from fusedense import cli

TOO_MANY_THREADS = str(fd.threads.max_threads() + 1)

#: (command line, the flag the message must name)
BAD_FLAGS = [
    ("demo --epochs -1", "--epochs"),
    ("demo --epochs 0", "--epochs"),
    ("demo --epochs x", "--epochs"),
    ("demo --limit 0", "--limit"),
    ("demo --limit 3", "--limit"),
    ("demo --backend bogus", "--backend"),
    ("demo --samples 0", "--samples"),
    ("demo --seed -1", "--seed"),
    ("demo --threads 0", "--threads"),
    (f"demo --threads {TOO_MANY_THREADS}", "--threads"),
    ("bench --dense-shape 0x0", "--dense-shape"),
    ("bench --dense-shape 1024x", "--dense-shape"),
    ("bench --dense-shape 100000x100000", "--dense-shape"),
    ("bench --batch 0", "--batch"),
    ("bench --batch 1,,2", "--batch"),
    ("bench --batch 100000000", "--batch"),
    ("bench --threads 100000", "--threads"),
    ("bench --workload bogus", "--workload"),
    ("bench --dtype float16", "--dtype"),
    ("bench --activation bogus", "--activation"),
    ("bench --systems numpy,bogus", "--systems"),
    ("bench --json missing/dir/out.json", "--json"),
    ("bench --plot missing/dir/out.png", "--plot"),
    ("lm --hidden 0", "--hidden"),
    ("lm --hidden 8 -3", "--hidden"),
    ("lm --activation bogus", "--activation"),
    ("lm --activation softmax", "--activation"),
    ("lm --lr inf", "--lr"),
    ("lm --lr nan", "--lr"),
    ("lm --lr 0", "--lr"),
    ("lm --lr 1e-3 --min-lr 1e-2", "--min-lr"),
    ("lm --min-lr -1", "--min-lr"),
    ("lm --weight-decay -0.1", "--weight-decay"),
    ("lm --embedding-std 0", "--embedding-std"),
    ("lm --temperature -1", "--temperature"),
    ("lm --temperature inf", "--temperature"),
    ("lm --samples -2", "--samples"),
    ("lm --max-len 0", "--max-len"),
    ("lm --threads 100000", "--threads"),
    ("lm --threads 0", "--threads"),
    ("lm --context 0", "--context"),
    ("lm --embedding -1", "--embedding"),
    ("lm --epochs 0", "--epochs"),
    ("lm --batch-size 0", "--batch-size"),
    ("lm --patience 0", "--patience"),
    ("lm --seed -5", "--seed"),
    ("lm --optimizer bogus", "--optimizer"),
    ("lm --backend bogus", "--backend"),
    ("lm --hidden 65536 65536", "--hidden"),
    ("lm --save missing/dir/m.npz", "--save"),
    ("lm --save .", "--save"),
]


@pytest.mark.parametrize("command, flag", BAD_FLAGS, ids=[c for c, _ in BAD_FLAGS])
def test_a_bad_flag_is_a_one_line_usage_error_before_any_work(command, flag, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)  # relative output paths resolve in an empty directory
    for module in ("demo", "bench", "lm"):  # the work a command does, all of it, starts in run()
        monkeypatch.setattr(f"fusedense.cli.{module}.run", lambda args: pytest.fail("the command started"))
    with pytest.raises(SystemExit) as stopped:
        cli.main(command.split())
    err = capsys.readouterr().err
    assert stopped.value.code == 2
    named = err.split("error: ", 1)[1].split(": ", 1)[0]  # "argument --x" or "arguments --x/--y"
    assert err.count("\n") == 1 and named.startswith("argument") and flag in named.replace('/', ' ').split(), err


def test_the_issues_flags_fail_in_a_real_process_without_a_traceback(tmp_path):
    """The flags of issue #16 (some used to fail only after training, one with the model lost)."""
    for command, flag in BAD_FLAGS:
        if command.split()[1] not in ("--epochs", "--limit", "--backend", "--samples", "--dense-shape", "--hidden",
                                      "--activation", "--lr", "--temperature", "--threads", "--save"):
            continue
        done = subprocess.run([sys.executable, "-m", "fusedense", *command.split()], capture_output=True, text=True,
                              cwd=tmp_path, timeout=60)
        assert done.returncode == 2, (command, done.stderr)
        assert done.stdout == "" and "Traceback" not in done.stderr and done.stderr.count("\n") == 1, (command, done.stderr)
        assert flag in done.stderr


def test_good_flags_pass_the_checks(monkeypatch, tmp_path):
    calls = []
    for module in ("demo", "bench", "lm"):
        monkeypatch.setattr(f"fusedense.cli.{module}.run", lambda args: calls.append(args) or 0)
    out = str(tmp_path / "m.npz")
    assert cli.main(["lm", "--hidden", "8", "8", "--lr", "0.01", "--min-lr", "0.001", "--temperature", "0",
                     "--samples", "0", "--threads", str(fd.threads.max_threads()), "--save", out]) == 0
    assert calls[-1].save == out and calls[-1].hidden == [8, 8] and calls[-1].temperature == 0.0
    assert cli.main(["demo", "--epochs", "1", "--limit", "20", "--backend", "numpy", "--seed", "0"]) == 0
    assert cli.main(["bench", "--dense-shape", "1x1", "--batch", "1,2", "--systems", "numpy",
                     "--json", str(tmp_path / "b.json")]) == 0
    assert calls[-1].dense_shape == (1, 1) and calls[-1].systems == {"numpy"}


def test_lm_saves_in_the_temporary_directory_when_the_path_vanished_during_training(tmp_path, monkeypatch, capsys):
    from fusedense.cli import lm as lm_command
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    model = fd.MLP([3, 2], random_state=0, backend="numpy")
    assert lm_command._save(model, str(tmp_path / "gone" / "m.npz")) == 1
    err = capsys.readouterr().err
    saved = err.rsplit("saved to ", 1)[1].split(" instead")[0]
    assert err.count("\n") == 1 and "could not save to" in err and saved.startswith(str(tmp_path / "tmp"))
    assert np.array_equal(fd.load_model(saved).params, model.params)
