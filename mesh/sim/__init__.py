"""The discrete-event simulator: many :class:`~mesh.core.node.MeshNode` s on one machine.

It drives the *same* core, wire codec and scheduler as the real node, under a
virtual clock, over a modelled network.  See ``docs/simulator.md``.
Rules: no trio, no runtime adapters, no wall clock inside the simulation
(``wall_s`` is measured by the caller), one seeded ``random.Random``.
"""
