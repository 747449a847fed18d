"""MedAugment inside albumentations (DualTransform) and MONAI (dictionary transform) pipelines."""

from __future__ import annotations

import json
from collections import Counter

import albumentations as A
import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor
from monai.transforms import Compose

from quintet.medaugment import COMBINATIONS, Branch, MedAugment
from quintet.medaugment.albu import MedAugmentTransform
from quintet.medaugment.monai_transforms import MedAugmentd


def _pair(seed=0, shape=(40, 48), channels=3):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, size=(*shape, channels)).astype(np.uint8)
    mask = rng.choice(np.array([0, 1, 2], np.uint8), size=shape)
    return img, mask


def _applied(record):
    if isinstance(record, str):
        record = json.loads(record)
    return [c["name"] for c in record["calls"] if c["applied"]]


# -------------------------------------------------------------------------------- albumentations


def test_albumentations_transform_draws_identity_one_in_n_plus_one_and_replays_like_the_policy():
    img, mask = _pair(5, (24, 24))
    t = MedAugmentTransform(level=5, num_branches=4, seed=0)
    records = []
    for _ in range(1000):
        t(image=img)
        records.append(t.params["branch"])
    ident = sum(r["combination"] is None for r in records)
    assert ident / 1000 == pytest.approx(1 / 5, abs=0.035)
    combs = Counter(tuple(r["combination"]) for r in records if r["combination"] is not None)
    for c in COMBINATIONS:
        assert combs[c] / (1000 - ident) == pytest.approx(0.25, abs=0.05)
    out = t(image=img, mask=mask)
    rec = t.params["branch"]
    want_img, want_mask = MedAugment().apply(Branch.from_dict(rec), img, mask)
    np.testing.assert_array_equal(out["image"], want_img)
    np.testing.assert_array_equal(out["mask"], want_mask)
    rep = t.replay(rec, image=img, mask=mask)
    np.testing.assert_array_equal(rep["image"], out["image"])


def test_albumentations_compose_oneof_with_image_mask_masks_and_seed():
    img, mask = _pair(1)
    masks = [mask, (mask == 2).astype(np.uint8)]

    def pipe(seed):
        return A.Compose(
            [
                A.OneOf([MedAugmentTransform(level=5), A.HorizontalFlip()], p=1),
                MedAugmentTransform(level=3),
                A.Normalize(mean=0.5, std=0.5),
            ],
            seed=seed,
        )

    a, b, c = pipe(7), pipe(7), pipe(8)
    runs_a = [a(image=img, mask=mask, masks=masks) for _ in range(12)]
    runs_b = [b(image=img, mask=mask, masks=masks) for _ in range(12)]
    runs_c = [c(image=img, mask=mask, masks=masks) for _ in range(12)]
    for x, y in zip(runs_a, runs_b, strict=True):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["mask"], y["mask"])
    assert any(not np.array_equal(x["image"], z["image"]) for x, z in zip(runs_a, runs_c, strict=True))
    for out in runs_a:
        assert out["image"].dtype == np.float32 and out["image"].shape == img.shape
        assert set(np.unique(out["mask"])) <= {0, 1, 2}
        assert len(out["masks"]) == 2
        # the second mask is derived from the first and the same geometry moved both
        np.testing.assert_array_equal(np.asarray(out["masks"][1]), (out["masks"][0] == 2).astype(np.uint8))
        np.testing.assert_array_equal(np.asarray(out["masks"][0]), out["mask"])


def test_albumentations_replay_compose_is_bit_identical_after_json():
    img, mask = _pair(2)
    rc = A.ReplayCompose([MedAugmentTransform(level=4)])
    rc.set_random_seed(5)
    seen = set()
    for _ in range(20):
        out = rc(image=img, mask=mask)
        saved = json.loads(json.dumps(out["replay"]))
        seen.add(str(saved["transforms"][0]["params"]["branch"]["combination"]))
        rep = A.ReplayCompose.replay(saved, image=img, mask=mask)
        np.testing.assert_array_equal(rep["image"], out["image"])
        np.testing.assert_array_equal(rep["mask"], out["mask"])
    assert len(seen) >= 3  # the replays covered several different branches


def test_albumentations_serialisation_round_trip_and_validation():
    pipe = A.Compose([MedAugmentTransform(level=3, num_branches=6, value_range="auto", mask_fill=255, p=0.7)])
    d = json.loads(json.dumps(A.to_dict(pipe)))
    back = A.from_dict(d)
    t = back.transforms[0]
    assert isinstance(t, MedAugmentTransform)
    assert (t.level, t.num_branches, t.value_range, t.mask_fill, t.p) == (3, 6, "auto", 255, 0.7)
    assert A.to_dict(back) == A.to_dict(pipe)
    with pytest.raises(ValueError, match="level"):
        MedAugmentTransform(level=9)


def test_albumentations_volume_target_keeps_slices_apart():
    vol = np.stack([np.full((16, 16), 20 * (k + 1), np.uint8) for k in range(5)])
    vol[:, 4:12, 6:10] += 5
    pipe = A.Compose([MedAugmentTransform(level=5)], seed=3)
    for _ in range(10):
        out = pipe(volume=vol, mask3d=(vol > 0).astype(np.uint8))
        assert out["volume"].shape == vol.shape and out["mask3d"].shape == vol.shape
        names = _applied(pipe.transforms[0].params["branch"])
        if not set(names) & {"brightness", "contrast", "posterize", "gaussian_noise", "sharpen"}:
            for k in range(5):  # no slice borrows values from its neighbours
                vals = set(np.unique(out["volume"][k]))
                assert vals <= set(range(0, 20 * (k + 1) + 6))
                assert vals & set(range(20 * (k + 1) - 3, 20 * (k + 1) + 6))


# -------------------------------------------------------------------------------- MONAI


def _monai_sample(seed=0, shape=(1, 24, 28, 6)):
    rng = np.random.default_rng(seed)
    img = torch.from_numpy(rng.uniform(0, 255, shape).astype(np.float32))
    lab = torch.from_numpy(rng.integers(0, 3, shape).astype(np.float32))
    affine = torch.diag(torch.tensor([0.7, 0.8, 2.5, 1.0], dtype=torch.float64))
    affine[:3, 3] = torch.tensor([10.0, -20.0, 30.0])
    return {"image": MetaTensor(img, affine=affine), "label": MetaTensor(lab, affine=affine.clone())}


def test_monai_set_random_state_reproduces_and_differs_by_seed():
    data = _monai_sample()

    def run(seed):
        c = Compose([MedAugmentd(keys=["image", "label"], label_keys=["label"])])
        c.set_random_state(seed)
        return [c(data) for _ in range(6)]

    a, b, c = run(123), run(123), run(124)
    for x, y in zip(a, b, strict=True):
        assert x["medaugment_branch"] == y["medaugment_branch"]
        assert torch.equal(x["image"].as_tensor(), y["image"].as_tensor())
        assert torch.equal(x["label"].as_tensor(), y["label"].as_tensor())
    assert [x["medaugment_branch"] for x in a] != [x["medaugment_branch"] for x in c]


def test_monai_prob_zero_is_identity_and_missing_keys():
    data = _monai_sample(1)
    t = MedAugmentd(keys=["image", "label", "extra"], label_keys=["label"], prob=0.0, allow_missing_keys=True)
    out = t(data)
    assert torch.equal(out["image"].as_tensor(), data["image"].as_tensor())
    assert json.loads(out["medaugment_branch"])["combination"] is None
    with pytest.raises(KeyError):
        MedAugmentd(keys=["image", "extra"])(data)
    with pytest.raises(ValueError, match="label_keys"):
        MedAugmentd(keys=["image"], label_keys=["label"])


def test_monai_dataloader_default_collate():
    items = [_monai_sample(k) for k in range(4)]
    ds = Dataset(items, transform=MedAugmentd(keys=["image", "label"], label_keys=["label"]))
    batch = next(iter(DataLoader(ds, batch_size=4, num_workers=0)))
    assert tuple(batch["image"].shape) == (4, 1, 24, 28, 6)
    assert len(batch["medaugment_branch"]) == 4 and all(
        isinstance(r, str) for r in batch["medaugment_branch"]
    )
    plain = [{"image": torch.rand(1, 16, 16), "label": torch.zeros(1, 16, 16)} for _ in range(3)]
    ds2 = Dataset(plain, transform=MedAugmentd(keys=["image", "label"], label_keys=["label"]))
    b2 = next(iter(torch.utils.data.DataLoader(ds2, batch_size=3)))  # PyTorch's own default collate
    assert tuple(b2["image"].shape) == (3, 1, 16, 16)


def test_monai_in_plane_ops_keep_every_axial_slice_intact():
    """A (C, H, W, D) volume whose slices along D are constant planes: in-plane ops never mix them."""
    depth = 7
    vol = np.zeros((1, 20, 24, depth), np.float32)
    for k in range(depth):
        vol[0, 3:17, 4:20, k] = 100.0 + 10 * k
    t = MedAugmentd(keys=["image"], value_range=(0.0, 255.0))
    t.set_random_state(0)
    spatial_seen = 0
    for _ in range(40):
        out = t({"image": torch.from_numpy(vol)})
        names = _applied(out["medaugment_branch"])
        if set(names) & {"brightness", "contrast", "posterize", "gaussian_noise", "sharpen", "gaussian_blur"}:
            continue
        spatial_seen += bool(names)
        x = out["image"].numpy()
        for k in range(depth):  # slice k holds only 0, its own level and blends of the two
            level = 100.0 + 10 * k
            assert float(x[0, :, :, k].min()) >= 0 and float(x[0, :, :, k].max()) == pytest.approx(level)
    assert spatial_seen >= 5


def test_monai_affine_follows_the_ops_and_inverse_restores_labels():
    t = MedAugmentd(keys=["image", "label"], label_keys=["label"])
    base = _monai_sample(3)
    branch = Branch((0, 2), ())
    from quintet.medaugment.policy import OpCall

    for calls in (
        (OpCall("hflip", True), OpCall("vflip", True)),
        (OpCall("translate_x", True, {"fraction": 0.25}),),
        (OpCall("rotate", True, {"angle": 90.0}),),
    ):
        branch = Branch((0, len(calls)), calls)
        data = {k: v.clone() for k, v in base.items()}
        out = t.replay(branch, data)
        lab_in, lab_out = base["label"].numpy()[0], out["label"].numpy()[0]
        # the voxel that moved from index p to q keeps its world position: A_in p == A_out q
        aff_in, aff_out = base["label"].affine.numpy(), out["label"].affine.numpy()
        ii, jj, kk = np.nonzero(lab_out > 0)
        p = np.array([ii[0], jj[0], kk[0], 1.0])
        fwd = np.linalg.inv(aff_in) @ aff_out @ p
        src = np.rint(fwd[:3]).astype(int)
        assert lab_in[tuple(src)] == lab_out[ii[0], jj[0], kk[0]]
        inv = t.inverse(out)
        assert np.allclose(inv["label"].affine.numpy(), aff_in)
        if calls[0].name == "hflip":  # flips are exact pixel permutations
            assert torch.equal(inv["label"].as_tensor(), base["label"].as_tensor())


def test_monai_accepts_loadimage_style_float_input_png_and_hounsfield():
    rng = np.random.default_rng(4)
    png_like = torch.from_numpy(rng.integers(0, 255, (1, 20, 20)).astype(np.float32))
    ct = torch.from_numpy(rng.integers(-1024, 2000, (1, 20, 20, 3)).astype(np.float32))
    t = MedAugmentd(keys=["image"])
    t.set_random_state(2)
    for _ in range(20):
        a = t({"image": png_like})["image"]
        b = t({"image": ct})["image"]
        assert a.dtype == torch.float32 and float(a.min()) >= 0 and float(a.max()) <= 255
        assert float(b.min()) >= -1024 and float(b.max()) <= float(ct.max())
    with pytest.raises(ValueError, match="channel-first"):
        t({"image": torch.zeros(2, 3, 4, 5, 6)})


def test_albumentations_compose_seed_gives_each_dataloader_worker_its_own_reproducible_stream():
    img, _ = _pair(6, (16, 16))

    class DS(torch.utils.data.Dataset):
        def __init__(self):
            self.t = A.Compose([MedAugmentTransform()], seed=5)

        def __len__(self):
            return 8

        def __getitem__(self, i):
            self.t(image=img)
            return json.dumps(self.t.transforms[0].params["branch"])

    def run():
        return list(torch.utils.data.DataLoader(DS(), batch_size=None, num_workers=2))

    a, b = run(), run()
    assert a == b  # reproducible across runs
    assert a[0::2] != a[1::2]  # worker 0 and worker 1 draw different streams


def test_top_level_and_data_module_exports():
    import quintet.medaugment as qm
    from quintet.medaugment import data

    assert qm.MedAugmentTransform is MedAugmentTransform and data.MedAugmentTransform is MedAugmentTransform
    assert qm.MedAugmentd is MedAugmentd and data.MedAugmentd is MedAugmentd
    with pytest.raises(AttributeError):
        _ = qm.NoSuchThing


def test_monai_invertd_maps_a_prediction_back():
    from monai.transforms import Invertd

    from quintet.medaugment.policy import OpCall

    base = _monai_sample(6)
    pipe = Compose([MedAugmentd(keys=["image", "label"], label_keys=["label"])])
    out = pipe.transforms[0].replay(Branch((0, 2), (OpCall("vflip", True), OpCall("hflip", True))), base)
    pred = out["label"].as_tensor().clone()  # a perfect "prediction" in the augmented frame
    out["pred"] = MetaTensor(
        pred, meta=out["image"].meta, applied_operations=list(out["image"].applied_operations)
    )
    inv = Invertd(keys="pred", transform=pipe, orig_keys="image", nearest_interp=True)(out)
    assert torch.equal(inv["pred"].as_tensor(), base["label"].as_tensor())
    assert np.allclose(inv["pred"].affine.numpy(), base["image"].affine.numpy())
