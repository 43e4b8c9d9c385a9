"""Gramine RA-TLS / secret-provisioning verifier environment (``ra_tls_verify_dcap.so``)."""

from __future__ import annotations

from .model import PolicySpec, RenderedPolicy

FILE_NAME = "ra-tls.env"


def render(spec: PolicySpec) -> RenderedPolicy:
    v = spec.values
    # The verifier needs all four variables set; "any" is its own spelling of "do not check".
    mrenclave = v.mrenclave_hex if spec.pins_mrenclave else "any"
    mrsigner = v.mrsigner_hex if spec.pins_mrsigner else "any"
    lines = [
        "# Gramine RA-TLS verifier policy written by ppml-build (ra_tls_verify_dcap /",
        "# secret_prov_verify_dcap read these variables). Load with e.g. `docker run --env-file`.",
        f"# Pinned identity: {spec.pin.value}. RA_TLS_ISV_SVN is a minimum (enclave SVN >= value).",
        f"RA_TLS_MRENCLAVE={mrenclave}",
        f"RA_TLS_MRSIGNER={mrsigner}",
        f"RA_TLS_ISV_PROD_ID={v.isv_prod_id}",
        f"RA_TLS_ISV_SVN={spec.min_svn}",
    ]
    if spec.allow_debug:
        lines += [
            "# --allow-debug: DEBUG enclaves are ACCEPTED. Their memory is readable by the host;",
            "# never use this file in production.",
            "RA_TLS_ALLOW_DEBUG_ENCLAVE_INSECURE=1",
        ]
    else:
        lines += [
            "# Debug enclaves are rejected: only the exact value 1 would allow them, and setting 0",
            "# here overrides any value inherited from the verifier's environment.",
            "RA_TLS_ALLOW_DEBUG_ENCLAVE_INSECURE=0",
        ]
    if v.provisioned_key:
        lines += [
            f"# The enclave asks for encrypted-files key {v.provisioned_key!r}",
            "# (SECRET_PROVISION_SET_KEY): serve exactly 16 raw bytes, the key its files were",
            "# encrypted with (`ppml-build encrypt`), from secret_provision_start_server() once",
            "# the checks above pass.",
        ]
    return RenderedPolicy({FILE_NAME: "\n".join(lines) + "\n"})
