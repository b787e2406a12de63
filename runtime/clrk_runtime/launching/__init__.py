"""Process launching: the shim's loop never forks.

:mod:`.spawner` is the shim's side (:class:`Spawner`, :class:`Child`), :mod:`.spawn_server` the
small standard-library program it runs that starts every sandbox's first process (with
``posix_spawn``, or, for a plain sandbox, ``fork`` and the confinement of :mod:`.landlock` before
the ``exec``) and removes what sandboxes leave (with :mod:`.cleaning`, never following a
symlink), and :mod:`.pipes` the children's pipes on the event loop.
"""

from clrk_runtime.launching.spawner import Child, Launch, Spawner, SpawnerGone

__all__ = ["Child", "Launch", "Spawner", "SpawnerGone"]
