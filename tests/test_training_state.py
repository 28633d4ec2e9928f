"""The training state's rules, asked directly: best epoch, early stopping, epochs left, the checkpoint round trip."""

from __future__ import annotations

import io

import torch

from designer_resnet.training.checkpoint import load_checkpoint, save_checkpoint
from designer_resnet.training.state import EpochResult, TrainingState


def _result(epoch, valid_loss, top1):
    return EpochResult(epoch=epoch, lr=0.01, train_loss=1.0, train_error=0.5, images_per_second=10.0,
                       valid_loss=valid_loss, top1=top1, top5=top1)


def _run(state, scores):
    """Record (valid_loss, top1) per epoch; epoch k's weights are the tensor [k]. Returns stopped_early per epoch."""
    stops = []
    for epoch, (loss, top1) in enumerate(scores, state.epoch + 1):
        state.record(_result(epoch, loss, top1), lambda e=epoch: {"w": torch.tensor([float(e)])})
        stops.append(state.stopped_early)
    return stops


def test_best_epoch_is_the_highest_top1_and_a_tie_keeps_the_earlier_epoch():
    state = TrainingState(epochs=5, patience=10)
    _run(state, [(1.0, 0.3), (0.9, 0.8), (0.8, 0.8), (0.7, 0.5)])
    assert (state.best_epoch, state.best_top1) == (2, 0.8)
    assert state.best_weights["w"].tolist() == [2.0]


def test_best_weights_are_a_copy_taken_only_for_a_new_best():
    state = TrainingState(epochs=5, patience=10)
    live = {"w": torch.tensor([1.0])}
    asked = []
    state.record(_result(1, 1.0, 0.5), lambda: asked.append(1) or live)
    live["w"].add_(5.0)  # training goes on in place
    state.record(_result(2, 0.9, 0.4), lambda: asked.append(2) or live)
    assert asked == [1] and state.best_weights["w"].tolist() == [1.0]


def test_stops_after_patience_epochs_without_a_lower_validation_loss():
    # 1.1 is stale (1), 0.9 resets, an equal 0.9 is not lower (1), 1.0 stale (2) = patience.
    state = TrainingState(epochs=7, patience=2)
    assert _run(state, [(1.0, 0.5), (1.1, 0.5), (0.9, 0.6), (0.9, 0.6), (1.0, 0.6)]) == [False] * 4 + [True]
    assert (state.best_loss, state.stale) == (0.9, 2)
    assert list(state.epochs_left()) == []


def test_never_stops_on_the_last_epoch_and_a_resumed_run_may_train_further():
    state = TrainingState(epochs=3, patience=2)
    assert _run(state, [(1.0, 0.5), (2.0, 0.5), (3.0, 0.5)]) == [False, False, False]  # stale 2 at epoch 3 of 3
    assert list(state.epochs_left()) == []
    state.epochs = 5  # a rerun with more epochs continues: the stop was decided when epoch 3 ended
    assert list(state.epochs_left()) == [4, 5]
    assert _run(state, [(4.0, 0.5)]) == [True]
    assert list(state.epochs_left()) == []


def _parts(seed):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    return model, optimizer, scheduler


def test_checkpoint_round_trip_through_a_weights_only_file(tmp_path):
    model, optimizer, scheduler = _parts(0)
    for _ in range(2):  # momentum buffers and a schedule that has moved
        model(torch.randn(4, 3)).sum().backward()
        optimizer.step()
        scheduler.step()
    state = TrainingState(epochs=6, patience=3)
    _run(state, [(1.0, 0.5), (1.2, 0.7), (1.3, 0.6)])
    state.best_weights = {k: v.clone() for k, v in model.state_dict().items()}
    identity = {"learning_rate": 0.1, "world_size": 1}
    save_checkpoint(tmp_path / "checkpoint.pt", state.to_checkpoint(
        model, optimizer, scheduler, identity=identity, config={"epochs": 6}, model_name="resnet18",
        categories=["a", "b"]))
    expected_draw = torch.rand(3)  # the CPU generator continues where the checkpoint left it

    # weights_only: plain containers, tensors, numbers and strings only.
    loaded = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert TrainingState.identity_in(loaded) == identity
    assert load_checkpoint(tmp_path, identity) is not None
    restored = TrainingState(epochs=8, patience=3)
    fresh_model, fresh_optimizer, fresh_scheduler = _parts(1)
    restored.restore(loaded, fresh_model, fresh_optimizer, fresh_scheduler)

    assert restored.stale == 2 and not restored.stopped_early
    assert restored == TrainingState(**{**vars(state), "epochs": 8})  # all but the run's own `epochs`
    assert all(torch.equal(restored.best_weights[k], v) for k, v in state.best_weights.items())
    assert (restored.epoch, list(restored.epochs_left())) == (3, [4, 5, 6, 7, 8])
    assert all(torch.equal(fresh_model.state_dict()[k], v) for k, v in model.state_dict().items())
    assert fresh_scheduler.state_dict() == scheduler.state_dict()
    buffers = [fresh_optimizer.state[p]["momentum_buffer"] for p in fresh_model.parameters()]
    assert all(torch.equal(a, optimizer.state[p]["momentum_buffer"]) for a, p in zip(buffers, model.parameters()))
    assert torch.equal(torch.rand(3), expected_draw)


def test_a_stopped_run_restores_as_stopped():
    model, optimizer, scheduler = _parts(0)
    state = TrainingState(epochs=7, patience=1)
    assert _run(state, [(1.0, 0.5), (1.5, 0.5)]) == [False, True]
    buffer = io.BytesIO()
    torch.save(state.to_checkpoint(model, optimizer, scheduler, identity={}, config={}, model_name="m",
                                   categories=[]), buffer)
    buffer.seek(0)
    restored = TrainingState(epochs=9, patience=1)
    restored.restore(torch.load(buffer, weights_only=True), *_parts(1))
    assert restored.stopped_early and list(restored.epochs_left()) == []
