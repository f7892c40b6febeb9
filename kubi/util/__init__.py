"""Small helpers every layer may use (below `kubi.api` in the import contract)."""
