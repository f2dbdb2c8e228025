"""The HTTP API and web page (FastAPI).

Jobs are validated before they are queued, by the same engine planning that
``sfumato run`` uses (HTTP 400 with the same issue list), persisted in SQLite,
and run one at a time by a single worker thread in this process, so models
stay loaded between jobs. Progress streams as Server-Sent Events.

Everything a request makes the server compute (parsing, validation, planning,
sweep expansion, PNG import) runs in a worker thread, never on the event loop,
so one heavy request never stalls the others. The front door (host, origin,
content type, token, body size) is :mod:`sfumato_server.guard`.

Every graph the server offers is also a function: ``POST
/api/graphs/{name}/run`` takes the graph's parameters as its body and queues
a job (202), or with ``?wait=true`` waits a bounded time and answers its
outputs; the OpenAPI document holds each graph's parameter and output schema
(from :class:`sfumato.GraphFunction`, the typing ``sfumato.load_function``
gives Python callers). A client's ``Idempotency-Key`` makes a repeated submit
answer the job the first one made; a job may name a webhook (hosts the
operator allowed only, see :mod:`sfumato_server.webhooks`) and ask to
``keep_going`` past a failed branch.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import re
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import anyio
from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParameter
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from sfumato import (
    Engine,
    Graph,
    GraphFunction,
    GraphValidationError,
    ParameterError,
    PathPolicy,
    SfumatoError,
    default_registry,
    graph_to_svg,
    load_function,
    node_as_dict,
    node_input_schema,
    path_inside,
    read_png_metadata,
    shipped_graphs,
    validate_graph,
)

from .events import EventHub
from .guard import Guard, GuardPolicy
from .jobspec import JOB_FIELDS, RequestError, check_plain, parse_json, parse_priority, parse_sweep
from .store import FINAL, IdempotencyConflict, Job, JobStore, QueueDatabaseError
from .webhooks import WebhookPolicy, WebhookSender
from .worker import Worker

STATIC = Path(__file__).resolve().parent / "static"
#: Ids, offsets and limits in URLs are SQLite integers.
MAX_ID = 2**63 - 1
#: The query parameters of ``POST /api/graphs/{name}/run`` (``token`` is the guard's).
FUNCTION_QUERY = frozenset({"wait", "timeout", "keep_going", "webhook", "token"})
#: An idempotency key: 1 to 255 visible ASCII characters (what the IETF draft and common APIs accept).
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")


@dataclass
class ServerConfig:
    """What ``sfumato serve`` was started with."""

    data: Path
    #: A folder of more graphs offered by name (the shipped graphs are always offered), or None.
    graphs: Path | None = None
    token: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    host: str = "127.0.0.1"
    allowed_hosts: tuple[str, ...] = ()
    max_body_bytes: int = 2 * 1024 * 1024
    max_image_bytes: int = 20 * 1024 * 1024
    max_graph_nodes: int = 2000
    max_queued: int = 1000
    max_sweep_runs: int = 256
    max_json_depth: int = 64
    #: Folders jobs may read besides the data folder and the graphs folder (``--allow-read``).
    allow_read: tuple[Path, ...] = ()
    #: Screening, watermarking, signing and retention for every job (``--policy``); None: none.
    policy: Any = None
    #: Which webhook URLs jobs may name (``--webhook-allow``), and how deliveries are retried.
    webhooks: WebhookPolicy = field(default_factory=WebhookPolicy)
    #: Longest ``?wait=true`` a request may ask for, in seconds.
    max_wait_s: float = 60.0
    #: Where jobs run: ``local`` (this process), or an executor a plugin registers (``ray``).
    executor: str = "local"
    #: The executor's ``address`` and ``workers`` (``--address``, ``--workers``).
    executor_address: str | None = None
    executor_workers: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def _issues(error: SfumatoError) -> list[dict[str, Any]]:
    if isinstance(error, GraphValidationError):
        return [issue.as_dict() for issue in error.issues]
    return [{"path": "params", "node": None, "message": str(error)}]


def path_policy(config: ServerConfig) -> PathPolicy:
    """Where jobs may touch files: read the data folder, the graphs folder and ``--allow-read``
    folders; write only inside the data folder's outputs. A job naming any other path is refused at validation."""
    reads = [config.data, *([config.graphs] if config.graphs is not None else []), *config.allow_read]
    # Writes go to the outputs folder only, so no job can overwrite the queue database.
    return PathPolicy.confined(read=reads, write=[config.data / "outputs"])


def make_executor(config: ServerConfig) -> Any:
    """The executor jobs run on (None: this process), found by name among the plugins' executors."""
    if config.executor == "local":
        return None
    factory = default_registry().executors.get(config.executor)
    if factory is None:
        known = ", ".join(["local", *sorted(default_registry().executors)])
        raise SfumatoError(f"unknown executor {config.executor!r} (known: {known})")
    return factory(address=config.executor_address, workers=config.executor_workers, device=config.device,
                   dtype=config.dtype)


def _fingerprint(kind: str, data: Any) -> str:
    """A request's fingerprint for idempotency: the same key with another request is a conflict."""
    return hashlib.sha256(json.dumps([kind, data], sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _schema_name(name: str) -> str:
    """A graph name as an OpenAPI component name (letters, digits, ``.``, ``-``, ``_``)."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name) or "graph"


def _swagger_assets() -> Path | None:
    """The Swagger UI files shipped by the ``fastapi-offline`` package (no CDN)."""
    try:
        import fastapi_offline
    except ImportError:
        return None
    folder = Path(fastapi_offline.__file__).resolve().parent / "static"
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


def create_app(config: ServerConfig) -> FastAPI:
    """The application: API under ``/api``, the page at ``/``.

    Raises :class:`QueueDatabaseError` when the queue database is damaged or foreign.
    """
    store = JobStore(config.data / "queue.sqlite3")
    recovered = store.recover()
    outputs = config.data / "outputs"
    outputs.mkdir(parents=True, exist_ok=True)
    hub = EventHub()
    engine = Engine(device=config.device, dtype=config.dtype, output_dir=outputs, previews=True,
                    path_policy=path_policy(config))
    executor = make_executor(config)
    worker = Worker(store, hub, outputs, engine, max_sweep_runs=config.max_sweep_runs, policy=config.policy,
                    executor=executor)
    webhooks = WebhookSender(store, config.webhooks)
    worker.on_job_end.append(webhooks.send)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # An executor that can stay up (Ray's) keeps its workers, and their loaded models, across jobs.
        held = executor.__enter__() if hasattr(executor, "__enter__") else None
        worker.start()
        webhooks.start()
        watchdog = asyncio.create_task(_watch(worker))
        try:
            yield
        finally:
            watchdog.cancel()
            worker.stop()
            webhooks.stop()
            if held is not None:
                # The worker thread may still be in a job on the executor: wait for it before closing it.
                await anyio.to_thread.run_sync(_join, worker)
                executor.__exit__(None, None, None)

    # The OpenAPI document is built below (each graph's schemas), in a thread: not FastAPI's default route.
    app = FastAPI(title="sfumato", version="1", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    app.state.store, app.state.worker, app.state.recovered = store, worker, recovered
    app.state.webhooks, app.state.executor = webhooks, executor
    app.add_middleware(Guard, policy=GuardPolicy(
        served_host=config.host, allowed_hosts=config.allowed_hosts, token=config.token,
        max_body_bytes=config.max_body_bytes, max_image_bytes=config.max_image_bytes))

    @app.exception_handler(RequestError)
    async def refused(_: Request, error: RequestError) -> JSONResponse:
        return JSONResponse(error.as_dict(), status_code=error.status)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, error: RequestValidationError) -> JSONResponse:
        # FastAPI's default 422 echoes the input; say which field is wrong instead.
        problems = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in error.errors()]
        return _error(400, "; ".join(problems) or "invalid request")

    @app.exception_handler(SfumatoError)
    async def sfumato_error(_: Request, error: SfumatoError) -> JSONResponse:
        # Every SfumatoError is a problem with what was asked for (a bad graph file, a bad value).
        issues = _issues(error) if isinstance(error, GraphValidationError) else None
        return _error(400, str(error).splitlines()[0] if str(error) else type(error).__name__,
                      **({"issues": issues} if issues else {}))

    @app.exception_handler(QueueDatabaseError)
    async def database_unavailable(_: Request, error: QueueDatabaseError) -> JSONResponse:
        return _error(503, str(error))

    @app.exception_handler(sqlite3.DatabaseError)
    async def database_damaged(_: Request, error: sqlite3.DatabaseError) -> JSONResponse:
        # The file went bad while serving (disk full, damaged by another program): say so, not "500".
        return _error(503, f"the queue database cannot be used: {error}")

    # Heavy work (validating, planning, decoding PNGs) gets two threads of its own, so a flood of
    # big submissions queues behind itself instead of taking every thread that cheap requests need.
    heavy = anyio.CapacityLimiter(2)

    async def off_loop(function: Callable[..., Any], *args: Any, limiter: anyio.CapacityLimiter | None = None) -> Any:
        return await anyio.to_thread.run_sync(function, *args, limiter=limiter)

    def graph_files() -> dict[str, Path]:
        # The shipped graphs, then the graphs folder's (a file there wins over a shipped one of its name).
        files = dict(shipped_graphs())
        if config.graphs is not None:
            files.update((p.stem, p) for p in sorted(config.graphs.glob("*.json")))
        return dict(sorted(files.items()))

    def load_named(name: str) -> Graph:
        path = graph_files().get(name)
        if path is None:
            raise RequestError(404, f"no graph named {name!r}; known: {', '.join(graph_files())}")
        return Graph.load(path)

    # -- catalogue (plain ``def``: FastAPI runs these in its thread pool) -------------------

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        """Whether the worker thread is alive, what it is doing, and the queue's size."""
        worker.ensure_alive()
        state = worker.health()
        try:
            queue: Any = {status: store.count(status, patience=1.0) for status in ("queued", "running")}
        except QueueDatabaseError as error:
            queue = {"error": str(error)}
        ok = state["alive"] and not state["waiting_for_database"] and "error" not in queue
        return {"status": "ok" if ok else "degraded", "worker": state, "queue": queue}

    @app.get("/api/graphs")
    def list_graphs() -> list[dict[str, Any]]:
        result = []
        for name, path in graph_files().items():
            try:
                graph = Graph.load(path)
            except SfumatoError:
                continue
            result.append({"name": name, "description": graph.document.description,
                           "params": {k: v.model_dump(exclude_none=True) for k, v in graph.params.items()}})
        return result

    @app.get("/api/graphs/{name}")
    def get_graph(name: str) -> dict[str, Any]:
        graph = load_named(name)
        return {"name": name, "document": graph.to_dict(), "svg": graph_to_svg(graph)}

    @app.get("/api/models")
    def list_models() -> list[dict[str, Any]]:
        return [{"name": source.name, "kind": source.kind, "description": source.description}
                for source in default_registry().models.values()]

    @app.get("/api/nodes")
    def list_nodes() -> list[dict[str, Any]]:
        return [{**node_as_dict(spec), "input_schema": node_input_schema(spec)}
                for spec in sorted(default_registry().nodes.values(), key=lambda s: s.id)]

    @app.get("/api/ports")
    def list_ports() -> dict[str, Any]:
        """Port types and which output type may feed which input type (the engine's own rule,
        subtypes and conversions included), so an editor refuses a link the engine would refuse."""
        ports = default_registry().ports
        names = sorted(ports.types)
        return {
            "types": [{"name": name, "description": ports.types[name].description,
                       "parents": list(ports.types[name].parents), "literal": ports.types[name].literal}
                      for name in names],
            "conversions": [{"from": source, "to": target} for source, target in sorted(ports.conversions)],
            "compatible": {source: [target for target in names if ports.is_compatible(source, target)]
                           for source in names},
        }

    # -- jobs -----------------------------------------------------------------------

    def validate(graph: Graph, param_sets: Any) -> None:
        """The CLI's validation: the engine plans every run (raises on the first run with problems)."""
        for params in param_sets:
            engine.plan(graph, params, output_dir=outputs)

    def job_options(keep_going: Any, webhook: Any) -> dict[str, Any]:
        """A job's options from a request, checked (the webhook against the operator's allow-list)."""
        options: dict[str, Any] = {}
        if keep_going is not None:
            if not isinstance(keep_going, bool):
                raise RequestError(400, "'keep_going' must be true or false")
            if keep_going:
                options["keep_going"] = True
        if webhook is not None:
            options["webhook"] = config.webhooks.check(webhook)
        return options

    def check_key(key: str | None) -> str | None:
        if key is not None and not IDEMPOTENCY_KEY.fullmatch(key):
            raise RequestError(400, "the Idempotency-Key header must be 1 to 255 visible ASCII characters")
        return key

    def replayed(key: str | None, fingerprint: str) -> int | None:
        """The job an earlier request with this key made (None: none); 422 when that request differed."""
        if key is None:
            return None
        found = store.idempotent_job(key)
        if found is None:
            return None
        if found[0] != fingerprint:
            raise RequestError(422, f"the Idempotency-Key {key!r} was already used for job {found[1]} with a "
                                    "different request; use a new key for a new request")
        return found[1]

    def queue(name: str, graph: Graph, params: dict[str, Any], sweep: Any, priority: int, options: dict[str, Any],
              key: str | None, fingerprint: str) -> dict[str, Any]:
        """Validate (the CLI's planning) and queue a job, once per idempotency key."""
        try:
            if len(graph.nodes) > config.max_graph_nodes:
                raise RequestError(413, f"the graph has {len(graph.nodes)} nodes; "
                                        f"the limit is {config.max_graph_nodes}")
            validate(graph, sweep.param_sets(params) if sweep else [params])
        except GraphValidationError as error:
            raise RequestError(400, "invalid graph", _issues(error)) from None
        except ParameterError as error:
            raise RequestError(400, "invalid parameters", _issues(error)) from None
        except SfumatoError as error:
            raise RequestError(400, str(error)) from None
        if store.count("queued") >= config.max_queued:
            raise RequestError(429, f"the queue is full ({config.max_queued} jobs); try again later")
        try:
            job_id, again = store.add_once(name, graph.to_dict(), params, sweep.as_json() if sweep else None,
                                           priority, options=options,
                                           idempotency=(key, fingerprint) if key is not None else None)
        except IdempotencyConflict as conflict:  # a racing request with this key and another body won
            raise RequestError(422, f"{conflict}; use a new key for a new request") from None
        if not again:
            worker.wake.set()
            hub.publish({"job": job_id, "type": "job_queued"})
        return {"id": job_id, "status": "queued", "runs": sweep.size if sweep else 1, "url": f"/api/jobs/{job_id}",
                **({"replayed": True} if again else {})}

    def answer_replay(job_id: int) -> dict[str, Any]:
        job = store.get(job_id)
        status = job.status if job is not None else "deleted"
        return {"id": job_id, "status": status, "url": f"/api/jobs/{job_id}", "replayed": True}

    def prepare_and_queue(body: bytes, key: str | None = None) -> dict[str, Any]:
        """Parse, check, validate and queue a job request (runs in a thread)."""
        key = check_key(key)
        data = parse_json(body, max_depth=config.max_json_depth)
        if not isinstance(data, dict) or "graph" not in data:
            raise RequestError(400, "expected {\"graph\": NAME or a graph document, \"params\": {...}, "
                                    "\"sweep\": {\"axes\": {...}}, \"priority\": 0}")
        unknown = sorted(set(data) - set(JOB_FIELDS))
        if unknown:
            raise RequestError(400, f"unknown field(s) {', '.join(map(repr, unknown))}; "
                                    f"a job has {', '.join(JOB_FIELDS)}")
        fingerprint = _fingerprint("job", data)
        if (earlier := replayed(key, fingerprint)) is not None:
            return answer_replay(earlier)
        params = {} if data.get("params") is None else data["params"]
        if not isinstance(params, dict):
            raise RequestError(400, "'params' must be an object of parameter values")
        priority = parse_priority(data.get("priority"))
        sweep = parse_sweep(data.get("sweep"), max_runs=config.max_sweep_runs)
        options = job_options(data.get("keep_going"), data.get("webhook"))
        try:
            if isinstance(data["graph"], str):
                graph, name = load_named(data["graph"]), data["graph"]
            elif isinstance(data["graph"], dict):
                graph = Graph.from_dict(data["graph"], source="<request>")
                name = graph.name
            else:
                raise RequestError(400, "'graph' must be the name of a graph or a graph document")
        except SfumatoError as error:
            raise RequestError(400, str(error)) from None
        return queue(name, graph, params, sweep, priority, options, key, fingerprint)

    # Each graph as a function (its schemas), built once per graph file version.
    functions: dict[str, tuple[tuple[str, float], GraphFunction]] = {}

    def function_of(name: str) -> GraphFunction:
        """The named graph as a :class:`GraphFunction` (404 when there is none; 400 when it is invalid)."""
        path = graph_files().get(name)
        if path is None:
            raise RequestError(404, f"no graph named {name!r}; known: {', '.join(graph_files())}")
        try:
            version = (str(path), path.stat().st_mtime)
        except OSError:
            raise RequestError(404, f"the graph {name!r} was just removed") from None
        known = functions.get(name)
        if known is not None and known[0] == version:
            return known[1]
        try:
            function = load_function(Graph.load(path), engine=engine)
        except GraphValidationError as error:
            raise RequestError(400, f"the graph {name!r} is invalid", _issues(error)) from None
        except SfumatoError as error:  # not a graph file at all (bad JSON, wrong version)
            raise RequestError(400, f"the graph {name!r} cannot be loaded: {error}") from None
        functions[name] = (version, function)
        return function

    def prepare_function_job(name: str, body: bytes, key: str | None, keep_going: bool,
                             webhook: str | None) -> dict[str, Any]:
        """``POST /api/graphs/{name}/run``: the body is the graph's parameters (runs in a thread)."""
        key = check_key(key)
        function = function_of(name)
        params = parse_json(body, max_depth=config.max_json_depth) if body.strip() else {}
        if not isinstance(params, dict):
            raise RequestError(400, f"the body must be a JSON object of {name!r}'s parameters "
                                    f"({', '.join(function.graph.params) or 'it has none'})")
        options = job_options(keep_going, webhook)
        fingerprint = _fingerprint("function", {"graph": name, "params": params, "options": options})
        if (earlier := replayed(key, fingerprint)) is not None:
            return answer_replay(earlier)
        problems = function.parameter_problems(params)
        if problems:
            raise RequestError(400, "; ".join(p["message"] for p in problems),
                               [{"path": f"params.{p['parameter']}", "node": None, **p} for p in problems])
        return queue(name, function.graph, params, None, 0, options, key, fingerprint)

    async def wait_for_end(job_id: int, seconds: float) -> Job | None:
        """The job once it has ended, or as it stands after ``seconds``."""
        events = hub.subscribe(job_id)
        try:
            deadline = asyncio.get_running_loop().time() + seconds
            while True:
                # Read after subscribing: a job that ended in between is seen here, not waited for.
                job = await off_loop(store.get, job_id)
                left = deadline - asyncio.get_running_loop().time()
                if job is None or job.status in FINAL or left <= 0:
                    return job
                with contextlib.suppress(TimeoutError):
                    # Any event of the job (or a second) is a reason to look again.
                    await asyncio.wait_for(events.get(), timeout=min(left, 1.0))
        finally:
            hub.unsubscribe(events)

    def check_document(body: bytes) -> dict[str, Any]:
        """``sfumato validate --json`` for a posted graph: the CLI's validation, then the job's planning."""
        data = parse_json(body, max_depth=config.max_json_depth)
        if not isinstance(data, dict) or not isinstance(data.get("graph"), dict):
            raise RequestError(400, "expected {\"graph\": a graph document, \"params\": {...}}")
        params = {} if data.get("params") is None else data["params"]
        if not isinstance(params, dict):
            raise RequestError(400, "'params' must be an object of parameter values")
        warnings: list[dict[str, Any]] = []  # reported, never a reason to refuse the graph
        try:
            graph = Graph.from_dict(data["graph"], source="<editor>")
            if len(graph.nodes) > config.max_graph_nodes:
                raise RequestError(413, f"the graph has {len(graph.nodes)} nodes; "
                                        f"the limit is {config.max_graph_nodes}")
            found = [issue.as_dict() for issue in validate_graph(graph, default_registry(), warnings=True)]
            issues = [issue for issue in found if issue["severity"] != "warning"]
            warnings = [issue for issue in found if issue["severity"] == "warning"]
            if not issues:
                validate(graph, [params])  # what queueing it would check too: parameters, paths
        except (GraphValidationError, ParameterError) as error:
            issues = _issues(error)
        except SfumatoError as error:  # any other refusal of the input (a limit)
            issues = [{"path": "$", "node": None, "message": str(error)}]
        return {"valid": not issues, "issues": issues, "warnings": warnings}

    @app.post("/api/validate")
    async def validate_document(request: Request) -> Any:
        """Validate a graph document without queueing it: ``{"valid": bool, "issues": [...], "warnings": [...]}``."""
        return await off_loop(check_document, await request.body(), limiter=heavy)

    @app.post("/api/jobs", status_code=201)
    async def submit(request: Request) -> Any:
        """Queue a job: ``{"graph": NAME or document, "params": {...}, "sweep": {"axes": {...}}, "priority": 0,
        "keep_going": false, "webhook": URL}`` (an ``Idempotency-Key`` header makes a repeat answer the same job)."""
        return await off_loop(prepare_and_queue, await request.body(), request.headers.get("idempotency-key"),
                              limiter=heavy)

    @app.post("/api/graphs/{name}/run", status_code=202, include_in_schema=False)
    async def run_graph(request: Request, name: str, wait: bool = False,
                        timeout: float | None = Query(None, gt=0, le=86400), keep_going: bool = False,
                        webhook: str | None = Query(None, max_length=2048)) -> Any:
        """Run a graph as a function; each graph's own entry in the OpenAPI document describes it."""
        unknown = sorted(set(request.query_params) - FUNCTION_QUERY)
        if unknown:
            # Parameters go in the body: a misspelt option or a parameter in the URL is not silently dropped.
            raise RequestError(400, f"unknown query parameter(s) {', '.join(map(repr, unknown))}; this endpoint "
                                    f"takes {', '.join(sorted(FUNCTION_QUERY - {'token'}))} (the graph's "
                                    "parameters go in the JSON body)")
        queued = await off_loop(prepare_function_job, name, await request.body(),
                                request.headers.get("idempotency-key"), keep_going, webhook, limiter=heavy)
        location = {"Location": queued["url"]}
        if not wait:
            return JSONResponse(queued, status_code=202, headers=location)
        seconds = min(timeout or config.max_wait_s, config.max_wait_s)
        job = await wait_for_end(queued["id"], seconds)
        if job is None:
            raise RequestError(404, f"job {queued['id']} was deleted")
        if job.status not in FINAL:
            # Not a hang, and not a 2xx a client could take for the answer: the job goes on, poll its URL.
            return JSONResponse({"error": f"job {job.id} did not end within {seconds:g} s (it is {job.status}); "
                                          f"it goes on: poll {queued['url']} for its result",
                                 "id": job.id, "status": job.status, "url": queued["url"]},
                                status_code=408, headers=location)
        return JSONResponse(job.result(), status_code=200, headers=location)

    @app.get("/api/jobs")
    def list_jobs(status: str | None = None, limit: int = Query(50, ge=-MAX_ID, le=MAX_ID),
                  offset: int = Query(0, ge=0, le=MAX_ID)) -> dict[str, Any]:
        if status is not None and status not in ("queued", "running", *FINAL):
            raise RequestError(400, f"unknown status {status[:40]!r}; one of queued, running, {', '.join(FINAL)}")
        jobs, total = store.list(status, max(1, min(limit, 500)), offset)
        return {"total": total, "jobs": [job.summary() for job in jobs]}

    @app.get("/api/jobs/{job_id}")
    def get_job(job_id: int = PathParameter(ge=0, le=MAX_ID)) -> dict[str, Any]:
        job = store.get(job_id)
        if job is None:
            raise RequestError(404, f"no job {job_id}")
        return {**job.detail(), "result": job.result()}

    @app.post("/api/jobs/{job_id}/cancel")
    def cancel(job_id: int = PathParameter(ge=0, le=MAX_ID)) -> Any:
        job = store.get(job_id)
        if job is None:
            raise RequestError(404, f"no job {job_id}")
        if store.cancel_queued(job_id):
            hub.publish({"job": job_id, "type": "job_cancelled"})
            webhooks.send(job_id)
            return {"id": job_id, "status": "cancelled"}
        if job.status == "running" and worker.cancel(job_id):
            return {"id": job_id, "status": "cancelling"}
        if job.status == "running" and executor is not None:
            return _error(409, f"job {job_id} is running on the {config.executor} executor, where a running job "
                               "cannot be stopped; it ends on its own")
        return _error(409, f"job {job_id} is {job.status}; only queued or running jobs can be cancelled")

    async def stream(job_id: int | None, request: Request) -> AsyncIterator[str]:
        queue = hub.subscribe(job_id)
        try:
            if job_id is not None:
                job = await off_loop(store.get, job_id)
                if job is None:
                    return
                # A job that already ended says how (with its error): a page that starts
                # listening after a job failed at once must not wait forever.
                status = {"job": job_id, "type": "status", "status": job.status}
                if job.status in FINAL:
                    status["error"] = job.error
                yield f"data: {json.dumps(status)}\n\n"
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
    async def job_events(request: Request, job_id: int = PathParameter(ge=0, le=MAX_ID)) -> StreamingResponse:
        if await off_loop(store.get, job_id) is None:
            raise RequestError(404, f"no job {job_id}")
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
            found = path.is_file()
        except (ValueError, OSError) as error:
            raise RequestError(400, f"not a file name inside the outputs folder ({type(error).__name__})") from None
        if not found:
            raise RequestError(404, "no such file")
        return FileResponse(path)

    def read_import(body: bytes) -> dict[str, Any]:
        """The graph, parameters and seed stored in a PNG, checked as untrusted input (runs in a thread)."""
        with tempfile.NamedTemporaryFile(suffix=".png") as handle:
            handle.write(body)
            handle.flush()
            try:
                data = read_png_metadata(handle.name)
            except Exception:  # noqa: BLE001 - any failure to decode an uploaded file is the file's fault
                raise RequestError(400, "this file is not a PNG holding sfumato metadata "
                                        "(was it saved by sfumato's image.save?)") from None
        check_plain(data, max_depth=config.max_json_depth, where="metadata")
        graph, params, seed = data.get("graph"), data.get("params", {}), data.get("seed")
        if not isinstance(graph, dict) or not isinstance(params, dict) \
                or not (seed is None or (isinstance(seed, int) and not isinstance(seed, bool))):
            raise RequestError(400, "this PNG's sfumato metadata is damaged: expected a graph object, "
                                    "a params object and an integer seed")
        try:
            stored = Graph.from_dict(graph, source="PNG metadata")
            issues = validate_graph(stored, default_registry())
            if issues:
                raise GraphValidationError(issues, "PNG metadata")
            name = stored.name
        except GraphValidationError as error:
            raise RequestError(400, "the graph stored in this PNG is invalid", _issues(error)) from None
        except SfumatoError as error:
            raise RequestError(400, f"the graph stored in this PNG is invalid: {error}") from None
        return {"graph": name if name in graph_files() else graph, "graph_name": name, "params": params, "seed": seed}

    @app.post("/api/import-png")
    async def import_png(request: Request) -> Any:
        """The workflow and settings stored in a PNG made by sfumato (body: the PNG bytes)."""
        return await off_loop(read_import, await request.body(), limiter=heavy)

    # -- the API description: FastAPI's, with each graph as a function --------------------

    described: dict[str, Any] = {}

    def openapi_document() -> dict[str, Any]:
        """The OpenAPI document; rebuilt when a graph file changes (the graphs folder is read live)."""
        if "base" not in described:
            described["base"] = get_openapi(title=app.title, version=app.version, routes=app.routes,
                                            description="sfumato's job queue; each graph is also a function "
                                                        "at POST /api/graphs/{name}/run")
        files = graph_files()
        versions = tuple((name, str(path), path.stat().st_mtime if path.exists() else 0.0)
                         for name, path in files.items())
        if described.get("versions") != versions:
            document = copy.deepcopy(described["base"])
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            schemas.update(_SHARED_SCHEMAS)
            for name in files:
                try:
                    function = function_of(name)
                except RequestError:
                    continue  # a graph that does not validate is not offered as a function
                key = _schema_name(name)
                schemas[f"{key}.params"] = function.input_schema
                schemas[f"{key}.outputs"] = function.output_schema
                schemas[f"{key}.result"] = _result_schema(name, f"#/components/schemas/{key}.outputs")
                document.setdefault("paths", {})[f"/api/graphs/{name}/run"] = _function_path(
                    name, key, function.graph.document.description)
            described["versions"], described["document"] = versions, document
        return described["document"]

    @app.get("/api/openapi.json", include_in_schema=False)
    def openapi_json() -> JSONResponse:
        return JSONResponse(openapi_document())

    # -- docs (served from a package, so they work offline) and the page -----------------

    assets = _swagger_assets()
    if assets is not None:
        app.mount("/api/docs/assets", StaticFiles(directory=assets), name="docs-assets")

    @app.get("/api/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        if assets is None:
            return HTMLResponse("<p>The API description is at <a href='/api/openapi.json'>/api/openapi.json</a>; "
                                "install fastapi-offline for the interactive page.</p>")
        return get_swagger_ui_html(openapi_url="/api/openapi.json", title="sfumato API",
                                   swagger_js_url="/api/docs/assets/swagger-ui-bundle.js",
                                   swagger_css_url="/api/docs/assets/swagger-ui.css",
                                   swagger_favicon_url="/static/favicon.svg")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app


def _join(worker: Worker) -> None:
    if worker.thread is not None:
        worker.thread.join(timeout=600)


def _error_schema(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


_SHARED_SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {
        "error": {"type": "string"},
        "issues": {"type": "array", "items": {"type": "object", "properties": {
            "path": {"type": "string"}, "parameter": {"type": "string"}, "value": {}, "message": {"type": "string"}}}},
        "id": {"type": "integer"}, "status": {"type": "string"}, "url": {"type": "string"}}},
    "QueuedJob": {"type": "object", "required": ["id", "status", "url"], "properties": {
        "id": {"type": "integer"}, "status": {"type": "string"}, "url": {"type": "string"},
        "runs": {"type": "integer"},
        "replayed": {"type": "boolean", "description": "an earlier request with this Idempotency-Key made the job"}}},
}


def _result_schema(name: str, outputs: str) -> dict[str, Any]:
    return {"title": f"{name} result", "type": "object",
            "required": ["id", "status", "graph", "outputs", "files", "error", "partial", "url"], "properties": {
                "id": {"type": "integer"}, "status": {"enum": ["done", "failed", "cancelled"]},
                "graph": {"type": "string"}, "outputs": {"$ref": outputs},
                "files": {"type": "array", "items": {"type": "string"}, "description": "URLs of the files written"},
                "error": {"type": ["string", "null"]},
                "partial": {"type": "boolean", "description": "failed, with the outputs of the branches that "
                                                               "finished (keep_going)"},
                "url": {"type": "string"}}}


def _function_path(name: str, key: str, description: str) -> dict[str, Any]:
    """The OpenAPI path item of ``POST /api/graphs/{name}/run``."""
    def query(param: str, schema: dict[str, Any], text: str) -> dict[str, Any]:
        return {"name": param, "in": "query", "required": False, "schema": schema, "description": text}
    return {"post": {
        "tags": ["graphs"], "operationId": f"run_{key}", "summary": f"Run the graph {name!r}",
        "description": (description + "\n\n" if description else "") +
        "The body is the graph's parameters (all optional ones may be left out). Queues a job and answers 202 "
        "with its URL; with ?wait=true waits (at most the server's limit) and answers its result.",
        "parameters": [
            query("wait", {"type": "boolean", "default": False}, "wait for the job to end and answer its result"),
            query("timeout", {"type": "number", "exclusiveMinimum": 0}, "seconds to wait (capped by the server)"),
            query("keep_going", {"type": "boolean", "default": False},
                  "when a node fails, let independent branches finish and keep their outputs"),
            query("webhook", {"type": "string", "format": "uri"},
                  "a URL called with the result when the job ends (hosts the server allows only)"),
            {"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string"},
             "description": "a repeated request with this key answers the job the first one made"}],
        "requestBody": {"required": False, "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{key}.params"}}}},
        "responses": {
            "200": {"description": "the job ended (?wait=true)", "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{key}.result"}}}},
            "202": {"description": "the job is queued", "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/QueuedJob"}}}},
            "400": _error_schema("bad parameters (each named with the value given) or a refused webhook"),
            "404": _error_schema("no graph of this name"),
            "408": _error_schema("?wait=true: the job did not end in time; it goes on at its URL"),
            "422": _error_schema("the Idempotency-Key was used with a different request"),
        }}}


async def _watch(worker: Worker) -> None:
    """Restart the worker thread if it ever ends while the server runs."""
    while True:
        await asyncio.sleep(1.0)
        worker.ensure_alive()
