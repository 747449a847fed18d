"""Federated inputs: a graph with non-finite features or a malformed edge list, and a client reply that is
wrong in any way. The graph is refused before any round (one line naming the file, exit code 1, nothing
written). Bad replies (NaN uploads, wrong shapes or keys, string arrays, out-of-range metrics, negative example
counts, a partition claimed by another node) are rejected and logged while the round goes on: tested on the
server's engine-independent loop in tests/fedaux/test_fedaux_loop.py and test_fedaux_flower.py.

Functions: :func:`quintet.fedaux.data.load_graph` / :func:`~quintet.fedaux.data.check_client` (``fedaux
run``, ``partition``, ``flower-sim``, ``deploy-local``, ``quintet.fedaux.run``),
:func:`quintet.fedaux.loop.validate_reply` (the server of every engine). Unit cases: tests/fedaux.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

GOOD = {"x": np.ones((12, 3), np.float32), "edge_index": np.array([[k for k in range(11)], [k + 1 for k in range(11)]])}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"x": np.where(np.eye(12, 3) > 0, np.nan, 1.0).astype(np.float32)}, "NaN or inf"),
        ({"x": np.concatenate([np.ones((12, 2)), np.full((12, 1), np.inf)], 1).astype(np.float32)}, "NaN or inf"),
        ({"edge_index": np.array([[0, 1], [0, 2]])}, "self-loops"),
    ],
)
@pytest.mark.parametrize("verb", ["run", "partition"])
def test_a_bad_graph_is_refused_before_any_round(change: dict, message: str, verb: str, tmp_path: Path, cli_error) -> None:
    path = tmp_path / "g.npz"
    np.savez(path, **{**GOOD, "y": np.arange(12) % 2, **change})
    argv = ["fedaux", verb, f"data.dataset={path}", "data.num_clients=2", "data.cache_dir=", "rounds=1"]
    err = cli_error([*argv, "-o", str(tmp_path / "out")])
    assert "g.npz" in err and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()

