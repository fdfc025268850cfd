#!/usr/bin/env python3
"""WebSocket load for bench/soak: CONNECTIONS connections through Ferry to the upstream's /ws echo, each sending a
small masked frame every 100 ms and reading the echo, reconnecting every 10 s, for DURATION seconds.
Prints "websocket messages=<n> errors=<n> connections=<n>"."""
import asyncio, base64, os, sys, time

host, port, duration, connections = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
messages = errors = opened = 0


def frame(payload):
    mask = os.urandom(4)
    return bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def session(end):
    global messages, errors, opened
    while time.monotonic() < end:
        writer = None
        try:
            reader, writer = await asyncio.open_connection(host, port)
            key = base64.b64encode(os.urandom(16))
            writer.write(b"GET /ws HTTP/1.1\r\nHost: soak\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            if not head.startswith(b"HTTP/1.1 101"):
                errors += 1
                await asyncio.sleep(1)
                continue
            opened += 1
            until = min(end, time.monotonic() + 10)
            while time.monotonic() < until:
                data = frame(b"soak message")
                writer.write(data)
                await writer.drain()
                await asyncio.wait_for(reader.readexactly(len(data)), 10)
                messages += 1
                await asyncio.sleep(0.1)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            errors += 1
            await asyncio.sleep(1)
        finally:
            if writer:
                writer.close()


async def main():
    end = time.monotonic() + duration
    await asyncio.gather(*(session(end) for _ in range(connections)))
    print(f"websocket messages={messages} errors={errors} connections={opened}")


asyncio.run(main())
