# The WSGI application gunicorn serves in the real-server tests: reads the body, records the request, answers 200.
from seen import record


def app(environ, start_response):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    record(environ["REQUEST_METHOD"], environ.get("HTTP_X_REQUEST_ID"))
    answer = b"ok %d\n" % len(body)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(answer)))])
    return [answer]
