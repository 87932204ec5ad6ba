import json
import os
import subprocess
import sys

import pytest
import torch

from cdinn.cli.main import main
from cdinn.errors import InputError
from cdinn.models import build, families, load_model
from cdinn.train import FourierLoss, SupervisedLoss, TransferLearningLoss, load_config, train
from cdinn.train.data import SimulatedPatterns

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
    [("cdinn2d", {"width": 4}, 32), ("cdinn3d", {"width": 2}, 32), ("autophasenn", {"width": 2, "size": 32}, 32), ("cnn3d-tl", {"width": 2, "size": 32, "levels": 3}, 32)],
)
def test_every_family_builds_and_trains_one_step(family, kwargs, size):
    model = build(family, **kwargs)
    x = torch.rand((2, 1) + (size,) * model.ndim)
    out = model(x)
    assert out["amplitude"].shape == (2,) + (model.output_size,) * model.ndim
    assert float(out["phase"].detach().abs().max()) <= torch.pi + 1e-5
    batch = {"input": x, "amplitude": torch.rand_like(out["amplitude"]), "phase": torch.zeros_like(out["phase"])}
    loss = SupervisedLoss()(out, batch).mean() + FourierLoss(0.1)(out, batch).mean() + TransferLearningLoss()(out, batch).mean()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_paper_widths():
    # CDI NN: ~720k parameters per network in the original.
    n = sum(p.numel() for p in build("cdinn2d").shape_net.parameters())
    assert 650_000 < n < 800_000
    assert set(families()) == {"cdinn2d", "cdinn3d", "autophasenn", "cnn3d-tl"}


def test_supervised_loss_is_twin_aware():
    data = SimulatedPatterns(2, size=32, ndim=2, seed=1, progress=False)
    amp, phase = data.amplitude, data.phase
    loss = SupervisedLoss()
    from cdinn.train.losses import _twin_maps

    twin_amp, twin_phase = _twin_maps(amp, phase)
    batch = {"amplitude": amp, "phase": phase}
    assert float(loss({"amplitude": twin_amp, "phase": twin_phase}, batch).max()) < 1e-5
    assert float(loss({"amplitude": amp.flip(1), "phase": phase}, batch).min()) > 1e-3


def test_fourier_loss_is_zero_for_the_true_object():
    data = SimulatedPatterns(2, size=32, ndim=2, photons=None, seed=2, progress=False)
    batch = {"input": data.inputs, "amplitude": data.amplitude, "phase": data.phase}
    assert float(FourierLoss()({"amplitude": data.amplitude, "phase": data.phase}, batch).max()) < 1e-4
    wrong = {"amplitude": data.amplitude, "phase": data.phase + torch.linspace(0, 3, 32)}
    assert float(FourierLoss()(wrong, batch).min()) > 1e-3


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
    cfg = write(tmp_path, TINY.format(epochs=2) + 'optimizer = "sgd"\nlr = 0.05\n')
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
    a = torch.load(single / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(ddp / "checkpoint.pt", weights_only=False)["model"]
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
