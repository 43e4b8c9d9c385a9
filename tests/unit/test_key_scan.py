"""The signing key is found in a build context in every encoding we can derive from it, and a
build refuses such a context with one line naming where the key would have gone."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from ppml_build.errors import RecipeError
from ppml_build.image import app_layer
from ppml_build.pipeline import key_guard, key_scan
from ppml_build.recipe import load_recipe
from ppml_build.sign import keys
from ppml_build.sign.sigstruct import Sigstruct


@pytest.fixture(scope="module")
def key():
    return keys.generate_key()


@pytest.fixture(scope="module")
def plain(key):
    """The key as `ppml-build keygen` writes it (PKCS#1 PEM) and its needles."""
    pem = keys.private_key_pem(key)
    return pem, key_scan.key_needles(pem, key)


@pytest.fixture(scope="module")
def encrypted(key):
    """The key as an encrypted PKCS#8 PEM file (PPML_KEY_PASSPHRASE) and its needles."""
    pem = keys.private_key_pem(key, b"correct horse")
    return pem, key_scan.key_needles(pem, key)


def der(key, fmt=serialization.PrivateFormat.PKCS8) -> bytes:
    return key.private_bytes(serialization.Encoding.DER, fmt, serialization.NoEncryption())


def wrap(pem: bytes, width: int, newline: bytes = b"\n") -> bytes:
    lines = pem.strip().splitlines()
    body = b"".join(lines[1:-1])
    chunks = [body[i : i + width] for i in range(0, len(body), width)]
    return newline.join([lines[0], *chunks, lines[-1]]) + newline


def b64url(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def openssl_text_hex(value: int) -> bytes:
    """`openssl rsa -text` style: 00:ab:cd:..., 15 bytes a line, indented."""
    raw = b"\0" + value.to_bytes((value.bit_length() + 7) // 8, "big")
    pairs = [f"{byte:02x}" for byte in raw]
    lines = [":".join(pairs[i : i + 15]) for i in range(0, len(pairs), 15)]
    return ("privateExponent:\n" + ":\n".join("    " + line for line in lines) + "\n").encode()


def embedded(data: bytes) -> bytes:
    return os.urandom(5000) + data + os.urandom(5000)


ENCODINGS = {
    "the key file itself": (lambda k, pem: pem, "PEM, the key file itself"),
    "DER PKCS#1": (
        lambda k, pem: der(k, serialization.PrivateFormat.TraditionalOpenSSL),
        "DER, PKCS#1",
    ),
    "DER PKCS#8 inside binary": (lambda k, pem: embedded(der(k)), "DER, PKCS#8"),
    "PKCS#8 PEM (the file is PKCS#1)": (
        lambda k, pem: k.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        "base64 of the",
    ),
    "PEM re-wrapped at 76 columns, CRLF": (lambda k, pem: wrap(pem, 76, b"\r\n"), "base64 of the"),
    "PEM as a JSON string": (
        lambda k, pem: json.dumps({"key": pem.decode()}).encode(),
        "base64 of the",
    ),
    "base64 of the DER on one line": (
        lambda k, pem: b"key=" + base64.b64encode(der(k)),
        "base64 of the",
    ),
    "JWK (base64url numbers)": (
        lambda k, pem: json.dumps(
            {"kty": "RSA", "d": b64url(k.private_numbers().d), "p": b64url(k.private_numbers().p)}
        ).encode(),
        "base64 of the private exponent d",
    ),
    "hex as openssl -text prints it": (
        lambda k, pem: openssl_text_hex(k.private_numbers().d),
        "hex of the private exponent d",
    ),
    "hex in capitals": (lambda k, pem: f"{k.private_numbers().q:X}".encode(), "hex of the prime q"),
    "raw d, big-endian, padded": (
        lambda k, pem: embedded(k.private_numbers().d.to_bytes(400, "big")),
        "the raw private exponent d, big-endian",
    ),
    "raw p, little-endian": (
        lambda k, pem: embedded(k.private_numbers().p.to_bytes(192, "little")),
        "the raw prime p, little-endian",
    ),
}


@pytest.mark.parametrize("name", list(ENCODINGS))
def test_the_key_is_found_in_every_encoding(name, key, plain, tmp_path):
    make, label = ENCODINGS[name]
    pem, needles = plain
    (tmp_path / "blob").write_bytes(make(key, pem))
    found = key_scan.find_in_file(tmp_path / "blob", needles)
    assert found is not None and found.encoding.startswith(label), found and found.encoding


def test_an_encrypted_key_file_is_found_as_given_rewrapped_and_as_its_der(key, encrypted, tmp_path):
    pem, needles = encrypted
    body = base64.b64decode(b"".join(pem.strip().splitlines()[1:-1]))
    cases = {
        "as given": (pem, "PEM, the key file itself"),
        "re-wrapped": (wrap(pem, 76), "base64 of the key file"),
        "its DER": (embedded(body), "DER of the key file"),
        # what the passphrase unlocks is refused too, not just the file's bytes
        "decrypted": (der(key, serialization.PrivateFormat.TraditionalOpenSSL), "DER, PKCS#1"),
    }
    for name, (data, label) in cases.items():
        (tmp_path / "blob").write_bytes(data)
        found = key_scan.find_in_file(tmp_path / "blob", needles)
        assert found is not None and found.encoding == label, (name, found and found.encoding)


def test_public_parts_are_never_taken_for_the_key(key, plain, tmp_path):
    """The modulus is public: the public key, its numbers and a SIGSTRUCT may be shipped."""
    _, needles = plain
    n = key.public_key().public_numbers().n
    signed = keys.sign_sigstruct(Sigstruct(), key).to_bytes()
    public_der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.PKCS1
    )
    blob = (
        keys.public_key_pem(key)
        + public_der
        + signed
        + n.to_bytes(384, "big")
        + n.to_bytes(384, "little")
        + f"{n:x}".encode()
        + base64.b64encode(public_der)
    )
    (tmp_path / "public").write_bytes(blob)
    assert key_scan.find_in_file(tmp_path / "public", needles) is None


@settings(max_examples=40, deadline=None)
@given(
    chunk=st.integers(min_value=64, max_value=6000),
    offset=st.integers(0, 20000),
    as_text=st.booleans(),
)
def test_a_key_across_a_chunk_boundary_is_found(
    chunk, offset, as_text, tmp_path_factory, plain, key
):
    pem, needles = plain
    payload = wrap(pem, 64) if as_text else der(key)
    path = tmp_path_factory.mktemp("chunks") / "blob"
    path.write_bytes(b"." * offset + payload + b"." * 300)
    old = key_scan.CHUNK
    key_scan.CHUNK = chunk  # tiny chunks: the key always straddles several
    try:
        found = key_scan.find_in_file(path, needles)
    finally:
        key_scan.CHUNK = old
    assert found is not None


def test_the_tree_scan_names_the_file_not_a_link_to_it(key, plain, tmp_path):
    _, needles = plain
    (tmp_path / "z").mkdir()
    (tmp_path / "z" / "k.der").write_bytes(der(key))
    (tmp_path / "a-link").symlink_to("z/k.der")
    (tmp_path / "other").write_bytes(b"nothing here")
    rel, needle = key_scan.find_in_tree(tmp_path, needles)
    assert (rel, needle.encoding) == ("z/k.der", "DER, PKCS#8")


# --- through the build's staging: one line naming the image path -----------------------------

RECIPE = """\
apiVersion: ppml-build/v1
kind: spark
name: demo
base:
  image: 127.0.0.1:5000/ppml/spark:1
app:
  files:
    - src: conf/
      dest: /app/conf/
  command: [/opt/spark/bin/spark-submit, /app/job.py]
"""


def refusal(recipe_dir: Path, key, tmp_path: Path) -> str:
    recipe_path = recipe_dir / "recipe.yaml"
    recipe_path.write_text(RECIPE)
    context = tmp_path / "context"
    context.mkdir()
    app_layer.stage_app_files(load_recipe(recipe_path), recipe_dir, context, "recipe.yaml")
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(keys.private_key_pem(key))
    with pytest.raises(RecipeError) as info:
        key_guard.refuse_key_in_context(
            context, key_guard.key_needles(key_file, key), "recipe.yaml"
        )
    return str(info.value)


def test_a_der_copy_of_the_key_in_app_files_is_refused(key, tmp_path):
    recipe_dir = tmp_path / "recipe"
    (recipe_dir / "conf").mkdir(parents=True)
    (recipe_dir / "conf" / "app.conf").write_text("x=1\n")
    (recipe_dir / "conf" / "signing.der").write_bytes(der(key))
    assert refusal(recipe_dir, key, tmp_path) == (
        "recipe.yaml: app.files would put the signing key (DER, PKCS#8) into the image at "
        "/app/conf/signing.der; the signing key must never be shipped: remove it from app.files"
    )


def test_a_link_to_the_key_elsewhere_in_the_recipe_directory_is_refused(key, tmp_path):
    """Inside the recipe's directory but outside the copied tree: the link's bytes are copied
    in its place, and the scan finds the key in them."""
    recipe_dir = tmp_path / "recipe"
    (recipe_dir / "conf").mkdir(parents=True)
    (recipe_dir / "keys").mkdir()
    (recipe_dir / "keys" / "enclave.pem").write_bytes(keys.private_key_pem(key))
    (recipe_dir / "conf" / "tls.pem").symlink_to("../keys/enclave.pem")
    assert refusal(recipe_dir, key, tmp_path) == (
        "recipe.yaml: app.files would put the signing key (PEM, the key file itself) into the "
        "image at /app/conf/tls.pem; the signing key must never be shipped: remove it from "
        "app.files"
    )


def test_the_key_in_a_build_stage_source_is_refused_too(key, tmp_path):
    """The build stage never reaches the image, but its context is sent to the engine."""
    recipe_dir = tmp_path / "recipe"
    (recipe_dir / "conf").mkdir(parents=True)
    (recipe_dir / "src").mkdir()
    (recipe_dir / "src" / "Main.java").write_text(
        "// " + base64.b64encode(der(key)).decode() + "\n"
    )
    recipe_path = recipe_dir / "recipe.yaml"
    recipe_path.write_text(
        RECIPE + "build:\n  sources: [{src: src/, dest: /build/src/}]\n"
        "  steps: [make]\n  outputs: [{src: /build/a.jar, dest: /app/a.jar}]\n"
    )
    context = tmp_path / "context"
    context.mkdir()
    app_layer.stage_app_files(load_recipe(recipe_path), recipe_dir, context, "recipe.yaml")
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(keys.private_key_pem(key))
    with pytest.raises(RecipeError) as info:
        key_guard.refuse_key_in_context(
            context, key_guard.key_needles(key_file, key), "recipe.yaml"
        )
    assert str(info.value) == (
        "recipe.yaml: build.sources[0] would put the signing key (base64 of the private "
        "exponent d, as a PEM or JWK has it) into the build stage (build-src/0/Main.java); the "
        "signing key must never be shipped: remove it from build.sources"
    )
