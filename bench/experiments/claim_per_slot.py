"""Experiment: the sender claims only as many messages as it has free SES slots.

Sender._claim as it was: claim `concurrency - in flight` messages, so that with the
slots busy each finished send brings one spool read for one message. Run beside the
relay as it is (claims up to twice `concurrency`, again once half of that is free).
"""

import asyncio
import sys

if "worker" in sys.argv:
    from relay.sending.sender import Sender

    async def claim(self):  # type: ignore[no-untyped-def]
        free = self.config.ses.concurrency - len(self._tasks)
        if free <= 0:
            await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
            return 1
        now = self.clock()
        self._cooldown = {sid: until for sid, until in self._cooldown.items() if until > now}
        items = await self.store.due(now, free, exclude=self._in_flight | self._cooldown.keys())
        self._busy = self._busy or bool(items)
        for item in items:
            sid = item.submission.id
            self._in_flight.add(sid)
            task = asyncio.create_task(self._process(item))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(lambda _t, sid=sid: self._in_flight.discard(sid))
        return len(items)

    Sender._claim = claim
