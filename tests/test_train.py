import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from cdinn.cli.main import main
from cdinn.errors import InputError
from cdinn.models import build, families, load_model
from cdinn.train import FourierLoss, SupervisedLoss, TransferLearningLoss, load_config, train
from cdinn.simulate.masks import MaskSpec, detector_mask
from cdinn.train.data import GeneratedPatterns, simulation_configs

TINY = """
model = "cdinn2d"
arguments = {{ width = 4, size = 32 }}
data = {{ n_train = 32, n_val = 8, oversampling = 2.0, photons = [1e6, 1e8], seed = 3 }}
loss = [{{ name = "supervised", kind = "bce" }}, {{ name = "fourier", weight = 0.5 }}]
epochs = {epochs}
batch_size = 8
scheduler = "none"
"""


def write(tmp_path, text, name="cfg.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    "family, kwargs, size",
    [("cdinn2d", {"width": 4}, 32), ("cdinn2d", {"width": 4, "space_to_depth": 2, "shared_encoder": True}, 32), ("cdinn3d", {"width": 2}, 32), ("autophasenn", {"width": 2, "size": 32}, 32), ("autophasenn", {"width": 2, "size": 32, "space_to_depth": 2}, 32), ("autophasenn", {"width": 2, "size": 32, "autocorrelation": True}, 32), ("autophasenn", {"width": 2, "size": 32, "autocorrelation": True, "autocorrelation_phase": True}, 32), ("cnn3d-tl", {"width": 2, "size": 32, "levels": 3}, 32)],
)
def test_every_family_builds_and_trains_one_step(family, kwargs, size):
    model = build(family, **kwargs)
    x = model.prepare(torch.rand((2,) + (size,) * model.ndim) * 100)
    out = model(x)
    assert out["amplitude"].shape == (2,) + (model.output_size,) * model.ndim
    assert float(out["phase"].detach().abs().max()) <= torch.pi + 1e-5
    batch = {"intensity": torch.rand((2,) + (size,) * model.ndim), "amplitude": torch.rand_like(out["amplitude"]),
             "phase": torch.zeros_like(out["phase"])}
    loss = SupervisedLoss(shape_weight=1.0)(out, batch).mean() + FourierLoss(0.1)(out, batch).mean() + TransferLearningLoss()(out, batch).mean()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_cdinn2d_throughput_layout():
    """Space-to-depth folds 2x2 pixels into channels and unfolds them at the output; a shared
    encoder feeds both decoders; the options are in the config that rebuilds the model."""
    paper = build("cdinn2d", width=4, size=32)
    fast = build("cdinn2d", width=4, size=32, space_to_depth=2, shared_encoder=True)
    assert fast.config == {"width": 4, "size": 32, "batch_norm": False, "space_to_depth": 2, "shared_encoder": True}
    assert paper.config == {"width": 4, "size": 32, "batch_norm": False}
    assert {n.split(".")[0] for n, _ in fast.named_parameters()} == {"encoder", "shape_decoder", "phase_decoder"}
    assert fast.encoder[0].layers[0][0].in_channels == 4 and fast.shape_decoder.layers[-1].out_channels == 4
    assert sum(p.numel() for p in fast.parameters()) < sum(p.numel() for p in paper.parameters())
    # output pixel (2i + a, 2j + b) is channel 2a + b of the last layer at (i, j): rows 3, 5, ... and columns 2, 4, ... are channel 2
    x = torch.rand(1, 1, 32, 32)
    code = fast.encoder(fast.unshuffle(x))
    last = fast.shape_decoder(code)
    assert torch.allclose(fast(x)["amplitude"][0, 3::2, 2::2], torch.sigmoid(last[0, 2, 1:, 1:]))
    with pytest.raises(ValueError, match="multiple of 8"):
        build("cdinn2d", width=4, size=36, space_to_depth=2)


def test_space_to_depth_3d_folds_each_voxel_block_into_channels():
    from cdinn.models.blocks import SpaceToDepth3d

    x = torch.randn(2, 3, 4, 6, 8)
    y = SpaceToDepth3d(2)(x)
    assert y.shape == (2, 24, 2, 3, 4)
    # channel c f³ + (a f + b) f + e at (i, j, k) holds voxel (2i + a, 2j + b, 2k + e) of channel c
    assert torch.equal(y[:, 2 * 8 + (1 * 2 + 0) * 2 + 1, 1, 2, 3], x[:, 2, 3, 4, 7])
    model = build("autophasenn", width=2, size=32, space_to_depth=2)
    assert model.config["space_to_depth"] == 2 and model.encoder.layers[0][0].in_channels == 8
    assert len([m for m in model.encoder.modules() if isinstance(m, torch.nn.MaxPool3d)]) == 2  # 16 -> 8 -> 4
    with pytest.raises(ValueError, match="space_to_depth"):
        build("autophasenn", width=2, size=32, space_to_depth=4)


def test_paper_widths():
    # CDI NN: ~720k parameters per network in the original.
    n = sum(p.numel() for p in build("cdinn2d").shape_net.parameters())
    assert 650_000 < n < 800_000
    assert set(families()) == {"cdinn2d", "cdinn3d", "autophasenn", "cnn3d-tl"}


def _batch(n, size=32, ndim=2, photons=(1e6, 1e8), seed=1, kind="faceted"):
    data = GeneratedPatterns(simulation_configs(kind, size, ndim, oversampling=(2.0, 3.0), photons=photons, seed=seed), n, size, size)
    items = [data[i] for i in range(n)]
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def test_supervised_loss_is_twin_aware_and_blind_to_the_global_phase():
    batch = _batch(2)
    amp, phase = batch["amplitude"], batch["phase"]
    loss = SupervisedLoss(shape_weight=1.0)
    from cdinn.train.losses import _twin_maps

    twin_amp, twin_phase = _twin_maps(amp, phase)
    exact = float(loss({"amplitude": amp, "phase": phase}, batch).max())
    assert float(loss({"amplitude": twin_amp, "phase": twin_phase}, batch).max()) < exact + 1e-5
    assert float(loss({"amplitude": amp, "phase": phase + 1.3}, batch).max()) < exact + 1e-4
    assert float(loss({"amplitude": amp.flip(1), "phase": phase}, batch).min()) > exact + 1e-2
    assert float(loss({"amplitude": amp, "phase": -phase}, batch).min()) > exact + 1e-2


def test_samples_depend_only_on_seed_and_index():
    configs = simulation_configs(["faceted", "superellipsoids"], 32, 3, oversampling=(2.2, 4.0), seed=7)
    a = GeneratedPatterns(configs, 6, 32, 16)
    b = GeneratedPatterns(configs, 4, 32, 16, first=2)
    for key in ("intensity", "amplitude", "phase", "support"):
        assert torch.equal(a[3][key], b[1][key])
    assert a[0]["intensity"].shape == (32, 32, 32) and a[0]["amplitude"].shape == (16, 16, 16)
    # Oversampling drawn across [2.2, 4]: the object grid covers 1/2.2 of the pattern at most.
    extents = [int(a[i]["support"].any(dim=(1, 2)).sum()) for i in range(6)]
    assert max(extents) <= 32 / 2.2 + 1 and min(extents) < max(extents)


def test_simulated_detector_masks_depend_only_on_seed_and_index():
    """Masked samples: the pattern is zero where the mask says unmeasured, the mask is drawn from
    the dataset seed and the index alone, and roughly the requested fraction is masked."""
    configs = simulation_configs("faceted", 32, 3, oversampling=(2.2, 4.0), seed=5)
    spec = MaskSpec(probability=0.5, beamstop=(2.0, 2.0), gaps=(1, 1), gap_width=(2, 2), dead_lines=(1, 1))
    a = GeneratedPatterns(configs, 24, 32, 16, masks=spec)
    b = GeneratedPatterns(configs, 4, 32, 16, first=20, masks=spec)
    plain = GeneratedPatterns(configs, 24, 32, 16)
    assert "mask" not in plain[0]
    for k in range(4):
        assert torch.equal(a[20 + k]["mask"], b[k]["mask"]) and torch.equal(a[20 + k]["intensity"], b[k]["intensity"])
    masked = [i for i in range(24) if bool(a[i]["mask"].any())]
    assert 6 <= len(masked) <= 18
    for i in masked:
        item, full = a[i], plain[i]
        assert float(item["intensity"][item["mask"]].abs().sum()) == 0.0
        assert torch.equal(item["intensity"][~item["mask"]], full["intensity"][~item["mask"]])
        assert torch.equal(item["amplitude"], full["amplitude"])  # the object does not change
    assert any(bool(a[i]["mask"][16, 16, 16]) for i in masked)  # a beamstop over the centre
    assert not any(bool(a[i]["mask"].any()) for i in set(range(24)) - set(masked))


def test_training_with_masks_passes_them_to_the_network_and_the_loss(tmp_path, monkeypatch):
    text = TINY.format(epochs=1).replace("seed = 3 }", "seed = 3, masks = { probability = 1.0 } }")
    seen = []
    prepare = build("cdinn2d", width=4, size=32).prepare.__func__

    def spy(self, intensity, mask=None):
        seen.append(mask)
        return prepare(self, intensity, mask)

    monkeypatch.setattr(type(build("cdinn2d", width=4, size=32)), "prepare", spy)
    assert main(["train", str(write(tmp_path, text)), "--run-dir", str(tmp_path / "run"), "-q"]) == 0
    assert seen and all(m is not None and m.dtype == torch.bool for m in seen) and any(bool(m.any()) for m in seen)
    card = json.loads((tmp_path / "run" / "card.json").read_text())
    assert card["data"]["masks"] == {"probability": 1.0}


def test_detector_mask_shapes():
    rng = np.random.default_rng(0)
    assert not detector_mask((16, 16), MaskSpec(probability=0.0), rng).any()
    stop = MaskSpec(probability=1.0, beamstop=(1.5, 1.5), gaps=(0, 0), dead_lines=(0, 0))
    found = [detector_mask((16, 16, 16), stop, rng) for _ in range(20)]
    stopped = [m for m in found if m.any()]
    # half of the masked patterns get the ball of radius 1.5: the centre and its 18 neighbours within it
    assert stopped and all(int(m.sum()) == 19 and m[8, 8, 8] for m in stopped)
    gaps = MaskSpec(probability=1.0, beamstop=(0.0, 0.0), gaps=(2, 2), gap_width=(3, 3), dead_lines=(0, 0))
    m = detector_mask((32, 32, 32), gaps, rng)
    # gaps are planes across one detector axis: every masked pixel's whole line along the rocking axis is masked
    assert m.any() and bool(np.all(m.any(axis=0) == m.all(axis=0)))
    with pytest.raises(ValueError, match="probability"):
        MaskSpec(probability=1.5)
    with pytest.raises(ValueError, match="unknown masks keys: radius"):
        MaskSpec.from_dict({"radius": [1, 2]})


def test_fourier_loss_is_zero_for_the_true_object_and_honours_the_mask():
    batch = _batch(2, photons=None, seed=2)
    truth = {"amplitude": batch["amplitude"], "phase": batch["phase"]}
    assert float(FourierLoss()(truth, batch).max()) < 1e-4
    wrong = {"amplitude": batch["amplitude"], "phase": batch["phase"] + torch.linspace(0, 3, 32)}
    assert float(FourierLoss()(wrong, batch).min()) > 1e-3
    # A beamstop whose pixels hold garbage: masked, the true object still fits exactly.
    spoiled = dict(batch, intensity=batch["intensity"].clone())
    spoiled["intensity"][:, 14:18, 14:18] = 0.0
    mask = torch.zeros_like(batch["intensity"], dtype=torch.bool)
    mask[:, 14:18, 14:18] = True
    assert float(FourierLoss()(truth, spoiled).min()) > 1e-3
    assert float(FourierLoss()(truth, dict(spoiled, mask=mask)).max()) < 1e-4


def test_training_lowers_the_loss_resumes_and_loads(tmp_path):
    cfg_path = write(tmp_path, TINY.format(epochs=2))
    run = tmp_path / "run"
    first = train(load_config(cfg_path), run, progress=False)
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and first["epochs"] == 2
    # Resume: a longer run continues from the checkpoint instead of starting again.
    second = train(load_config(write(tmp_path, TINY.format(epochs=4))), run, progress=False)
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) == 5 and second["epochs"] == 4
    losses = [float(r.split(",")[1]) for r in rows[1:]]
    assert losses[-1] < losses[0]
    card = json.loads((run / "card.json").read_text())
    assert card["family"] == "cdinn2d" and card["training"]["epochs"] >= 1
    model = load_model(run)
    assert model.predict(torch.rand(1, 32, 32)).shape == (1, 32, 32)


def test_training_precision_is_chosen_recorded_and_checked(tmp_path, monkeypatch):
    """bfloat16 autocast where the CPU computes it natively ("auto"), float32 on request; the
    card says which; an unknown precision is a one-line config error."""
    from cdinn.train import trainer

    used = []
    real = torch.autocast

    def spy(*args, **kwargs):
        used.append(kwargs.get("enabled", True))
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer.torch, "autocast", spy)
    for precision in ("auto", "fp32", "bf16"):
        used.clear()
        run = tmp_path / precision
        cfg = load_config(write(tmp_path, TINY.format(epochs=1) + f'precision = "{precision}"\n'))
        train(cfg, run, device="cpu", progress=False)
        expected = trainer.inference_dtype(torch.device("cpu"), precision) == torch.bfloat16
        assert used and all(u == expected for u in used), precision
        card = json.loads((run / "card.json").read_text())
        assert card["training"]["precision"] == ("bfloat16" if expected else "float32")
        assert torch.isfinite(torch.tensor([float(r.split(",")[1]) for r in (run / "metrics.csv").read_text().splitlines()[1:]])).all()
    with pytest.raises(InputError, match="precision must be"):
        load_config(write(tmp_path, TINY.format(epochs=1) + 'precision = "fp16"\n'))


def test_sequential_stages_freeze_modules(tmp_path):
    text = TINY.format(epochs=1).replace("epochs = 1", 'stages = [{ epochs = 1, trainable = ["shape_net"] }]')
    run = tmp_path / "run"
    torch.manual_seed(0)
    before = build("cdinn2d", width=4).state_dict()
    train(load_config(write(tmp_path, text)), run, progress=False)
    after = load_model(run).state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("phase_net"))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("shape_net"))


def test_ddp_two_processes_match_single_process(tmp_path):
    # SGD: Adam divides tiny gradients by their own RMS, so float summation-order noise
    # would become whole learning-rate steps; SGD keeps it at rounding level.
    # float32: under bfloat16 autocast the halves of a batch round differently from the whole
    cfg = write(tmp_path, TINY.format(epochs=2) + 'optimizer = "sgd"\nlr = 0.05\nprecision = "fp32"\n')
    single = tmp_path / "single"
    train(load_config(cfg), single, device="cpu", progress=False)
    ddp = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "cdinn.cli.main", "train", str(cfg), "--run-dir", str(ddp), "--device", "cpu", "-q"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    a = torch.load(single / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(ddp / "checkpoint.pt", weights_only=True)["model"]
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-5, rtol=1e-4), k
    loss_single = (single / "metrics.csv").read_text().splitlines()[-1].split(",")[2]
    loss_ddp = (ddp / "metrics.csv").read_text().splitlines()[-1].split(",")[2]
    assert abs(float(loss_single) - float(loss_ddp)) < 1e-5 * abs(float(loss_single))
    assert json.loads((ddp / "card.json").read_text())["training"]["world_size"] == 2


def test_config_and_model_errors(tmp_path, capsys):
    with pytest.raises(InputError, match="unknown key"):
        load_config(write(tmp_path, 'model = "cdinn2d"\nepoch = 3\n'))
    with pytest.raises(InputError, match="invalid TOML"):
        load_config(write(tmp_path, "model = \n"))
    with pytest.raises(InputError, match="unknown model family"):
        build("resnet")
    with pytest.raises(InputError, match="unknown model"):
        load_model("no-such-model")
    bad = tmp_path / "junk.pt"
    bad.write_bytes(b"xx")
    (tmp_path / "junk.json").write_text(json.dumps({"family": "cdinn2d", "arguments": {"width": 4}}))
    with pytest.raises(InputError, match="cannot load"):
        load_model(bad)
    assert main(["models", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert "autophasenn" in listing["families"]


def test_3d_families_train_through_the_trainer(tmp_path):
    # 3D-CDI-NN: sequential training (encoder + shape decoder, then phase decoder alone),
    # supervised MAE plus the physics term.
    seq = """
model = "cdinn3d"
arguments = { width = 2, size = 16, dropout = 0.1 }
data = { n_train = 8, n_val = 4, oversampling = 2.0, photons = [1e6, 1e8], seed = 5 }
loss = [{ name = "supervised" }, { name = "fourier", weight = 1.0 }]
stages = [{ epochs = 1, trainable = ["encoder", "shape_decoder"] }, { epochs = 1, trainable = ["phase_decoder"] }]
batch_size = 4
"""
    out = train(load_config(write(tmp_path, seq, "seq.toml")), tmp_path / "seq", progress=False)
    assert out["epochs"] == 2
    # Transfer-learning CNN: Eq. 6 loss, Adam and SGD alternating every epoch.
    tl = """
model = "cnn3d-tl"
arguments = { width = 2, size = 16, levels = 3 }
data = { n_train = 8, n_val = 4, oversampling = 2.0, photons = [1e6, 1e8], seed = 6 }
loss = [{ name = "eq6" }]
optimizer = "adam-sgd"
switch_every = 1
scheduler = "none"
epochs = 3
batch_size = 4
"""
    train(load_config(write(tmp_path, tl, "tl.toml")), tmp_path / "tl", progress=False)
    rows = (tmp_path / "tl" / "metrics.csv").read_text().splitlines()[1:]
    assert [r.split(",")[4] for r in rows] == ["adam", "sgd", "adam"]
    lrs = [float(r.split(",")[3]) for r in rows]
    assert lrs[1] == pytest.approx(0.95e-3) and lrs[2] == pytest.approx(0.95**2 * 1e-3)


def test_training_on_simulate_shards(tmp_path):
    from cdinn.simulate import SimulationConfig, write_dataset

    write_dataset(tmp_path / "polys", SimulationConfig(kind="polygons", object_size=16, oversampling=2.0, seed=3), 24,
                  shard_size=10, workers=0, progress=False)
    cfg = f"""
model = "cdinn2d"
arguments = {{ width = 4, size = 32 }}
data = {{ kind = "shards", path = "{tmp_path / 'polys'}", n_val = 4 }}
loss = [{{ name = "supervised", kind = "bce" }}]
epochs = 1
batch_size = 4
"""
    out = train(load_config(write(tmp_path, cfg)), tmp_path / "run", progress=False)
    assert out["epochs"] == 1 and out["best_val_loss"] < float("inf")


def _train_in_pieces(cfg, run, pieces_at_most=50):
    """Run with a time budget so short that every call stops after one step; count the calls."""
    calls = 0
    while True:
        calls += 1
        out = train(cfg, run, progress=False, max_minutes=1e-9)
        if out["complete"] or calls >= pieces_at_most:
            return out, calls


def _same_state(run_a, run_b):
    a = torch.load(run_a / "checkpoint.pt", weights_only=True)
    b = torch.load(run_b / "checkpoint.pt", weights_only=True)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k

    def flat(x, prefix=""):
        if isinstance(x, dict):
            for k, v in x.items():
                yield from flat(v, f"{prefix}/{k}")
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                yield from flat(v, f"{prefix}/{i}")
        else:
            yield prefix, x

    opt_a, opt_b = dict(flat(a["optimizer"])), dict(flat(b["optimizer"]))
    assert opt_a.keys() == opt_b.keys()
    for k, v in opt_a.items():
        assert torch.equal(v, opt_b[k]) if isinstance(v, torch.Tensor) else v == opt_b[k], k
    assert a["state"]["lr"] == b["state"]["lr"] and a["state"]["step"] == b["state"]["step"]


@pytest.mark.parametrize("extra", [
    # dropout (random state), cosine schedule with warm-up, a stage change mid-run
    'stages = [{ epochs = 1, trainable = ["encoder", "shape_decoder"] }, { epochs = 1, trainable = ["phase_decoder"] }]\n'
    'scheduler = "cosine"\nwarmup_steps = 2\n',
    # Adam -> SGD switch (rate x0.95) and the plateau rule
    'optimizer = "adam-sgd"\nswitch_every = 1\nepochs = 2\n',
])
def test_resume_in_pieces_is_bitwise_identical(tmp_path, extra):
    text = """
model = "cdinn3d"
arguments = { width = 2, size = 16, dropout = 0.2 }
data = { n_train = 12, n_val = 4, oversampling = [2.0, 3.0], photons = [1e6, 1e8], seed = 5 }
loss = [{ name = "supervised", shape_weight = 1.0 }, { name = "fourier" }]
batch_size = 4
""" + extra
    cfg = load_config(write(tmp_path, text))
    whole = train(cfg, tmp_path / "whole", progress=False)
    pieces, calls = _train_in_pieces(cfg, tmp_path / "pieces")
    assert whole["complete"] and pieces["complete"] and calls == pieces["total_steps"] == 6
    _same_state(tmp_path / "whole", tmp_path / "pieces")
    assert (tmp_path / "whole" / "metrics.csv").read_text().splitlines()[1:] != []
    rows = lambda r: [line.split(",")[:5] for line in (r / "metrics.csv").read_text().splitlines()]  # noqa: E731
    assert rows(tmp_path / "whole") == rows(tmp_path / "pieces")


def test_crafted_checkpoint_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    run = tmp_path / "run"
    run.mkdir()
    torch.save({"model": Evil()}, run / "checkpoint.pt")
    cfg = write(tmp_path, TINY.format(epochs=1))
    assert main(["train", str(cfg), "--run-dir", str(run), "-q"]) == 2
    assert not (tmp_path / "pwned").exists()
    # A plain checkpoint of another layout (e.g. the earlier per-epoch trainer) is refused too.
    torch.save({"model": {}, "optimizer": {}, "state": {"epoch": 3}, "rng": torch.get_rng_state()}, run / "checkpoint.pt")
    assert main(["train", str(cfg), "--run-dir", str(run), "-q"]) == 2


def test_training_starts_from_init_weights(tmp_path):
    first = tmp_path / "first"
    train(load_config(write(tmp_path, TINY.format(epochs=1))), first, progress=False)
    text = TINY.format(epochs=1).replace("epochs = 1", f'epochs = 1\ninit = "{first}"').replace("seed = 3", "seed = 4")
    cfg = load_config(write(tmp_path, text, "warm.toml"))
    # A warm start with zero learning rate keeps the initial weights exactly.
    cfg.lr = 1e-30
    train(cfg, tmp_path / "warm", progress=False)
    start, end = load_model(first).state_dict(), load_model(tmp_path / "warm").state_dict()
    weights = [k for k in start if start[k].is_floating_point() and "running" not in k]
    assert weights and all(torch.allclose(start[k], end[k], atol=1e-6) for k in weights)


def test_a_warm_start_with_added_input_channels_begins_as_its_source(tmp_path):
    """A model with the autocorrelation's phase channels, initialised from one without them
    (``init`` in a config), gets zero weights on the new channels: on any pattern it predicts
    what its source does. Fewer channels than the source is a mismatch (one-line error)."""
    from cdinn.train.trainer import _initialise

    source = build("autophasenn", width=2, size=32, input_scale="log", autocorrelation=True)
    torch.manual_seed(0)
    for p in source.parameters():
        p.data.normal_(0, 0.3)
    path = tmp_path / "source.pt"
    torch.save(source.state_dict(), path)
    path.with_suffix(".json").write_text(json.dumps({"family": "autophasenn", "arguments": source.config}))
    grown = build("autophasenn", width=2, size=32, input_scale="log", autocorrelation=True, autocorrelation_phase=True)
    _initialise(grown, str(path))
    grown.eval()
    source = load_model(path)
    pattern = torch.rand((2, 32, 32, 32)) * 1e4
    a, b = grown(grown.prepare(pattern)), source(source.prepare(pattern))
    assert torch.allclose(a["amplitude"], b["amplitude"], atol=1e-5) and torch.allclose(a["phase"], b["phase"], atol=1e-5)
    first = next(m for m in grown.modules() if isinstance(m, torch.nn.Conv3d))
    assert first.in_channels == 4 and float(first.weight.detach()[:, 2:].abs().max()) == 0.0
    with pytest.raises(InputError, match="do not fit"):
        _initialise(build("autophasenn", width=2, size=32, input_scale="log"), str(path))


def test_bad_configs_fail_in_one_line_and_leave_no_run_directory(tmp_path, capsys):
    cases = {
        "loss": TINY.format(epochs=1).replace('name = "fourier"', 'name = "wasserstein"'),
        "kind": TINY.format(epochs=1).replace("n_train = 32", 'kind = "blobs", n_train = 32'),
        "module": TINY.format(epochs=1).replace("epochs = 1", 'stages = [{ epochs = 1, trainable = ["nope"] }]'),
        "type": TINY.format(epochs=1).replace("batch_size = 8", 'batch_size = "8"'),
        "family": TINY.format(epochs=1).replace("width = 4", "depth = 4"),
        "init": TINY.format(epochs=1).replace("epochs = 1", 'epochs = 1\ninit = "no-such-model"'),
        "init-mismatch": TINY.format(epochs=1).replace("epochs = 1", 'epochs = 1\ninit = "cdinn2d"'),
        "masks": TINY.format(epochs=1).replace("seed = 3 }", "seed = 3, masks = { probability = 2 } }"),
    }
    for name, text in cases.items():
        run = tmp_path / f"run-{name}"
        assert main(["train", str(write(tmp_path, text, f"{name}.toml")), "--run-dir", str(run), "-q"]) == 2, name
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert not run.exists(), name


def test_non_finite_loss_stops_with_a_clear_message(tmp_path, monkeypatch):
    cfg = load_config(write(tmp_path, TINY.format(epochs=2)))
    train(cfg, tmp_path / "run", progress=False, max_minutes=1e-9)
    kept = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    from cdinn.train import losses

    monkeypatch.setattr(losses.FourierLoss, "__call__", lambda self, o, b: o["amplitude"].sum() * float("nan"))
    from cdinn.train.trainer import TrainingError

    with pytest.raises(TrainingError, match="non-finite loss"):
        train(cfg, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == kept


def test_targets_are_centred_where_the_generator_is_not():
    # Polygons sit anywhere in their grid; the pattern cannot tell where, so targets are centred.
    configs = simulation_configs("polygons", 64, 2, oversampling=(2.0, 3.0), seed=9)
    for centre in (True, False):
        data = GeneratedPatterns(configs, 6, 64, 64, centre=centre)
        offsets = [float((torch.nonzero(data[i]["support"]).float().mean(0) - 32).abs().max()) for i in range(6)]
        assert (max(offsets) <= 0.5) == centre, offsets


def test_the_autocorrelation_channel_is_the_patterns_inverse_transform_and_shows_the_shape():
    """Channel 2 is |inverse FFT(I)| over its peak, log-scaled; its support is the difference
    body of the crystal: a 10-voxel cube's autocorrelation reaches 9 voxels either side of the
    centre (19 in all), and the channel's extent follows the crystal's size."""
    import numpy as np

    from cdinn.models.base import AUTOCORRELATION_RANGE
    from cdinn.physics.fourier import intensity, pad_to

    model = build("autophasenn", width=2, size=32, input_scale="log", autocorrelation=True)
    assert model.config["autocorrelation"] and model.describe()["input_channels"] == ["counts", "autocorrelation"]
    extents = []
    for side in (6, 10):
        pattern = intensity(pad_to(torch.ones((side,) * 3, dtype=torch.complex64), (32,) * 3))
        x = model.prepare(pattern.unsqueeze(0))
        assert x.shape == (1, 2, 32, 32, 32)
        assert torch.allclose(x[0, 0], model.prepare(pattern.unsqueeze(0))[0, 0])
        assert torch.allclose(x[0, 0], pattern.log1p() / pattern.log1p().max())
        a = np.abs(np.fft.fftshift(np.fft.ifftn(np.fft.ifftshift(pattern.double().numpy()))))
        expected = np.log1p(AUTOCORRELATION_RANGE * a / a.max()) / np.log1p(AUTOCORRELATION_RANGE)
        assert np.allclose(x[0, 1].numpy(), expected, atol=1e-4)
        line = x[0, 1, 16, 16].numpy()
        extents.append(int((line > 0.25).sum()))
    assert extents == [11, 19]
    # a detector gap (two planes, filled from their neighbours): the shape survives
    mask = torch.zeros((1, 32, 32, 32), dtype=torch.bool)
    mask[0, 21:23] = True
    masked = model.prepare(pattern.unsqueeze(0), mask)
    assert float(masked[0, 0][mask[0]].abs().max()) == 0.0
    assert float((masked[0, 1] - x[0, 1]).abs().mean()) < 0.06
    assert int((masked[0, 1, 16, 16] > 0.25).sum()) == 19


def test_the_autocorrelation_phase_channels_see_the_objects_phase():
    """The extra channels are the log-scaled modulus times the unit phasor of A = inverse(I):
    for a crystal of uniform phase the imaginary channel is zero; with a phase step between its
    two halves it is odd about the centre and largest near the rim of A's support, where only
    the two tips overlap; the object's twin gives the same channels (same pattern)."""
    from cdinn.physics.alignment import twin
    from cdinn.physics.fourier import intensity, pad_to

    model = build("autophasenn", width=2, size=32, input_scale="log", autocorrelation=True, autocorrelation_phase=True)
    with pytest.raises(ValueError, match="autocorrelation_phase needs"):
        build("autophasenn", width=2, size=32, autocorrelation_phase=True)
    flat = pad_to(torch.ones((8, 8, 8), dtype=torch.complex64), (32,) * 3)
    x = model.prepare(intensity(flat).unsqueeze(0))
    assert x.shape == (1, 4, 32, 32, 32)
    plain = build("autophasenn", width=2, size=32, input_scale="log", autocorrelation=True).prepare(intensity(flat).unsqueeze(0))
    assert torch.allclose(x[:, :2], plain, atol=1e-4)
    assert float(x[0, 3].abs().max()) < 1e-3 and torch.allclose(x[0, 2], x[0, 1], atol=1e-3)
    stepped = flat.clone()
    stepped[..., 16:] *= torch.exp(torch.tensor(1j * 1.0))
    y = model.prepare(intensity(stepped).unsqueeze(0))[0]
    imag = y[3]
    assert float(imag.abs().max()) > 0.3
    assert torch.allclose(imag, -torch.roll(imag.flip((0, 1, 2)), (1, 1, 1), (0, 1, 2)), atol=1e-4)
    # along the step's axis, A at lag +7 overlaps only the tips 16..23 and 9..15 apart: phase 1
    assert abs(float(torch.atan2(y[3, 16, 16, 16 + 7], y[2, 16, 16, 16 + 7])) - 1.0) < 0.05
    z = model.prepare(intensity(twin(stepped)).unsqueeze(0))[0]
    assert torch.allclose(y, z, atol=1e-3)
