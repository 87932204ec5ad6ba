"""The live page of ``cdinn watch --serve``: a Starlette app run by uvicorn in a thread.

Read-only by construction: every route is a GET; a scan is looked up by its name in the
watcher's ledger (never by joining a request path onto a folder), and only result files the
watcher wrote are opened. Plotly's JavaScript is served from the installed ``plotly`` package,
so the page works on a beamline network without internet access. Updates reach the page as
server-sent events whenever the ledger changes.
"""

from __future__ import annotations

import asyncio
import json
import threading
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

import numpy as np

from cdinn.watch.watcher import Watcher

MAX_PIXELS = 160  # per axis of a slice sent to the page
MAX_MESH = 64  # per axis of the volume the isosurface is computed on


def _downsample(a: np.ndarray, limit: int) -> np.ndarray:
    step = max(1, int(np.ceil(max(a.shape) / limit)))
    return a[tuple(slice(None, None, step) for _ in a.shape)]


def _rounded(a: np.ndarray, digits: int = 3) -> list:
    return np.where(np.isfinite(a), np.round(a, digits), None).tolist()


@lru_cache(maxsize=32)
def scan_view(path: str, mtime_ns: int) -> dict:
    """What the page draws for one result: amplitude and phase central slices (phase relative
    to its mean, blank outside the object) and, in 3D, the isosurface at 30 % of the maximum
    amplitude with the phase at each vertex. Cached per result file version."""
    from skimage.measure import marching_cubes

    from cdinn.io import read_result
    from cdinn.report.figures import central_slices, flatten_phase, object_box, phase_limit

    result = read_result(path)
    obj = flatten_phase(result.object)
    obj = obj[object_box(obj)]
    amp = np.abs(obj) / max(float(np.abs(obj).max()), 1e-30)
    phase = np.where(amp >= 0.1, np.angle(obj), np.nan)
    slices = [{"plane": plane, "amplitude": _rounded(_downsample(a, MAX_PIXELS)),
               "phase": _rounded(_downsample(p, MAX_PIXELS))}
              for (plane, a), (_, p) in zip(central_slices(amp), central_slices(phase))]
    view = {"ndim": obj.ndim, "chi2": result.chi2, "slices": slices, "phase_limit": phase_limit(phase[amp >= 0.5]), "provenance": {
        k: result.provenance.get(k) for k in ("method", "model", "refine", "recipe", "starts", "voxel_size_nm", "version",
                                             "chi2_over_noise_floor", "retries")}}
    if obj.ndim == 3 and min(obj.shape) >= 3:
        small = _downsample(amp, MAX_MESH)
        step = amp.shape[0] / small.shape[0]
        verts, faces, _, _ = marching_cubes(small, level=0.3)
        idx = np.clip(np.round(verts * step).astype(int), 0, np.array(amp.shape) - 1)
        vphase = np.angle(obj[tuple(idx.T)])
        view["mesh"] = {"x": _rounded(verts[:, 2] * step, 2), "y": _rounded(verts[:, 1] * step, 2),
                        "z": _rounded(verts[:, 0] * step, 2), "i": faces[:, 0].tolist(), "j": faces[:, 1].tolist(),
                        "k": faces[:, 2].tolist(), "phase": _rounded(vphase)}
    return view


def make_app(watcher: Watcher):
    """The Starlette application showing ``watcher``'s scans."""
    from starlette.applications import Starlette
    from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    page = files("cdinn.watch").joinpath("page.html").read_text()
    plotly_js = Path(files("plotly").joinpath("package_data", "plotly.min.js"))

    def table() -> dict:
        return {"scans": watcher.ledger.snapshot(), "backlog": watcher.backlog, "method": watcher.method,
                "in_dir": str(watcher.in_dir), "out_dir": str(watcher.out_dir), "version": watcher.ledger.version}

    async def index(request):
        return HTMLResponse(page)

    async def plotly(request):
        return FileResponse(plotly_js, media_type="text/javascript")

    async def scans(request):
        return JSONResponse(table())

    async def events(request):
        async def stream():
            seen = -1
            while True:
                if await request.is_disconnected():
                    return
                now = (watcher.ledger.version, watcher.backlog)
                if now != seen:
                    seen = now
                    yield f"data: {json.dumps(table())}\n\n"
                await asyncio.sleep(0.1)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    async def scan(request):
        entry = watcher.ledger.entries.get(request.path_params["name"])
        if entry is None or entry.state != "done" or not entry.result:
            return Response("no such finished scan", status_code=404)
        path = watcher.out_dir / entry.result  # a name the watcher wrote, not one from the request
        try:
            view = await asyncio.to_thread(scan_view, str(path), path.stat().st_mtime_ns)
        except (OSError, ValueError) as exc:
            return Response(f"cannot read the result: {exc}", status_code=404)
        return JSONResponse(view)

    routes = [Route("/", index), Route("/plotly.min.js", plotly), Route("/api/scans", scans),
              Route("/api/events", events), Route("/api/scan/{name}", scan)]
    return Starlette(routes=routes)


def serve(watcher: Watcher, host: str = "127.0.0.1", port: int = 8765):
    """Start the page in a daemon thread; returns the uvicorn server (``should_exit = True`` stops it)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(make_app(watcher), host=host, port=port, log_level="warning", lifespan="off",
                                           timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, name="cdinn-watch-page", daemon=True)
    thread.start()
    return server
