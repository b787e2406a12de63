"""One invocation in one sandbox: its environment (:mod:`.environment`, pure), the run itself
(:mod:`.running`: stdin in, stdout and stderr out, the deadline) and its answer
(:mod:`.outcomes`, pure)."""

from clrk_runtime.invocation.outcomes import Response, RunResult

__all__ = ["Response", "RunResult"]
