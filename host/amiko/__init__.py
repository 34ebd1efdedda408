"""Amiko Pay host side (CPython): the `amiko` command, the node daemon and host tools."""
