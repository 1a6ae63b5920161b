"""The Python matrix's closing line: how long each Python's image and steps took."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def pytest_terminal_summary(terminalreporter):
    import harness

    for version, steps in harness.TIMES.items():
        if steps:
            parts = ", ".join(f"{name} {seconds:.0f}s" for name, seconds in steps.items())
            terminalreporter.write_line(f"python matrix {version} ({harness.SUITES[version]}): {parts}")
