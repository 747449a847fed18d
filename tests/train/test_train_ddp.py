"""A real 2-process DDP run on CPU (gloo) equals a single-process run with the same global batch.

Marked ``integration`` because it starts two Python processes (~15-30 s on a small machine).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import torch
    from torch import nn
    from quintet.train import StepOutput, Task, TrainConfig, fit

    class Data(torch.utils.data.Dataset):
        def __init__(self, n, seed):
            g = torch.Generator().manual_seed(seed)
            self.x = torch.randn(n, 4, generator=g)
            self.y = (self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0])).unsqueeze(1)
        def __len__(self):
            return len(self.x)
        def __getitem__(self, i):
            return {"x": self.x[i], "y": self.y[i]}

    class ForceLike(Task):
        grad_in_eval = True  # autograd inside validation, as conservative force models need
        def step(self, batch, split):
            x = batch["x"].clone().requires_grad_(True)
            pred = self.model(x)
            (g,) = torch.autograd.grad(pred.sum(), x, create_graph=split == "train")
            loss = ((pred - batch["y"]) ** 2).mean() + 0.01 * g.pow(2).mean()
            return StepOutput(loss, {"mae": (pred - batch["y"]).abs().mean().detach()}, batch_size=len(x))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = nn.Sequential(nn.Linear(4, 16), nn.SiLU(), nn.Linear(16, 1))
            self.register_buffer("scale", torch.ones(1))  # buffers must not make validation talk to ranks
        def forward(self, x):
            return self.net(x) * self.scale

    def run(out, devices, batch_size):
        torch.set_num_threads(1)
        kw = dict(devices=devices, strategy="ddp") if devices > 1 else {}
        cfg = TrainConfig(max_epochs=3, steps_per_epoch=5, batch_size=batch_size, val_batch_size=1, lr=1e-2,
                          accelerator="cpu", progress=False, ema_decay=0.9, early_stop_patience=None, **kw)
        # 5 validation samples: rank 0 gets 3 batches, rank 1 gets 2
        return fit(ForceLike(Net()), Data(64, 1), Data(5, 2), cfg, out, resume=False)

    if __name__ == "__main__":
        res = run(sys.argv[1], 2, 4)
        if res is not None:
            Path(sys.argv[1], "history.json").write_text(json.dumps(res.history))
    """
)


@pytest.mark.integration
def test_ddp_two_processes_match_one(tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(SCRIPT)
    out = tmp_path / "ddp"
    proc = subprocess.run(
        [sys.executable, str(script), str(out)], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = json.loads((out / "history.json").read_text())

    namespace: dict = {}
    exec(compile(SCRIPT.replace('if __name__ == "__main__":', "if False:"), str(script), "exec"), namespace)
    single = namespace["run"](str(tmp_path / "single"), 1, 8).history
    assert len(ddp) == len(single) == 3
    for a, b in zip(ddp, single, strict=True):
        for key in ("step", "lr"):
            assert a[key] == b[key]
        for key in ("train/loss", "val/loss", "val/mae"):
            assert a[key] == pytest.approx(b[key], rel=1e-5), key
    best = torch.load(out / "best.pt", weights_only=True)
    assert best["metrics"]["epoch"] == 3
