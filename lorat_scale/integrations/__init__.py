"""Clients of the field's evaluation toolkits: got10k-toolkit experiments and the VOT toolkit (TraX).

Each module imports its toolkit lazily; install them with ``pip install got10k vot-toolkit``
(both are in the ``dev`` extra).
"""
