"""A small event bus as the Python services run it today, for `cargo xtask bench`.

subscribe(topics, handler, group_id) consumes with aiokafka, decodes JSON,
dispatches by event_type to handlers registered with @register_handler, and
commits after each batch is handled (at-least-once). publish(topic, event, key)
sends and waits for the acknowledgement.

Usage: python_bus.py BROKERS TOPIC GROUP COUNT MODE [OUT_TOPIC]
MODE is noop or followup. Prints one JSON line with the figures when COUNT
events were handled.
"""

import asyncio
import json
import resource
import sys
import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

_handlers = {}


def register_handler(event_type):
    def decorate(handler):
        _handlers.setdefault(event_type, []).append(handler)
        return handler

    return decorate


class EventBus:
    def __init__(self, brokers):
        self.brokers = brokers
        self.producer = None

    async def start(self):
        self.producer = AIOKafkaProducer(bootstrap_servers=self.brokers, acks="all")
        await self.producer.start()

    async def stop(self):
        await self.producer.stop()

    async def publish(self, topic, event, key=None):
        await self.producer.send_and_wait(
            topic,
            json.dumps(event).encode(),
            key=key.encode() if key else None,
        )

    async def dispatch(self, event):
        for handler in _handlers.get(event.get("event_type"), []):
            await handler(event)

    async def subscribe(self, topics, group_id, until):
        consumer = AIOKafkaConsumer(
            *topics,
            bootstrap_servers=self.brokers,
            group_id=group_id,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        handled = 0
        try:
            while handled < until:
                batches = await consumer.getmany(timeout_ms=500, max_records=500)
                for records in batches.values():
                    for record in records:
                        event = json.loads(record.value)
                        await self.dispatch(event)
                        handled += 1
                if batches:
                    await consumer.commit()
        finally:
            await consumer.stop()
        return handled


async def main():
    brokers, topic, group, count, mode = sys.argv[1:6]
    out_topic = sys.argv[6] if len(sys.argv) > 6 else None
    bus = EventBus(brokers)
    await bus.start()

    @register_handler("user.created")
    async def on_user_created(event):
        data = event["data"]
        if mode == "followup":
            await bus.publish(
                out_topic,
                {
                    "event_id": str(uuid.uuid4()),
                    "event_type": "notification.send_welcome_email",
                    "causation_id": event["event_id"],
                    "data": {"user_id": data["user_id"], "email": data["email"]},
                },
                key=data["user_id"],
            )

    started = time.monotonic()
    handled = await bus.subscribe([topic], group, int(count))
    elapsed = time.monotonic() - started
    await bus.stop()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "events": handled,
                "seconds": elapsed,
                "cpu_s": usage.ru_utime + usage.ru_stime,
                "peak_rss_mb": usage.ru_maxrss / 1024,
            }
        ),
        flush=True,
    )


asyncio.run(main())
