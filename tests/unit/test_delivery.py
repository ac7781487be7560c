"""The eager delivery helper drives coroutines as an asyncio Task would."""
import asyncio

import pytest

from streamapp.delivery import EagerDeliveryConsumer, finish, install


def _start(coro):
    """Step a coroutine once, as EagerDeliveryConsumer does; returns what it yielded."""
    return coro.send(None)


async def test_a_delivery_that_waits_is_finished_once_its_future_is_done():
    loop = asyncio.get_running_loop()
    gate = loop.create_future()

    async def delivery():
        return await gate + 1

    coro = delivery()
    task = asyncio.ensure_future(finish(coro, _start(coro)))
    await asyncio.sleep(0.01)
    assert not task.done()
    gate.set_result(41)
    assert await task == 42


async def test_the_delivery_sees_the_exception_of_what_it_waited_for():
    loop = asyncio.get_running_loop()
    gate = loop.create_future()

    async def delivery():
        try:
            await gate
        except KeyError:
            return "handled"

    coro = delivery()
    task = asyncio.ensure_future(finish(coro, _start(coro)))
    gate.set_exception(KeyError("x"))
    assert await task == "handled"


async def test_cancelling_the_task_cancels_the_delivery_where_it_waits():
    loop = asyncio.get_running_loop()
    gate = loop.create_future()
    seen = []

    async def delivery():
        try:
            await gate
        finally:
            seen.append("cleaned up")

    coro = delivery()
    task = asyncio.ensure_future(finish(coro, _start(coro)))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["cleaned up"] and gate.cancelled()


async def test_a_put_on_a_full_queue_completes_when_room_is_made():
    queue: asyncio.Queue = asyncio.Queue(maxsize=1)
    queue.put_nowait("first")
    coro = queue.put("second")
    yielded = _start(coro)  # the queue is full: the put waits
    task = asyncio.ensure_future(finish(coro, yielded))
    await asyncio.sleep(0.01)
    assert not task.done()
    assert await queue.get() == "first"
    await asyncio.wait_for(task, 1)
    assert await queue.get() == "second"


async def test_a_bare_yield_gives_the_loop_a_turn():
    async def delivery():
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return "done"

    coro = delivery()
    assert await finish(coro, _start(coro)) == "done"


def test_install_gives_the_app_the_eager_consumer_only_when_asked():
    from streamapp.app import app
    from streamapp.config import settings

    before = app.transport.Consumer
    try:
        assert not install(app, settings.with_overrides(eager_delivery=False))
        assert app.transport.Consumer is before
        assert install(app, settings.with_overrides(eager_delivery=True))
        assert app.transport.Consumer is EagerDeliveryConsumer
    finally:
        app.transport.Consumer = before
