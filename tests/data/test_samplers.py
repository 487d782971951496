from __future__ import annotations

from medcls.data.samplers import EpochSampler


def test_order_depends_on_seed_and_epoch_only():
    a, b = EpochSampler(50, seed=3), EpochSampler(50, seed=3)
    first = list(a)
    assert first == list(b) and sorted(first) == list(range(50))
    a.set_epoch(1)
    assert list(a) != first
    b.set_epoch(1)
    assert list(a) == list(b)


def test_ddp_shards_form_the_single_process_batches():
    single = list(EpochSampler(40, seed=0))
    ranks = [list(EpochSampler(40, seed=0, rank=r, world_size=2)) for r in range(2)]
    batch = 4  # per process; one process would use 8
    for k in range(40 // 8):
        union = set(ranks[0][k * batch : (k + 1) * batch]) | set(
            ranks[1][k * batch : (k + 1) * batch]
        )
        assert union == set(single[k * 8 : (k + 1) * 8])


def test_padding_only_for_training():
    train = [list(EpochSampler(5, rank=r, world_size=2)) for r in range(2)]
    assert len(train[0]) == len(train[1]) == 3
    evals = [
        list(EpochSampler(5, shuffle=False, rank=r, world_size=2, pad=False)) for r in range(2)
    ]
    assert sorted(evals[0] + evals[1]) == list(range(5))


def test_balanced_sampling_draws_minority_often():
    weights = [1.0] * 90 + [9.0] * 10
    drawn = list(EpochSampler(100, seed=0, weights=weights))
    minority = sum(i >= 90 for i in drawn)
    assert 35 <= minority <= 65
