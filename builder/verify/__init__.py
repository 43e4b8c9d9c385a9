"""``ppml-build verify``: re-check a signed enclave image from its own bytes, trusting nothing.

Everything is recomputed from what the image (or a directory) holds: MRENCLAVE from
``APP.manifest.sgx`` and the image's ``libpal.so``, the SIGSTRUCT's signature and Q1/Q2, every
trusted file's SHA-256 from the image's filesystem, then compared with the SIGSTRUCT, the
measurement record, the image labels and an attestation policy. Each comparison is one named
``Check``; a readable input that disagrees is a failed check (exit 1), an unreadable input
(no such image, a record that is not JSON, a ``.sig`` that is not a SIGSTRUCT) is one
``PpmlError`` line (exit 2).

One module per job, dependencies pointing down:

* ``report``: ``Check`` and ``VerifyReport``, the lines and the JSON a user sees;
  ``ClusterVerifyReport``, a cluster image's reports by role.
* ``evidence``: ``Evidence`` (what verify looks at) and the user's inputs read from the host:
  the record (a cluster's, split by role), the policies, ``--mrsigner``, ``--signer-key``, a
  ``.sig``.
* ``consistency``: does the image agree with its own SIGSTRUCT (MRENCLAVE, signature, fields,
  LibOS, trusted files)?
* ``anchors``: does it agree with what ties it to a signer (record, labels, pins), and is it
  production-safe (anchored, not debug, no allowed file covering /)?
* ``policies``: would an attestation policy accept it, and what does the policy pin?
* ``checks``: ``run_checks``, the pure core, every check over already-read evidence.
* ``target``: the I/O edge: a directory or one ``docker export`` stream, then ``run_checks``
  (once per role's enclave for a cluster image, ``ppml.role.<role>.*`` labels).
"""
