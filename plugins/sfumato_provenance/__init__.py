"""sfumato_provenance: invisible watermarks, content credentials and ``sfumato verify`` (built-in plugin)."""
