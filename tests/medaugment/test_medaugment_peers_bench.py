"""Peers (kornia, flip/rotate, albumentations chains), pools, metrics against hand-computed values, a tiny training."""

from __future__ import annotations

import numpy as np
import pytest

from medaugment_harness import (
    RunConfig,
    accuracy,
    dice_iou,
    macro_f1,
    make_pool,
    summarize,
    train_and_test,
)
from medaugment_peers import KorniaChains, make_peer, peer_names
from quintet.medaugment.demo import phantom
from quintet.medaugment.peers import AlbumentationsChains
from quintet.medaugment.policy import Branch, OpCall


def fixed_branch(*names: str) -> Branch:
    """A branch that applies ``names`` in order with empty params (for peers that sample their own)."""
    return Branch((0, len(names)), tuple(OpCall(n, True, {}) for n in names))


def test_metrics_by_hand():
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.array([0, 1, 1, 1, 2, 0])
    assert accuracy(y, p) == pytest.approx(4 / 6)
    # F1 per class: c0 2*1/(2+1+1) = 0.5, c1 2*2/(4+1) = 0.8, c2 2*1/(2+0+1) = 2/3
    assert macro_f1(y, p, 3) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert macro_f1(y, p, 4) == pytest.approx(
        (0.5 + 0.8 + 2 / 3 + 1.0) / 4
    )  # class 3: no support, no prediction
    a = np.zeros((2, 4, 4), bool)
    b = np.zeros((2, 4, 4), bool)
    a[0, :2] = True  # 8 px
    b[0, 1:3] = True  # 8 px, overlap 4
    dice, iou = dice_iou(a, b)  # image 0: dice 8/16, iou 4/12; image 1 empty/empty -> 1, 1
    assert dice == pytest.approx((0.5 + 1) / 2) and iou == pytest.approx((1 / 3 + 1) / 2)
    s = summarize([{"acc": 0.5, "f1": 0.4}, {"acc": 0.7, "f1": 0.6}], ("acc", "f1"))
    assert (
        s["acc"] == pytest.approx(0.6)
        and s["std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
        and s["n"] == 2
    )


@pytest.mark.parametrize("name", peer_names())
def test_every_peer_keeps_shape_dtype_and_mask_labels(name):
    img, mask = phantom(48, 3)
    peer = make_peer(name)
    rng = np.random.default_rng(0)
    for _ in range(4):
        out, m = peer(img, mask, rng)
        assert out.shape == img.shape and out.dtype == np.uint8
        assert m.shape == mask.shape and set(np.unique(m)) <= {0, 1}
    a1 = peer(img, mask, np.random.default_rng(5))  # seeded through rng
    a2 = peer(img, mask, np.random.default_rng(5))
    np.testing.assert_array_equal(a1[0], a2[0])
    np.testing.assert_array_equal(a1[1], a2[1])


def test_flip_rotate_policy_frequencies():
    img = np.arange(64, dtype=np.uint8).reshape(8, 8)
    peer = make_peer("oneaugment")
    rng = np.random.default_rng(1)
    flips = sum(np.array_equal(peer(img, None, rng)[0], img[:, ::-1]) for _ in range(400))
    assert flips / 400 == pytest.approx(0.5, abs=0.08)
    with pytest.raises(ValueError, match="AugMix"):
        make_peer("augmix")
    with pytest.raises(ValueError, match="unknown method"):
        make_peer("cutmix")


def test_same_chains_in_albumentations_and_kornia():
    import torch

    img, mask = phantom(40, 2)
    alb = AlbumentationsChains(5, seed=0)
    kor = KorniaChains(5)
    assert set(alb.transforms) == set(kor.transforms) and len(alb.transforms) == 14
    for name in alb.transforms:
        out, m = alb.run(fixed_branch(name), img, mask)
        assert out.shape == img.shape and out.dtype == np.uint8 and set(np.unique(m)) <= {0, 1}
        y = kor.run(fixed_branch(name), torch.from_numpy(img.astype(np.float32) / 255)[None, None])
        assert tuple(y.shape) == (1, 1, 40, 40)
    out, m = alb.run(fixed_branch("hflip"), img, mask)
    np.testing.assert_array_equal(out, img[:, ::-1])
    np.testing.assert_array_equal(m, mask[:, ::-1])
    _, m = alb.run(fixed_branch("gaussian_noise", "sharpen"), img, mask)  # pixel ops leave the mask alone
    np.testing.assert_array_equal(m, mask)


def test_pools_have_the_paper_sizes():
    imgs = np.stack([phantom(32, k)[0] for k in range(3)])
    masks = np.stack([phantom(32, k)[1] for k in range(3)])
    x, m, src = make_pool("medaugment", imgs, masks, seed=0)
    assert len(x) == 15 and m.shape == (15, 32, 32)
    np.testing.assert_array_equal(src, np.repeat(np.arange(3), 5))
    np.testing.assert_array_equal(x[4], imgs[0])  # N = 4 branches then the original
    x, m, src = make_pool("twoaugment", imgs, masks, seed=0)
    assert len(x) == 15
    x, m, src = make_pool("none", imgs, None, seed=0)
    assert len(x) == 3 and m is None
    again = make_pool("medaugment", imgs, masks, seed=0)[0]
    np.testing.assert_array_equal(again, make_pool("medaugment", imgs, masks, seed=0)[0])
    assert not np.array_equal(again, make_pool("medaugment", imgs, masks, seed=1)[0])


def test_tiny_segmentation_training_learns(tmp_path):
    data = [phantom(32, k) for k in range(24)]
    x = np.stack([d[0] for d in data])
    y = np.stack([d[1] for d in data])
    px, pm, _ = make_pool("medaugment", x[:16], y[:16], seed=0)
    cfg = RunConfig(
        kind="segmentation", steps=100, steps_per_epoch=25, batch_size=8, lr=1e-2, width=4, seed=0
    )
    res = train_and_test(cfg, (px, pm), (x[16:20], y[16:20]), (x[20:], y[20:]), tmp_path / "run")
    # the lesion is the brightest region: a trained UNet beats the all-foreground guess by far
    guess = dice_iou(np.ones_like(y[20:], bool), y[20:])[0]
    assert res["dice"] > 6 * guess
    assert (tmp_path / "run" / "best.pt").is_file()


def test_online_transform_end_to_end_with_policy_in_dataset():
    from quintet.medaugment.data import MedAugmentTransform, to_tensor  # lazy re-export of .albu

    img, mask = phantom(32, 0)
    t = MedAugmentTransform(level=3, seed=0)
    out = t(image=img, mask=mask)
    tensor = to_tensor(out["image"])
    assert tuple(tensor.shape) == (1, 32, 32) and float(tensor.min()) >= 0 and float(tensor.max()) <= 1


def test_interleaved_throughput_reports_a_median_ratio_with_its_spread():
    from quintet.medaugment.peers import interleaved_throughput

    r = interleaved_throughput(size=32, n_images=6, repeats=5, with_mask=True)
    assert r["repeats"] == 5 and r["n_images"] == 6 and r["with_mask"] is True
    assert 0 < r["ratio_min"] <= r["ratio_q25"] <= r["ratio_median"] <= r["ratio_q75"] <= r["ratio_max"]
    assert r["medaugment_img_s"] > 0 and r["albumentations_img_s"] > 0


def test_per_op_throughput_covers_all_fourteen_ops():
    from quintet.medaugment import OPS
    from quintet.medaugment.peers import per_op_throughput

    r = per_op_throughput(size=24, n_images=3, repeats=3)
    assert set(r) == set(OPS) and all(v > 0 for v in r.values())
