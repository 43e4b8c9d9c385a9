"""The Occlum 0.31 backend: ``Occlum.json``, the BOM, enclave sizing and the Occlum build."""
