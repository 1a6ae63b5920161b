"""The seed document users code against, as code: its blocks and its classes."""

from __future__ import annotations

import re
from pathlib import Path

SEED = Path(__file__).resolve().parents[2] / "docs" / "custom-models.md"
#: The document users already code against, beside the repo in our workplace (absent elsewhere).
SHARED_SEED = Path(__file__).resolve().parents[3] / "shared" / "seeds" / "custom-models.md"


def seed_blocks() -> list[str]:
    """Every ```python block of the seed, in order."""
    return re.findall(r"^```python\n(.*?)^```", SEED.read_text(), re.S | re.M)


def seed_class(name: str) -> type:
    """A class defined in the seed, verbatim (with its block's imports), without running the block."""
    for block in seed_blocks():
        match = re.search(rf"^class {name}\b.*?(?=^\S)", block + "\n#end\n", re.S | re.M)
        if match:
            imports = "\n".join(l for l in block.splitlines() if l.startswith(("import ", "from ")))
            namespace: dict = {}
            exec(compile(imports + "\n" + match.group(0), str(SEED), "exec"), namespace)  # noqa: S102
            return namespace[name]
    raise LookupError(f"the seed defines no class {name}")
