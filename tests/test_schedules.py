"""The one step -> value schedule protocol shared by magnitude pruning, head pruning and module
replacement: every schedule is a ``Schedule``, its ``value_at`` equals the family's older spelling,
and its ``to_dict`` survives JSON back into an equal schedule."""

from __future__ import annotations

import json

import pytest

from loyalkit.compression import (
    ConstantReplacementSchedule,
    CubicSchedule,
    HeadPruningSchedule,
    LinearReplacementSchedule,
    LinearSchedule,
    OneShotSchedule,
    Schedule,
    replacement_schedule_from_dict,
)
from loyalkit.compression.head_pruning_schedule import head_pruning_schedule_from_dict
from loyalkit.compression.sparsity_schedules import schedule_from_dict

SPARSITY = [
    OneShotSchedule(0.5, step=3),
    LinearSchedule(0.6, start_step=2, end_step=8, frequency=2),
    CubicSchedule(0.8, start_step=0, end_step=10, frequency=1),
]
REPLACEMENT = [
    ConstantReplacementSchedule(rate=0.5, replacing_steps=4),
    LinearReplacementSchedule(slope=0.1, intercept=0.3),
]
HEADS = [HeadPruningSchedule({2: 0.25, 6: 0.5})]


@pytest.mark.parametrize("schedule", SPARSITY + REPLACEMENT + HEADS, ids=repr)
def test_every_schedule_follows_the_protocol(schedule: Schedule) -> None:
    assert isinstance(schedule, Schedule)
    description = json.loads(json.dumps(schedule.to_dict()))
    assert description["kind"] == schedule.kind
    rebuild = {
        HeadPruningSchedule: head_pruning_schedule_from_dict,
        ConstantReplacementSchedule: replacement_schedule_from_dict,
        LinearReplacementSchedule: replacement_schedule_from_dict,
    }.get(type(schedule), schedule_from_dict)
    assert rebuild(description) == schedule


def test_value_at_is_the_older_spelling() -> None:
    for sparsity in SPARSITY:
        assert [sparsity.value_at(t) for t in range(12)] == [
            sparsity.sparsity_at(t) for t in range(12)
        ]
    for replacement in REPLACEMENT:
        assert [replacement.value_at(t) for t in range(12)] == [replacement(t) for t in range(12)]
    # Hand-computed: 0.5 until step 4 then 1.0; min(1, 0.1 t + 0.3).
    assert [REPLACEMENT[0].value_at(t) for t in (0, 3, 4)] == [0.5, 0.5, 1.0]
    assert [round(REPLACEMENT[1].value_at(t), 10) for t in (0, 4, 7, 9)] == [0.3, 0.7, 1.0, 1.0]


def test_head_pruning_schedule_holds_each_share_until_the_next_step() -> None:
    schedule = HeadPruningSchedule({"6": 0.5, 2: 0.25})  # type: ignore[dict-item]
    assert schedule.steps == ((2, 0.25), (6, 0.5))
    assert [schedule.value_at(t) for t in range(8)] == [0, 0, 0.25, 0.25, 0.25, 0.25, 0.5, 0.5]
    with pytest.raises(ValueError, match="must not decrease"):
        HeadPruningSchedule({0: 0.5, 10: 0.25})
    with pytest.raises(ValueError, match="step must be >= 0"):
        schedule.value_at(-1)
    with pytest.raises(ValueError, match=r"schedule\['kind'\]"):
        head_pruning_schedule_from_dict({"kind": "cubic"})


def test_head_pruning_callback_takes_the_schedule_or_its_mapping() -> None:
    from loyalkit.callbacks import HeadPruningCallback, HeadPruningConfig

    built = HeadPruningConfig(schedule=HeadPruningSchedule({0: 0.25, 10: 0.5}))
    assert built == HeadPruningConfig(schedule={10: 0.5, 0: 0.25})
    assert HeadPruningCallback(HEADS[0]).config.head_schedule == HEADS[0]
