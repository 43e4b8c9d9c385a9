"""The Gramine 1.9 backend: manifest, trusted files, launch, signing, ``gramine-direct`` runs."""
