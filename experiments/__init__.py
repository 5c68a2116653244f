"""Research experiments built on lineas: run from the repository root, never imported by the library."""
