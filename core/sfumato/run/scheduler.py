"""The one scheduler: a ready-queue over (run, node) pairs.

A single run, ``--jobs N``, a sweep's many runs and the batched calls of
``batch`` nodes are all the same loop (after ComfyUI's ``ExecutionList``):

- every run contributes the nodes it must run (those not cached); a pair
  ``(run, node)`` is *ready* when the node's sources in that run have finished;
- a node id is *launched* once every run that needs it is ready for it (or
  blocked), lowest topological rank first, so a sweep's runs advance together
  and their calls of one node meet in one place;
- there, pairs with the same signature run once and share the result, pairs
  already in the cache take it, and a node with a ``batch`` function receives
  the remaining calls in batches of ``batch_size``;
- a failed pair blocks its descendants in its own run only; a run that does
  not keep going stops the whole schedule;
- a node with lazy inputs (``flow.if``) is ready once its eager sources have
  finished; it is then asked which lazy inputs it needs, and only the nodes
  feeding those join its run's queue (the node waits for them). Untaken
  branches never run. One queue still decides everything.

With ``jobs == 1`` units run inline on the calling thread (no thread-pool
overhead for the common case); with more, up to ``jobs`` units run at once.
One run on one job with no lazy inputs walks its plan order directly: there,
that order is the queue's own choice, so the bookkeeping is skipped
(:meth:`Scheduler._run_in_order`).
"""

from __future__ import annotations

import heapq
import threading
from collections import defaultdict, deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import RunCancelledError
from ..plugin.events import ACTIVE_RUN
from .report import NodeStatus

#: A node in one of these states will not produce a value in this run.
_NOT_RUNNING = (NodeStatus.FAILED, NodeStatus.BLOCKED)

if TYPE_CHECKING:
    from .planning import PlannedNode
    from .run_state import RunState


@dataclass(slots=True)
class _RunQueue:
    """Readiness of one run's nodes: how many sources each still waits for, and who waits on whom."""

    state: RunState
    waiting: dict[str, int] = field(default_factory=dict)
    consumers: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    #: Lazy nodes already told which lazy inputs they need.
    resolved: set[str] = field(default_factory=set)


class Scheduler:
    """Runs the nodes of one or more runs; see the module docstring.

    Args:
        runs: the runs, each already begun (``RunState.begin`` walked the cache).
        jobs: how many units (single or batched calls) may run at once.
        batch_size: the most calls one ``batch`` function call receives.
        cancel_event: set to stop launching work; running nodes see it through their context.
    """

    def __init__(self, runs: list[RunState], *, jobs: int = 1, batch_size: int = 1,
                 cancel_event: threading.Event | None = None) -> None:
        self.jobs = max(1, jobs)
        self.batch_size = max(1, batch_size)
        self.cancel_event = cancel_event or threading.Event()
        self._queues = [_RunQueue(state) for state in runs]
        self._rank: dict[str, int] = {}
        #: node id -> pairs ready to run / number of pairs still waiting for sources.
        self._ready: dict[str, list[_RunQueue]] = defaultdict(list)
        self._unready: dict[str, int] = defaultdict(int)
        self._launchable: list[tuple[int, str]] = []
        #: One run, one job, no lazy inputs: see :meth:`_run_in_order`.
        self._in_order = self.jobs == 1 and len(runs) == 1 and not any(
            runs[0].plan.nodes[node_id].spec.lazy is not None for node_id in runs[0].to_run)
        if not self._in_order:
            for queue in self._queues:
                self._enqueue(queue)

    # -- bookkeeping -------------------------------------------------------------

    def _enqueue(self, queue: _RunQueue, to_run: list[str] | None = None) -> None:
        """Add nodes of a run (all it must run, or those a lazy input added) to the queue."""
        state = queue.state
        first = to_run is None
        to_run = state.to_run if to_run is None else to_run
        waiting = queue.waiting
        pending = set(to_run) if first else set(to_run) | {n for n in waiting if _unfinished(state, n)}
        nodes = state.plan.nodes
        rank, consumers = self._rank, queue.consumers
        ready_now = []
        for node_id in to_run:
            if node_id not in rank:
                rank[node_id] = len(rank)
            node = nodes[node_id]
            lazy = node.spec.lazy
            count = 0
            for link in node.links:
                if link.source in pending and (lazy is None or link.input not in lazy.names):
                    count += 1
                    consumers[link.source].append(node_id)
            waiting[node_id] = count
            if count:
                self._unready[node_id] += 1
            else:
                ready_now.append(node_id)
        for node_id in ready_now:
            self._became_ready(queue, node_id)

    def _became_ready(self, queue: _RunQueue, node_id: str) -> None:
        """A pair's sources have finished: it is ready, unless lazy inputs it needs must run first."""
        node = queue.state.plan.nodes[node_id]
        if node_id not in queue.resolved and node.spec.lazy is not None:
            queue.resolved.add(node_id)
            if self._wait_for_lazy(queue, node):
                return
        self._ready[node_id].append(queue)
        if not self._unready[node_id]:
            heapq.heappush(self._launchable, (self._rank[node_id], node_id))

    def _wait_for_lazy(self, queue: _RunQueue, node: PlannedNode) -> bool:
        """Ask a lazy node what it needs and queue that; True when it must wait (or failed)."""
        state = queue.state
        try:
            needed = state.lazy_needed(node)
        except (KeyboardInterrupt, RunCancelledError):
            raise
        except Exception as error:  # noqa: BLE001 - fails like the node itself (raises unless keeping going)
            state.fail(node, error, 0.0)
            queue.waiting[node.id] = -1
            self._block_consumers(queue, node.id)
            return True
        sources = [edge.source for edge in node.links if edge.input in needed and edge.source not in state.values]
        if not sources:
            return False
        if any(state.report.nodes[source].status in _NOT_RUNNING for source in sources):
            state.block(node.id)  # a branch it needs already failed in this run (kept going)
            queue.waiting[node.id] = -1
            self._block_consumers(queue, node.id)
            return True
        added = state.activate(sources)
        # Before the new nodes are queued, so none can be released before the wait is counted.
        count = 0
        for source in dict.fromkeys(sources):
            if source not in state.values:
                count += 1
                queue.consumers[source].append(node.id)
        if not count:
            return False
        queue.waiting[node.id] = count
        self._unready[node.id] += 1
        self._enqueue(queue, added)
        return True

    def _maybe_launchable(self, node_id: str) -> None:
        if not self._unready[node_id] and self._ready[node_id]:
            heapq.heappush(self._launchable, (self._rank[node_id], node_id))

    def _done(self, queue: _RunQueue, node_id: str, ok: bool) -> None:
        """A pair finished (ok) or failed: release or block what waits on it."""
        if not ok:
            self._block_consumers(queue, node_id)
            return
        waiting, unready = queue.waiting, self._unready
        for consumer in queue.consumers.get(node_id, ()):
            remaining = waiting[consumer] - 1
            waiting[consumer] = remaining
            if remaining == 0:
                unready[consumer] -= 1
                self._became_ready(queue, consumer)

    def _block_consumers(self, queue: _RunQueue, node_id: str) -> None:
        stack = list(queue.consumers.get(node_id, ()))
        while stack:
            current = stack.pop()
            if queue.waiting.get(current, 0) < 0:
                continue  # already blocked
            queue.waiting[current] = -1
            self._unready[current] -= 1
            queue.state.block(current)
            self._maybe_launchable(current)
            stack.extend(queue.consumers.get(current, ()))

    # -- running -----------------------------------------------------------------

    def run(self) -> None:
        """Run every pair; raises the first failure of a run that does not keep going."""
        if self._in_order:
            self._run_in_order(self._queues[0].state)
            return
        if self.jobs == 1:
            launchable, done, ready = self._launchable, self._done, self._ready
            single = self._queues[0] if len(self._queues) == 1 else None
            while launchable:
                self._check_cancelled()
                _, node_id = heapq.heappop(launchable)
                if single is not None:
                    # One run (the common case): no sharing or batching to arrange.
                    del ready[node_id]
                    done(single, node_id, single.state.run_node(single.state.plan.nodes[node_id]))
                    continue
                for unit in self._units(node_id):
                    for queue, finished, ok in self._execute(unit):
                        done(queue, finished, ok)
            return
        with ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="sfumato-node") as pool:
            running: dict[Future[list[_Completion]], _Unit] = {}
            waiting_units: deque[_Unit] = deque()
            while self._launchable or waiting_units or running:
                while self._launchable:
                    _, node_id = heapq.heappop(self._launchable)
                    waiting_units.extend(self._units(node_id))
                while waiting_units and len(running) < self.jobs:
                    self._check_cancelled()
                    unit = waiting_units.popleft()
                    running[pool.submit(self._execute, unit)] = unit
                if not running:
                    continue
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in done:
                    unit = running.pop(future)
                    try:
                        completions = future.result()
                    except BaseException:
                        # A run that does not keep going failed, or the schedule was cancelled:
                        # stop launching, let running units see the cancel flag, and re-raise.
                        self.cancel_event.set()
                        for other in running:
                            other.cancel()
                        raise
                    self._finish_unit(unit, completions)

    def _run_in_order(self, state: RunState) -> None:
        """The queue's choices for one run on one job with no lazy inputs, made without the queue.

        The lowest-ranked ready node is then always the next node of the plan
        order whose sources ran (sources rank lower, and ran before it), and a
        failure blocks exactly the nodes downstream of it: so the nodes run in
        plan order, those behind a failure are blocked, as the ready-queue
        would do, without its per-node bookkeeping (a quarter of the time of
        executing trivial nodes).
        """
        nodes, is_cancelled = state.plan.nodes, self.cancel_event.is_set
        stopped: set[str] = set()  # failed or blocked in this run
        for node_id in state.to_run:
            node = nodes[node_id]
            if stopped and any(edge.source in stopped for edge in node.links):
                stopped.add(node_id)
                state.block(node_id)
                continue
            if is_cancelled():
                raise RunCancelledError("run cancelled")
            if not state.run_node(node):
                stopped.add(node_id)

    def _check_cancelled(self) -> None:
        if self.cancel_event.is_set():
            raise RunCancelledError("run cancelled")

    def _finish_unit(self, unit: _Unit, completions: list[_Completion]) -> None:
        for queue, node_id, ok in completions:
            self._done(queue, node_id, ok)

    def _units(self, node_id: str) -> list[_Unit]:
        """The work for one node id across runs, with cached and duplicate calls taken out.

        Pairs with the same signature form a group: its first pair runs, the
        others share the result. Groups already in the cache are served now.
        A batchable node's groups are split into units of ``batch_size``
        groups (one batch call each); other nodes get one unit per group.
        """
        queues = self._ready.pop(node_id, [])
        if len(self._queues) == 1:
            # One run: its cache was consulted when it began, and there is nothing to share.
            [queue] = queues
            return [_Unit([[(queue, queue.state.plan.nodes[node_id])]])]
        by_signature: dict[str, list[tuple[_RunQueue, PlannedNode]]] = {}
        for index, queue in enumerate(queues):
            node = queue.state.plan.nodes[node_id]
            key = node.signature if not node.spec.volatile else f"{node.signature}:{index}"
            by_signature.setdefault(key, []).append((queue, node))
        groups: list[_Group] = []
        for group in by_signature.values():
            queue, node = group[0]
            cached = queue.state.cached(node)
            if cached is not None:
                for other_queue, other_node in group:
                    other_queue.state.use_cached(other_node, cached)
                    self._done(other_queue, node_id, True)
                continue
            groups.append(group)
        if not groups:
            return []
        spec = groups[0][0][1].spec
        if spec.batch is not None and len(groups) > 1:
            return [_Unit(groups[start:start + self.batch_size], batched=True)
                    for start in range(0, len(groups), self.batch_size)]
        return [_Unit([group]) for group in groups]

    def _execute(self, unit: _Unit) -> list[_Completion]:
        """Run a unit (on a worker thread or inline); returns each pair's completion."""
        groups = unit.groups
        if unit.batched and self._run_batch(groups):
            return [completion for group in groups for completion in _share(group)]
        if len(groups) == 1 and len(groups[0]) == 1:
            [[(queue, node)]] = groups
            return [(queue, node.id, queue.state.run_node(node))]
        completions: list[_Completion] = []
        for group in groups:
            queue, node = group[0]
            queue.state.run_node(node)
            completions.extend(_share(group))
        return completions

    @staticmethod
    def _run_batch(groups: list[_Group]) -> bool:
        """One ``batch`` call for the first pair of every group; False means retry call by call."""
        firsts = [group[0] for group in groups]
        spec = firsts[0][1].spec
        # A model the batch loads is credited to the batch's first run.
        token = ACTIVE_RUN.set(firsts[0][0].state)
        try:
            started = [queue.state.start(node) for queue, node in firsts]
            arguments = [queue.state.inputs_for(node) for queue, node in firsts]
            results = spec.batch(arguments)  # type: ignore[misc]
            if len(results) != len(arguments):
                raise TypeError(f"{spec.id}'s batch function returned {len(results)} results "
                                f"for {len(arguments)} calls")
            # Model loads are reported as loads, not as node time (ModelManager.seconds_without_loads).
            seconds = firsts[0][0].state.engine.models.seconds_without_loads(min(started)) / len(firsts)
            for (queue, node), result in zip(firsts, results):
                queue.state.finish(node, result, seconds)
        except (KeyboardInterrupt, RunCancelledError):
            raise
        except Exception:  # noqa: BLE001 - retried call by call, so a failure lands on its own run
            return False
        finally:
            ACTIVE_RUN.reset(token)
        return True


def _unfinished(state: RunState, node_id: str) -> bool:
    """Queued in the run and neither finished nor failed (so a new node waits for it)."""
    return node_id not in state.values and state.report.nodes[node_id].status not in _NOT_RUNNING


#: Pairs of one node id with the same signature: the first runs, the others share its result.
_Group = list[tuple[_RunQueue, "PlannedNode"]]
#: A pair that finished: its run's queue, the node id, and whether it succeeded.
_Completion = tuple[_RunQueue, str, bool]


@dataclass(slots=True)
class _Unit:
    """Work launched as one: a single call, or the groups of one batched call."""

    groups: list[_Group]
    #: Run as one call of the node's ``batch`` function (else call by call).
    batched: bool = False


def _share(group: _Group) -> list[_Completion]:
    """Give the first pair's result to the other pairs with the same signature."""
    first_queue, first_node = group[0]
    outputs = first_queue.state.values.get(first_node.id)
    completions = [(first_queue, first_node.id, outputs is not None)]
    for queue, node in group[1:]:
        if outputs is None:
            queue.state.fail(node, RuntimeError(f"the same call failed in run {first_queue.state.run_id}"), 0.0)
            completions.append((queue, node.id, False))
        else:
            queue.state.use_cached(node, outputs)
            completions.append((queue, node.id, True))
    return completions

