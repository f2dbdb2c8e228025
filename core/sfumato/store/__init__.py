"""What outlives a run: result caches (memory and disk), their safe codecs, and
the model manager."""
