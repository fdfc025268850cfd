# A tornado server as small services run it: a listen backlog of 8 and a synchronous 20 ms handler that blocks the
# event loop, so that a burst of new connections overflows the backlog while the loop is busy.
# Usage: tornado_app.py PORT (SEEN_FILE in the environment).
import asyncio
import sys
import time

import tornado.httpserver
import tornado.netutil
import tornado.web

from seen import record


class Handler(tornado.web.RequestHandler):
    def get(self):
        self.answer()

    def post(self):
        self.answer()

    def answer(self):
        time.sleep(0.02)
        record(self.request.method, self.request.headers.get("X-Request-Id"))
        self.write("ok\n")


async def main(port):
    sockets = tornado.netutil.bind_sockets(port, "127.0.0.1", backlog=8)
    server = tornado.httpserver.HTTPServer(tornado.web.Application([(r"/.*", Handler)]))
    server.add_sockets(sockets)
    print(f"listening on 127.0.0.1:{port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
