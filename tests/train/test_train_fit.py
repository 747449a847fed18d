"""End-to-end behaviour of ``quintet.train.fit`` on a tiny MLP regression."""

from __future__ import annotations

import csv
import math
import time

import pytest
import torch

from quintet.train import cosine_lr, evaluate, fit, load_checkpoint, load_model_file


def _strip_time(history):
    return [{k: v for k, v in row.items() if k != "time_s"} for row in history]


def test_loss_falls_and_outputs_written(tiny, data, tmp_path):
    train, val = data
    res = fit(tiny.RegressionTask(tiny.make_net()), train, val, tiny.config(max_epochs=6), tmp_path)
    h = res.history
    assert [r["epoch"] for r in h] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in h] == [5, 10, 15, 20, 25, 30]
    assert h[-1]["val/loss"] < 0.5 * h[0]["val/loss"]
    assert h[-1]["train/loss"] < 0.5 * h[0]["train/loss"]
    assert res.stop_reason == "max_epochs"
    assert res.best_metric == min(r["val/loss"] for r in h)
    assert h[res.best_epoch - 1]["val/loss"] == res.best_metric
    for name in ("best.pt", "last.ckpt", "history.csv", "train_config.yaml"):
        assert (tmp_path / name).is_file()
    rows = list(csv.DictReader((tmp_path / "history.csv").open()))
    assert len(rows) == 6
    assert float(rows[-1]["val/mae"]) == h[-1]["val/mae"]


def test_ema_matches_hand_computation_for_two_steps(tiny, data, tmp_path):
    train, val = data
    net = tiny.make_net(dropout=0.0)
    p0 = {k: v.detach().clone() for k, v in net.named_parameters()}
    seen = {}

    def record(task, call):
        if call == 2:  # weights after the first optimizer step
            seen.update({k: v.detach().clone() for k, v in task.model.named_parameters()})

    task = tiny.RegressionTask(net, on_train_step=record)
    d = 0.7
    res = fit(task, train, val, tiny.config(max_steps=2, ema_decay=d), tmp_path)
    assert res.stop_reason == "max_steps" and res.history[-1]["step"] == 2
    ck = load_checkpoint(res.last_path)
    assert ck["ema"]["num_updates"] == 2
    best = load_model_file(res.best_path)["state_dict"]
    for name, p2 in net.named_parameters():
        expected = d * (d * p0[name] + (1 - d) * seen[name]) + (1 - d) * p2.detach()
        torch.testing.assert_close(ck["ema"]["shadow"]["model." + name], expected, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(best[name], expected, rtol=1e-6, atol=1e-7)
        assert not torch.equal(best[name], p2.detach())  # the saved model is the EMA, not the raw weights
        torch.testing.assert_close(ck["task_state"]["model." + name], p2.detach(), rtol=0, atol=0)


def test_resume_after_crash_is_bit_identical(tiny, data, tmp_path):
    train, val = data
    cfg = tiny.config(max_epochs=4)
    ref = fit(tiny.RegressionTask(tiny.make_net(seed=0)), train, val, cfg, tmp_path / "ref")

    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):  # dies in the middle of epoch 3
        fit(tiny.RegressionTask(tiny.make_net(seed=0), crash_at=13), train, val, cfg, run)
    assert load_checkpoint(run / "last.ckpt")["run"]["epoch"] == 2
    # a fresh process would build the model with other random weights: the checkpoint must win
    res = fit(tiny.RegressionTask(tiny.make_net(seed=123)), train, val, cfg, run)

    assert _strip_time(res.history) == _strip_time(ref.history)
    a, b = load_checkpoint(ref.last_path), load_checkpoint(res.last_path)
    for key in ("task_state",):
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), k
    for k in a["ema"]["shadow"]:
        assert torch.equal(a["ema"]["shadow"][k], b["ema"]["shadow"][k]), k
    ma, mb = load_model_file(ref.best_path)["state_dict"], load_model_file(res.best_path)["state_dict"]
    assert all(torch.equal(ma[k], mb[k]) for k in ma)


def test_resume_with_bigger_budget_continues_exactly(tiny, data, tmp_path):
    train, val = data
    ref = fit(tiny.RegressionTask(tiny.make_net()), train, val, tiny.config(max_epochs=4), tmp_path / "ref")
    first = fit(tiny.RegressionTask(tiny.make_net()), train, val, tiny.config(max_epochs=2), tmp_path / "run")
    assert len(first.history) == 2
    again = fit(tiny.RegressionTask(tiny.make_net()), train, val, tiny.config(max_epochs=2), tmp_path / "run")
    assert _strip_time(again.history) == _strip_time(first.history)  # finished: nothing retrained
    res = fit(tiny.RegressionTask(tiny.make_net()), train, val, tiny.config(max_epochs=4), tmp_path / "run")
    assert _strip_time(res.history) == _strip_time(ref.history)


def test_resume_false_starts_over(tiny, data, tmp_path):
    train, val = data
    fit(tiny.RegressionTask(tiny.make_net()), train, val, tiny.config(max_epochs=2), tmp_path)
    res = fit(
        tiny.RegressionTask(tiny.make_net()), train, val, tiny.config(max_epochs=1), tmp_path, resume=False
    )
    assert len(res.history) == 1


def test_early_stopping_stops(tiny, data, tmp_path):
    train, val = data
    task = tiny.RegressionTask(tiny.make_net(), const_val=True)
    res = fit(task, train, val, tiny.config(max_epochs=50, early_stop_patience=2), tmp_path)
    assert res.stop_reason == "early_stop"
    assert len(res.history) == 3  # epoch 1 sets the best, 2 and 3 do not improve
    assert res.best_epoch == 1


def test_plateau_lowers_lr(tiny, data, tmp_path):
    train, val = data
    task = tiny.RegressionTask(tiny.make_net(), const_val=True)
    cfg = tiny.config(max_epochs=6, lr=0.01, plateau_patience=1, plateau_factor=0.5, min_lr=0.01 / 3)
    res = fit(task, train, val, cfg, tmp_path)
    lrs = [r["lr"] for r in res.history]
    assert lrs == pytest.approx([0.01, 0.01, 0.01, 0.005, 0.005, 0.01 / 3])


def test_cosine_schedule_anneals_to_min_lr_over_the_step_budget(tiny, data, tmp_path):
    train, val = data
    cfg = tiny.config(
        max_epochs=100, max_steps=20, steps_per_epoch=1, lr=0.01, min_lr=0.001, lr_schedule="cosine"
    )
    res = fit(tiny.RegressionTask(tiny.make_net(), const_val=True), train, val, cfg, tmp_path)
    assert res.stop_reason == "max_steps" and len(res.history) == 20
    # the row of epoch e logs the LR of step e, set from the e - 1 steps done before it
    expected = [0.001 + 0.5 * 0.009 * (1 + math.cos(math.pi * (e - 1) / 20)) for e in range(1, 21)]
    assert [r["lr"] for r in res.history] == pytest.approx(expected, rel=1e-12)
    assert res.history[-1]["lr"] < 0.0011  # a constant validation loss never lowers it by plateau


def test_cosine_schedule_follows_the_time_budget_and_resumes_exactly(tiny, data, tmp_path):
    train, val = data
    cfg = tiny.config(
        max_epochs=200, max_steps=1000, max_time_s=0.4, lr=0.01, min_lr=0.0, lr_schedule="cosine"
    )
    res = fit(tiny.RegressionTask(tiny.make_net(), sleep_s=0.01), train, val, cfg, tmp_path / "time")
    assert res.stop_reason == "max_time"
    assert res.history[-1]["lr"] < 0.2 * 0.01  # annealed by the clock, far from 1000 steps
    assert cosine_lr(cfg, 0, 0.2) == pytest.approx(0.005)
    # a resumed cosine run on a step budget is bit-identical to an uninterrupted one
    cfg = tiny.config(max_epochs=4, max_steps=20, lr_schedule="cosine")
    ref = fit(tiny.RegressionTask(tiny.make_net()), train, val, cfg, tmp_path / "ref")
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(tiny.RegressionTask(tiny.make_net(), crash_at=13), train, val, cfg, tmp_path / "run")
    again = fit(tiny.RegressionTask(tiny.make_net()), train, val, cfg, tmp_path / "run")
    assert _strip_time(again.history) == _strip_time(ref.history)


def test_max_time_stops_on_time(tiny, data, tmp_path):
    train, val = data
    task = tiny.RegressionTask(tiny.make_net(), sleep_s=0.02)
    budget = 0.3
    t0 = time.monotonic()
    res = fit(task, train, val, tiny.config(max_epochs=1000, max_time_s=budget), tmp_path)
    wall = time.monotonic() - t0
    assert res.stop_reason == "max_time"
    assert budget <= res.history[-1]["time_s"] < budget + 2.0  # one step + validation of slack
    assert 1 <= res.history[-1]["step"] <= 16  # at most 0.3 s / 0.02 s per step, plus the one that crosses
    assert wall < budget + 5.0
    assert "val/loss" in res.history[-1]  # the partial epoch was validated
    # resuming with the same budget does nothing; a larger one continues
    again = fit(
        tiny.RegressionTask(tiny.make_net()),
        train,
        val,
        tiny.config(max_epochs=1000, max_time_s=budget),
        tmp_path,
    )
    assert len(again.history) == len(res.history)


def test_model_file_reloads_with_weights_only_and_reproduces(tiny, data, tmp_path):
    train, val = data
    res = fit(
        tiny.RegressionTask(tiny.make_net()),
        train,
        val,
        tiny.config(max_epochs=3),
        tmp_path,
        extra={"model": {"hidden": 32, "layers": [4, 32, 1]}},
    )
    raw = torch.load(res.best_path, weights_only=True)
    assert raw["quintet_version"]
    assert raw["config"]["batch_size"] == 8 and raw["config"]["lr"] == 0.01
    assert raw["extra"]["model"] == {"hidden": 32, "layers": [4, 32, 1]}
    assert raw["metrics"]["epoch"] == res.best_epoch
    net = tiny.make_net(seed=99)
    net.load_state_dict(load_model_file(res.best_path)["state_dict"])
    metrics = evaluate(tiny.RegressionTask(net), val, batch_size=8, split="val")
    best_row = res.history[res.best_epoch - 1]
    assert metrics["val/loss"] == pytest.approx(best_row["val/loss"], rel=1e-6)
    assert metrics["val/mae"] == pytest.approx(best_row["val/mae"], rel=1e-6)


def test_no_validation_set_monitors_train_loss(tiny, data, tmp_path):
    train, _ = data
    res = fit(tiny.RegressionTask(tiny.make_net()), train, None, tiny.config(max_epochs=2), tmp_path)
    assert all("val/loss" not in r for r in res.history)
    assert res.best_metric == min(r["train/loss"] for r in res.history)


def test_grad_in_eval_allows_autograd_in_validation(tiny, data, tmp_path):
    train, val = data

    class ForceLike(tiny.RegressionTask):
        grad_in_eval = True

        def step(self, batch, split):
            x = batch["x"].clone().requires_grad_(True)
            e = self.model(x).sum()
            (g,) = torch.autograd.grad(e, x, create_graph=split == "train")
            out = super().step(batch, split)
            out.metrics["grad_norm"] = g.norm().detach()
            return out

    res = fit(ForceLike(tiny.make_net()), train, val, tiny.config(max_epochs=1), tmp_path)
    assert res.history[0]["val/grad_norm"] > 0


def test_unknown_monitor_is_a_clear_error(tiny, data, tmp_path):
    train, val = data
    with pytest.raises(ValueError, match=r"val/nope.*val/mae"):
        fit(tiny.RegressionTask(tiny.make_net()), train, val, tiny.config(monitor="val/nope"), tmp_path)


def test_tensorboard_without_package_says_so(tiny, data, tmp_path):
    pytest.importorskip("lightning")
    try:
        import tensorboard  # noqa: F401

        pytest.skip("tensorboard is installed here")
    except ImportError:
        pass
    train, val = data
    with pytest.warns(UserWarning, match="tensorboard"):
        fit(
            tiny.RegressionTask(tiny.make_net()),
            train,
            val,
            tiny.config(max_epochs=1, tensorboard=True),
            tmp_path,
        )


def test_ctrl_c_raises_keyboard_interrupt_and_resumes(tiny, data, tmp_path):
    import signal

    train, val = data
    before = signal.getsignal(signal.SIGINT)

    def interrupt(task, call):
        if call == 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt, match="resume"):
        fit(
            tiny.RegressionTask(tiny.make_net(), on_train_step=interrupt), train, val, tiny.config(), tmp_path
        )
    assert signal.getsignal(signal.SIGINT) == before  # Lightning's SIG_IGN is undone
    res = fit(tiny.RegressionTask(tiny.make_net()), train, val, tiny.config(), tmp_path)
    assert len(res.history) == 4 and res.stop_reason == "max_epochs"


def test_resume_is_exact_with_workers_and_random_augmentation(tiny, data, tmp_path):
    class Noisy(tiny.RegressionData):
        def __getitem__(self, i):
            d = super().__getitem__(i)
            return {"x": d["x"] + 0.1 * torch.randn(4), "y": d["y"]}  # drawn inside the worker

    train, val = Noisy(64, seed=1), data[1]
    cfg = tiny.config(num_workers=2, max_epochs=3)
    ref = fit(tiny.RegressionTask(tiny.make_net()), train, val, cfg, tmp_path / "ref")
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(tiny.RegressionTask(tiny.make_net(), crash_at=8), train, val, cfg, tmp_path / "run")
    res = fit(tiny.RegressionTask(tiny.make_net()), train, val, cfg, tmp_path / "run")
    assert _strip_time(res.history) == _strip_time(ref.history)
    other = fit(
        tiny.RegressionTask(tiny.make_net()),
        train,
        val,
        tiny.config(num_workers=2, max_epochs=1, seed=1),
        tmp_path / "o",
    )
    assert other.history[0]["train/loss"] != ref.history[0]["train/loss"]  # the seed matters


def test_checkpoint_of_another_model_is_a_clear_error(tiny, data, tmp_path):
    train, val = data
    fit(tiny.RegressionTask(tiny.make_net()), train, val, tiny.config(max_epochs=1), tmp_path)
    other = torch.nn.Sequential(torch.nn.Linear(4, 7), torch.nn.Linear(7, 1))
    with pytest.raises(ValueError, match=r"last\.ckpt holds another model.*resume=False"):
        fit(tiny.RegressionTask(other), train, val, tiny.config(max_epochs=2), tmp_path)
    res = fit(tiny.RegressionTask(other), train, val, tiny.config(max_epochs=1), tmp_path, resume=False)
    assert res.stop_reason == "max_epochs"


def test_epoch_is_one_pass_without_steps_per_epoch(tiny, data, tmp_path):
    train, val = data  # 64 samples, batch 8 -> 8 steps per epoch
    res = fit(
        tiny.RegressionTask(tiny.make_net()),
        train,
        val,
        tiny.config(max_epochs=2, steps_per_epoch=None),
        tmp_path,
    )
    assert [r["step"] for r in res.history] == [8, 16]


def test_cpu_clock_budget_ignores_sleeping(tiny, data, tmp_path):
    # sleeping costs wall-clock but no CPU: a CPU-time budget lets the run go on much longer
    train, val = data
    task = tiny.RegressionTask(tiny.make_net(), sleep_s=0.05)
    res = fit(
        task,
        train,
        val,
        tiny.config(max_epochs=8, max_time_s=1.0, time_budget_clock="cpu"),
        tmp_path,
    )
    assert res.stop_reason == "max_epochs"
    assert res.history[-1]["step"] > 21  # a wall-clock budget of 1 s would have stopped by step 21
