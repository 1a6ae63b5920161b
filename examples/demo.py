"""The main demo (make demo): an agent session with no API key, every command in a sandbox.

Runs the same thing as:
    pygent-runner run --custom-model examples/demo_model.py:DemoModel "Show what the sandbox does"
"""

import sys
from pathlib import Path

from pygent.cli import main

if __name__ == "__main__":
    model = Path(__file__).with_name("demo_model.py")
    sys.argv = ["pygent-runner", "run", "--custom-model", f"{model}:DemoModel", "Show what the sandbox does"]
    main()
