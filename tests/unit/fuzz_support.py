"""Shared pieces of the hostile-input suites (test_fuzz_*.py): run the real CLI in-process and
check what a user would see, hostile values, and a bounded subprocess for inputs that would
eat memory or never end (/dev/zero, "billion laughs", documents nested a million deep).

What every run must show, whatever the input:
- an exit code of 0, 1 or 2, and no exception out of ``main`` (a traceback is a bug);
- on an error, exactly one ``ppml-build: error: ...`` line on stderr, the last one (other
  stderr lines are ``ppml-build: `` notes and progress; a bad command line is one line too);
- no raw control characters (ESC, CR, NUL, U+202E, ...) in stderr or stdout;
- the run ends within its time bound (SIGALRM), and the hypothesis ``deadline`` holds.

PPML_FUZZ_SCALE=10 runs ten times as many examples (CI runs 1; derandomized, so reproducible).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
import traceback
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from ppml_build.cli import main

SCALE = max(1, int(os.environ.get("PPML_FUZZ_SCALE", "1")))
# A run that takes longer than this is a hang: the alarm ends it and the test fails.
HANG_SECONDS = 30
ERROR_PREFIX = "ppml-build: error: "
# What printable() in builder/errors.py escapes, minus the newline that ends each line.
_RAW_CONTROL = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ud800-\udfff]"
)


def fuzz_settings(examples: int, *, deadline_s: float = 5.0) -> settings:
    """Derandomized (CI is reproducible), no example database, a per-example deadline."""
    return settings(
        max_examples=examples * SCALE,
        derandomize=True,
        database=None,
        deadline=timedelta(seconds=deadline_s),
        print_blob=True,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )


class World(dict):
    """A module fixture's files and bytes; a short repr keeps hypothesis' reports readable."""

    def __repr__(self) -> str:
        return f"<{self.get('name', 'fixture')}>"


class Hang(Exception):
    """The command ran past HANG_SECONDS."""


@contextlib.contextmanager
def time_limit(seconds: float):
    def expired(signum, frame):
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class Outcome:
    argv: list[str]
    code: int | None
    out: str
    err: str
    escaped: str | None = None  # the traceback of an exception that escaped main

    def describe(self) -> str:
        return (
            f"argv={self.argv!r}\nexit={self.code!r}\nstderr={self.err[-3000:]!r}\n"
            f"stdout={self.out[-1000:]!r}\n{self.escaped or ''}"
        )


def run_cli(argv: list, *, seconds: float = HANG_SECONDS) -> Outcome:
    """``ppml_build.cli.main(argv)`` in this process, stdout and stderr captured."""
    argv = [os.fspath(a) if isinstance(a, os.PathLike) else a for a in argv]
    out, err = io.StringIO(), io.StringIO()
    code, escaped = None, None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            with time_limit(seconds):
                code = main(list(argv))
        except Hang:
            raise
        except BaseException:  # SystemExit and KeyboardInterrupt included: main must return
            escaped = traceback.format_exc()
    return Outcome(argv, code, out.getvalue(), err.getvalue(), escaped)


def stderr_problem(code: int, err: str) -> str | None:
    """Why stderr is not what the exit code promises, or None."""
    lines = err.splitlines()
    errors = [line for line in lines if line.startswith(ERROR_PREFIX)]
    if code == 0:
        return f"exit 0 with an error line: {errors[0]!r}" if errors else None
    if code == 2 and lines and lines[0].startswith("Usage: ") and not errors:
        # no command after `ppml-build` or `ppml-build base`: the help is the answer
        return (
            None
            if not any(line.startswith("Error") for line in lines)
            else "a usage block with an error in it"
        )
    if len(errors) != 1 or lines[-1] != errors[0]:
        return f"expected exactly one {ERROR_PREFIX!r} line, last; got {len(errors)}"
    others = [line for line in lines[:-1] if not line.startswith("ppml-build: ")]
    if others:
        return f"stray stderr lines (a traceback or a multi-line message?): {others[:3]!r}"
    if len(errors[0]) == len(ERROR_PREFIX):
        return "an empty error message"
    return None


def assert_clean(outcome: Outcome, *, allowed: frozenset[int] = frozenset({0, 1, 2})) -> Outcome:
    """The invariants every run keeps (see the module docstring)."""
    assert outcome.escaped is None, "exception escaped main:\n" + outcome.describe()
    assert outcome.code in allowed, "exit code:\n" + outcome.describe()
    problem = stderr_problem(outcome.code, outcome.err)
    assert problem is None, f"{problem}\n{outcome.describe()}"
    # stdout may hold a document (a Rego policy indents with tabs); stderr is lines for people.
    for stream, text in (("stderr", outcome.err), ("stdout", outcome.out.replace("\t", " "))):
        raw = _RAW_CONTROL.search(text)
        assert raw is None, (
            f"raw control character {raw.group()!r} in {stream}:\n" + outcome.describe()
        )
    return outcome


def snapshot(directory: Path) -> dict[str, bytes | None]:
    """Every entry under ``directory`` (hidden temp files too): name -> bytes (None: not a file)."""
    if not directory.exists():
        return {}
    out: dict[str, bytes | None] = {}
    for path in sorted(directory.rglob("*")):
        rel = str(path.relative_to(directory))
        out[rel] = path.read_bytes() if path.is_file() and not path.is_symlink() else None
    return out


def assert_all_or_none(outcome: Outcome, before: dict, after: dict, outputs: list[str]) -> None:
    """Exit 0: every output is there; otherwise nothing at all changed in the directory."""
    if outcome.code == 0:
        missing = [name for name in outputs if after.get(name) is None]
        assert not missing, f"exit 0 but {missing} not written:\n{outcome.describe()}"
    else:
        changed = sorted(set(before) ^ set(after)) + sorted(
            name for name in set(before) & set(after) if before[name] != after[name]
        )
        assert not changed, (
            f"exit {outcome.code} but the output directory changed: {changed}\n{outcome.describe()}"
        )


# --- hostile values ---------------------------------------------------------------------------

HOSTILE_STRINGS = [
    "",
    " ",
    "yes",
    "no",
    "on",
    "off",
    "null",
    "~",
    "1.5g",
    "lots",
    "-1g",
    "0",
    "-0",
    "1e3",
    "0x10",
    "1_000",
    "16G",
    "0g",
    "9" * 40 + "g",
    "１６Ｇ",
    "٣",
    "\x00",
    "a\x00b",
    "\ud800",
    "x\udfffy",
    "\U0001d518\U0001f600",
    "\x1b[31mred\x1b[0m",
    "line\rover",
    "two\nlines",
    "tab\there",
    "\u202eevil",
    "\ufeffbom",
    "\x7f\x85\x9b",
    "'",
    '"',
    "\\",
    "${HOME}",
    "$(id)",
    "`id`",
    "a b 'c",
    'x "y',
    "--",
    "-",
    "/",
    "//",
    "/..",
    "../../etc/passwd",
    "/app/../etc",
    "file:",
    "file:/",
    "http://x/",
    "C:\\\\x",
    "*",
    "%s%n",
    "{{ 7*7 }}",
    "a" * 300,
    "\u00e9" * 200,
]
HOSTILE_INTS = [
    0,
    -1,
    1,
    2**31 - 1,
    2**31,
    2**32,
    2**63 - 1,
    2**63,
    2**64,
    -(2**63),
    10**30,
    10**31,
    10**40,
    4096,
    4097,
    65535,
    65536,
    1024,
]
HOSTILE_FLOATS = [1.5, -0.0, 1e308, float("inf"), float("-inf"), float("nan"), 0.1, 1e-300]

hostile_scalars = st.one_of(
    st.sampled_from(HOSTILE_STRINGS),
    st.sampled_from(HOSTILE_INTS),
    st.sampled_from(HOSTILE_FLOATS),
    st.booleans(),
    st.none(),
    st.integers(),
    st.text(max_size=30),
    st.integers(1000, 70_000).map(lambda n: "x" * n),  # long (a sampled one would bloat reprs)
)


def nested(value, depth: int, as_list: bool):
    for _ in range(depth):
        value = [value] if as_list else {"k": value}
    return value


hostile_values = st.one_of(
    hostile_scalars,
    st.lists(hostile_scalars, max_size=4),
    st.dictionaries(
        st.sampled_from(["a", "src", "dest", "path", "uri", "1", ""]), hostile_scalars, max_size=3
    ),
    st.builds(nested, hostile_scalars, st.sampled_from([2, 30, 63, 64, 65, 200]), st.booleans()),
)

# Byte strings a parser may choke on, spliced into otherwise valid text.
HOSTILE_BYTES = [
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\xef\xbb\xbf",
    b"\x00",
    b"\x1b[2J",
    b"\r",
    b"\t",
    b"\x85",
    b"\xe2\x80\xae",
    b"{",
    b"[",
    b"]",
    b"}",
    b"'",
    b'"',
    b"&a ",
    b"*a",
    b"!!python/object:os.system ",
    b"%YAML 1.1\n",
    b"---\n",
    b"\n...\n",
    b":",
    b"- ",
    b"? ",
    b"#",
    b"\\",
    b"=",
    b"[[",
    b"0x",
    b"1e999",
]


@st.composite
def mutated_bytes(draw, original: bytes, *, max_edits: int = 4) -> bytes:
    """``original`` truncated, with slices replaced by hostile or random bytes."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, max_edits))):
        kind = draw(
            st.sampled_from(
                ["truncate", "splice", "splice", "random", "random", "delete", "flip", "flip"]
            )
        )
        at = draw(st.integers(0, len(data)))
        if kind == "truncate":
            del data[at:]
        elif kind == "splice":
            data[at:at] = draw(st.sampled_from(HOSTILE_BYTES))
        elif kind == "random":
            data[at : at + draw(st.integers(0, 8))] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        elif data:
            index = min(at, len(data) - 1)
            data[index] ^= 1 << draw(st.integers(0, 7))
    return bytes(data)


# --- ELF and SIGSTRUCT bytes -----------------------------------------------------------------

U64_EDGES = [
    0,
    1,
    0xFFF,
    0x1000,
    0x1001,
    1 << 20,
    1 << 30,
    1 << 32,
    (1 << 47) - 1,
    1 << 47,
    1 << 63,
    (1 << 64) - 1,
    (1 << 64) - 0x1000,
]
# (name, offset in the ELF header, struct format)
ELF_HEADER_FIELDS = [
    ("e_ident.class", 4, "B"),
    ("e_ident.data", 5, "B"),
    ("e_type", 16, "H"),
    ("e_machine", 18, "H"),
    ("e_entry", 24, "Q"),
    ("e_phoff", 32, "Q"),
    ("e_shoff", 40, "Q"),
    ("e_phentsize", 54, "H"),
    ("e_phnum", 56, "H"),
    ("e_shentsize", 58, "H"),
    ("e_shnum", 60, "H"),
    ("e_shstrndx", 62, "H"),
]
# Fields of one program header (Elf64_Phdr), at their offsets in it.
PHDR_FIELDS = [
    ("p_type", 0, "I"),
    ("p_flags", 4, "I"),
    ("p_offset", 8, "Q"),
    ("p_vaddr", 16, "Q"),
    ("p_filesz", 32, "Q"),
    ("p_memsz", 40, "Q"),
    ("p_align", 48, "Q"),
]


def _edge(draw, fmt: str, data: bytes) -> int:
    bits = struct.calcsize(fmt) * 8
    value = draw(
        st.one_of(
            st.sampled_from(U64_EDGES + [len(data), len(data) + 1]), st.integers(0, (1 << 64) - 1)
        )
    )
    return value % (1 << bits)


@st.composite
def hostile_elf(draw, original: bytes) -> bytes:
    """The stand-in libpal with header or program-header fields set to edge values, or its
    bytes mangled."""
    data = bytearray(original)
    if draw(st.integers(0, 3)) == 0:
        return draw(mutated_bytes(original))
    (phoff,) = struct.unpack_from("<Q", original, 32)
    (phnum,) = struct.unpack_from("<H", original, 56)
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            _, offset, fmt = draw(st.sampled_from(ELF_HEADER_FIELDS))
        else:
            index = draw(st.integers(0, max(phnum - 1, 0)))
            _, field_offset, fmt = draw(st.sampled_from(PHDR_FIELDS))
            offset = phoff + 56 * index + field_offset
            if draw(st.integers(0, 3)) == 0:  # p_type PT_LOAD (1) keeps the segment loaded
                struct.pack_into("<I", data, phoff + 56 * index, 1)
        struct.pack_into("<" + fmt, data, offset, _edge(draw, fmt, original))
    return bytes(data)


@st.composite
def hostile_sig(draw, original: bytes) -> bytes:
    how = draw(st.sampled_from(["flip", "flip", "field", "random", "length"]))
    if how == "flip":
        data = bytearray(original)
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
        return bytes(data)
    if how == "field":  # whole fields set to 00.. or ff.. (header, vendor, date, exponent, ...)
        data = bytearray(original)
        start = draw(
            st.sampled_from(
                [
                    0,
                    16,
                    20,
                    24,
                    128,
                    512,
                    516,
                    900,
                    904,
                    920,
                    960,
                    992,
                    1024,
                    1026,
                    1028,
                    1040,
                    1424,
                ]
            )
        )
        length = draw(st.sampled_from([1, 2, 4, 8, 16, 32, 384]))
        data[start : start + length] = draw(st.sampled_from([b"\x00", b"\xff", b"\x99"])) * len(
            data[start : start + length]
        )
        return bytes(data)
    if how == "random":
        return draw(st.binary(min_size=1808, max_size=1808))
    return draw(
        st.one_of(
            st.sampled_from(
                [b"", original[:-1], original + b"\x00", original * 2, b"\x7fELF" + original[4:]]
            ),
            st.binary(max_size=4000),
        )
    )


# --- tree mutations (recipes, records, manifests: a parsed YAML/JSON/TOML document) ------------


def _paths(tree, prefix=()):
    """Every path into a tree of dicts and lists (the root is ())."""
    yield prefix
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            yield from _paths(value, prefix + (index,))


def _get(tree, path):
    for part in path:
        tree = tree[part]
    return tree


def _set(tree, path, value):
    if not path:
        return value
    _get(tree, path[:-1])[path[-1]] = value
    return tree


@st.composite
def mutated_tree(
    draw,
    original,
    *,
    values=hostile_values,
    max_edits: int = 3,
    unknown_keys=("extra", "Kind", "apiversion", "sgx", "__proto__"),
):
    """A deep copy of ``original`` with a few hostile edits: a value replaced, a key deleted or
    added, a container changed into another type, a value nested deeply, a value shared (YAML
    writes it as an anchor and an alias)."""
    tree = json.loads(json.dumps(original))
    for _ in range(draw(st.integers(1, max_edits))):
        # The root itself seldom: replacing or nesting the whole document hides everything else.
        paths = [p for p in _paths(tree) if p] or [()]
        path = draw(st.sampled_from(paths))
        node = _get(tree, path)
        kind = draw(
            st.sampled_from(
                ["replace", "replace", "replace", "delete", "add", "retype", "nest", "share"]
            )
        )
        if kind == "replace" or (kind == "delete" and not path):
            tree = _set(tree, path, draw(values))
        elif kind == "delete":
            parent = _get(tree, path[:-1])
            del parent[path[-1]]
        elif kind == "add" and isinstance(node, dict):
            node[draw(st.sampled_from(unknown_keys))] = draw(values)
        elif kind == "add" and isinstance(node, list):
            node.insert(draw(st.integers(0, len(node))), draw(values))
        elif kind == "retype":
            if isinstance(node, dict):
                replacement = list(node.values()) or [None]
            elif isinstance(node, list):
                replacement = {str(i): v for i, v in enumerate(node)}
            else:
                replacement = [node]
            tree = _set(tree, path, replacement)
        elif kind == "nest":
            tree = _set(
                tree,
                path,
                nested(node, draw(st.sampled_from([1, 2, 20, 20, 70])), draw(st.booleans())),
            )
        elif kind == "share" and path:
            other = draw(st.sampled_from(paths))
            if other and other[: len(path)] != path and path[: len(other)] != other:
                tree = _set(tree, other, node)  # the same object twice: an anchor and an alias
            break  # further edits could link a node into itself
    return tree


# --- a signed enclave directory, as `manifest`, `sign` and `build` leave it ----------------------

APP = "spark-demo"
SIGNED_RECIPE = """\
apiVersion: ppml-build/v1
kind: spark
name: spark-demo
base: {image: "127.0.0.1:5000/ppml/spark:1"}
app:
  files: [{src: job.py, dest: /app/job.py}]
  command: [spark-submit, --master, "local[2]", --driver-memory, 1g, /app/job.py]
enclave: {isv_prod_id: 7, isv_svn: 3}
"""
POLICY_FORMATS = ("gramine-ratls", "ehsm", "bigdl", "marblerun", "maa", "ita", "trustee")


def build_signed_world(base: Path, libpal: Path) -> World:
    """base/: recipe.yaml + job.py, rootfs/, out/ (APP.manifest, trusted-files.json,
    APP.manifest.sgx, APP.sig, measurement.json), key.pem, key.pub, policies/ (every format).
    The way test_verify_directory.py makes one; the caller sets PPML_BUILD_CACHE_DIR."""
    from rootfs_factory import add_ppml_support, make_spark_rootfs

    from ppml_build.gramine import build as gramine_build
    from ppml_build.gramine.render import render_for_rootfs
    from ppml_build.gramine.signing import sign_summary
    from ppml_build.image.rootfs import DirRootFS
    from ppml_build.pipeline.stages import load_and_plan
    from ppml_build.plan import make_plan
    from ppml_build.policy import render_policy, write_policy_files
    from ppml_build.recipe import load_recipe_text
    from ppml_build.sign import keys
    from ppml_build.sign.sigstruct import Sigstruct

    rootfs = make_spark_rootfs(base / "rootfs", libpal=Path(libpal).read_bytes())
    add_ppml_support(rootfs, make_plan(load_recipe_text(SIGNED_RECIPE)))
    (base / "job.py").write_text("print('job')\n")
    recipe = base / "recipe.yaml"
    recipe.write_text(SIGNED_RECIPE)
    out, key = base / "out", base / "key.pem"
    for argv in (
        ["manifest", recipe, "--rootfs", rootfs, "--output-dir", out],
        ["keygen", "--output", key],
        [
            "sign",
            "--manifest",
            out / f"{APP}.manifest",
            "--libpal",
            libpal,
            "--key",
            key,
            "--output",
            out / f"{APP}.manifest.sgx",
            "--sigfile",
            out / f"{APP}.sig",
            "--chroot",
            rootfs,
            "--date",
            "2026-01-02",
        ],
    ):
        outcome = run_cli(argv)
        assert outcome.code == 0, outcome.describe()
    parsed, plan = load_and_plan(recipe)
    rendered = render_for_rootfs(parsed, plan, DirRootFS(rootfs), str(recipe))
    sig = Sigstruct.from_bytes((out / f"{APP}.sig").read_bytes())
    record = gramine_build.measurement_record(
        recipe=parsed,
        plan=plan,
        summary=sign_summary(sig),
        image="dir",
        image_id="",
        pushed_digest=None,
        base_digest="sha256:" + "0" * 64,
        rendered=rendered,
    )
    (out / "measurement.json").write_text(json.dumps(record, indent=2))
    policies = base / "policies"
    policies.mkdir()
    for fmt in POLICY_FORMATS:
        write_policy_files(render_policy(record, fmt), policies)
    public = base / "key.pub"
    public.write_bytes(keys.public_key_pem(keys.load_private_key(key.read_bytes())))
    return World(
        name="signed world",
        base=base,
        rootfs=rootfs,
        out=out,
        key=key,
        public=public,
        record=record,
        policies=policies,
        recipe=recipe,
        libpal=libpal,
        mrsigner=sig.mrsigner.hex(),
    )


def make_key_files(base: Path, key: Path) -> World:
    """PEM files that are not an acceptable signing key (name -> path), and "good" and
    "public" that are (``key`` and its public half)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    def pem(private, encrypted=False):
        return private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw")
            if encrypted
            else serialization.NoEncryption(),
        )

    good = key.read_bytes()
    own = serialization.load_pem_private_key(good, None)
    small = rsa.generate_private_key(public_exponent=3, key_size=1024)
    e65537 = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    files = {
        "good": good,
        "public": own.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "rsa1024": pem(small),
        "e65537": pem(e65537),
        "encrypted": pem(own, encrypted=True),
        "truncated": good[: len(good) // 2],
        "empty": b"",
        "garbage": b"\x00\xff" * 100,
        "two-keys": good + pem(small),
        "der": own.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        "public-rsa1024": small.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
        ),
        "ec": b"-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIA==\n-----END EC PRIVATE KEY-----\n",
        "not-utf8": b"-----BEGIN PRIVATE KEY-----\n\xff\xfe\n-----END PRIVATE KEY-----\n",
        "cert": b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    }
    base.mkdir(parents=True, exist_ok=True)
    paths = World(name="key files")
    for name, content in files.items():
        paths[name] = base / f"{name}.pem"
        paths[name].write_bytes(content)
    return paths


# --- a bounded subprocess for memory and blocking bombs ----------------------------------------

_DRIVER = r"""
import json, resource, signal, sys, traceback, io, contextlib
from ppml_build.cli import main
try:  # regopy's allocator (snmalloc) reserves 256 GiB of address space when first used
    import regopy
    regopy.Interpreter().query("x := 1")
except ImportError:
    pass
# The budget on top of what start-up mapped: reservations are address space, not memory.
mapped = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status")
              if line.startswith("VmSize:"))
limit = mapped + int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

class Hang(Exception):
    pass

def expired(signum, frame):
    raise Hang()

signal.signal(signal.SIGALRM, expired)
results = []
for case in json.load(sys.stdin):
    out, err = io.StringIO(), io.StringIO()
    code, escaped = None, None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        signal.setitimer(signal.ITIMER_REAL, case["seconds"])
        try:
            code = main(case["argv"])
        except Hang:
            escaped = "HANG: still running after %s s" % case["seconds"]
        except BaseException:
            escaped = traceback.format_exc()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    # Long lines shortened, every line kept: the checks count lines and read their starts.
    short = lambda text: "\n".join(line[:2000] for line in text.split("\n"))
    results.append({"code": code, "out": short(out.getvalue()), "err": short(err.getvalue()),
                    "escaped": escaped})
with open(sys.argv[2], "w") as report:  # not stdout: native code may write to fd 1
    json.dump(results, report)
"""

# Address space the bounded runs may map beyond their start-up (the CLI needs well under it).
BOMB_MEMORY = 1 << 30


def run_bounded(
    cases: list[tuple[list[str], float]], *, env: dict | None = None, memory: int = BOMB_MEMORY
) -> list[Outcome]:
    """Run each (argv, seconds) in ONE child process limited to ``memory`` more bytes of
    address space than it has after start-up; each case ends at its own time limit (reported
    as an escaped 'HANG')."""
    payload = json.dumps(
        [{"argv": [os.fspath(a) for a in argv], "seconds": seconds} for argv, seconds in cases]
    )
    total = sum(seconds for _, seconds in cases) + 60
    with tempfile.NamedTemporaryFile(suffix=".json") as report:
        proc = subprocess.run(
            [sys.executable, "-c", _DRIVER, str(memory), report.name],
            input=payload,
            capture_output=True,
            text=True,
            timeout=total,
            env={**os.environ, **(env or {})},
        )
        assert proc.returncode == 0, (
            f"bounded driver died ({proc.returncode}):\n{proc.stderr[-3000:]}"
        )
        results = json.loads(Path(report.name).read_text())
    return [
        Outcome([os.fspath(a) for a in argv], r["code"], r["out"], r["err"], r["escaped"])
        for (argv, _), r in zip(cases, results)
    ]


__all__ = [
    "APP",
    "ERROR_PREFIX",
    "HOSTILE_BYTES",
    "HOSTILE_FLOATS",
    "HOSTILE_INTS",
    "HOSTILE_STRINGS",
    "POLICY_FORMATS",
    "SCALE",
    "Hang",
    "Outcome",
    "World",
    "assert_all_or_none",
    "assert_clean",
    "build_signed_world",
    "fuzz_settings",
    "hostile_elf",
    "hostile_scalars",
    "hostile_sig",
    "hostile_values",
    "make_key_files",
    "mutated_bytes",
    "mutated_tree",
    "nested",
    "run_bounded",
    "run_cli",
    "snapshot",
    "stderr_problem",
    "time_limit",
]
