"""The HTTP side of ``loupe serve``: a JSON API over catalog.py, images, and the page's static files.

aiohttp rather than the standard library's ThreadingHTTPServer: it is already a runtime dependency,
routes with typed path segments (a name never becomes a file path), and keeps one event loop for many
browser connections (a grid asks for 60 thumbnails at once) while the blocking work (reading Parquet
and blobs, filtering, decoding thumbnails) runs in a bounded thread pool, never on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import socket
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, is_dataclass
from functools import partial
from importlib import resources
from typing import Any, TypeVar

from aiohttp import web

from loupe_storage.store import ObjectStore, StoreError, blob_key
from loupe_workers.serve import catalog as cat
from loupe_workers.serve import images

log = logging.getLogger("loupe.serve")
STATIC = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}
SEARCHES_CACHED = 32
UPLOAD_BYTES = 32 << 20  # larger request bodies are refused (413)
UPLOADS_KEPT = 8
T = TypeVar("T")

CATALOG = web.AppKey("catalog", cat.Catalog)


class State:
    """What the handlers share besides the catalog: the thread pool, thumbnails, search results."""

    def __init__(self, store: ObjectStore, workers: int) -> None:
        self.store = store
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="loupe-serve")
        self.thumbnails = images.ThumbnailCache()
        self.searches: OrderedDict[tuple[str | None, ...], tuple[tuple[str, float], ...]] = OrderedDict()
        self.uploads: OrderedDict[str, bytes] = OrderedDict()  # example images by sha256, the last few
        self.lock = threading.Lock()  # searches and uploads are touched from the pool's threads

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.pool, partial(function, *args))


STATE = web.AppKey("state", State)


def to_json(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value


def _reply(value: Any, status: int = 200) -> web.Response:
    return web.json_response(to_json(value), status=status, dumps=partial(json.dumps, default=str))


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every failure is a short JSON answer: 400 for a bad request, 404 for an unknown name, 502 when
    the store fails; anything else is logged here and answered 500 without its traceback."""
    try:
        return await handler(request)
    except cat.QueryError as exc:
        return _error(400, str(exc))
    except (cat.NotFound, LookupError) as exc:
        return _error(404, str(exc).strip("'\""))
    except StoreError as exc:
        return _error(502, str(exc))
    except web.HTTPException as exc:
        if exc.status >= 400:
            return _error(exc.status, exc.reason)
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path_qs)
        return _error(500, "internal error (logged by the server)")


def _view(request: web.Request) -> Callable[[], cat.VersionView]:
    catalog = request.app[CATALOG]
    dataset, version = request.match_info["dataset"], request.match_info["version"]
    return partial(catalog.view, dataset, version)


async def datasets(request: web.Request) -> web.Response:
    return _reply(await request.app[STATE].run(request.app[CATALOG].datasets))


async def facets(request: web.Request) -> web.Response:
    state = request.app[STATE]
    view = await state.run(_view(request))
    return _reply(await state.run(view.facets))


def _ranked(state: State, view: cat.VersionView, query: cat.Query) -> tuple[tuple[str, float], ...]:
    """Sample ids and scores of a text or similar-image search (search.py), cached per version."""
    from loupe_workers.embedding.models import ModelError
    from loupe_workers.use.search import SearchError, search

    key = (view.record.dataset, view.record.version, query.text, query.like, query.image)
    with state.lock:
        found = state.searches.get(key)
        uploaded = state.uploads.get(query.image) if query.image is not None else None
    if found is not None:
        return found
    example = state.store.get(blob_key(view.sha256(query.like))) if query.like else None
    if query.image is not None:
        example = uploaded
        if example is None:
            raise cat.NotFound("that uploaded image is no longer held: upload it again")
    try:
        hits = search(state.store, view.record.dataset, view.record.version, text=query.text, image=example,
                      limit=max(1, view.record.samples))  # fmt: skip
    except (SearchError, ModelError) as exc:
        raise cat.QueryError(str(exc)) from exc
    found = tuple((h.sample_id, h.score) for h in hits)
    with state.lock:
        state.searches[key] = found
        while len(state.searches) > SEARCHES_CACHED:
            state.searches.popitem(last=False)
    return found


async def samples(request: web.Request) -> web.Response:
    state = request.app[STATE]
    query = cat.parse_query(request.query.items())
    view = await state.run(_view(request))
    ranked = await state.run(_ranked, state, view, query) if query.ranked else None
    return _reply(await state.run(view.page, query, ranked))


async def sample(request: web.Request) -> web.Response:
    state = request.app[STATE]
    view = await state.run(_view(request))
    return _reply(await state.run(view.detail, request.match_info["ref"]))


def _picture(state: State, view: cat.VersionView, ref: str, side: int | None) -> images.Picture:
    sha = view.sha256(ref)
    if side is not None:
        cached = state.thumbnails.get(sha, side)
        if cached is not None:
            return cached
    try:
        data = state.store.get(blob_key(sha))
    except KeyError:
        return images.placeholder("missing", "the sample's bytes are not in the store")
    if side is None:
        return images.original(data)
    made = images.make_thumbnail(data, side)
    state.thumbnails.put(sha, side, made)
    return made


def _picture_response(picture: images.Picture, status: int = 200) -> web.Response:
    headers = {"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"}
    if picture.reason is not None:
        headers["X-Loupe-Placeholder"] = picture.reason
    return web.Response(body=picture.body, status=status, content_type=picture.content_type, headers=headers)


async def thumbnail(request: web.Request) -> web.Response:
    state = request.app[STATE]
    size = request.query.get("size", str(images.THUMB_SIDES[0]))
    if size not in {str(s) for s in images.THUMB_SIDES}:
        raise cat.QueryError(f"size: one of {', '.join(map(str, images.THUMB_SIDES))}")
    view = await state.run(_view(request))
    return _picture_response(await state.run(_picture, state, view, request.match_info["ref"], int(size)))


async def original(request: web.Request) -> web.Response:
    """The stored bytes; 404 with the reason (and a placeholder body) when they cannot be shown."""
    state = request.app[STATE]
    view = await state.run(_view(request))
    picture = await state.run(_picture, state, view, request.match_info["ref"], None)
    return _picture_response(picture, 404 if picture.reason else 200)


async def upload(request: web.Request) -> web.Response:
    """An example image for search (the request body, at most UPLOAD_BYTES): its id, the sha256. Kept in
    memory only (the last UPLOADS_KEPT); it is decoded only by the search, through the guarded decode."""
    data = await request.read()
    if not data:
        raise cat.QueryError("send the image as the request body")
    digest = hashlib.sha256(data).hexdigest()
    state = request.app[STATE]
    with state.lock:
        state.uploads[digest] = data
        state.uploads.move_to_end(digest)
        while len(state.uploads) > UPLOADS_KEPT:
            state.uploads.popitem(last=False)
    return _reply({"id": digest, "size": len(data)})


async def groups(request: web.Request) -> web.Response:
    state = request.app[STATE]
    offset = cat.whole_number("offset", request.query.get("offset", "0"), 10**9)
    limit = max(1, cat.whole_number("limit", request.query.get("limit", "20"), 100))
    view = await state.run(_view(request))
    return _reply(await state.run(view.groups, offset, limit))


async def diff(request: web.Request) -> web.Response:
    state = request.app[STATE]
    catalog = request.app[CATALOG]
    dataset = request.match_info["dataset"]
    a, b = request.query.get("a"), request.query.get("b")
    if not a or not b:
        raise cat.QueryError("give two versions: ?a=VERSION&b=VERSION")
    first = await state.run(catalog.view, dataset, a)
    second = await state.run(catalog.view, dataset, b)
    return _reply(await state.run(cat.diff, first, second))


async def static(request: web.Request) -> web.Response:
    name = request.match_info.get("name", "index.html")
    if name not in STATIC:
        raise cat.NotFound(f"no file {name[:60]!r}")
    body = resources.files("loupe_workers.serve").joinpath("static", name).read_bytes()
    return web.Response(body=body, content_type=STATIC[name], headers={"Cache-Control": "no-cache"})


async def _warm(app: web.Application) -> None:
    """Start reading the latest versions in the pool (and importing what reading Parquet needs, seconds
    the first time) while the browser is still being opened."""
    asyncio.get_running_loop().run_in_executor(app[STATE].pool, app[CATALOG].warm)


async def _close(app: web.Application) -> None:
    app[STATE].pool.shutdown(wait=False, cancel_futures=True)


def make_app(store: ObjectStore, workers: int = 4) -> web.Application:
    app = web.Application(middlewares=[errors], client_max_size=UPLOAD_BYTES)
    app[CATALOG] = cat.Catalog(store)
    app[STATE] = State(store, workers)
    version = "/api/datasets/{dataset}/versions/{version}"
    app.router.add_get("/", static)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/api/datasets", datasets)
    app.router.add_get(f"{version}/facets", facets)
    app.router.add_get(f"{version}/samples", samples)
    app.router.add_get(f"{version}/samples/{{ref}}", sample)
    app.router.add_get(f"{version}/samples/{{ref}}/thumb", thumbnail)
    app.router.add_get(f"{version}/samples/{{ref}}/image", original)
    app.router.add_get(f"{version}/groups", groups)
    app.router.add_get("/api/datasets/{dataset}/diff", diff)
    app.router.add_post("/api/uploads", upload)
    app.on_startup.append(_warm)
    app.on_cleanup.append(_close)
    return app


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (``port`` 0: a free one the system picks)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(128)
    return sock


def serve_forever(
    store: ObjectStore, sock: socket.socket, ready: Callable[[str], None] | None = None
) -> None:
    """Serve on ``sock`` until interrupted; ``ready`` gets the URL once requests are accepted."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/"

    async def main() -> None:
        runner = web.AppRunner(make_app(store), access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        if ready is not None:
            ready(url)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: stop quietly
        asyncio.run(main())
