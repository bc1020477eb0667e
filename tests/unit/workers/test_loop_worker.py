import asyncio

from mailwatch.workers.loop import LoopWorker


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
    await asyncio.sleep(0.05)
    assert worker.ticks == 3  # the third said "idle": now sleeping for 60 s
    worker.stop()
    await asyncio.wait_for(task, 1)


async def test_wake_interrupts_the_sleep():
    worker = Scripted([False, False], loop_seconds=60)
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0.05)
    worker.wake()
    await asyncio.sleep(0.05)
    assert worker.ticks == 2
    worker.stop()
    await asyncio.wait_for(task, 1)


async def test_a_failing_tick_does_not_end_the_worker(caplog):
    worker = Scripted([RuntimeError("db down"), False], loop_seconds=0.01)
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0.1)
    assert worker.ticks >= 2 and not task.done()
    assert "tick failed" in caplog.text
    worker.stop()
    await asyncio.wait_for(task, 1)


async def test_disabled_worker_never_ticks():
    worker = Scripted([True], enabled=False)
    await asyncio.wait_for(worker.run(), 1)
    assert worker.ticks == 0
