"""`mailwatch serve` freezes its start-up heap out of later garbage collections."""

from __future__ import annotations

import gc

from mailwatch.server import freeze_startup_heap


def test_start_up_objects_are_frozen_out_of_later_collections():
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    try:
        freeze_startup_heap()
        # Everything alive now (modules, settings, descriptors) is skipped by every later collection.
        assert gc.get_freeze_count() > 1000
    finally:
        gc.unfreeze()
