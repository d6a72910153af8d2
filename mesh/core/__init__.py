"""The sans-IO protocol core.

Rules: imports only the standard library, ``msgpack`` and ``mesh.ids``/``mesh.errors``.
No clocks (time is a keyword-only ``now`` argument), no global ``random`` (an injected
``random.Random``), no disk, no sockets, no threads.  Drivers -- the trio runtime and
the simulator -- pump bytes and events in and carry actions out.
"""
