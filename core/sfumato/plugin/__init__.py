"""The plugin contract: what a plugin writes against.

Node declarations (``@node``, ``NodeSpec``), port types and the values on
edges, the run context, hook specifications, run events, file and path
helpers, devices, optional requirements and resource limits. Plugins reach all
of it through ``import sfumato``; nothing here imports the graph, run or store
layers.
"""
