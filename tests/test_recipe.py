"""Train PyTorch Model's recipe options: each one does what it says, goes into the run identity, and resumes."""

from __future__ import annotations

import csv
import math
import re

import pytest
import torch
import torchvision.models as tvm
from torch import nn
from torch.utils.data import DataLoader, Dataset

from designer_resnet.compute import Compute
from designer_resnet.errors import UserError
from designer_resnet.models.create import create_untrained_model
from designer_resnet.models.model_directory import read_trained, read_untrained
from designer_resnet.training.checkpoint import CHECKPOINT
from designer_resnet.training.distributed import DistInfo
from designer_resnet.training.recipe import (
    Recipe, RecipeOptions, build_optimizer, build_schedule, check_options, class_weights, freeze, optimizer_steps)
from designer_resnet.training.train import TrainConfig, seed_everything, train, train_one_epoch

from conftest import convert_train_valid

CPU = Compute.resolve(torch.device("cpu"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """3 classes: 8 training and 3 validation images each (32×32), and an untrained resnet18."""
    root = convert_train_valid(tmp_path_factory.mktemp("recipe"), 8, 3)
    create_untrained_model(root / "untrained", {"model_name": "resnet18", "pretrained": False})
    return root


def _cfg(**kw):
    base = dict(epochs=1, batch_size=8, learning_rate=0.01, workers=0, print_frequency=100)
    return TrainConfig(**{**base, **kw})


def _train(root, out, checkpoint=None, **kw):
    return train(root / "untrained", root / "train", root / "valid", out, _cfg(**kw), checkpoint_dir=checkpoint)


class _Tensors(Dataset):
    """Images and labels in memory, with the one method the training loop asks a dataset for."""

    def __init__(self, images, targets):
        self.images, self.targets = images, targets

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return self.images[i], int(self.targets[i])

    def device_batch(self, images, device, memory_format=torch.contiguous_format):
        return images.to(device).contiguous(memory_format=memory_format)


def _batch(n=10, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g), torch.arange(n) % classes


def _net(seed=0):
    """A small network without BatchNorm: accumulated and whole batches then compute the same gradients."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


def _epoch(model, images, targets, batch_size, opts: RecipeOptions, lr=0.1):
    """One epoch of train_one_epoch with the recipe `opts` builds, in order; (loss, error) and the optimizer."""
    loader = DataLoader(_Tensors(images, targets), batch_size=batch_size)
    optimizer = build_optimizer(model, opts, lr)
    scheduler = build_schedule(optimizer, opts, 0, optimizer_steps(len(loader), opts), 2)
    recipe = Recipe.build(opts, model, targets.tolist(), 3, torch.device("cpu"), optimizer_steps(len(loader), opts))
    loss, error, _ = train_one_epoch(model, loader, optimizer, scheduler, CPU, TrainConfig(print_frequency=10**6), 1,
                                     DistInfo(), recipe=recipe)
    return loss, error, optimizer, scheduler


# --- freezing ---------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_frozen_stages_stay_bit_identical_and_the_optimizer_holds_no_state_for_them(tiny, tmp_path):
    _train(tiny, tmp_path / "out", tmp_path / "ck", epochs=2, freeze="first_stages", freeze_stages=2)
    seed_everything(1)  # what train does right before building the network
    start = read_untrained(tiny / "untrained").build(3).state_dict()
    trained = read_trained(tmp_path / "out").model.state_dict()
    frozen = [k for k in start if k.startswith(("conv1.", "bn1.", "layer1.", "layer2."))]
    assert frozen and all(torch.equal(start[k], trained[k]) for k in frozen)  # BatchNorm statistics included
    assert not torch.equal(start["layer3.0.conv1.weight"], trained["layer3.0.conv1.weight"])
    assert not torch.equal(start["fc.weight"], trained["fc.weight"])
    optimizer = torch.load(tmp_path / "ck" / CHECKPOINT, weights_only=True)["optimizer"]
    trainable = [n for n, p in tvm.resnet18(num_classes=3).named_parameters()
                 if not n.startswith(("conv1.", "bn1.", "layer1.", "layer2."))]
    assert sum(len(g["params"]) for g in optimizer["param_groups"]) == len(trainable) == len(optimizer["state"])


def test_freezing_stages_of_resnet_and_densenet():
    def frozen(model, **kw):
        freeze(model, RecipeOptions(**kw))
        return {n for n, p in model.named_parameters() if not p.requires_grad}

    resnet = tvm.resnet18(num_classes=3)
    assert frozen(resnet, freeze="backbone") == {n for n, _ in resnet.named_parameters() if not n.startswith("fc.")}
    assert frozen(tvm.resnet18(num_classes=3), freeze="first_stages", freeze_stages=0) == {
        "conv1.weight", "bn1.weight", "bn1.bias"}
    dense = frozen(tvm.densenet121(num_classes=3), freeze="first_stages", freeze_stages=1)
    assert {n.split(".")[1] for n in dense} == {"conv0", "norm0", "denseblock1"}
    dense2 = frozen(tvm.densenet121(num_classes=3), freeze="first_stages", freeze_stages=2)
    assert {n.split(".")[1] for n in dense2} == {"conv0", "norm0", "denseblock1", "transition1", "denseblock2"}
    # Four stages are the backbone, in both families.
    for build in (tvm.resnet18, tvm.densenet121):
        assert frozen(build(num_classes=3), freeze="first_stages", freeze_stages=4) == frozen(
            build(num_classes=3), freeze="backbone")
    with pytest.raises(UserError, match="^freeze: first_stages knows the stages of ResNet and DenseNet, not of "
                                        "Sequential; use freeze backbone$"):
        freeze(_net(), RecipeOptions(freeze="first_stages"))


def test_frozen_batch_norm_layers_keep_their_statistics_in_training_mode():
    model = tvm.resnet18(num_classes=3)
    freeze(model, RecipeOptions(freeze="first_stages", freeze_stages=1))
    recipe = Recipe.build(RecipeOptions(), model, [0, 1, 2], 3, torch.device("cpu"), 1)
    recipe.train_mode(model)
    assert not model.bn1.training and not model.layer1[0].bn1.training
    assert model.layer2[0].bn1.training and model.training


# --- loss ----------------------------------------------------------------------------------------------------------


def test_label_smoothing_changes_the_loss_of_a_fixed_batch_by_the_expected_amount():
    images, targets = _batch()
    with torch.no_grad():
        log_p = torch.log_softmax(_net()(images), 1)
    plain = -log_p[torch.arange(len(targets)), targets].mean().item()
    uniform = -log_p.mean(1).mean().item()  # cross-entropy against the uniform distribution
    # One batch: the epoch's loss is the batch's loss before the step.
    smoothed, _, _, _ = _epoch(_net(), images, targets, 10, RecipeOptions(label_smoothing=0.2))
    assert smoothed == pytest.approx(0.8 * plain + 0.2 * uniform, rel=1e-6)
    assert smoothed != pytest.approx(plain, rel=1e-3)


def test_class_weights_follow_the_training_counts():
    counts = [0] * 8 + [1] * 4 + [2] * 2
    assert class_weights(counts, 3).tolist() == pytest.approx([3 / 7, 6 / 7, 12 / 7])  # ∝ 1/count, mean 1
    assert class_weights(counts + [1] * 4 + [2] * 6, 3).tolist() == pytest.approx([1, 1, 1])
    recipe = Recipe.build(RecipeOptions(weighted_loss="inverse_frequency"), _net(), counts, 3, torch.device("cpu"), 1)
    assert recipe.criterion.weight.tolist() == pytest.approx([3 / 7, 6 / 7, 12 / 7])
    assert Recipe.build(RecipeOptions(), _net(), counts, 3, torch.device("cpu"), 1).criterion.weight is None
    # The loop's loss is the weighted one.
    images, targets = _batch(14)
    targets = torch.tensor(counts)
    with torch.no_grad():
        expected = nn.CrossEntropyLoss(weight=class_weights(counts, 3))(_net()(images), targets).item()
    loss, _, _, _ = _epoch(_net(), images, targets, 14, RecipeOptions(weighted_loss="inverse_frequency"))
    assert loss == pytest.approx(expected, rel=1e-6)


# --- steps ---------------------------------------------------------------------------------------------------------


def test_accumulating_k_batches_of_b_is_one_step_of_k_times_b():
    images, targets = _batch(10)
    # 5 batches of 2 in groups of 4: a step over 8 images, then one over the last 2, as batches of 8 and 2 give.
    opts = dict(momentum=0.5, nesterov=False, weight_decay=0.01)
    accumulated, whole = _net(), _net()
    _, _, opt_a, sched_a = _epoch(accumulated, images, targets, 2,
                                  RecipeOptions(gradient_accumulation_steps=4, **opts))
    _, _, _, sched_w = _epoch(whole, images, targets, 8, RecipeOptions(**opts))
    for a, w in zip(accumulated.parameters(), whole.parameters()):
        assert torch.allclose(a, w, atol=1e-6), (a - w).abs().max()
    assert sched_a.last_epoch == sched_w.last_epoch == 2
    assert not torch.allclose(accumulated[0].weight, _net()[0].weight)


def test_gradient_clipping_bounds_the_step():
    model, images = _net(), _batch()[0]
    opts = RecipeOptions(momentum=0.0, nesterov=False, weight_decay=0.0, gradient_clip_norm=0.5)
    before = [p.detach().clone() for p in model.parameters()]
    _epoch(model, images * 100, torch.zeros(10, dtype=torch.int64), 10, opts, lr=1.0)
    change = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)])
    assert change.norm().item() == pytest.approx(0.5, rel=1e-4)


def test_batches_are_mixed_from_the_seed_alone_and_the_loss_takes_soft_targets():
    images, targets = _batch(8)
    recipe = Recipe.build(RecipeOptions(mixup_alpha=0.4, cutmix_alpha=1.0, mix_probability=0.7), _net(),
                          targets.tolist(), 3, torch.device("cpu"), 1)
    outside = torch.get_rng_state()
    first, second = recipe.mixer(11), recipe.mixer(11)
    draws = [first(images, targets) for _ in range(6)]
    assert torch.equal(torch.get_rng_state(), outside)  # the process's own random stream is left alone
    again = [second(images, targets) for _ in range(6)]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(draws, again))
    assert all(t.shape == (8, 3) and torch.allclose(t.sum(1), torch.ones(8)) for _, t in draws)
    assert any(not torch.equal(m, images) for m, _ in draws)
    other = recipe.mixer(12)
    assert not all(torch.equal(a[0], other(images, targets)[0]) for a in draws)


@pytest.mark.slow
def test_training_mixes_its_batches(tiny, tmp_path):
    # That the same seed mixes the same way in a run: test_ema_and_mixing_resume_where_they_stopped.
    mixed = _train(tiny, tmp_path / "a", mixup_alpha=0.4, cutmix_alpha=1.0)
    plain = _train(tiny, tmp_path / "b")
    assert not torch.equal(mixed.model.state_dict()["fc.weight"], plain.model.state_dict()["fc.weight"])
    assert 0 <= mixed.history[0].train_error <= 1


def test_ddp_all_reduces_only_on_a_groups_last_batch(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        ddp = nn.parallel.DistributedDataParallel(_net())
        with Recipe.syncing(ddp, sync=False):
            assert not ddp.require_backward_grad_sync
        with Recipe.syncing(ddp, sync=True):
            assert ddp.require_backward_grad_sync
    finally:
        dist.destroy_process_group()


# --- optimizers and schedules ----------------------------------------------------------------------------------------


def test_adam_adamw_and_undecayed_norms_and_biases_are_torchs():
    model = tvm.resnet18(num_classes=3)
    adam = build_optimizer(model, RecipeOptions(optimizer="adam", beta1=0.8, beta2=0.99), 0.1)
    assert type(adam) is torch.optim.Adam and adam.param_groups[0]["betas"] == (0.8, 0.99)
    adamw = build_optimizer(model, RecipeOptions(optimizer="adamw", weight_decay=0.05,
                                                 weight_decay_on_norms_and_biases=False), 0.1)
    assert type(adamw) is torch.optim.AdamW
    decayed, undecayed = adamw.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert decayed["weight_decay"] == 0.05 and undecayed["weight_decay"] == 0.0
    assert {names[id(p)] for p in undecayed["params"]} == {
        n for n, _ in model.named_parameters() if n.endswith("bias") or ".bn" in n or n.startswith("bn1")
        or ".downsample.1." in n}
    assert all(p.dim() > 1 for p in decayed["params"])
    sgd = build_optimizer(model, RecipeOptions(), 0.1)
    assert type(sgd) is torch.optim.SGD and len(sgd.param_groups) == 1 and sgd.param_groups[0]["nesterov"]


def _rates(opts, warmup, steps_per_epoch, epochs):
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_schedule(optimizer, opts, warmup, steps_per_epoch, epochs)
    rates = []
    for _ in range(steps_per_epoch * epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return scheduler, rates + [optimizer.param_groups[0]["lr"]]


def test_cosine_and_step_schedules_follow_their_curves_after_the_same_warmup():
    scheduler, cosine = _rates(RecipeOptions(lr_schedule="cosine"), 3, 4, 3)  # 12 steps: 3 warmup, 9 cosine
    assert type(scheduler._schedulers[1]) is torch.optim.lr_scheduler.CosineAnnealingLR
    assert cosine == pytest.approx([1 / 3, 2 / 3, 1.0] + [0.5 * (1 + math.cos(math.pi * t / 9)) for t in range(10)])
    scheduler, step = _rates(RecipeOptions(lr_schedule="step", lr_step_epochs=2, lr_step_gamma=0.5), 0, 4, 5)
    assert type(scheduler) is torch.optim.lr_scheduler.StepLR
    assert step == pytest.approx([1.0] * 8 + [0.5] * 8 + [0.25] * 4 + [0.25])


@pytest.mark.slow
def test_adamw_with_a_cosine_schedule_trains_the_run(tiny, tmp_path):
    # 24 images in batches of 8: 3 steps an epoch, 9 in all; each epoch's row has the rate at its first step.
    _train(tiny, tmp_path / "out", tmp_path / "ck", epochs=3, patience=5, optimizer="adamw", lr_schedule="cosine")
    with open(tmp_path / "out" / "training_metrics.csv", newline="") as fh:
        rates = [float(r["learning_rate"]) for r in csv.DictReader(fh)]
    assert rates == pytest.approx([0.01 * 0.5 * (1 + math.cos(math.pi * t / 9)) for t in (0, 3, 6)])
    state = torch.load(tmp_path / "ck" / CHECKPOINT, weights_only=True)["optimizer"]["state"]
    assert "exp_avg_sq" in state[0]  # Adam's moments, not SGD's momentum buffer


# --- options refused -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("options, message", [
    (dict(beta1=0.8), "beta1: 0.8 applies only with optimizer adam or adamw, not sgd; leave beta1 at its default 0.9 "
                      "or set optimizer adam"),
    (dict(optimizer="adamw", momentum=0.5), "momentum: 0.5 applies only with optimizer sgd, not adamw"),
    (dict(lr_step_gamma=0.5), "lr_step_gamma: 0.5 applies only with lr_schedule step, not polynomial"),
    (dict(freeze_stages=3), "freeze_stages: 3 applies only with freeze first_stages, not none"),
    (dict(momentum=0.0), "nesterov: Nesterov momentum needs a momentum above 0"),
    (dict(mix_probability=0.5), "mix_probability: 0.5 applies only with MixUp or CutMix"),
    (dict(ema_decay=1.0), "ema_decay: 1.0 is outside the valid range [0.0, 0.99999]"),
    (dict(optimizer="lamb"), "optimizer: 'lamb' is not one of 'sgd', 'adam', 'adamw'"),
])
def test_bad_options_are_one_line_before_anything_runs(options, message, tmp_path):
    with pytest.raises(UserError, match="^" + re.escape(message)) as caught:
        train(tmp_path / "nothing", tmp_path / "no_train", tmp_path / "no_valid", tmp_path / "out", _cfg(**options))
    assert "\n" not in str(caught.value) and not (tmp_path / "out").exists()


# --- EMA, checkpoints -------------------------------------------------------------------------------------------------


def test_ema_weights_are_scored_and_written(tiny, tmp_path):
    _train(tiny, tmp_path / "out", tmp_path / "ck", ema_decay=0.5)
    ckpt = torch.load(tmp_path / "ck" / CHECKPOINT, weights_only=True)
    ema = {k.removeprefix("module."): v for k, v in ckpt["ema"].items() if k.startswith("module.")}
    written = read_trained(tmp_path / "out").model.state_dict()
    assert all(torch.equal(written[k], ema[k]) for k in written)  # the best (only) epoch's average
    assert not torch.equal(written["fc.weight"], ckpt["model"]["fc.weight"])  # not the raw weights
    assert not torch.equal(ema["bn1.running_mean"], ckpt["model"]["bn1.running_mean"])  # statistics averaged too


class _Stopped(Exception):
    pass


@pytest.mark.slow
def test_ema_and_mixing_resume_where_they_stopped(tiny, tmp_path, monkeypatch):
    from designer_resnet.training import train as train_module

    options = dict(epochs=2, patience=5, ema_decay=0.5, cutmix_alpha=1.0)
    _train(tiny, tmp_path / "whole", tmp_path / "ck_whole", **options)
    save = train_module.save_checkpoint

    def save_then_stop(path, state):
        save(path, state)
        raise _Stopped  # after epoch 1's checkpoint

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_stop)
    with pytest.raises(_Stopped):
        _train(tiny, tmp_path / "cut", tmp_path / "ck", **options)
    monkeypatch.setattr(train_module, "save_checkpoint", save)
    _train(tiny, tmp_path / "resumed", tmp_path / "ck", **options)
    whole = torch.load(tmp_path / "ck_whole" / CHECKPOINT, weights_only=True)
    resumed = torch.load(tmp_path / "ck" / CHECKPOINT, weights_only=True)
    assert resumed["epoch"] == 2
    for key in ("ema", "model"):
        assert all(torch.equal(whole[key][k], resumed[key][k]) for k in whole[key]), key


@pytest.mark.slow
def test_a_checkpoint_made_with_other_options_is_refused_and_an_older_one_read_as_the_designers(tiny, tmp_path):
    ckpt = tmp_path / "ck"
    _train(tiny, tmp_path / "first", ckpt)
    for n, (options, made) in enumerate([(dict(optimizer="adamw"), "optimizer sgd, not adamw"),
                                         (dict(label_smoothing=0.1), "label_smoothing 0.0, not 0.1"),
                                         (dict(freeze="backbone"), "freeze none, not backbone")]):
        with pytest.raises(UserError, match=rf"^checkpoint_path: the checkpoint in .*ck was made with {made}; give an "
                                            "empty checkpoint folder to start over$"):
            _train(tiny, tmp_path / f"o{n}", ckpt, **options)
    # As a version before the recipe options wrote it: read as the designer's recipe.
    old = torch.load(ckpt / CHECKPOINT, weights_only=True)
    for key in ("identity", "config"):
        for name in RecipeOptions.__dataclass_fields__:
            old[key].pop(name)
    torch.save(old, ckpt / CHECKPOINT)
    with pytest.raises(UserError, match=r"made with ema_decay 0\.0, not 0\.5; "):
        _train(tiny, tmp_path / "o3", ckpt, ema_decay=0.5)
    assert [h.epoch for h in _train(tiny, tmp_path / "o4", ckpt).history] == [1]  # resumed: nothing left to train
