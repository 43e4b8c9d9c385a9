"""data-key / encrypt / decrypt through the CLI entry point, as a user runs them."""

from __future__ import annotations

import os
import shlex
import stat
import sys
from pathlib import Path

import pytest

from ppml_build.cli import main

# Printable, so a leak into stdout or stderr would show up as text.
KEY = b"SECRET-KEY-0123!"
OTHER_KEY = b"another-key-9876"

RECIPE = """\
apiVersion: ppml-build/v1
kind: spark
name: spark-demo
base: {image: "127.0.0.1:5000/ppml/spark:1"}
app:
  files: [{src: job.py, dest: /app/job.py}]
  command: [spark-submit, --master, "local[2]", --driver-memory, 2g, /app/job.py]
files:
  trusted: [/etc/os-release]
  encrypted: [{path: /data/in, uri: "file:/srv/in", key_name: data}]
  keys: {data: {source: app}}
"""


def run(capsys, *args: str | Path) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(err: str, *fragments: str) -> None:
    assert err.startswith("ppml-build: error: "), err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    for fragment in fragments:
        assert fragment in err, err


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root``: a file's bytes, None for a directory."""
    found: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        for name in dirnames:
            found[(here / name).relative_to(root).as_posix()] = None
        for name in filenames:
            found[(here / name).relative_to(root).as_posix()] = (here / name).read_bytes()
    return found


def no_staging_left(parent: Path) -> None:
    leftovers = [p.name for p in parent.iterdir() if ".ppml-" in p.name]
    assert leftovers == [], leftovers


@pytest.fixture()
def key_file(tmp_path) -> Path:
    path = tmp_path / "data.key"
    path.write_bytes(KEY)
    return path


@pytest.fixture()
def plain_tree(tmp_path) -> Path:
    root = tmp_path / "plain"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "a.txt").write_bytes(b"alpha\n")
    (root / "zero.bin").write_bytes(b"")
    (root / "sub" / "b.bin").write_bytes(os.urandom(3072 + 4096 * 3 + 5))
    (root / "sub" / "deeper" / "c.bin").write_bytes(os.urandom(3072))
    return root


@pytest.fixture()
def encrypted_tree(capsys, tmp_path, plain_tree, key_file) -> Path:
    enc = tmp_path / "enc"
    rc, _, err = run(
        capsys, "encrypt", plain_tree, enc, "--key", key_file, "--bound-path", "/data/in"
    )
    assert rc == 0, err
    return enc


# --- data-key -----------------------------------------------------------------------------------


def test_data_key_writes_16_bytes_0600_and_never_overwrites(capsys, tmp_path):
    out_path = tmp_path / "k"
    rc, out, err = run(capsys, "data-key", "-o", out_path)
    assert rc == 0, err
    key = out_path.read_bytes()
    assert len(key) == 16
    assert stat.S_IMODE(out_path.stat().st_mode) == 0o600
    assert str(out_path) in out
    assert key.hex() not in out + err
    rc, out, err = run(capsys, "data-key", "-o", out_path)
    assert rc == 2
    assert_one_line_error(err, str(out_path), "already exists")
    assert out_path.read_bytes() == key
    rc, _, err = run(capsys, "data-key", "-o", tmp_path / "k2")
    assert rc == 0, err
    assert (tmp_path / "k2").read_bytes() != key


# --- round trips ----------------------------------------------------------------------------------


def test_encrypt_then_decrypt_a_tree(capsys, tmp_path, plain_tree, key_file):
    enc, dec = tmp_path / "enc", tmp_path / "dec"
    rc, out, err = run(
        capsys, "encrypt", plain_tree, enc, "--key", key_file, "--bound-path", "/data/in"
    )
    assert rc == 0, err
    assert err == ""
    lines = out.splitlines()
    for rel in ("a.txt", "zero.bin", "sub/b.bin", "sub/deeper/c.bin"):
        line = next(x for x in lines if f"{plain_tree / rel} -> {enc / rel}" in x)
        assert line.startswith("encrypted ")
        assert f"(bound to /data/in/{rel})" in line
    assert lines[-1] == f"4 files, {6 + 0 + 3072 + 4096 * 3 + 5 + 3072} plaintext bytes"
    # encrypted: every file a whole number of 4 KiB nodes, none of it plaintext
    assert (enc / "empty").is_dir()
    assert (enc / "zero.bin").stat().st_size == 4096
    assert (enc / "a.txt").stat().st_size == 4096
    assert b"alpha" not in (enc / "a.txt").read_bytes()
    assert (enc / "sub" / "b.bin").stat().st_size == 4096 * (1 + 1 + 4)  # meta, MHT, data
    no_staging_left(tmp_path)

    rc, out, err = run(capsys, "decrypt", enc, dec, "--key", key_file, "--bound-path", "/data/in")
    assert rc == 0, err
    assert tree(dec) == tree(plain_tree)
    assert (
        f"decrypted {enc / 'sub/b.bin'} -> {dec / 'sub/b.bin'} (bound to /data/in/sub/b.bin)" in out
    )
    # plaintext is the owner's only: the tree 0700, every file 0600
    assert stat.S_IMODE(dec.stat().st_mode) == 0o700
    assert {
        stat.S_IMODE((dec / r).stat().st_mode) for r, b in tree(dec).items() if b is not None
    } == {0o600}
    no_staging_left(tmp_path)


def test_a_single_file(capsys, tmp_path, key_file):
    src = tmp_path / "one.csv"
    src.write_bytes(b"x,y\n1,2\n")
    rc, out, err = run(
        capsys,
        "encrypt",
        src,
        tmp_path / "one.enc",
        "-k",
        key_file,
        "--bound-path",
        "/srv/in/one.csv",
    )
    assert rc == 0, err
    assert "(bound to /srv/in/one.csv)" in out
    assert (tmp_path / "one.enc").is_file()
    rc, _, err = run(
        capsys,
        "decrypt",
        tmp_path / "one.enc",
        tmp_path / "one.out",
        "-k",
        key_file,
        "--bound-path",
        "/srv/in/one.csv",
    )
    assert rc == 0, err
    assert (tmp_path / "one.out").read_bytes() == src.read_bytes()
    no_staging_left(tmp_path)


def test_recipe_and_enclave_path_bind_to_the_mounts_uri(capsys, tmp_path, plain_tree, key_file):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE)
    enc = tmp_path / "enc"
    rc, out, err = run(
        capsys,
        "encrypt",
        plain_tree,
        enc,
        "-k",
        key_file,
        "--recipe",
        recipe,
        "--enclave-path",
        "/data/in/sub",
    )
    assert rc == 0, err
    assert "(bound to /srv/in/sub/a.txt)" in out
    assert "(bound to /srv/in/sub/sub/deeper/c.bin)" in out
    assert "/data/in" not in out.replace(str(tmp_path), "")
    # decrypts with the same mapping, and with the bound path given directly
    rc, _, err = run(
        capsys,
        "decrypt",
        enc,
        tmp_path / "d1",
        "-k",
        key_file,
        "-r",
        recipe,
        "--enclave-path",
        "/data/in/sub/",
    )
    assert rc == 0, err
    assert tree(tmp_path / "d1") == tree(plain_tree)
    rc, _, err = run(
        capsys, "decrypt", enc, tmp_path / "d2", "-k", key_file, "--bound-path", "/srv/in/sub"
    )
    assert rc == 0, err
    # ... but not as if the enclave saw it at the mount's in-enclave path
    rc, _, err = run(
        capsys, "decrypt", enc, tmp_path / "d3", "-k", key_file, "--bound-path", "/data/in/sub"
    )
    assert rc == 2
    assert_one_line_error(err, "renamed or moved")
    assert not (tmp_path / "d3").exists()


def test_enclave_path_outside_every_mount(capsys, tmp_path, plain_tree, key_file):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE)
    rc, out, err = run(
        capsys,
        "encrypt",
        plain_tree,
        tmp_path / "enc",
        "-k",
        key_file,
        "-r",
        recipe,
        "--enclave-path",
        "/data/input",
    )
    assert rc == 2
    assert_one_line_error(err, "--enclave-path /data/input", "/data/in")
    assert out == ""
    assert not (tmp_path / "enc").exists()


def test_bound_path_options_must_be_given_once(capsys, tmp_path, plain_tree, key_file):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE)
    enc = tmp_path / "enc"
    rc, _, err = run(capsys, "encrypt", plain_tree, enc, "-k", key_file)
    assert rc == 2
    assert_one_line_error(err, "--bound-path")
    rc, _, err = run(capsys, "encrypt", plain_tree, enc, "-k", key_file, "-r", recipe)
    assert rc == 2
    assert_one_line_error(err, "--recipe and --enclave-path go together")
    rc, _, err = run(
        capsys,
        "encrypt",
        plain_tree,
        enc,
        "-k",
        key_file,
        "--bound-path",
        "/x",
        "-r",
        recipe,
        "--enclave-path",
        "/data/in",
    )
    assert rc == 2
    assert_one_line_error(err, "not both")
    assert not enc.exists()


# --- refusals on decrypt ----------------------------------------------------------------------------


def assert_refused(capsys, tmp_path, enc: Path, named: Path, fragment: str, *extra: str | Path):
    dest = tmp_path / "dec"
    rc, out, err = run(capsys, "decrypt", enc, dest, *extra)
    assert rc == 2
    assert_one_line_error(err, str(named), fragment)
    assert not dest.exists()
    no_staging_left(tmp_path)
    assert "decrypted" not in out


def test_decrypt_with_the_wrong_key(capsys, tmp_path, encrypted_tree):
    wrong = tmp_path / "wrong.key"
    wrong.write_bytes(OTHER_KEY)
    assert_refused(
        capsys,
        tmp_path,
        encrypted_tree,
        encrypted_tree / "a.txt",
        "metadata MAC mismatch",
        "-k",
        wrong,
        "--bound-path",
        "/data/in",
    )


def test_decrypt_a_renamed_file(capsys, tmp_path, encrypted_tree, key_file):
    (encrypted_tree / "a.txt").rename(encrypted_tree / "a2.txt")
    assert_refused(
        capsys,
        tmp_path,
        encrypted_tree,
        encrypted_tree / "a2.txt",
        "renamed or moved",
        "-k",
        key_file,
        "--bound-path",
        "/data/in",
    )
    # --any-path skips that check
    rc, _, err = run(
        capsys, "decrypt", encrypted_tree, tmp_path / "any", "-k", key_file, "--any-path"
    )
    assert rc == 0, err
    assert (tmp_path / "any" / "a2.txt").read_bytes() == b"alpha\n"


def test_decrypt_a_truncated_file(capsys, tmp_path, encrypted_tree, key_file):
    victim = encrypted_tree / "sub" / "b.bin"
    os.truncate(victim, victim.stat().st_size - 4096)
    assert_refused(
        capsys,
        tmp_path,
        encrypted_tree,
        victim,
        "truncated",
        "-k",
        key_file,
        "--bound-path",
        "/data/in",
    )
    os.truncate(victim, victim.stat().st_size - 1)
    assert_refused(
        capsys,
        tmp_path,
        encrypted_tree,
        victim,
        "not a whole number",
        "-k",
        key_file,
        "--bound-path",
        "/data/in",
    )


def test_a_tree_whose_second_file_fails_leaves_no_dest(capsys, tmp_path, key_file):
    src = tmp_path / "flat"
    src.mkdir()
    for name in ("1.bin", "2.bin", "3.bin"):
        (src / name).write_bytes(os.urandom(9000))
    enc = tmp_path / "enc"
    rc, _, err = run(capsys, "encrypt", src, enc, "-k", key_file, "--bound-path", "/srv/in")
    assert rc == 0, err
    second = enc / "2.bin"
    blob = bytearray(second.read_bytes())
    blob[2 * 4096 + 10] ^= 0xFF  # its first data node
    second.write_bytes(bytes(blob))
    assert_refused(
        capsys, tmp_path, enc, second, "fails its MAC", "-k", key_file, "--bound-path", "/srv/in"
    )


# --- keys ---------------------------------------------------------------------------------------


def round_trip(capsys, tmp_path, name: str, *key_args: str | Path) -> tuple[str, str]:
    src = tmp_path / f"{name}.txt"
    src.write_bytes(b"payload " + name.encode())
    rc, out1, err1 = run(
        capsys, "encrypt", src, tmp_path / f"{name}.enc", "--bound-path", "/srv/x", *key_args
    )
    assert rc == 0, err1
    return out1, err1


def decrypts_with_raw_key(capsys, tmp_path, key_file, name: str) -> None:
    dest = tmp_path / f"{name}.out"
    rc, _, err = run(
        capsys, "decrypt", tmp_path / f"{name}.enc", dest, "-k", key_file, "--bound-path", "/srv/x"
    )
    assert rc == 0, err
    assert dest.read_bytes() == b"payload " + name.encode()


def test_hex_key_file_is_the_same_key(capsys, tmp_path, key_file):
    hex_file = tmp_path / "hex.key"
    hex_file.write_text(KEY.hex() + "\n")
    round_trip(capsys, tmp_path, "hex", "--key", hex_file)
    decrypts_with_raw_key(capsys, tmp_path, key_file, "hex")
    hex_file.write_text(KEY.hex().upper())
    round_trip(capsys, tmp_path, "hexup", "--key", hex_file)
    decrypts_with_raw_key(capsys, tmp_path, key_file, "hexup")


def test_key_from_env(capsys, tmp_path, key_file, monkeypatch):
    monkeypatch.setenv("PPML_TEST_DATA_KEY", KEY.hex())
    round_trip(capsys, tmp_path, "env", "--key-from-env", "PPML_TEST_DATA_KEY")
    decrypts_with_raw_key(capsys, tmp_path, key_file, "env")
    monkeypatch.delenv("PPML_TEST_DATA_KEY")
    rc, _, err = run(
        capsys,
        "encrypt",
        tmp_path / "env.txt",
        tmp_path / "e2",
        "--bound-path",
        "/srv/x",
        "--key-from-env",
        "PPML_TEST_DATA_KEY",
    )
    assert rc == 2
    assert_one_line_error(err, "PPML_TEST_DATA_KEY", "not set")


def key_command(code: str) -> str:
    return shlex.join([sys.executable, "-c", code])


def test_key_command_printing_the_raw_key(capsys, tmp_path, key_file):
    cmd = key_command(f"import sys; sys.stdout.buffer.write(bytes.fromhex({KEY.hex()!r}))")
    round_trip(capsys, tmp_path, "cmd", "--key-command", cmd)
    decrypts_with_raw_key(capsys, tmp_path, key_file, "cmd")


def test_key_command_that_fails(capsys, tmp_path, plain_tree):
    cmd = key_command("import sys; sys.stderr.write('kms: access denied\\n'); sys.exit(1)")
    rc, out, err = run(
        capsys, "encrypt", plain_tree, tmp_path / "enc", "--bound-path", "/x", "--key-command", cmd
    )
    assert rc == 2
    assert_one_line_error(err, "--key-command", "status 1", "access denied")
    assert out == ""
    assert not (tmp_path / "enc").exists()


def test_key_sources_exactly_one(capsys, tmp_path, plain_tree, key_file, monkeypatch):
    monkeypatch.setenv("PPML_TEST_DATA_KEY", KEY.hex())
    enc = tmp_path / "enc"
    rc, _, err = run(capsys, "encrypt", plain_tree, enc, "--bound-path", "/x")
    assert rc == 2
    assert_one_line_error(err, "exactly one of", "got none")
    rc, _, err = run(
        capsys,
        "encrypt",
        plain_tree,
        enc,
        "--bound-path",
        "/x",
        "-k",
        key_file,
        "--key-from-env",
        "PPML_TEST_DATA_KEY",
    )
    assert rc == 2
    assert_one_line_error(err, "exactly one of", "--key, --key-from-env")
    rc, _, err = run(capsys, "decrypt", plain_tree, enc, "--any-path")
    assert rc == 2
    assert_one_line_error(err, "exactly one of")
    assert not enc.exists()


def test_key_file_of_10_bytes(capsys, tmp_path, plain_tree):
    short = tmp_path / "short.key"
    short.write_bytes(b"0123456789")
    rc, _, err = run(
        capsys, "encrypt", plain_tree, tmp_path / "enc", "--bound-path", "/x", "-k", short
    )
    assert rc == 2
    assert_one_line_error(err, str(short), "not an encrypted-files key")
    assert not (tmp_path / "enc").exists()


def test_key_never_printed(capfd, tmp_path, plain_tree, key_file, monkeypatch):
    monkeypatch.setenv("PPML_TEST_DATA_KEY", KEY.hex())
    wrong = tmp_path / "wrong.key"
    wrong.write_bytes(OTHER_KEY)
    cmd = key_command(f"import sys; sys.stdout.buffer.write({KEY!r})")
    runs = [
        ["encrypt", plain_tree, tmp_path / "e1", "--bound-path", "/x", "-k", key_file],
        [
            "encrypt",
            plain_tree,
            tmp_path / "e2",
            "--bound-path",
            "/x",
            "--key-from-env",
            "PPML_TEST_DATA_KEY",
        ],
        ["encrypt", plain_tree, tmp_path / "e3", "--bound-path", "/x", "--key-command", cmd],
        ["decrypt", tmp_path / "e1", tmp_path / "d1", "--bound-path", "/x", "-k", key_file],
        ["decrypt", tmp_path / "e1", tmp_path / "d2", "--bound-path", "/x", "-k", wrong],
        ["decrypt", tmp_path / "e1", tmp_path / "d3", "--bound-path", "/y", "-k", key_file],
        ["encrypt", plain_tree, tmp_path / "e1", "--bound-path", "/x", "-k", key_file],  # exists
    ]
    codes = []
    for args in runs:
        codes.append(main([str(a) for a in args]))
    out, err = capfd.readouterr()
    assert codes == [0, 0, 0, 0, 2, 2, 2]
    for secret in (KEY.decode(), KEY.hex(), KEY.hex().upper(), OTHER_KEY.decode(), OTHER_KEY.hex()):
        assert secret not in out
        assert secret not in err


# --- DEST and the source tree ------------------------------------------------------------------


def test_existing_dest_needs_force(capsys, tmp_path, plain_tree, key_file):
    dest = tmp_path / "enc"
    dest.mkdir()
    (dest / "old.txt").write_bytes(b"old")
    rc, out, err = run(
        capsys, "encrypt", plain_tree, dest, "-k", key_file, "--bound-path", "/data/in"
    )
    assert rc == 2
    assert_one_line_error(err, str(dest), "already exists", "--force")
    assert tree(dest) == {"old.txt": b"old"}
    no_staging_left(tmp_path)

    rc, _, err = run(
        capsys, "encrypt", plain_tree, dest, "-k", key_file, "--bound-path", "/data/in", "--force"
    )
    assert rc == 0, err
    assert not (dest / "old.txt").exists()
    assert set(tree(dest)) == set(tree(plain_tree))
    no_staging_left(tmp_path)

    # a file DEST on decrypt, likewise
    out_file = tmp_path / "a.out"
    out_file.write_bytes(b"keep me")
    args = ["decrypt", dest / "a.txt", out_file, "-k", key_file, "--bound-path", "/data/in/a.txt"]
    rc, _, err = run(capsys, *args)
    assert rc == 2
    assert_one_line_error(err, str(out_file), "already exists")
    assert out_file.read_bytes() == b"keep me"
    rc, _, err = run(capsys, *args, "--force")
    assert rc == 0, err
    assert out_file.read_bytes() == b"alpha\n"
    no_staging_left(tmp_path)


def test_failed_decrypt_with_force_keeps_the_old_dest(capsys, tmp_path, encrypted_tree, key_file):
    dest = tmp_path / "dec"
    dest.mkdir()
    (dest / "old.txt").write_bytes(b"old")
    rc, _, err = run(
        capsys, "decrypt", encrypted_tree, dest, "-k", key_file, "--bound-path", "/other", "--force"
    )
    assert rc == 2
    assert_one_line_error(err, "renamed or moved")
    assert tree(dest) == {"old.txt": b"old"}
    no_staging_left(tmp_path)


def test_symlink_in_the_source_tree_is_refused(capsys, tmp_path, plain_tree, key_file):
    (plain_tree / "sub" / "link.txt").symlink_to(plain_tree / "a.txt")
    rc, out, err = run(
        capsys, "encrypt", plain_tree, tmp_path / "enc", "-k", key_file, "--bound-path", "/data/in"
    )
    assert rc == 2
    assert_one_line_error(err, str(plain_tree / "sub" / "link.txt"), "symbolic link")
    assert not (tmp_path / "enc").exists()
    no_staging_left(tmp_path)


def test_symlinked_directory_in_the_source_tree_is_refused(capsys, tmp_path, plain_tree, key_file):
    (plain_tree / "linkdir").symlink_to(plain_tree / "sub", target_is_directory=True)
    rc, _, err = run(
        capsys, "encrypt", plain_tree, tmp_path / "enc", "-k", key_file, "--bound-path", "/data/in"
    )
    assert rc == 2
    assert_one_line_error(err, str(plain_tree / "linkdir"), "symbolic link")
    assert not (tmp_path / "enc").exists()


def test_missing_source(capsys, tmp_path, key_file):
    rc, _, err = run(
        capsys, "encrypt", tmp_path / "nope", tmp_path / "enc", "-k", key_file, "--bound-path", "/x"
    )
    assert rc == 2
    assert_one_line_error(err, str(tmp_path / "nope"), "no such file")


def test_dest_inside_the_source_tree(capsys, tmp_path, plain_tree, key_file):
    dest = plain_tree / "enc"
    rc, _, err = run(capsys, "encrypt", plain_tree, dest, "-k", key_file, "--bound-path", "/d")
    assert rc == 2
    assert_one_line_error(err, str(dest))
    assert "outside the source tree" in err and ".ppml-" not in err, err
    assert not dest.exists()
    no_staging_left(plain_tree)


def test_force_never_replaces_a_tree_holding_the_source(capsys, tmp_path, plain_tree, key_file):
    # `encrypt data/in data --force` would otherwise delete the plaintext it just read
    before = tree(plain_tree)
    rc, _, err = run(
        capsys, "encrypt", plain_tree, tmp_path, "-k", key_file, "--bound-path", "/d", "--force"
    )
    assert rc == 2
    assert_one_line_error(err, str(tmp_path))
    assert tree(plain_tree) == before
