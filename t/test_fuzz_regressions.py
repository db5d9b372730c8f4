"""The seed corpus of the libFuzzer harnesses (t/fuzz/corpus/NAME/: valid
and edge inputs, and every input that once crashed a harness or broke one
of its invariants) replayed through the harnesses that make fuzz builds:
each input runs once under ASan and UBSan and must pass.  Without the
harnesses built (make fuzz builds them into t/fuzz/bin/; RRL_FUZZ_BIN
elsewhere), the tests are skipped."""
import os
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "fuzz" / "corpus"
BIN = Path(os.environ.get("RRL_FUZZ_BIN", HERE / "fuzz" / "bin"))
HARNESSES = sorted(d.name for d in CORPUS.iterdir() if d.is_dir())


def test_fuzz_01_every_harness_has_seeds():
    sources = sorted(p.stem[len("fuzz_"):]
                     for p in (HERE / "fuzz").glob("fuzz_*.c"))
    assert sources == HARNESSES
    for name in HARNESSES:
        assert len(list((CORPUS / name).iterdir())) >= 5, name


@pytest.mark.parametrize("name", HARNESSES)
def test_fuzz_02_corpus_replays(name):
    harness = BIN / f"fuzz_{name}"
    if not os.access(harness, os.X_OK):
        pytest.skip(f"{harness} not built: run make fuzz")
    seeds = sorted(str(p) for p in (CORPUS / name).iterdir())
    env = dict(os.environ,
               ASAN_OPTIONS="detect_leaks=1:abort_on_error=0",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    proc = subprocess.run([str(harness), "-runs=1", *seeds],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, errors="replace", env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert proc.stdout.count("Executed ") == len(seeds), proc.stdout[-3000:]
