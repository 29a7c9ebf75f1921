"""Reads topics to their end with aiokafka, as the seed's services do.

usage: read_all.py BOOTSTRAP TOPIC...

Prints one JSON object: for each topic, its records' keys, header names and
values (decoded as the seed's consumers do, `json.loads`, where they are
JSON). Any error aiokafka raises (a codec it lacks, a header name it cannot
decode) ends the script with it, non-zero.
"""

import asyncio
import json
import sys
import time

from aiokafka import AIOKafkaConsumer


async def read_to_end(bootstrap, topic):
    # Subscribed as the seed's consumers are (no group: nothing committed),
    # and read until every assigned partition's position is at its end.
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        records = []
        deadline = time.monotonic() + 60
        while True:
            if time.monotonic() > deadline:
                raise SystemExit(f"{topic}: not read to its end within 60 s")
            batches = await consumer.getmany(timeout_ms=500)
            for batch in batches.values():
                for record in batch:
                    try:
                        value = json.loads(record.value.decode())
                    except (ValueError, AttributeError):
                        value = None
                    records.append(
                        {
                            "key": record.key.decode(errors="replace") if record.key else None,
                            "headers": [name for name, _ in record.headers],
                            "value": value,
                        }
                    )
            partitions = list(consumer.assignment())
            if not partitions:
                continue
            ends = await consumer.end_offsets(partitions)
            positions = [await consumer.position(tp) for tp in partitions]
            if all(pos >= ends[tp] for pos, tp in zip(positions, partitions)):
                return records
    finally:
        await consumer.stop()


async def main(bootstrap, topics):
    found = {}
    for topic in topics:
        found[topic] = await read_to_end(bootstrap, topic)
    print(json.dumps(found))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2:]))
