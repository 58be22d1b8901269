"""The collector holds back while what lives until exit is allocated, then never rescans it."""

from __future__ import annotations

import gc

from runner.process import gc_freeze as heap


def test_what_lives_until_exit_is_frozen_out_of_the_collectors_sight():
    gc.unfreeze()
    try:
        with heap.long_lived():
            assert not gc.isenabled()
            kept = [[] for _ in range(1000)]
        assert gc.isenabled() and gc.get_freeze_count() >= len(kept)
    finally:
        gc.unfreeze()


def test_a_disabled_collector_stays_disabled():
    gc.disable()
    try:
        with heap.long_lived():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()
