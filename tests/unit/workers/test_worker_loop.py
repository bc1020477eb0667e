import asyncio

from mailwatch.workers.loop import LoopWorker
from tests.fixtures.waiting import eventually, stays


class Scripted(LoopWorker):
    """Ticks through a script: True = more work waiting, Exception = a failing tick."""

    def __init__(self, script, **kw):
        super().__init__(**kw)
        self.script = list(script)
        self.ticks = 0

    async def tick(self) -> bool:
        self.ticks += 1
        step = self.script.pop(0) if self.script else False
        if isinstance(step, Exception):
            raise step
        return step


async def test_busy_ticks_run_back_to_back_then_it_sleeps():
    worker = Scripted([True, True, False], loop_seconds=60)
    task = asyncio.create_task(worker.run())
    await eventually(lambda: worker.ticks == 3)
    # The third said "idle": it now sleeps for 60 s, so no fourth tick comes (0.2 s is many
    # back-to-back ticks, had it not gone to sleep).
    await stays(lambda: worker.ticks == 3, 0.2, what="no tick while asleep")
    worker.stop()
    await asyncio.wait_for(task, 1)


async def test_wake_interrupts_the_sleep():
    worker = Scripted([False, False], loop_seconds=60)
    task = asyncio.create_task(worker.run())
    await eventually(lambda: worker.ticks == 1)
    await stays(lambda: worker.ticks == 1, 0.2, what="asleep for its 60 s")  # asleep: only a wake ends it
    worker.wake()
    await eventually(lambda: worker.ticks == 2)
    worker.stop()
    await asyncio.wait_for(task, 1)


async def test_a_failing_tick_does_not_end_the_worker(caplog):
    worker = Scripted([RuntimeError("db down"), False], loop_seconds=0.01)
    task = asyncio.create_task(worker.run())
    await eventually(lambda: worker.ticks >= 2 and "tick failed" in caplog.text)
    assert not task.done()
    worker.stop()
    await asyncio.wait_for(task, 1)


async def test_disabled_worker_never_ticks():
    worker = Scripted([True], enabled=False)
    await asyncio.wait_for(worker.run(), 1)
    assert worker.ticks == 0
