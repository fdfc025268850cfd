# Records each request a server processed, one "METHOD id" line per request, so that a test can count how many times
# each request id reached the application. One write() of a short line on an O_APPEND file is not interleaved with
# another process's, so several workers can share the file.
import os

_fd = None


def record(method, request_id):
    global _fd
    if _fd is None:
        _fd = os.open(os.environ["SEEN_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(_fd, f"{method} {request_id or '-'}\n".encode("ascii", "replace"))
