"""Intel Trust Authority SGX appraisal policy (policy language V2, Rego, no package line).

ITA's V2 syntax allows no comments, so what the policy cannot say goes to stderr notes, and
--allow-debug is recorded as an exported claim instead.
"""

from __future__ import annotations

from .model import PolicySpec, RenderedPolicy

FILE_NAME = "ita-policy.rego"


def policy_text(spec: PolicySpec) -> str:
    v = spec.values
    rules = []
    if spec.pins_mrenclave:
        rules.append(f'input.sgx.sgx_mrenclave == "{v.mrenclave_hex}"')
    if spec.pins_mrsigner:
        rules.append(f'input.sgx.sgx_mrsigner == "{v.mrsigner_hex}"')
    rules.append(f"input.sgx.sgx_isvprodid == {v.isv_prod_id}")
    rules.append(f"input.sgx.sgx_isvsvn >= {spec.min_svn}")
    if not spec.allow_debug:
        rules.append("input.sgx.sgx_is_debuggable == false")
    lines = ["import rego.v1", "", "default match := false", "", "match if {"]
    lines += [f"\t{rule}" for rule in rules]
    lines.append("}")
    if spec.allow_debug:
        lines += ["", 'export := {"ppml_debug_enclaves_allowed": true}']
    return "\n".join(lines) + "\n"


def render(spec: PolicySpec) -> RenderedPolicy:
    notes = [
        f"ITA: sgx_isvsvn is a minimum (>= {spec.min_svn}); upload with 'trustauthorityctl "
        f'create policy -n NAME -t "Appraisal policy" -a "SGX Attestation" -r '
        f"SERVICE_OFFER_ID -f {FILE_NAME}' and check policy_ids_matched in the token"
    ]
    if spec.allow_debug:
        notes.append(
            "--allow-debug: the ITA policy does NOT check sgx_is_debuggable (exported as "
            "ppml_debug_enclaves_allowed); DEBUG enclaves match"
        )
    return RenderedPolicy({FILE_NAME: policy_text(spec)}, notes)
