"""Pipeline specs (*.yaml) and stage composition (train -> tune -> evaluate -> register -> promote)."""

from pathlib import Path

SPEC_DIR = Path(__file__).parent
