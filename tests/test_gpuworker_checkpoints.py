"""Promotions that continue: a run resumed from a checkpoint gives exactly the from-scratch result."""
from __future__ import annotations

from evo.genotype import parse_genotype
from evo.spec import TrainSpec
from gpuworker.checkpoints import CheckpointStore
from gpuworker.train import evaluate

SPEC = TrainSpec(dataset="synthetic", epochs=4, val_size=200, train_subset=600, batch_size=64)
G = parse_genotype("150,50|10|100")


def test_a_continued_run_is_the_from_scratch_run_and_trains_only_the_epochs_in_between(tmp_path):
    store = CheckpointStore(tmp_path)
    first = evaluate(G, SPEC.replace(epochs=1), checkpoints=store)
    continued = evaluate(G, SPEC, checkpoints=store)
    scratch = evaluate(G, SPEC)
    assert first.ok and continued.ok and scratch.ok
    assert continued.measurement.resumed_from == 1 and scratch.measurement.resumed_from == 0
    assert continued.measurement.loss == scratch.measurement.loss                    # bit for bit
    assert continued.measurement.curve == scratch.measurement.curve
    assert continued.measurement.train_curve == scratch.measurement.train_curve
    assert (continued.measurement.recon, continued.measurement.kl) == (scratch.measurement.recon,
                                                                       scratch.measurement.kl)
    directory = tmp_path / CheckpointStore.key(G, SPEC)
    assert sorted(p.name for p in directory.iterdir()) == ["4.pt"]  # 1.pt superseded


def test_the_key_ignores_epochs_and_test_figures_but_nothing_else():
    key = CheckpointStore.key(G, SPEC)
    assert key == CheckpointStore.key(G, SPEC.replace(epochs=9, report_test=True, iw_samples=50))
    for other in (SPEC.replace(lr=2e-3), SPEC.replace(seed=1), SPEC.replace(batch_size=32),
                  SPEC.replace(train_subset=500)):
        assert CheckpointStore.key(G, other) != key
    assert CheckpointStore.key(parse_genotype("150,50|10|50"), SPEC) != key


def test_a_checkpoint_at_as_many_epochs_or_more_is_not_used(tmp_path):
    store = CheckpointStore(tmp_path)
    evaluate(G, SPEC, checkpoints=store)
    again = evaluate(G, SPEC.replace(epochs=2), checkpoints=store)
    assert again.measurement.resumed_from == 0 and len(again.measurement.curve) == 2


def test_an_unreadable_checkpoint_is_removed_and_the_run_starts_from_scratch(tmp_path):
    store = CheckpointStore(tmp_path)
    evaluate(G, SPEC.replace(epochs=1), checkpoints=store)
    path = tmp_path / CheckpointStore.key(G, SPEC) / "1.pt"
    path.write_bytes(b"not a checkpoint")
    result = evaluate(G, SPEC.replace(epochs=2), checkpoints=store)
    assert result.ok and result.measurement.resumed_from == 0 and not path.exists()
    assert result.measurement.curve == evaluate(G, SPEC.replace(epochs=2)).measurement.curve


def test_a_store_that_cannot_be_written_costs_nothing_but_the_saving(tmp_path):
    blocked = tmp_path / "store"
    blocked.write_text("a file where the store's directory should be")  # mkdir fails, as on a full disk
    result = evaluate(G, SPEC.replace(epochs=1), checkpoints=CheckpointStore(blocked))
    assert result.ok and blocked.read_text().startswith("a file")


def test_the_store_keeps_to_its_bound_by_removing_the_oldest(tmp_path):
    store = CheckpointStore(tmp_path, max_bytes=1)  # smaller than any checkpoint: only the newest is kept
    evaluate(G, SPEC.replace(epochs=1), checkpoints=store)
    other = parse_genotype("100|10|100")
    evaluate(other, SPEC.replace(epochs=1), checkpoints=store)
    kept = list(tmp_path.glob("*/*.pt"))
    assert len(kept) <= 1
    again = evaluate(G, SPEC.replace(epochs=2), checkpoints=store)
    assert again.ok and again.measurement.resumed_from == 0  # evicted: from scratch, the same result
    assert again.measurement.curve == evaluate(G, SPEC.replace(epochs=2)).measurement.curve
