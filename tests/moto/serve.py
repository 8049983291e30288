"""moto's server, with S3's conditional writes made atomic as in S3.

S3 judges `If-Match` / `If-None-Match` on PutObject and stores the object in one step:
of two writers that read the same version, exactly one succeeds and the other gets 412
("Amazon S3 User Guide", "How to prevent object overwrites with conditional writes").
moto 5 checks the ETag, then stores, in a threaded server with no lock between the two, so
two writers racing with the same ETag can both succeed and one update is lost: a fake
weaker than the service, which hid nothing in our store but failed
`state_s3::concurrent_writers_lose_no_update` under load. Here each PutObject runs under
one lock; every other request is served as moto serves it.

Usage: python serve.py [moto_server's arguments]
"""
import sys
import threading

from moto.s3.responses import S3Response
from moto.server import main

_PUT = threading.Lock()
_put_object = S3Response.put_object


def put_object(self, *args, **kwargs):
    with _PUT:
        return _put_object(self, *args, **kwargs)


S3Response.put_object = put_object

if __name__ == "__main__":
    sys.exit(main())
