"""Sharded embedding: processes that fill one feature cache at once combine, and a killed run resumes."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from retrieval.encoders.towers import FeatureCache
from retrieval.search import parse_shard, shard_rows

REPO = Path(__file__).resolve().parents[2]

WORKER = """
import os, sys
import numpy as np
from retrieval.encoders.towers import FeatureCache, cached_features
from retrieval.search import parse_shard, shard_rows

folder, spec, die_after, log = sys.argv[1:5]
rows = shard_rows(40, parse_shard(spec))
done = []

def compute(xs):  # stands in for a tower: row r -> (r, -r)
    if len(done) == int(die_after):
        os._exit(9)  # killed mid-run: no cleanup, no final save
    done.append(1)
    with open(log, "a") as fh:
        fh.write(" ".join(str(int(x)) for x in xs) + "\\n")
    return np.array([[x, -x] for x in xs], np.float32)

cached_features(FeatureCache(folder, "tower", 2), [f"k{r}" for r in rows], [float(r) for r in rows], compute,
                batch_size=4, desc="t", save_every=1)
"""


def run_workers(folder, jobs):
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(folder), spec, str(die), str(log)], cwd=REPO,
                              env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
             for spec, die, log in jobs]
    return [p.wait(timeout=120) for p in procs]


def computed(log):
    return [int(x) for line in Path(log).read_text().split("\n") if line for x in line.split()] if Path(log).exists() else []


@pytest.mark.slow  # three fresh Python processes importing torch (a few CPU seconds, long on a busy machine)
def test_two_processes_share_a_cache_and_a_killed_run_resumes(tmp_path):
    cache, log0, log1 = tmp_path / "cache", tmp_path / "w0.log", tmp_path / "w1.log"
    # shard 0 runs through; shard 1 is killed after 2 of its 5 batches, at the same time
    assert run_workers(cache, [("0/2", 99, log0), ("1/2", 2, log1)]) == [0, 9]
    assert sorted(computed(log0)) == list(range(0, 40, 2))
    first = computed(log1)
    assert len(first) == 8  # two batches of 4 were encoded and saved before the kill
    assert run_workers(cache, [("1/2", 99, log1)]) == [0]
    again = computed(log1)[len(first):]
    assert sorted(first + again) == list(range(1, 40, 2))  # the rerun did only what was missing
    merged = FeatureCache(cache, "tower", 2)
    keys = [f"k{r}" for r in range(40)]
    assert merged.missing(keys) == []
    assert np.array_equal(merged.get(keys), np.array([[r, -r] for r in range(40)], np.float32))


def test_shards_cover_the_catalog_once():
    parts = [shard_rows(103, (i, 4)) for i in range(4)]
    assert sorted(np.concatenate(parts).tolist()) == list(range(103))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_shard_spec_from_flag_or_accelerate_environment():
    assert parse_shard("2/4") == (2, 4)
    assert parse_shard(None, {"RANK": "3", "WORLD_SIZE": "8"}) == (3, 8)
    assert parse_shard(None, {}) == (0, 1)
    for bad in ("4/4", "x/2", "1", "0/0"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)
