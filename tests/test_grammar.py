"""The one command grammar's answers to user mistakes: renamed spellings, non-finite values, bad options."""

from __future__ import annotations

from pathlib import Path

import pytest

from quintet.cli import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["definet", "predict", "x.cif", "out_dir=somewhere"], "key 'out_dir' was renamed: use -o/--out"),
        (["medaugment", "expand", "data", "output=x"], "key 'output' was renamed: use -o/--out"),
        (["definet", "predict", "x.cif", "max_steps=10"], "key 'max_steps' was renamed: use finish_steps"),
        (["data", "md", "timestep_fs=nan"], "timestep_fs: 'nan' is not a finite number"),
        (["data", "md", "temperature_K=inf"], "temperature_K: 'inf' is not a finite number"),
    ],
)
def test_config_mistakes_name_the_key_and_the_fix(argv: list[str], message: str, capsys, tmp_path: Path) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["fedaux", "deploy-local", "--workdir", "runs/deploy"], "--workdir was renamed: use -o/--out"),
        (["fedaux", "run", "--data-root", "x"], "--data-root was renamed: use --data"),
        (["deeprelax", "predict", "-i", "x.cif"], "-i was renamed: use positional INPUT"),
        (["deeprelax", "predict", str(Path(__file__).parent / "data" / "regression" / "deeprelax_in"), "--shard", "2of3"],
         None),
    ],
)
def test_old_flags_are_answered_with_the_new_spelling(argv: list[str], message: str | None, capsys) -> None:
    if message is None:  # a bad value of a real flag: a clear error from the job, exit 1
        assert main(argv) == 1
        assert "shard: expected K/N" in capsys.readouterr().err
        return
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_threads_and_print_config(capsys, tmp_path: Path) -> None:
    import torch

    before = torch.get_num_threads()
    assert main(["data", "oracles", "--threads", "0"]) == 1
    assert "--threads must be at least 1" in capsys.readouterr().err
    assert main(["data", "oracles", "--threads", "1"]) == 0 and torch.get_num_threads() == before
    assert main(["deeprelax", "predict", "a.cif", "b.cif", "-o", str(tmp_path), "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "- a.cif\n- b.cif" in out and f"out: {tmp_path}" in out and not any(tmp_path.iterdir())


def test_a_verb_without_inputs_refuses_positional_words(capsys) -> None:
    assert main(["leignn", "train", "stray.extxyz"]) == 1
    assert "this verb takes key=value arguments only" in capsys.readouterr().err
