"""Disk-cache entries are never followed or waited on: links, FIFOs and devices are skipped and recomputed."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from sfumato.store.cache import MANIFEST, DiskCache

SIGNATURE = "ef" * 20


def stored(tmp_path: Path) -> tuple[DiskCache, Path]:
    cache = DiskCache(tmp_path / "cache")
    assert cache.put(SIGNATURE, {"value": [1, 2, 3]})
    entry = tmp_path / "cache" / SIGNATURE[:2] / SIGNATURE
    return cache, entry


def get_without_hanging(cache: DiskCache) -> object:
    """``cache.get`` on a thread: a read that blocks forever fails the test instead of hanging the suite."""
    found: list[object] = []
    worker = threading.Thread(target=lambda: found.append(cache.get(SIGNATURE)), daemon=True)
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), "reading the cache entry blocked"
    return found[0]


def test_a_good_entry_is_read(tmp_path):
    cache, _ = stored(tmp_path)
    assert cache.get(SIGNATURE) == {"value": [1, 2, 3]}


def test_a_manifest_that_is_a_fifo_is_skipped_not_waited_on(tmp_path):
    cache, entry = stored(tmp_path)
    (entry / MANIFEST).unlink()
    os.mkfifo(entry / MANIFEST)
    assert get_without_hanging(cache) is None
    assert cache.discarded == [SIGNATURE] and not entry.exists()


def test_a_data_file_that_is_a_fifo_is_skipped(tmp_path):
    cache = DiskCache(tmp_path / "cache")
    import numpy as np

    assert cache.put(SIGNATURE, {"value": np.arange(3)})
    entry = tmp_path / "cache" / SIGNATURE[:2] / SIGNATURE
    (entry / "arrays.safetensors").unlink()
    os.mkfifo(entry / "arrays.safetensors")
    assert get_without_hanging(cache) is None


def test_a_manifest_that_links_elsewhere_is_not_followed(tmp_path):
    cache, entry = stored(tmp_path)
    outside = tmp_path / "planted.json"
    outside.write_text((entry / MANIFEST).read_text())
    (entry / MANIFEST).unlink()
    (entry / MANIFEST).symlink_to(outside)
    assert cache.get(SIGNATURE) is None
    assert outside.exists()  # the link is removed, never its target


def test_an_entry_folder_that_is_a_link_is_not_followed(tmp_path):
    cache, entry = stored(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    entry.rename(elsewhere)
    entry.symlink_to(elsewhere, target_is_directory=True)
    assert cache.get(SIGNATURE) is None
    assert not os.path.lexists(entry) and (elsewhere / MANIFEST).exists()


def test_a_device_in_place_of_a_data_file_is_skipped(tmp_path):
    cache, entry = stored(tmp_path)
    manifest = json.loads((entry / MANIFEST).read_text())
    manifest["sha256"]["zero"] = "0" * 64
    (entry / MANIFEST).write_text(json.dumps(manifest))
    (entry / "zero").symlink_to("/dev/zero")  # read through, this would never end
    assert get_without_hanging(cache) is None


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_recomputed_entry_replaces_the_skipped_one(tmp_path):
    cache, entry = stored(tmp_path)
    (entry / MANIFEST).unlink()
    os.mkfifo(entry / MANIFEST)
    assert get_without_hanging(cache) is None
    assert cache.put(SIGNATURE, {"value": [4]})
    assert cache.get(SIGNATURE) == {"value": [4]}
