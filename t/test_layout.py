"""The layout of the source stays as docs/architecture.md draws it: each
area of src/ is a translation unit that exports only its own rrl_AREA_*
names, includes only the headers of the areas below it (the order of
RRL_AREAS in Makefile.am, from the bottom), and stays small enough to read;
the module exports its module struct and nothing else."""
import os
import re
import subprocess

import pytest

import rrl

SRC = rrl.REPO / "src"
MAX_LINES = 700


def areas() -> list[str]:
    """RRL_AREAS of Makefile.am: the layers from the bottom."""
    text = (rrl.REPO / "Makefile.am").read_text().replace("\\\n", " ")
    return re.search(r"^RRL_AREAS = (.+)$", text, re.M).group(1).split()


def includes(path) -> list[str]:
    return re.findall(r'^#include "(rrl_?\w*)\.h"', path.read_text(), re.M)


def test_layout_01_every_source_is_an_area():
    files = {p.stem for p in SRC.glob("rrl_*.c")}
    assert files == {f"rrl_{a}" for a in areas()}
    for a in areas():
        assert (SRC / f"rrl_{a}.h").exists(), a


def test_layout_02_headers_only_from_below():
    order = areas()
    for i, a in enumerate(order):
        below = {"rrl", "rrl_private"} | {f"rrl_{b}" for b in order[:i]}
        for path in (SRC / f"rrl_{a}.c", SRC / f"rrl_{a}.h"):
            for inc in includes(path):
                if inc == f"rrl_{a}" or inc == "rrl_lua":
                    continue
                assert inc in below, f"{path.name} includes {inc}.h, " \
                                     "which is not below it"
    for path in (SRC / "rrl.h", SRC / "rrl_private.h"):
        assert set(includes(path)) <= {"rrl"}, path.name
    # headers never say which module they log as: rrl_private.h is for .c
    for path in SRC.glob("*.h"):
        assert "rrl_private" not in includes(path), path.name
    assert "rrl_private" not in includes(rrl.REPO / "mod_redis_ratelimit.c")


def test_layout_03_files_stay_small():
    for path in sorted(SRC.glob("*.[ch]")) + [rrl.REPO / "mod_redis_ratelimit.c"]:
        lines = path.read_text().count("\n")
        assert lines <= MAX_LINES, f"{path.name}: {lines} lines; split it"


def objects():
    """The objects of the build that the suite runs against."""
    lib = SRC / ".libs"
    found = {p.stem: p for p in lib.glob("rrl_*.o")} if lib.is_dir() else {}
    if set(found) != {f"rrl_{a}" for a in areas()}:
        pytest.skip("no objects of src/ beside the sources (a build "
                    "elsewhere)")
    return found


def test_layout_04_each_area_exports_its_own_names():
    for name, obj in objects().items():
        out = subprocess.run(["nm", "-g", "--defined-only", str(obj)],
                             capture_output=True, text=True, check=True)
        exported = [line.split()[-1] for line in out.stdout.splitlines()
                    if line.strip()]
        foreign = [s for s in exported if not s.startswith(f"{name}_")]
        assert exported and not foreign, f"{name}.o exports {foreign}"


def test_layout_05_module_exports_only_its_struct():
    out = subprocess.run(["nm", "-D", "--defined-only", rrl.module_path()],
                         capture_output=True, text=True, check=True)
    exported = [line.split()[-1] for line in out.stdout.splitlines()
                if line.strip()]
    assert exported == ["redis_ratelimit_module"]


MAX_FUNCTION_LINES = 120


def long_functions(path) -> list[str]:
    """Functions of path longer than MAX_FUNCTION_LINES whose comment
    above the definition does not say why it is long (the word "long")"""
    lines = path.read_text().split("\n")
    found = []
    for i, line in enumerate(lines):
        if line != "{" or i == 0:
            continue
        end = lines.index("}", i)
        head = i - 1
        while head > 0 and not re.match(r"^[A-Za-z_]", lines[head]):
            head -= 1                     # a definition over several lines
        top = head - 1
        while top > 0 and lines[top].startswith((" *", "/*")) \
                and not lines[top].startswith("/*"):
            top -= 1                      # the comment's first line
        said = lines[head - 1].rstrip().endswith("*/") \
            and "long" in " ".join(lines[top:head]).lower()
        if end - i > MAX_FUNCTION_LINES and not said:
            found.append(f"{path.name}:{head + 1} ({end - i} lines)")
    return found


def test_layout_06_functions_stay_short_or_say_why():
    long = []
    for path in sorted(SRC.glob("*.c")) + [rrl.REPO / "mod_redis_ratelimit.c"]:
        long += long_functions(path)
    assert not long, "split these, or say above each why it is long"
