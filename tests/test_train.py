import pytest
import torch

import unravel
from unravel import data, models, train

from .conftest import state_hash


@pytest.fixture(scope="module")
def mnist1d_small():
    return data.mnist1d()


def test_residual_net_learns_mnist1d(mnist1d_small):
    torch.manual_seed(0)
    net = models.resnet1d((1, 1), width=16)
    seen = []
    hist = train.fit(net, mnist1d_small, epochs=3, optimizer="adam", lr=1e-2, progress=False,
                     callbacks=[lambda model, m: seen.append((model is net, m["epoch"]))])
    assert seen == [(True, 1), (True, 2), (True, 3)]
    assert hist[-1]["test_error"] < 0.5  # chance is 0.9
    assert train.evaluate(net, mnist1d_small)["error"] == pytest.approx(hist[-1]["test_error"])
    assert list(hist.to_frame().columns[:3]) == ["epoch", "train_loss", "train_error"]


def test_fit_is_deterministic_and_leaves_global_rng_alone():
    d = data.synthetic(200, input_shape=(8,), num_classes=2)
    nets = []
    for _ in range(2):
        torch.manual_seed(1)
        net = models.resmlp(8, 2, width=8, depth=2)
        before = torch.random.get_rng_state()
        train.fit(net, d, epochs=2, progress=False, seed=3)
        assert torch.equal(before, torch.random.get_rng_state())
        nets.append(net)
    assert state_hash(nets[0]) == state_hash(nets[1])


def test_callback_objects_and_step_hooks():
    calls = []

    class CB(train.Callback):
        def on_train_begin(self, model):
            calls.append("begin")

        def on_step_end(self, model, step, metrics):
            calls.append(("step", step))

        def on_epoch_end(self, model, metrics):
            calls.append(("epoch", metrics["epoch"]))

    d = data.synthetic(40, input_shape=(4,), num_classes=2)
    train.fit(models.resmlp(4, 2, width=4, depth=1), d.train, epochs=1, batch_size=16, callbacks=[CB()], progress=False)
    assert calls == ["begin", ("step", 1), ("step", 2), ("epoch", 1)]


def test_evaluate_restores_mode_and_rejects_empty():
    net = models.resmlp(4, 2, width=4, depth=1).train()
    train.evaluate(net, (torch.randn(5, 4), torch.zeros(5, dtype=torch.long)))
    assert net.training
    with pytest.raises(ValueError, match="empty"):
        train.evaluate(net, (torch.randn(0, 4), torch.zeros(0, dtype=torch.long)))


def test_fit_validates_arguments():
    d = data.synthetic(40, input_shape=(4,), num_classes=2)
    net = models.resmlp(4, 2, width=4, depth=1)
    with pytest.raises(ValueError, match="optimizer='lbfgs'; allowed: sgd, adam"):
        train.fit(net, d, optimizer="lbfgs")
    with pytest.raises(ValueError, match="epochs"):
        train.fit(net, d, epochs=0)
    with pytest.raises(TypeError, match="DataSplit"):
        train.fit(net, [1, 2, 3])


def test_save_load_round_trip(tmp_path):
    net = models.resnet_cifar(8, width=4)
    net(torch.randn(4, 3, 8, 8))  # touch nothing; eval/training state is irrelevant to the checkpoint
    path = train.save(net, tmp_path / "ckpt" / "m.pt", {"epochs": 2, "data": "digits"})
    other = models.resnet_cifar(8, width=4)
    assert state_hash(other) != state_hash(net)
    assert train.load(path, other) is other and state_hash(other) == state_hash(net)
    ckpt = train.load(path)
    assert ckpt["meta"] == {"epochs": 2, "data": "digits"} and ckpt["model_class"] == "CifarResNet"
    with pytest.raises(ValueError, match="does not fit"):
        train.load(path, models.resnet_cifar(8, width=8))
    with pytest.raises(unravel.errors.CheckpointError, match="no checkpoint"):
        train.load(tmp_path / "missing.pt")


def test_load_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "meta": Evil()}, path)
    with pytest.raises(Exception, match="(?i)weights.only|unsupported|global"):
        train.load(path)


def test_cli_units_and_bad_input(capsys):
    from unravel.cli import main

    assert main(["units", "resnet1d"]) == 0
    assert "stages.1.0" in capsys.readouterr().out
    assert main(["units"]) == 0
    assert "stage3.2" in capsys.readouterr().out
    assert main(["units", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("unravel: error:") and "'nope'" in err and err.count("\n") == 1
    assert main(["train", "--data", "cifar10"]) == 2
    assert "--data-root" in capsys.readouterr().err
