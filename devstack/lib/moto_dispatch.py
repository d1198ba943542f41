"""Finds the service a request is for once per host, not once per request.

moto's server picks the backend for each request from its host name (inferred from the
request's signature for a client that, like every client of the local stack, calls
127.0.0.1): `DomainDispatcherApplication.get_backend_for_host` first lists moto's package
directory, a `stat` for each of its 174 entries, to see whether the host names a service, then
tries the URL patterns of every service in turn. That took 0.6 ms of CPU per request, under a
lock every request takes, which is about a third of what an UploadPart or a GET costs moto in
all, and which AWS's endpoints do not charge a client. The answer depends on the host alone:
moto's services and their URL patterns are fixed once it is imported. install() remembers it
per host.
"""

import threading

from moto.moto_server import werkzeug_app

# Hosts a client can name are few (a service's endpoint, a bucket's virtual host); the cap only
# keeps a client that invents host names from growing the table without end.
_MOST = 4096

_original = werkzeug_app.DomainDispatcherApplication.get_backend_for_host


def _get_backend_for_host(self, host):
    known = self.__dict__.setdefault("_backend_by_host", {})
    try:
        return known[host]
    except KeyError:
        pass
    backend = _original(self, host)
    with _lock:
        if len(known) >= _MOST:
            known.clear()
        known[host] = backend
    return backend


_lock = threading.Lock()


def install():
    werkzeug_app.DomainDispatcherApplication.get_backend_for_host = _get_backend_for_host
