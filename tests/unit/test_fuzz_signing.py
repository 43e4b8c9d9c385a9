"""Hostile manifests, libpal ELF bytes, keys, signatures and SIGSTRUCT (.sig) bytes through
`sign`, `measure` and `sigstruct-view`, as a user runs them.

Whatever the input, the CLI exits 0, 1 or 2 with one error line (fuzz_support.assert_clean);
`sign` writes APP.manifest.sgx and APP.sig both or neither, and step 1 of two-step signing its
three files all or none.
"""

from __future__ import annotations

import shutil
import struct
import tempfile
import tomllib
from pathlib import Path

import pytest
import tomli_w
from fuzz_support import (
    World,
    assert_all_or_none,
    assert_clean,
    fuzz_settings,
    hostile_elf,
    hostile_sig,
    make_key_files,
    mutated_bytes,
    mutated_tree,
    run_bounded,
    run_cli,
    snapshot,
)
from hypothesis import given
from hypothesis import strategies as st

GRAMINE_LIB = "usr/lib/x86_64-linux-gnu/gramine"
DATE = "2026-01-02"
MANIFEST = """\
libos.entrypoint = "/app/run.sh"
loader.log_level = "error"
loader.env.LD_LIBRARY_PATH = "/lib"
fs.mounts = [{ path = "/app", uri = "file:/app" }, { path = "/tmp", type = "tmpfs" }]
sgx.trusted_files = ["file:/app/", { uri = "file:/etc/conf" }]
sgx.allowed_files = ["file:/data/in/"]
sgx.enclave_size = "16M"
sgx.max_threads = 4
sgx.isvprodid = 1
sgx.isvsvn = 2
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory, standin_libpal, standin_libsysdb):
    """An image root, a key, the stand-in libpal and one signed pair to mutate."""
    base = tmp_path_factory.mktemp("fuzz-signing")
    root = base / "rootfs"
    (root / GRAMINE_LIB).mkdir(parents=True)
    shutil.copy(standin_libsysdb, root / GRAMINE_LIB / "libsysdb.so")
    (root / "app" / "lib").mkdir(parents=True)
    (root / "app" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "app" / "lib" / "job.jar").write_bytes(b"PK\x03\x04 not really a jar")
    (root / "etc").mkdir()
    (root / "etc" / "conf").write_text("a=1\n")
    key = base / "key.pem"
    assert run_cli(["keygen", "--output", key]).code == 0
    signed = base / "signed"
    signed.mkdir()
    (signed / "app.manifest").write_text(MANIFEST)
    outcome = run_cli(
        [
            "sign",
            "--manifest",
            signed / "app.manifest",
            "--libpal",
            standin_libpal,
            "--key",
            key,
            "--output",
            signed / "app.manifest.sgx",
            "--sigfile",
            signed / "app.sig",
            "--chroot",
            root,
            "--date",
            DATE,
        ]
    )
    assert outcome.code == 0, outcome.describe()
    (base / "work").mkdir()
    return World(
        name="signing world",
        base=base,
        root=root,
        key=key,
        libpal=standin_libpal,
        libpal_bytes=standin_libpal.read_bytes(),
        signed=signed,
        manifest_sgx=(signed / "app.manifest.sgx").read_bytes(),
        sig=(signed / "app.sig").read_bytes(),
        work=base / "work",
    )


def scratch(world) -> Path:
    return Path(tempfile.mkdtemp(dir=world["work"]))


# --- manifests ----------------------------------------------------------------------------------


def _tomlable(value):
    """tomli_w has no null and wants string keys: replace what TOML cannot hold."""
    if value is None:
        return ""
    if isinstance(value, dict):
        return {str(k): _tomlable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_tomlable(v) for v in value]
    if isinstance(value, float) and value != value:
        return "nan"
    return value


TOML_TRICKS = [
    'sgx.enclave_size = "16G"\n',
    'sgx.enclave_size = "0"\n',
    'sgx.enclave_size = "16g"\n',
    'sgx.enclave_size = "1.5G"\n',
    "sgx.enclave_size = 16\n",
    'sgx.enclave_size = "016M"\n',
    'sgx.enclave_size = "' + "9" * 40 + 'M"\n',
    "sgx.max_threads = 0\n",
    "sgx.max_threads = 4097\n",
    "sgx.max_threads = 9223372036854775807\n",
    'sgx.max_threads = "4"\n',
    "sgx.max_threads = 4.0\n",
    'sgx.edmm_enable = "yes"\n',
    "sgx.edmm_enable = true\n",
    "sgx.isvprodid = 65536\n",
    "sgx.isvsvn = -1\n",
    "sgx.isvsvn = 1e3\n",
    "sgx.debug = 1\n",
    "sgx.debug = true\n",
    'sgx.trusted_files = [{ uri = "file:/etc/conf", sha256 = "zz" }]\n',
    'sgx.trusted_files = [{ uri = "file:/etc/conf", sha256 = "' + "A" * 64 + '" }]\n',
    'sgx.trusted_files = ["file:"]\n',
    'sgx.trusted_files = ["file:relative"]\n',
    'sgx.trusted_files = ["http://x/y"]\n',
    'sgx.trusted_files = ["file:/nonexistent"]\n',
    'sgx.trusted_files = ["file:/"]\n',
    'sgx.trusted_files = ["file:/etc/../etc/conf"]\n',
    'sgx.trusted_files = ["file:/app/\\u0000x"]\n',
    "sgx.trusted_files = [1, true, []]\n",
    'sgx.trusted_files = "file:/app/"\n',
    "sgx.trusted_files = [{ }]\n",
    "sgx.trusted_files = [{ uri = 5 }]\n",
    'sgx.allowed_files = ["file:/"]\n',
    'loader.entrypoint = "file:/nonexistent"\n',
    'loader.entrypoint.uri = "file:/"\n',
    "loader.entrypoint.uri = 1\n",
    'loader.entrypoint.sha256 = "zz"\n',
    'loader.entrypoint = { uri = "file:/app/run.sh", sha256 = "' + "0" * 64 + '" }\n',
    'loader.entrypoint = ["x"]\n',
    'libos.entrypoint = ["x"]\n',
    "sgx = 1\n",
    "loader = []\n",
    'sgx.remote_attestation = "epid"\n',
    "sgx.remote_attestation = true\n",
    'sgx.cpu_features.avx = "required"\n',
    "sgx.cpu_features.avx512 = 1\n",
    "sgx.require_avx = true\n",
    'sgx.misc_select = "0x1"\n',
    'sgx.enable_stats = "\x1b[31m"\n',
    "a = " + "[" * 2000 + "]" * 2000 + "\n",
    "a = " + "{b = " * 500 + "1" + "}" * 500 + "\n",
    "a = " + "9" * 5000 + "\n",
    "a = 1979-05-27T07:32:00Z\n",
    "a = inf\nb = nan\n",
    'x = "\\ud800"\n',
    '[sgx]\nenclave_size = "32M"\n',
    '[[sgx.trusted_files]]\nuri = "file:/etc/conf"\n',
    'sgx.enclave_size = "32M"\nsgx.enclave_size = "64M"\n',
    "\ufeffa = 1\n",
]


def _key(line: str) -> str:
    return line.split("=", 1)[0].strip()


def without_keys(original: str, text: str) -> str:
    """``original`` without the lines setting a key that ``text`` sets (or a table above or
    below it): TOML refuses a key twice, and the new value should be the one read."""
    keys = {_key(line) for line in text.splitlines() if "=" in line and not line.startswith("[")}

    def clashes(key: str) -> bool:
        return any(key == k or key.startswith(k + ".") or k.startswith(key + ".") for k in keys)

    return "".join(line + "\n" for line in original.splitlines() if not clashes(_key(line)))


@st.composite
def hostile_manifest(draw, original: str = MANIFEST) -> bytes:
    how = draw(st.sampled_from(["tree", "tree", "trick", "trick", "bytes"]))
    if how == "tree":
        tree = draw(mutated_tree(tomllib.loads(original)))
        if not isinstance(tree, dict):
            tree = {"x": tree}
        try:
            return tomli_w.dumps(_tomlable(tree)).encode("utf-8", "surrogatepass")
        except (TypeError, ValueError):  # e.g. an array of tables mixed with values
            return original.encode()
    if how == "trick":
        tricks = draw(st.lists(st.sampled_from(TOML_TRICKS), min_size=1, max_size=3))
        text = "".join(tricks)
        return (without_keys(original, text) + text).encode("utf-8", "surrogatepass")
    return draw(mutated_bytes(original.encode()))


def sign_argv(world, manifest: Path, out: Path, *extra) -> list:
    return [
        "sign",
        "--manifest",
        manifest,
        "--libpal",
        world["libpal"],
        "--key",
        world["key"],
        "--output",
        out / "app.manifest.sgx",
        "--sigfile",
        out / "app.sig",
        "--chroot",
        world["root"],
        "--date",
        DATE,
        *extra,
    ]


@fuzz_settings(60)
@given(manifest=hostile_manifest(), json_out=st.booleans())
def test_sign_writes_both_outputs_or_neither(world, manifest, json_out):
    where = scratch(world)
    (where / "in.manifest").write_bytes(manifest)
    out = where / "out"
    out.mkdir()
    before = snapshot(out)
    outcome = assert_clean(
        run_cli(sign_argv(world, where / "in.manifest", out, *(["--json"] if json_out else [])))
    )
    assert_all_or_none(outcome, before, snapshot(out), ["app.manifest.sgx", "app.sig"])
    shutil.rmtree(where)


@fuzz_settings(40)
@given(manifest=hostile_manifest())
def test_two_step_signing_step_one_writes_all_or_none(world, manifest):
    where = scratch(world)
    (where / "in.manifest").write_bytes(manifest)
    out = where / "out"
    out.mkdir()
    before = snapshot(out)
    outcome = assert_clean(
        run_cli(
            [
                "sign",
                "--manifest",
                where / "in.manifest",
                "--libpal",
                world["libpal"],
                "--output",
                out / "app.manifest.sgx",
                "--sigfile",
                out / "app.sig",
                "--signing-data-out",
                out / "data.bin",
                "--chroot",
                world["root"],
                "--date",
                DATE,
            ]
        )
    )
    assert_all_or_none(
        outcome, before, snapshot(out), ["app.manifest.sgx", "data.bin", "app.sig.pending"]
    )
    shutil.rmtree(where)


@fuzz_settings(60)
@given(data=st.data(), json_out=st.booleans())
def test_measure_survives_any_manifest_sgx(world, data, json_out):
    signed = world["manifest_sgx"]
    manifest_sgx = data.draw(
        st.one_of(hostile_manifest(), hostile_manifest(signed.decode()), mutated_bytes(signed))
    )
    where = scratch(world)
    (where / "app.manifest.sgx").write_bytes(manifest_sgx)
    assert_clean(
        run_cli(
            [
                "measure",
                "--manifest",
                where / "app.manifest.sgx",
                "--libpal",
                world["libpal"],
                *(["--json"] if json_out else []),
            ]
        )
    )
    shutil.rmtree(where)


# --- libpal ELF bytes ----------------------------------------------------------------------------


@fuzz_settings(50)
@given(data=st.data())
def test_measure_and_sign_survive_any_libpal(world, data):
    libpal = data.draw(hostile_elf(world["libpal_bytes"]))
    where = scratch(world)
    (where / "libpal.so").write_bytes(libpal)
    assert_clean(
        run_cli(
            [
                "measure",
                "--manifest",
                world["signed"] / "app.manifest.sgx",
                "--libpal",
                where / "libpal.so",
            ]
        )
    )
    out = where / "out"
    out.mkdir()
    before = snapshot(out)
    argv = sign_argv(world, world["signed"] / "app.manifest", out)
    argv[argv.index("--libpal") + 1] = where / "libpal.so"
    outcome = assert_clean(run_cli(argv))
    assert_all_or_none(outcome, before, snapshot(out), ["app.manifest.sgx", "app.sig"])
    # An ELF given where a SIGSTRUCT goes is read as an SGX-SDK-signed enclave.
    assert_clean(run_cli(["sigstruct-view", where / "libpal.so"]))
    shutil.rmtree(where)


# --- SIGSTRUCT bytes -----------------------------------------------------------------------------


@fuzz_settings(80)
@given(data=st.data(), json_out=st.booleans())
def test_sigstruct_view_survives_any_sig(world, data, json_out):
    sig = data.draw(hostile_sig(world["sig"]))
    where = scratch(world)
    (where / "app.sig").write_bytes(sig)
    assert_clean(run_cli(["sigstruct-view", where / "app.sig", *(["--json"] if json_out else [])]))
    shutil.rmtree(where)


# --- keys, signatures, the pending state of two-step signing ---------------------------------------


@pytest.fixture(scope="module")
def key_files(world):
    return make_key_files(world["base"] / "keys", world["key"])


@fuzz_settings(30)
@given(data=st.data())
def test_sign_survives_any_key(world, key_files, data):
    name = data.draw(st.sampled_from(sorted(key_files) + ["mangled"]))
    where = scratch(world)
    if name == "mangled":
        key = where / "mangled.pem"
        key.write_bytes(data.draw(mutated_bytes(world["key"].read_bytes())))
    else:
        key = key_files[name]
    out = where / "out"
    out.mkdir()
    before = snapshot(out)
    argv = sign_argv(world, world["signed"] / "app.manifest", out)
    argv[argv.index("--key") + 1] = key
    outcome = assert_clean(
        run_cli(argv + data.draw(st.sampled_from([[], ["--insecure-sample-key"]])))
    )
    assert_all_or_none(outcome, before, snapshot(out), ["app.manifest.sgx", "app.sig"])
    shutil.rmtree(where)


@pytest.fixture(scope="module")
def step_one(world):
    """A finished step 1 of two-step signing, to copy and tamper with."""
    out = world["base"] / "step-one"
    out.mkdir()
    outcome = run_cli(
        [
            "sign",
            "--manifest",
            world["signed"] / "app.manifest",
            "--libpal",
            world["libpal"],
            "--output",
            out / "app.manifest.sgx",
            "--sigfile",
            out / "app.sig",
            "--signing-data-out",
            out / "data.bin",
            "--chroot",
            world["root"],
            "--date",
            DATE,
        ]
    )
    assert outcome.code == 0, outcome.describe()
    return out


@fuzz_settings(40)
@given(data=st.data())
def test_two_step_completion_survives_any_signature_or_state(world, key_files, step_one, data):
    where = scratch(world)
    out = shutil.copytree(step_one, where / "out")
    what = data.draw(st.sampled_from(["signature", "pending", "public-key", "manifest"]))
    signature = where / "sig.bin"
    signature.write_bytes(
        data.draw(st.one_of(st.binary(max_size=800), st.binary(min_size=384, max_size=384)))
    )
    public = (
        key_files[data.draw(st.sampled_from(sorted(key_files)))]
        if what == "public-key"
        else key_files["public"]
    )
    if what == "pending":
        pending = out / "app.sig.pending"
        pending.write_bytes(
            data.draw(
                st.one_of(
                    mutated_bytes(pending.read_bytes()),
                    st.sampled_from(
                        [
                            b"[]",
                            b"{}",
                            b"null",
                            b'{"format": 1}',
                            b"9" * 5000,
                            b"[" * 100_000,
                            b'{"format": "ppml-build-pending-sigstruct/1", '
                            b'"sigstruct": "zz", "manifest_sgx_sha256": 1}',
                        ]
                    ),
                )
            )
        )
    if what == "manifest":
        manifest = out / "app.manifest.sgx"
        manifest.write_bytes(data.draw(mutated_bytes(manifest.read_bytes())))
    before = snapshot(out)
    outcome = assert_clean(
        run_cli(
            [
                "sign",
                "--complete",
                "--output",
                out / "app.manifest.sgx",
                "--sigfile",
                out / "app.sig",
                "--signature",
                signature,
                "--public-key",
                public,
            ]
        )
    )
    # A random signature never verifies: nothing may be written.
    assert outcome.code != 0, outcome.describe()
    assert_all_or_none(outcome, before, snapshot(out), [])
    shutil.rmtree(where)


# --- reproducers of what the fuzzing found -------------------------------------------------------


def test_libpal_with_an_offset_past_2_63_is_refused_in_one_line(world):
    """sdk_metadata._find_note: pyelftools raised OverflowError seeking to p_offset >= 2**63."""
    data = bytearray(world["libpal_bytes"])
    (phoff,) = struct.unpack_from("<Q", data, 32)
    struct.pack_into("<IIQ", data, phoff, 4, 4, 1 << 63)  # PT_NOTE at offset 2**63
    where = scratch(world)
    (where / "enclave.so").write_bytes(bytes(data))
    outcome = assert_clean(run_cli(["sigstruct-view", where / "enclave.so"]))
    assert outcome.code == 2 and "not a readable ELF file" in outcome.err, outcome.describe()


@pytest.mark.parametrize("entry", ['"file:/app/\\u0000x"', '"file:/app/' + "n" * 300 + '"'])
def test_a_trusted_file_no_file_system_can_hold_is_missing_in_one_line(world, entry):
    """rootfs.DirRootFS.lstat raised ValueError on a NUL (and OSError on a name past NAME_MAX)."""
    where = scratch(world)
    text = f"sgx.trusted_files = [{entry}]\n"
    (where / "in.manifest").write_text(without_keys(MANIFEST, text) + text)
    (where / "out").mkdir()
    outcome = assert_clean(run_cli(sign_argv(world, where / "in.manifest", where / "out")))
    assert outcome.code == 2 and "no such file or directory in the image" in outcome.err, (
        outcome.describe()
    )
    assert not any((where / "out").iterdir())


@pytest.mark.parametrize("state", [b"[" * 100_000, b"\xff\xfe", b"[]", b'{"format": []}'])
def test_a_mangled_pending_state_is_refused_in_one_line(world, step_one, key_files, state):
    where = scratch(world)
    out = shutil.copytree(step_one, where / "out")
    (out / "app.sig.pending").write_bytes(state)
    (where / "sig.bin").write_bytes(b"\x01" * 384)
    before = snapshot(out)
    outcome = assert_clean(
        run_cli(
            [
                "sign",
                "--complete",
                "--output",
                out / "app.manifest.sgx",
                "--sigfile",
                out / "app.sig",
                "--signature",
                where / "sig.bin",
                "--public-key",
                key_files["public"],
            ]
        )
    )
    assert outcome.code == 2 and "pending-signature" in outcome.err, outcome.describe()
    assert snapshot(out) == before


# --- bombs: bounded in memory and time, in a child process -------------------------------------

MANIFEST_BOMBS = {
    "deep-arrays": "a = " + "[" * 1_000_000 + "]" * 1_000_000 + "\n",
    "deep-tables": "a = " + "{b = " * 200_000 + "1" + "}" * 200_000 + "\n",
    "huge-int": "a = " + "9" * 1_000_000 + "\n",
    "long-string": 'a = "' + "x" * 5_000_000 + '"\n',
    "many-trusted-files": "sgx.trusted_files = [" + '"file:/app/run.sh",' * 20_000 + "]\n",
    "many-keys": "".join(f"k{i} = {i}\n" for i in range(50_000)),
    "max-threads": "sgx.max_threads = 4096\n",
}


@pytest.fixture(scope="module")
def bomb_outcomes(world):
    where = world["base"] / "bombs"
    where.mkdir()
    cases, keys = [], []
    for name, text in MANIFEST_BOMBS.items():
        manifest = where / f"{name}.manifest"
        manifest.write_text(without_keys(MANIFEST, text) + text)
        out = where / name
        out.mkdir()
        cases.append((sign_argv(world, manifest, out), 20.0))
        keys.append((name, "sign"))
        cases.append((["measure", "--manifest", manifest, "--libpal", world["libpal"]], 20.0))
        keys.append((name, "measure"))
    return dict(zip(keys, run_bounded(cases)))


@pytest.mark.parametrize("command", ["sign", "measure"])
@pytest.mark.parametrize("bomb", sorted(MANIFEST_BOMBS))
def test_manifest_bombs_end_within_bounds(world, bomb_outcomes, bomb, command):
    """1 GiB of address space and 20 s each; sign writes both files or neither."""
    outcome = assert_clean(bomb_outcomes[(bomb, command)])
    out = world["base"] / "bombs" / bomb
    written = sorted(p.name for p in out.iterdir())
    assert written in ([], ["app.manifest.sgx", "app.sig"]), (written, outcome.describe())
    assert (written == []) == (outcome.code != 0) or command == "measure", outcome.describe()
