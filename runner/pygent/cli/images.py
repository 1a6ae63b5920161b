"""`pygent-runner images`: build, list and prune the bundled sandbox images."""

from __future__ import annotations

import sys
from typing import List, NoReturn, Optional

import typer

from ..errors import PygentError

app = typer.Typer(help="Build, list and prune the bundled sandbox images.", no_args_is_help=True)


def _fail(exc: BaseException) -> NoReturn:
    """One error line on stderr (after any log tail the message carries), exit 2."""
    lines = str(exc).splitlines() or [type(exc).__name__]
    for extra in lines[1:]:
        print(extra, file=sys.stderr)
    print(f"pygent-runner: error: {lines[0]}", file=sys.stderr)
    raise typer.Exit(2)


@app.command()
def build(
    names: Optional[List[str]] = typer.Argument(
        None, metavar="NAME", help="Bundled images to build (default: all of them)."
    ),
    base: Optional[str] = typer.Option(
        None, "--base", metavar="IMAGE",
        help="Build on this base image instead of the debootstrapped Debian (images taking a base only,"
        " e.g. python; e.g. debian:bookworm-slim where a registry is reachable).",
    ),
    force: bool = typer.Option(
        False, "--force", help="Rebuild without the layer cache even if the current tag exists."
    ),
) -> None:
    """Build bundled images (only when their context changed) and print their tags."""
    try:
        from ..sandbox import images

        targets = list(names) if names else images.bundled_names()
        if not targets:
            raise PygentError(f"no bundled images found in {images.images_dir()}")
        for name in targets:
            use_base = base if (names or images.accepts_base(name)) else None
            tag = images.build_image(name, base=use_base, force=force)
            print(tag, flush=True)
    except PygentError as exc:
        _fail(exc)


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


@app.command("list")
def list_() -> None:
    """Show the bundled images (tag of the current context, built, current, size), then outdated builds."""
    try:
        from rich.console import Console
        from rich.table import Table

        from ..sandbox import image_prune, images

        rows = images.list_images()
        stale = image_prune.outdated()
        table = Table(title=None, show_edge=False)
        for col in ("name", "tag", "built", "current", "size"):
            table.add_column(col, justify="right" if col == "size" else "left")
        for r in rows:
            table.add_row(
                r["name"], r["tag"],
                "yes" if r["built"] else "no",
                "yes" if r["current"] else "no",
                _size(r["size"]),
            )
        for item in stale:
            table.add_row(item["name"], item["tag"], "yes", "no (outdated)", _size(item["size"]))
        Console().print(table)
        if stale:
            print(f"{len(stale)} outdated tag(s): `pygent-runner images prune` removes them")
    except PygentError as exc:
        _fail(exc)


@app.command()
def prune() -> None:
    """Remove our outdated builds and unused Debian bases; the current builds stay."""
    try:
        from ..sandbox import image_prune

        result = image_prune.prune()
        for item in result["removed"]:
            print(f"removed {item['tag']}")
        for volume in result["volumes"]:
            print(f"removed volume {volume}")
        for item, why in result["kept"]:
            print(f"kept {item['tag']}: {why}", file=sys.stderr)
        n, v = len(result["removed"]), len(result["volumes"])
        volumes = f", {v} tooling volume(s)" if v else ""
        print(f"{n} tag(s){volumes} removed, {_size(result['freed'])} freed" if n or v else "nothing to prune")
    except PygentError as exc:
        _fail(exc)


if __name__ == "__main__":  # pragma: no cover
    app()
