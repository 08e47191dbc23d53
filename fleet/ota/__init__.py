"""Over-the-air updates, fleet side: release keys (`keys`), signed releases (`release`) and the store
they live in (`store`). The manifest and envelope formats are in protocols/manifest.py (SPEC.md
"OTA release")."""
