#!/usr/bin/env python3
"""A small HTTP/1.1 upstream for bench/faults and bench/soak, standard library only (asyncio).

  GET /          "hello <id>"            GET /1m    1 MiB
  POST /...      reads the body (Content-Length or chunked), answers its size
  GET /ws        WebSocket handshake, then echoes whatever arrives
  GET /hostile   one of a few broken responses (bad framing, cut body, bare LF, oversized head, reset)

SIGUSR1 toggles slow mode (every answer waits SLOW seconds). Every 250 ms the number of request heads read is
appended to <stats> as "<unix time> <count>", so a fault's effect on this destination can be seen over time.
"""
import asyncio, base64, hashlib, os, random, signal, sys, time

port, ident, stats_path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
SLOW = float(os.environ.get("SLOW", "5"))
slow = False
count = 0
MIB = b"x" * (1 << 20)
HELLO = f"hello {ident}\n".encode()


def toggle_slow(*_):
    global slow
    slow = not slow


async def read_body(reader, head):
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        total = 0
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b""):
                    pass
                return total
            await reader.readexactly(size + 2)
            total += size
    for line in lower.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            n = int(line.split(b":", 1)[1])
            left = n
            while left:
                left -= len(await reader.read(min(left, 65536)))
            return n
    return 0


HOSTILE = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nContent-Length: 11\r\n\r\n0123456789",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\ncut short",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nbad\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70000 + b"\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n X-Folded: yes\r\nContent-Length: 0\r\n\r\n",
    b"",  # close without answering
]


async def handle(reader, writer):
    global count
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            count += 1
            line = head.split(b"\r\n", 1)[0]
            method, target = line.split(b" ")[:2]
            size = await read_body(reader, head) if method in (b"POST", b"PUT") else 0
            if slow:
                await asyncio.sleep(SLOW)
            if target == b"/ws":
                key = [l.split(b":", 1)[1].strip() for l in head.split(b"\r\n") if l.lower().startswith(b"sec-websocket-key:")][0]
                accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
                writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                             b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
                return
            if target == b"/hostile":
                answer = random.choice(HOSTILE)
                if answer:
                    writer.write(answer)
                    await writer.drain()
                return
            if method in (b"POST", b"PUT"):
                body = f"{size}\n".encode()
            elif target == b"/1m":
                body = MIB
            else:
                body = HELLO
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n\r\n" % len(body))
            writer.write(body)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, ValueError, IndexError):
        pass
    finally:
        writer.close()


async def sample():
    with open(stats_path, "a", buffering=1) as out:
        while True:
            out.write(f"{time.time():.3f} {count}\n")
            await asyncio.sleep(0.25)


async def main():
    signal.signal(signal.SIGUSR1, toggle_slow)
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024, reuse_address=True, limit=1 << 20)
    asyncio.get_running_loop().create_task(sample())
    async with server:
        await server.serve_forever()


asyncio.run(main())
