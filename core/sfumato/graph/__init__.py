"""Graph documents: the JSON file format and its parameters, reading untrusted
JSON, the builder, drawings, and the graphs that ship with sfumato."""
