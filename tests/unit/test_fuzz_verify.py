"""Hostile records, policies, SIGSTRUCTs, manifests and pins through `verify DIR --rootfs` and
`policy`, as a user runs them: a signed directory made by `manifest` + `sign`, its
measurement.json and one policy per format, each mangled (wrong types, huge numbers, deep
nesting, not UTF-8, truncated).

Whatever the input, the CLI exits 0, 1 or 2 with one error line (fuzz_support.assert_clean), and
`policy -o DIR` writes all its files or none.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from fuzz_support import (
    APP,
    POLICY_FORMATS,
    assert_all_or_none,
    assert_clean,
    build_signed_world,
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

PRIMARY = {
    "gramine-ratls": "ra-tls.env",
    "ehsm": "ehsm-quote-policy.json",
    "bigdl": "bigdl-policies.json",
    "marblerun": "marblerun-packages.json",
    "maa": "maa-policy.txt",
    "ita": "ita-policy.rego",
    "trustee": "trustee-policy.rego",
}
# Policy files with a second file beside them that verify also reads.
COMPANIONS = {"trustee-policy.rego": "trustee-policy.rvps.json"}


@pytest.fixture(scope="module")
def world(tmp_path_factory, standin_libpal):
    base = tmp_path_factory.mktemp("fuzz-verify")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PPML_BUILD_CACHE_DIR", str(base / "cache"))
        signed = build_signed_world(base, standin_libpal)
        (base / "work").mkdir()
        signed["keys"] = make_key_files(base / "keys", signed["key"])
        yield signed


def scratch(world) -> Path:
    return Path(tempfile.mkdtemp(dir=world["base"] / "work"))


def verify_argv(world, *extra, directory=None) -> list:
    return ["verify", directory or world["out"], "--rootfs", world["rootfs"], *extra]


# --- records ---------------------------------------------------------------------------------------

JSON_TRICKS = [
    b"",
    b"null",
    b"[]",
    b"{}",
    b"1",
    b'"x"',
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    b'{"isv_svn": ' + b"9" * 5000 + b"}",
    b'{"isv_svn": 1e400}',
    b'{"isv_svn": NaN}',
    b'{"isv_svn": -Infinity}',
    b'{"mrenclave": "a", "mrenclave": "b"}',
    b"\xef\xbb\xbf{}",
    b"\xff\xfe{}",
    b'{"mrenclave": "\\ud800"}',
    b'{"mrenclave": "\\u0000"}',
    b"\x00" * 100,
]


@st.composite
def hostile_json(draw, original: dict) -> bytes:
    how = draw(st.sampled_from(["tree", "tree", "tree", "bytes", "trick"]))
    if how == "tree":
        tree = draw(
            mutated_tree(
                original, unknown_keys=("extra", "mrenclave", "MRENCLAVE", "schema", "isv_svn")
            )
        )
        return json.dumps(tree, indent=draw(st.sampled_from([None, 2]))).encode(
            "utf-8", "surrogatepass"
        )
    if how == "bytes":
        return draw(mutated_bytes(json.dumps(original, indent=2).encode()))
    return draw(st.sampled_from(JSON_TRICKS))


@fuzz_settings(40)
@given(data=st.data())
def test_verify_survives_any_record(world, data):
    where = scratch(world)
    record = where / "measurement.json"
    record.write_bytes(data.draw(hostile_json(world["record"])))
    as_dir = data.draw(st.booleans())  # --record OUT/ reads OUT/measurement.json
    assert_clean(run_cli(verify_argv(world, "--record", where if as_dir else record)))
    shutil.rmtree(where)


@fuzz_settings(60)
@given(data=st.data(), fmt=st.sampled_from(POLICY_FORMATS), to_dir=st.booleans())
def test_policy_survives_any_record_and_writes_all_or_none(world, data, fmt, to_dir):
    where = scratch(world)
    record = where / "measurement.json"
    record.write_bytes(data.draw(hostile_json(world["record"])))
    extra = data.draw(
        st.sampled_from(
            [
                [],
                ["--allow-debug"],
                ["--pin", "mrsigner"],
                ["--min-svn", "0"],
                ["--min-svn", "65535"],
            ]
        )
    )
    if not to_dir:
        assert_clean(run_cli(["policy", record, "--format", fmt, *extra]))
    else:
        out = where / "policies"
        before = snapshot(where)
        outcome = assert_clean(run_cli(["policy", record, "--format", fmt, "-o", out, *extra]))
        after = snapshot(where)
        if outcome.code == 0:  # one file is written at OUT, several into the directory OUT
            assert set(after) - set(before), outcome.describe()
        else:
            assert_all_or_none(outcome, before, after, [])
    shutil.rmtree(where)


# --- policies ------------------------------------------------------------------------------------


@st.composite
def hostile_policy(draw, world) -> tuple[str, dict[str, bytes]]:
    """(the policy file's name, {name: bytes} of it and its companions, one of them mangled)."""
    fmt = draw(st.sampled_from(POLICY_FORMATS + ("maa-jwt",)))
    name = "maa-policy.jwt" if fmt == "maa-jwt" else PRIMARY[fmt]
    files = {name: (world["policies"] / name).read_bytes()}
    if name in COMPANIONS:
        files[COMPANIONS[name]] = (world["policies"] / COMPANIONS[name]).read_bytes()
    victim = draw(st.sampled_from(sorted(files)))
    original = files[victim]
    if victim.endswith(".json") and draw(st.booleans()):
        files[victim] = draw(hostile_json(json.loads(original)))
    else:
        files[victim] = draw(st.one_of(mutated_bytes(original), st.sampled_from(JSON_TRICKS)))
    return name, files


@fuzz_settings(40)
@given(data=st.data())
def test_verify_survives_any_policy(world, data):
    name, files = data.draw(hostile_policy(world))
    where = scratch(world)
    for file_name, content in files.items():
        (where / file_name).write_bytes(content)
    assert_clean(run_cli(verify_argv(world, "--policy", where / name)))
    shutil.rmtree(where)


# --- the signed directory: .sig, .manifest.sgx, the names in it ----------------------------------


@fuzz_settings(40)
@given(data=st.data())
def test_verify_survives_any_sig_or_manifest_sgx(world, data):
    where = scratch(world)
    sig = (world["out"] / f"{APP}.sig").read_bytes()
    manifest = (world["out"] / f"{APP}.manifest.sgx").read_bytes()
    what = data.draw(st.sampled_from(["sig", "manifest", "both"]))
    if what in ("sig", "both"):
        sig = data.draw(hostile_sig(sig))
    if what in ("manifest", "both"):
        manifest = data.draw(mutated_bytes(manifest))
    (where / f"{APP}.sig").write_bytes(sig)
    (where / f"{APP}.manifest.sgx").write_bytes(manifest)
    anchor = data.draw(
        st.sampled_from(
            [
                ["--mrsigner", world["mrsigner"]],
                ["--record", world["out"] / "measurement.json"],
                ["--allow-unpinned", "--allow-debug"],
            ]
        )
    )
    assert_clean(run_cli(verify_argv(world, *anchor, "--json", directory=where)))
    shutil.rmtree(where)


NAMES = st.one_of(
    st.sampled_from(
        [
            "",
            ".",
            "..",
            "../out/" + APP,
            APP + "/",
            "a/b",
            "/",
            APP + ".manifest.sgx",
            "\x00",
            "\x1b[31m",
            "x" * 300,
            "\udcff",
            APP.upper(),
            " " + APP,
        ]
    ),
    st.text(max_size=10),
)
MRSIGNERS = st.one_of(
    st.sampled_from(
        [
            "",
            "0" * 63,
            "0" * 65,
            "g" * 64,
            "０" * 64,
            " " * 64,
            "0x" + "0" * 62,
            "ab" * 32 + "\n",
            "\x1b" * 64,
            "83d719e77deaca1470f6baf62a4d774303c899db69020f9c70ee1dfc08c7ce9e",
        ]
    ),
    st.text(max_size=70),
)


@fuzz_settings(40)
@given(data=st.data())
def test_verify_survives_any_pin_name_or_libpal(world, data):
    where = scratch(world)
    what = data.draw(st.sampled_from(["name", "mrsigner", "signer-key", "libpal"]))
    if what == "name":
        extra = ["--name", data.draw(NAMES), "--mrsigner", world["mrsigner"]]
    elif what == "mrsigner":
        extra = ["--mrsigner", data.draw(MRSIGNERS)]
    elif what == "signer-key":
        extra = ["--signer-key", world["keys"][data.draw(st.sampled_from(sorted(world["keys"])))]]
    else:
        (where / "libpal.so").write_bytes(data.draw(hostile_elf(world["libpal"].read_bytes())))
        extra = ["--libpal", where / "libpal.so", "--mrsigner", world["mrsigner"]]
    assert_clean(run_cli(verify_argv(world, *extra)))
    shutil.rmtree(where)


# --- the image tree: what verify reads and hashes there --------------------------------------------


def _copy_rootfs(world, target: Path) -> Path:
    """The rootfs without its fifo (copytree would block reading it)."""

    def special(directory, names):
        return [n for n in names if (Path(directory) / n).is_fifo()]

    return Path(shutil.copytree(world["rootfs"], target, symlinks=True, ignore=special))


TRUSTED = [
    "app/job.py",
    "usr/lib/x86_64-linux-gnu/gramine/libsysdb.so",
    "usr/lib/x86_64-linux-gnu/gramine/sgx/libpal.so",
    "opt/spark-3.5.3/jars/lib-03.jar",
    "ppml/bin/ppml-launch.py",
]


@pytest.fixture(scope="module")
def tree_copy(world):
    return _copy_rootfs(world, world["base"] / "rootfs-copy")


@fuzz_settings(20, deadline_s=10.0)
@given(data=st.data())
def test_verify_survives_a_tampered_image_tree(world, tree_copy, data):
    """A trusted file replaced by a directory, a dangling or looping link, a link out of the
    root, an empty file, or libpal.so/libsysdb.so mangled; the copy is restored afterwards."""
    rel = data.draw(st.sampled_from(TRUSTED))
    path = tree_copy / rel
    saved = path.read_bytes()
    how = data.draw(st.sampled_from(["dir", "dangling", "loop", "escape", "empty", "bytes"]))
    try:
        path.unlink()
        if how == "dir":
            path.mkdir()
        elif how == "dangling":
            path.symlink_to("/nonexistent/x")
        elif how == "loop":
            path.symlink_to(path.name)
        elif how == "escape":
            path.symlink_to("../" * 12 + "etc/passwd")
        elif how == "empty":
            path.write_bytes(b"")
        else:
            path.write_bytes(
                data.draw(hostile_elf(saved))
                if saved.startswith(b"\x7fELF")
                else data.draw(mutated_bytes(saved))
            )
        assert_clean(
            run_cli(
                ["verify", world["out"], "--rootfs", tree_copy, "--mrsigner", world["mrsigner"]]
            )
        )
    finally:
        if path.is_dir() and not path.is_symlink():
            path.rmdir()
        elif path.exists() or path.is_symlink():
            path.unlink()
        path.write_bytes(saved)


# --- reproducers of what the fuzzing found -------------------------------------------------------


def test_a_control_character_in_a_record_value_is_shown_escaped(world):
    """verify's report printed a record's manifest_sha256 as it was (U+202E reorders the line)."""
    where = scratch(world)
    record = dict(world["record"], manifest_sha256="\u202e" + world["record"]["manifest_sha256"])
    (where / "measurement.json").write_text(json.dumps(record))
    outcome = assert_clean(run_cli(verify_argv(world, "--record", where / "measurement.json")))
    assert outcome.code == 1 and "\\u202e" in outcome.out, outcome.describe()


def test_a_nul_in_a_policy_is_shown_escaped(world):
    """verify's report printed an MAA policy's claim type with its NUL and ESC."""
    where = scratch(world)
    text = (world["policies"] / "maa-policy.txt").read_text()
    claim = 'type=="x-ms-sgx-is-debuggable"'
    assert claim in text
    (where / "maa-policy.txt").write_text(text.replace(claim, 'type=="\x00\x1b[2Jx"'))
    outcome = assert_clean(run_cli(verify_argv(world, "--policy", where / "maa-policy.txt")))
    assert outcome.code in (1, 2), outcome.describe()


# --- bombs: bounded in memory and time, in a child process -------------------------------------

DOCUMENT_BOMBS = {
    "deep-lists": b"[" * 100_000 + b"]" * 100_000,
    "deep-objects": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "huge-int": b'{"isv_svn": ' + b"9" * 100_000 + b"}",
    "huge-float": b'{"isv_svn": 1' + b"0" * 100_000 + b".5}",
    "nan": b'{"isv_svn": NaN, "mrenclave": Infinity}',
    "wide": b"[" + b"1," * 500_000 + b"1]",
    "long-string": b'{"mrenclave": "' + b"a" * 5_000_000 + b'"}',
}


@pytest.fixture(scope="module")
def bomb_outcomes(world):
    """Each bomb as a record (verify, policy), a JSON policy and Trustee's RVPS values, in one
    child limited to 1 GiB and 20 s per command."""
    where = world["base"] / "bombs"
    where.mkdir()
    cases, keys = [], []
    for name, data in DOCUMENT_BOMBS.items():
        (where / f"{name}.json").write_bytes(data)
        trustee = where / name
        trustee.mkdir()
        shutil.copy(world["policies"] / "trustee-policy.rego", trustee)
        (trustee / "trustee-policy.rvps.json").write_bytes(data)
        for use, argv in (
            ("verify --record", verify_argv(world, "--record", where / f"{name}.json")),
            ("policy", ["policy", where / f"{name}.json", "--format", "ehsm"]),
            ("verify --policy", verify_argv(world, "--policy", where / f"{name}.json")),
            ("trustee rvps", verify_argv(world, "--policy", trustee / "trustee-policy.rego")),
        ):
            cases.append((argv, 20.0))
            keys.append((name, use))
    for name, text in REGO_BOMBS.items():
        policy = where / name
        policy.write_text(text)
        if name.startswith("trustee"):
            shutil.copy(
                world["policies"] / "trustee-policy.rvps.json",
                where / name.replace(".rego", ".rvps.json"),
            )
        cases.append((verify_argv(world, "--policy", policy), 20.0))
        keys.append((name, "verify --policy"))
    outcomes = run_bounded(cases, env={"PPML_BUILD_CACHE_DIR": str(world["base"] / "cache")})
    return dict(zip(keys, outcomes))


# rego-cpp crashed (SIGSEGV) or spun for minutes on policies nested thousands deep.
REGO_BOMBS = {
    "ita-deep.rego": "[" * 100_000 + "]" * 100_000 + "\n",
    "ita-deep-rule.rego": "match if { x := " + "[" * 8_000 + "]" * 8_000 + " }\n",
    "trustee-deep.rego": "package policy\ntrust_claims := " + "{" * 20_000 + "}" * 20_000 + "\n",
}


@pytest.mark.parametrize("policy", sorted(REGO_BOMBS))
def test_deeply_nested_rego_is_refused_before_the_engine(bomb_outcomes, policy):
    outcome = assert_clean(bomb_outcomes[(policy, "verify --policy")])
    assert outcome.code == 2 and "nests brackets" in outcome.err, outcome.describe()


@pytest.mark.parametrize("use", ["verify --record", "policy", "verify --policy", "trustee rvps"])
@pytest.mark.parametrize("bomb", sorted(DOCUMENT_BOMBS))
def test_json_bombs_end_in_one_line_within_bounds(bomb_outcomes, bomb, use):
    outcome = assert_clean(bomb_outcomes[(bomb, use)])
    assert outcome.code in (1, 2), outcome.describe()
