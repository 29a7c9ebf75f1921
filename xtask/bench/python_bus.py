"""A small event bus as the Python services run it today, for `cargo xtask bench`.

subscribe(topics, handler, group_id) consumes with aiokafka, decodes JSON,
dispatches by event_type to handlers registered with @register_handler, and
commits after each batch is handled (at-least-once). publish(topic, event, key)
sends and waits for the acknowledgement; publish_later(…) sends without
waiting, and the batch's sends are awaited before its commit (still
at-least-once), as a competent service pipelines its follow-ups.

Usage: python_bus.py BROKERS TOPIC GROUP MODE OUT_TOPIC
MODE is noop, followup or followup-pipelined. Runs until it is stopped; the
bench times it from outside (committed offsets, the output topic's end).
Prints `assigned` once it has its partitions.
"""

import asyncio
import json
import sys
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener

_handlers = {}


def register_handler(event_type):
    def decorate(handler):
        _handlers.setdefault(event_type, []).append(handler)
        return handler

    return decorate


class SayAssigned(ConsumerRebalanceListener):
    async def on_partitions_revoked(self, revoked):
        pass

    async def on_partitions_assigned(self, assigned):
        if assigned:
            print("assigned", flush=True)


class EventBus:
    def __init__(self, brokers):
        self.brokers = brokers
        self.producer = None
        self.pending = []

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

    async def publish_later(self, topic, event, key=None):
        self.pending.append(
            await self.producer.send(
                topic,
                json.dumps(event).encode(),
                key=key.encode() if key else None,
            )
        )

    async def dispatch(self, event):
        for handler in _handlers.get(event.get("event_type"), []):
            await handler(event)

    async def subscribe(self, topics, group_id):
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.brokers,
            group_id=group_id,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        consumer.subscribe(topics, listener=SayAssigned())
        await consumer.start()
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=500)
                for records in batches.values():
                    for record in records:
                        event = json.loads(record.value)
                        await self.dispatch(event)
                if self.pending:
                    await asyncio.gather(*self.pending)
                    self.pending.clear()
                if batches:
                    await consumer.commit()
        finally:
            await consumer.stop()


async def main():
    brokers, topic, group, mode, out_topic = sys.argv[1:6]
    bus = EventBus(brokers)
    await bus.start()

    @register_handler("user.created")
    async def on_user_created(event):
        data = event["data"]
        if mode == "noop":
            return
        follow_up = {
            "event_id": str(uuid.uuid4()),
            "event_type": "notification.send_welcome_email",
            "causation_id": event["event_id"],
            "data": {"user_id": data["user_id"], "email": data["email"]},
        }
        if mode == "followup-pipelined":
            await bus.publish_later(out_topic, follow_up, key=data["user_id"])
        else:
            await bus.publish(out_topic, follow_up, key=data["user_id"])

    try:
        await bus.subscribe([topic], group)
    finally:
        await bus.stop()


asyncio.run(main())
