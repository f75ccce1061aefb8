"""moved to tools/attribute_kinds.py; this name keeps working"""

import runpy
from pathlib import Path

TOOL = Path(__file__).resolve().parents[1] / "tools" / "attribute_kinds.py"

if __name__ == "__main__":
    runpy.run_path(str(TOOL), run_name="__main__")
