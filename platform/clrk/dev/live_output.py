"""What the ``clrk dev`` TUI shows of running invocations: the last lines of each one's stdout.

Each agent's runtime hands every stdout chunk to its listeners as the agent writes it
(``AgentRuntime.watch_output``: ``listener(invocation_id, chunk)``, then ``chunk == b""`` once at
the end), on the event loop. :class:`LiveOutput` is such a listener, and cheap: it cuts chunks into
lines and keeps the last :attr:`~LiveOutput.lines_kept` of each of the last
:attr:`~LiveOutput.invocations_kept` invocations, so memory stays bounded however much an agent
writes; the TUI renders from it on a timer. :class:`OutputWatch` keeps it subscribed to the
runtimes a ``clrk dev`` serves, which a reload swaps for new ones.

Lines are shown as text only: control characters (terminal escapes among them) are replaced, so
an agent's output cannot drive the terminal the TUI runs in.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from clrk_runtime.protocol.streams import OutputLines

__all__ = ["LiveOutput", "OutputWatch", "Watchable"]

Listener = Callable[[str, bytes], None]
_CONTROLS = {c: "\ufffd" for c in (*range(0x00, 0x09), *range(0x0A, 0x20), *range(0x7F, 0xA0))}
"""C0 and C1 control characters (all but tab) and DEL: shown as U+FFFD."""


class Watchable(Protocol):
    """An agent's runtime as the TUI needs it (``clrk_runtime``'s ``AgentRuntime``)."""

    def watch_output(self, listener: Listener) -> Callable[[], None]: ...


@dataclass
class _Invocation:
    agent: str
    lines: deque[str]
    cutter: OutputLines
    count: int = 0
    """Lines seen in all (the deque holds the last of them)."""
    running: bool = True


@dataclass
class LiveOutput:
    """The last lines of the last invocations' stdout, fed chunk by chunk."""

    lines_kept: int = 500
    invocations_kept: int = 32
    line_limit: int = 2048
    """Bytes of one line kept as one line (a longer one is kept in pieces)."""
    version: int = 0
    """Bumped at every change: a renderer compares it with the one it drew."""
    _invocations: OrderedDict[str, _Invocation] = field(default_factory=OrderedDict)

    def feed(self, agent: str, invocation_id: str, chunk: bytes) -> None:
        """One chunk of ``invocation_id``'s stdout (``b""``: it ended)."""
        invocation = self._invocations.get(invocation_id)
        if invocation is None:
            if not chunk:
                return
            invocation = _Invocation(agent, deque(maxlen=self.lines_kept), OutputLines(self.line_limit))
            self._invocations[invocation_id] = invocation
            while len(self._invocations) > self.invocations_kept:
                self._invocations.popitem(last=False)
        if chunk:
            lines = list(invocation.cutter.feed(chunk))
        else:
            lines = list(invocation.cutter.end())
            invocation.running = False
        invocation.lines.extend(line.translate(_CONTROLS) for line in lines)
        invocation.count += len(lines)
        self.version += 1

    def lines(self, invocation_id: str) -> list[str]:
        """The lines kept of one invocation (none for one not kept)."""
        invocation = self._invocations.get(invocation_id)
        return list(invocation.lines) if invocation else []

    def since(self, invocation_id: str, seen: int) -> tuple[list[str], int]:
        """The lines after the first ``seen`` (those still kept), and the count seen now."""
        invocation = self._invocations.get(invocation_id)
        if invocation is None:
            return [], seen
        fresh = min(invocation.count - seen, len(invocation.lines))
        return (list(invocation.lines)[len(invocation.lines) - fresh :] if fresh > 0 else []), invocation.count

    def agent(self, invocation_id: str) -> str | None:
        invocation = self._invocations.get(invocation_id)
        return invocation.agent if invocation else None

    def is_running(self, invocation_id: str) -> bool:
        invocation = self._invocations.get(invocation_id)
        return invocation is not None and invocation.running

    def latest(self) -> str | None:
        """The invocation to show by default: the last one started that still runs, else the last
        one started."""
        running = [i for i, invocation in self._invocations.items() if invocation.running]
        if running:
            return running[-1]
        return next(reversed(self._invocations), None)


@dataclass
class OutputWatch:
    """Keeps :class:`LiveOutput` subscribed to exactly the runtimes it is given (by identity):
    :meth:`sync` after each reload, :meth:`close` at the end."""

    live: LiveOutput
    _watched: dict[str, tuple[Watchable, Callable[[], None]]] = field(default_factory=dict)

    def sync(self, runtimes: Mapping[str, Watchable]) -> None:
        for ref, (runtime, unsubscribe) in list(self._watched.items()):
            if runtimes.get(ref) is not runtime:
                unsubscribe()
                del self._watched[ref]
        for ref, runtime in runtimes.items():
            if ref not in self._watched:
                self._watched[ref] = (runtime, runtime.watch_output(self._listener(ref)))

    def close(self) -> None:
        for _runtime, unsubscribe in self._watched.values():
            unsubscribe()
        self._watched.clear()

    def _listener(self, agent: str) -> Listener:
        def listen(invocation_id: str, chunk: bytes) -> None:
            self.live.feed(agent, invocation_id, chunk)

        return listen
