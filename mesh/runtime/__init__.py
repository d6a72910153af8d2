"""Trio and library adapters: they pump bytes and events between the world and the core.

Adapters make no protocol decisions and do not import each other; one driver wires them.
"""
