"""One invocation from envelope to answer, inside its span.

Continues the caller's trace (``traceparent``), hands the invocation span's own ``TRACEPARENT``
to the agent (and, with the deadline, to its envelope: :func:`~clrk_runtime.protocol.envelope.stamp`),
signs its proxy token (and binds a warm-started sandbox's credentials to it), and records what
a trace reader needs: invocation id, agent, sandbox kind, warm or cold, exit code, duration and
the tail of stderr. Cancelled (its caller went away), the invocation ends at once: the agent's
tree killed, its sandbox removed, its slot freed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from clrk_runtime.invocation.environment import agent_environment
from clrk_runtime.invocation.outcomes import CALLER_GONE, Response, error_response, map_outcome
from clrk_runtime.invocation.running import OutputListener, StderrTail, run_invocation
from clrk_runtime.protocol.durations import rfc3339
from clrk_runtime.protocol.envelope import stamp
from clrk_runtime.protocol.tokens import ProxyClaims, sign
from clrk_runtime.service.pool import SandboxPool
from clrk_runtime.settings import RuntimeSettings

__all__ = ["TOKEN_GRACE", "serve_invocation"]

TOKEN_GRACE = 5.0
"""Seconds a proxy token outlives its invocation's deadline."""


async def serve_invocation(
    pool: SandboxPool,
    settings: RuntimeSettings,
    *,
    headers: Mapping[str, str],
    invocation_id: str,
    envelope: bytes,
    token_key: bytes | None,
    time_limit: float,
    tracer: trace.Tracer,
    on_start: Callable[[], None] | None = None,
    on_output: OutputListener | None = None,
) -> Response:
    """Run one invocation and map its outcome; raises :class:`~clrk_runtime.service.pool.NoCapacity`.

    ``on_start`` is called once the invocation has its sandbox and its agent is about to be
    launched (not when it was refused, or its deadline passed in the queue); ``on_output`` gets
    each stdout chunk as it arrives (see :func:`~clrk_runtime.invocation.running.run_invocation`).
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + time_limit
    wall_deadline = time.time() + time_limit
    context = propagate.extract(headers)
    attributes: dict[str, str | float] = {
        "clrk.invocation.id": invocation_id,
        "clrk.agent": settings.agent,
        "clrk.sandbox.kind": pool.spec.kind,
        "clrk.timeout_s": time_limit,
    }
    with tracer.start_as_current_span(
        "clrk.invocation", context=context, kind=SpanKind.SERVER, attributes=attributes
    ) as span:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        traceparent = carrier.get("traceparent", "")
        try:
            async with asyncio.timeout_at(deadline):
                sandbox = await pool.acquire()
        except TimeoutError:
            span.set_status(Status(StatusCode.ERROR, "deadline passed while queued"))
            return error_response(504, "deadline_exceeded", "the deadline passed while queued", invocation_id)
        span.set_attribute("clrk.sandbox.warm", sandbox.warm)
        span.set_attribute("clrk.sandbox.started_ahead", sandbox.started_ahead)
        tail = StderrTail(settings.stderr_tail)
        try:
            if on_start is not None:
                on_start()
            token = None
            if token_key is not None and sandbox.paths.proxy is not None:
                claims = ProxyClaims(invocation_id, settings.agent, wall_deadline + TOKEN_GRACE, traceparent)
                token = sign(claims, token_key)
            env = None
            if sandbox.started_ahead:
                pool.warm_starts.claim(sandbox, invocation_id, token)
            else:
                own = pool.warm_starts.enrol(sandbox, invocation_id, token)
                env = agent_environment(
                    settings,
                    sandbox.paths,
                    invocation_id=invocation_id,
                    deadline=wall_deadline,
                    traceparent=traceparent,
                    proxy_token=own[1] if own is not None else token,
                    proxy_user=own[0] if own is not None else None,
                )
            result = await run_invocation(
                sandbox,
                env=env,
                command=settings.command,
                stdin=stamp(envelope, deadline=rfc3339(wall_deadline), traceparent=traceparent),
                invocation_id=invocation_id,
                deadline=deadline,
                stdout_cap=settings.stdout_cap,
                stderr_tail=tail,
                on_output=on_output,
            )
        except asyncio.CancelledError:
            span.set_attribute("clrk.cancelled", True)
            span.set_attribute("http.response.status_code", CALLER_GONE)
            raise
        finally:
            pool.release()
        response = map_outcome(result, invocation_id, time_limit)
        span.set_attribute("clrk.duration_ms", round((loop.time() - started) * 1000, 3))
        span.set_attribute("http.response.status_code", response.status)
        if result.exit_code is not None:
            span.set_attribute("clrk.exit_code", result.exit_code)
        if stderr := tail.text():
            span.set_attribute("clrk.stderr_tail", stderr)
        if response.status >= 500:
            span.set_status(Status(StatusCode.ERROR, response.body.decode("utf-8", "replace")))
        return response
