"""The HTTP API and web page (FastAPI).

Jobs are validated before they are queued (HTTP 400 with the same issue list
as ``sfumato validate``), persisted in SQLite, and run one at a time by a
single worker thread in this process, so models stay loaded between jobs.
Progress streams as Server-Sent Events.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from sfumato import (
    Engine,
    Graph,
    GraphValidationError,
    ParameterError,
    default_registry,
    node_as_dict,
    node_input_schema,
    path_inside,
    plan_run,
    read_png_metadata,
)
from sfumato import graph_to_svg as to_svg

from .events import EventHub
from .store import FINAL, JobStore
from .worker import Worker

STATIC = Path(__file__).resolve().parent / "static"


@dataclass
class ServerConfig:
    """What ``sfumato serve`` was started with."""

    data: Path
    graphs: Path
    token: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    max_body_bytes: int = 2 * 1024 * 1024
    max_graph_nodes: int = 2000
    max_queued: int = 1000
    max_sweep_runs: int = 256
    extra: dict[str, Any] = field(default_factory=dict)


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def create_app(config: ServerConfig) -> FastAPI:
    """The application: API under ``/api``, the page at ``/``."""
    store = JobStore(config.data / "queue.sqlite3")
    recovered = store.recover()
    outputs = config.data / "outputs"
    outputs.mkdir(parents=True, exist_ok=True)
    hub = EventHub()
    engine = Engine(device=config.device, dtype=config.dtype, output_dir=outputs, previews=True)
    worker = Worker(store, hub, outputs, engine)
    app = FastAPI(title="sfumato", version="1", docs_url="/api/docs", openapi_url="/api/openapi.json")
    app.state.store, app.state.worker, app.state.recovered = store, worker, recovered

    @app.on_event("startup")
    async def start_worker() -> None:
        worker.start()

    @app.on_event("shutdown")
    async def stop_worker() -> None:
        worker.stopping.set()
        worker.wake.set()

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        public = request.url.path == "/" or request.url.path.startswith("/static/")
        if config.token is not None and not public:
            given = request.headers.get("authorization", "").removeprefix("Bearer ").strip() \
                or request.query_params.get("token", "")
            if not secrets.compare_digest(given, config.token):
                return _error(401, "this server needs a token: 'Authorization: Bearer TOKEN' or ?token=TOKEN")
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > config.max_body_bytes:
            return _error(413, f"request body is {length} bytes; the limit is {config.max_body_bytes}")
        return await call_next(request)

    async def read_json(request: Request) -> Any:
        body = await request.body()
        if len(body) > config.max_body_bytes:
            raise HTTPException(413, f"request body is larger than {config.max_body_bytes} bytes")
        try:
            return json.loads(body or b"{}")
        except json.JSONDecodeError as error:
            raise HTTPException(400, f"invalid JSON: {error.msg} (line {error.lineno}, column {error.colno})")

    def graph_files() -> dict[str, Path]:
        return {p.stem: p for p in sorted(config.graphs.glob("*.json"))}

    def load_named(name: str) -> Graph:
        path = graph_files().get(name)
        if path is None:
            raise HTTPException(404, f"no graph named {name!r}; known: {', '.join(graph_files())}")
        return Graph.load(path)

    # -- catalogue -------------------------------------------------------------------

    @app.get("/api/graphs")
    def list_graphs() -> list[dict[str, Any]]:
        result = []
        for name, path in graph_files().items():
            try:
                graph = Graph.load(path)
            except GraphValidationError:
                continue
            result.append({"name": name, "description": graph.document.description,
                           "params": {k: v.model_dump(exclude_none=True) for k, v in graph.params.items()}})
        return result

    @app.get("/api/graphs/{name}")
    def get_graph(name: str) -> dict[str, Any]:
        graph = load_named(name)
        return {"name": name, "document": graph.to_dict(), "svg": to_svg(graph)}

    @app.get("/api/models")
    def list_models() -> list[dict[str, Any]]:
        return [{"name": source.name, "kind": source.kind, "description": source.description}
                for source in default_registry().models.values()]

    @app.get("/api/nodes")
    def list_nodes() -> list[dict[str, Any]]:
        return [{**node_as_dict(spec), "input_schema": node_input_schema(spec)}
                for spec in sorted(default_registry().nodes.values(), key=lambda s: s.id)]

    # -- jobs -----------------------------------------------------------------------

    @app.post("/api/jobs", status_code=201)
    async def submit(request: Request) -> Any:
        body = await read_json(request)
        if not isinstance(body, dict) or "graph" not in body:
            return _error(400, "expected {\"graph\": NAME or a graph document, \"params\": {...}}")
        try:
            if isinstance(body["graph"], str):
                graph = load_named(body["graph"])
                name = body["graph"]
            else:
                graph = Graph.from_dict(body["graph"], source="<request>")
                name = graph.name
        except GraphValidationError as error:
            return _error(400, "invalid graph", issues=[i.as_dict() for i in error.issues])
        if len(graph.nodes) > config.max_graph_nodes:
            return _error(413, f"the graph has {len(graph.nodes)} nodes; the limit is {config.max_graph_nodes}")
        params = body.get("params") or {}
        sweep = body.get("sweep")
        if not isinstance(params, dict) or (sweep is not None and not isinstance(sweep, dict)):
            return _error(400, "'params' must be an object and 'sweep' an object of axes")
        text_params = {k: v if isinstance(v, str) else json.dumps(v) for k, v in params.items()}
        try:
            if sweep:
                from sfumato.sweeps import combine, parse_axis

                axes = [parse_axis(f"{k}={v}") for k, v in (sweep.get("axes") or {}).items()]
                param_sets = combine(axes, zip_axes=bool(sweep.get("zip")), base=text_params)
                if len(param_sets) > config.max_sweep_runs:
                    return _error(413, f"the sweep makes {len(param_sets)} runs; the limit is {config.max_sweep_runs}")
                for param_set in param_sets:
                    plan_run(graph, default_registry(), param_set, params_from_text=True)
            else:
                plan_run(graph, default_registry(), text_params, params_from_text=True)
        except GraphValidationError as error:
            return _error(400, "invalid graph", issues=[i.as_dict() for i in error.issues])
        except ParameterError as error:
            return _error(400, "invalid parameters", issues=[{"path": "params", "node": None, "message": str(error)}])
        if store.count("queued") >= config.max_queued:
            return _error(429, f"the queue is full ({config.max_queued} jobs); try again later")
        job_id = store.add(name, graph.to_dict(), text_params, sweep, int(body.get("priority", 0)))
        worker.wake.set()
        hub.publish({"job": job_id, "type": "job_queued"})
        return {"id": job_id, "status": "queued"}

    @app.get("/api/jobs")
    def list_jobs(status: str | None = None, limit: int = 50, offset: int = 0) -> dict[str, Any]:
        if status is not None and status not in ("queued", "running", *FINAL):
            raise HTTPException(400, f"unknown status {status!r}")
        jobs, total = store.list(status, max(1, min(limit, 500)), max(0, offset))
        return {"total": total, "jobs": [job.summary() for job in jobs]}

    @app.get("/api/jobs/{job_id}")
    def get_job(job_id: int) -> dict[str, Any]:
        job = store.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        return job.detail()

    @app.post("/api/jobs/{job_id}/cancel")
    def cancel(job_id: int) -> Any:
        job = store.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        if store.cancel_queued(job_id):
            hub.publish({"job": job_id, "type": "job_cancelled"})
            return {"id": job_id, "status": "cancelled"}
        if job.status == "running" and worker.cancel(job_id):
            return {"id": job_id, "status": "cancelling"}
        return _error(409, f"job {job_id} is {job.status}; only queued or running jobs can be cancelled")

    async def stream(job_id: int | None, request: Request) -> Any:
        queue = hub.subscribe(job_id)
        try:
            if job_id is not None:
                job = store.get(job_id)
                if job is None:
                    return
                yield f"data: {json.dumps({'job': job_id, 'type': 'status', 'status': job.status})}\n\n"
                if job.status in FINAL:
                    return
            while not await request.is_disconnected():
                try:
                    text = await asyncio.wait_for(queue.get(), timeout=10)
                except asyncio.TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                yield f"data: {text}\n\n"
                if job_id is not None and json.loads(text)["type"] in ("job_done", "job_failed", "job_cancelled"):
                    return
        finally:
            hub.unsubscribe(queue)

    @app.get("/api/jobs/{job_id}/events")
    async def job_events(job_id: int, request: Request) -> StreamingResponse:
        if store.get(job_id) is None:
            raise HTTPException(404, f"no job {job_id}")
        return StreamingResponse(stream(job_id, request), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    @app.get("/api/events")
    async def all_events(request: Request) -> StreamingResponse:
        return StreamingResponse(stream(None, request), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    @app.get("/api/files/{relative:path}")
    def get_file(relative: str) -> FileResponse:
        try:
            path = path_inside(outputs, relative)
        except ValueError as error:
            raise HTTPException(400, str(error))
        if not path.is_file():
            raise HTTPException(404, f"no file {relative}")
        return FileResponse(path)

    @app.post("/api/import-png")
    async def import_png(request: Request) -> Any:
        import tempfile

        body = await request.body()
        if len(body) > config.max_body_bytes:
            return _error(413, f"the image is larger than {config.max_body_bytes} bytes")
        with tempfile.NamedTemporaryFile(suffix=".png") as handle:
            handle.write(body)
            handle.flush()
            try:
                data = read_png_metadata(handle.name)
            except (OSError, ValueError, SyntaxError):
                return _error(400, "this PNG holds no sfumato metadata (was it saved by sfumato?)")
        name = data["graph"].get("name", "")
        return {"graph": name if name in graph_files() else data["graph"], "graph_name": name,
                "params": data.get("params", {}), "seed": data.get("seed")}

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/")
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app
